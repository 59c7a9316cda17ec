"""TuneD's active profile as facts: its name, how it was chosen, and what it sets.

The services collector reads these next to the tuned unit's state. The profile is loaded the
way TuneD 2.20 loads it (tuned/profiles/loader.py, locator.py, merger.py, variables.py of
https://github.com/redhat-performance/tuned/tree/v2.20.0): each name of
/etc/tuned/active_profile (then /etc/tuned/post_loaded_profile) is looked up in /etc/tuned
before /usr/lib/tuned (TuneD 2.23 and later add .../profiles/ below each), its `include=`
names are loaded first, sections of the same name merge (the later profile's options win,
`replace=1` drops the earlier ones, `drop=` removes named options), and `${name}` is
expanded from the [variables] sections. Of the result, the options of the plugins that set
what nodetune tunes are kept, by plugin type: sysctl, sysfs, vm, cpu, disk, bootloader
(every `cmdline*` option folded into one `cmdline`, as plugin_bootloader.py does), modules and
service. A section limited by `cpuinfo_regex`/`uname_regex` counts only where it matches this
host; a disabled one (`enabled=0`) not at all.
"""

from __future__ import annotations

import re
from dataclasses import field
from typing import Any

from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

ACTIVE_PROFILE = "/etc/tuned/active_profile"
PROFILE_MODE = "/etc/tuned/profile_mode"
POST_LOADED_PROFILE = "/etc/tuned/post_loaded_profile"
# searched in this order, the first holding NAME/tuned.conf wins
PROFILE_DIRS = ("/etc/tuned/profiles", "/etc/tuned", "/usr/lib/tuned/profiles", "/usr/lib/tuned")
PLUGINS = ("sysctl", "sysfs", "vm", "cpu", "disk", "bootloader", "modules", "service")
UNIT_KEYS = ("type", "enabled", "replace", "drop", "devices", "devices_udev_regex",
             "cpuinfo_regex", "uname_regex", "script_pre", "script_post")
MAX_PROFILES = 32  # an include chain longer than this is a loop TuneD would also refuse
_VARIABLE = re.compile(r"(?<!\\)\$\{(\w+)\}")
_TRUE = ("1", "true", "True", "yes", "y")


@record(frozen=True, kw_only=True)
class TunedProfile:
    active: str | None  # names in /etc/tuned/active_profile ("" when TuneD is off)
    mode: str | None  # /etc/tuned/profile_mode: auto (recommended) or manual
    chain: list[str] = field(default_factory=list)  # tuned.conf files loaded, includes first
    settings: dict[str, dict[str, str]] = field(default_factory=dict)  # plugin -> option -> value


class ProfileUnreadable(Exception):
    """The active profile (or one it includes) cannot be found or parsed."""


@record
class _Unit:
    type: str
    options: dict[str, str]
    enabled: bool = True
    cpuinfo_regex: str | None = None
    uname_regex: str | None = None


def _parser(text: str, path: str, *, allow_no_value: bool = False) -> Any:
    """A ConfigParser holding `text`, set up as TuneD's (tuned/utils/config_parser.py)."""
    # deferred: configparser costs about 2.5 ms at start-up, and `nodetune check` runs the
    # services collector on hosts that have no TuneD
    import configparser

    parser = configparser.ConfigParser(delimiters=("=",), inline_comment_prefixes=("#",),
                                       allow_no_value=allow_no_value, strict=False,
                                       interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, path)
    except configparser.Error as exc:
        raise ProfileUnreadable(f"cannot parse {path}: {str(exc).splitlines()[0]}") from exc
    return parser


def parse_conf(text: str, path: str) -> dict[str, dict[str, str]]:
    """{section: {option: raw value}} of one tuned.conf, parsed as TuneD's loader does."""
    parser = _parser(text, path)
    directory = path.rsplit("/", 1)[0]
    return {s: {o: parser.get(s, o, raw=True).replace("${i:PROFILE_DIR}", directory)
                for o in parser.options(s)} for s in parser.sections()}


def _locate(root: HostRoot, name: str, loaded: list[str]) -> str | None:
    for directory in PROFILE_DIRS:
        path = f"{directory}/{name.rsplit('/', 1)[-1]}/tuned.conf"
        if path in loaded:
            return ""
        if root.exists(path):
            return path
    return None


def _load(root: HostRoot, names: list[str], loaded: list[str],
          configs: list[tuple[str, dict[str, dict[str, str]]]]) -> None:
    for raw in names:
        conditional, name = raw.startswith("-"), raw.lstrip("-")
        path = _locate(root, name, loaded)
        if path == "" or (path is None and conditional):
            continue
        if path is None:
            raise ProfileUnreadable(f"profile {name!r} is in none of {', '.join(PROFILE_DIRS)}")
        if len(loaded) >= MAX_PROFILES:
            raise ProfileUnreadable(f"more than {MAX_PROFILES} profiles included from {name}")
        loaded.append(path)
        text = root.read_text(path, None)
        if text is None:
            raise ProfileUnreadable(f"cannot read {path}")
        config = parse_conf(text, path)
        include = config.get("main", {}).pop("include", None)
        if include:
            _load(root, [n for n in re.split(r"\s*[,;]\s*", include.strip()) if n], loaded,
                  configs)
        configs.append((path, config))


def _merge(configs: list[tuple[str, dict[str, dict[str, str]]]]) -> dict[str, _Unit]:
    """TuneD's merger: sections of the same name merge, the later profile winning."""
    units: dict[str, _Unit] = {}
    for _, config in configs:
        for name, options in config.items():
            if name == "main":
                continue
            own = {k: v for k, v in options.items() if k not in UNIT_KEYS}
            replace = options.get("replace", "0") in _TRUE
            unit = units.get(name)
            if unit is None or replace:
                unit = units[name] = _Unit(type=options.get("type", name), options={})
            unit.type = options.get("type", unit.type)
            unit.enabled = options.get("enabled", "1") in ("1", "true", "True")
            unit.cpuinfo_regex = options.get("cpuinfo_regex", unit.cpuinfo_regex)
            unit.uname_regex = options.get("uname_regex", unit.uname_regex)
            for dropped in re.split(r"\s*[,;]\s*", options.get("drop", "")):
                unit.options.pop(dropped, None)
            unit.options.update(own)
    return units


def _variables(root: HostRoot, units: dict[str, _Unit]) -> dict[str, str]:
    variables = dict(units.pop("variables").options) if "variables" in units else {}
    include = variables.pop("include", None)
    if include:
        text = root.read_text(include, None)
        if text is None:
            raise ProfileUnreadable(f"cannot read the variables file {include}")
        parser = _parser("[variables]\n" + text, include, allow_no_value=True)
        variables = {**{o: parser.get("variables", o, raw=True) or ""
                        for o in parser.options("variables")}, **variables}
    return variables


def expand(value: str, variables: dict[str, str]) -> str:
    """${name} replaced from the profile's variables (functions ${f:...} are left as written)."""
    for _ in range(8):  # variables may name variables
        expanded = _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
        if expanded == value:
            break
        value = expanded
    return value


def _matches(regex: str | None, text: str | None) -> bool | None:
    if regex is None:
        return True
    if text is None:
        return None
    try:
        return re.search(regex, text, re.MULTILINE) is not None
    except re.error:
        return False


def fold_cmdline(options: dict[str, str]) -> str:
    """Every `cmdline*` option of [bootloader] as the one command line TuneD appends."""
    cmdline = ""
    for key, value in options.items():
        if not key.startswith("cmdline") or not value:
            continue
        words = value[1:].strip()
        if value[0] == "+" or (value[0] == "\\" and value[1:2] in ("\\", "+", "-")):
            cmdline += " " + words
        elif value[0] == "-":
            for word in words.split():
                cmdline = re.sub(r"(\A|\s)" + re.escape(word) + r"(?=\Z|\s)", "", cmdline)
        else:
            cmdline += " " + value
    return cmdline.strip()


def effective_settings(root: HostRoot, units: dict[str, _Unit],
                       variables: dict[str, str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """(plugin type -> option -> value, the sections whose host conditions could not be read)."""
    cpuinfo = root.read_text("/proc/cpuinfo", None)
    kernel = [root.read_str(f"/proc/sys/kernel/{f}", None)
              for f in ("ostype", "hostname", "osrelease", "version", "arch")]
    uname = None if None in kernel else " ".join(str(k) for k in kernel)
    settings: dict[str, dict[str, str]] = {}
    undecided = []
    for name, unit in units.items():
        if unit.type not in PLUGINS or not unit.enabled:
            continue
        conditions = (_matches(unit.cpuinfo_regex and expand(unit.cpuinfo_regex, variables),
                               cpuinfo),
                      _matches(unit.uname_regex and expand(unit.uname_regex, variables), uname))
        if False in conditions:
            continue
        if None in conditions:
            undecided.append(name)
            continue
        options = {k: expand(v, variables) for k, v in unit.options.items()}
        if unit.type == "bootloader":
            cmdline = fold_cmdline(options)
            options = {k: v for k, v in options.items() if not k.startswith("cmdline")}
            if cmdline:
                options["cmdline"] = cmdline
        settings.setdefault(unit.type, {}).update(options)
    return {k: v for k, v in settings.items() if v}, undecided


def read(root: HostRoot) -> tuple[TunedProfile | None, dict[str, str]]:
    """TuneD's active profile on this host, and the facts that could not be read (by name).

    None when TuneD is not installed (no /etc/tuned, no /usr/lib/tuned)."""
    if not root.isdir("/etc/tuned") and not root.isdir("/usr/lib/tuned"):
        return None, {}
    unknown: dict[str, str] = {}
    active = root.read_str(ACTIVE_PROFILE, None)
    mode = root.read_str(PROFILE_MODE, None)
    if active is None:
        unknown["tuned.active"] = unknown["tuned.settings"] = (
            f"cannot read {ACTIVE_PROFILE}: TuneD has not chosen a profile here, or the file "
            "was not collected")
        return TunedProfile(active=None, mode=mode), unknown
    names = active.split()
    post = root.read_str(POST_LOADED_PROFILE, None)
    if post:
        names += post.split()
    chain: list[str] = []
    try:
        settings, undecided = load(root, names, chain)
    except ProfileUnreadable as exc:
        unknown["tuned.settings"] = f"TuneD profile {active}: {exc}"
        return TunedProfile(active=active, mode=mode, chain=chain), unknown
    if undecided:
        unknown["tuned.settings"] = (f"TuneD profile {active}: cannot tell whether section(s) "
                                     f"{', '.join(undecided)} apply here (/proc/cpuinfo or "
                                     "/proc/sys/kernel not readable)")
    return TunedProfile(active=active, mode=mode, chain=chain, settings=settings), unknown


def load(root: HostRoot, names: list[str], chain: list[str] | None = None
         ) -> tuple[dict[str, dict[str, str]], list[str]]:
    """(settings, undecided sections) of TuneD profiles `names` merged, as `read` gives them;
    `chain` receives the files loaded, includes first. ProfileUnreadable when one is missing
    or broken."""
    configs: list[tuple[str, dict[str, dict[str, str]]]] = []
    try:
        _load(root, names, [], configs)
    finally:
        if chain is not None:
            chain.extend(path for path, _ in configs)
    units = _merge(configs)
    return effective_settings(root, units, _variables(root, units))


def exists(root: HostRoot, name: str) -> bool:
    """Whether TuneD finds a profile `name` on this host."""
    return bool(_locate(root, name, []))
