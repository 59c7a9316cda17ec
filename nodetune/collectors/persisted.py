"""Configuration that takes effect at the next boot: sysctl.d, modprobe.d, modules-load.d, grub.

Pure parsers (`parse_sysctl_conf`, `parse_modprobe_conf`, `parse_modules_load`,
`parse_shell_assignments`) plus readers that walk the standard directories in the order the
boot-time tools apply them:

- sysctl: systemd-sysctl(8)/sysctl.d(5) and procps `sysctl --system` read `*.conf` from
  /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d, /lib/sysctl.d; a
  file in an earlier directory replaces a same-named one in a later directory; all files are
  applied sorted by file name, so the later name wins a key. /etc/sysctl.conf comes last
  (procps), unless it is already linked in as /etc/sysctl.d/99-sysctl.conf (Debian, Fedora).
- modprobe.d(5) and modules-load.d(5) use the same directory precedence.
"""

from __future__ import annotations

import re
from dataclasses import field
from typing import Annotated, TypedDict

from nodetune.facts.model import Keyed, NumStr
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
               "/lib/sysctl.d")
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d",
                 "/usr/lib/modprobe.d", "/lib/modprobe.d")
MODULES_LOAD_DIRS = ("/etc/modules-load.d", "/run/modules-load.d", "/usr/local/lib/modules-load.d",
                     "/usr/lib/modules-load.d", "/lib/modules-load.d")


class PersistedSysctl(TypedDict):
    value: NumStr
    file: str


class PersistedModule(TypedDict):
    options: str
    blacklisted: bool
    load_at_boot: bool
    file: str | None


class Persisted(TypedDict, total=False):
    """`kernel.persisted`: what the next boot applies."""

    sysctl: Annotated[dict[str, PersistedSysctl], Keyed("name")]
    modprobe: Annotated[dict[str, PersistedModule], Keyed("module")]
    cmdline: str | None
    cmdline_file: str | None


def normalize_sysctl_key(key: str) -> str:
    """"kernel/numa_balancing" -> "kernel.numa_balancing" (sysctl.d accepts both separators;
    with "/" separators, dots inside a component stay and become "/")."""
    key = key.strip().lstrip("-")
    if "/" in key.split(".")[0]:
        return key.replace(".", "\0").replace("/", ".").replace("\0", "/")
    return key


def normalize_value(value: str) -> str:
    """Collapse whitespace, as /proc/sys prints "4096\t87380\t6291456" and files use spaces."""
    return " ".join(value.split())


def parse_sysctl_conf(text: str) -> list[tuple[str, str]]:
    """sysctl.conf text -> [(key, value)] in file order; comments start with # or ;."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out.append((normalize_sysctl_key(key), normalize_value(value)))
    return out


@record
class ModuleConfig:
    options: list[str] = field(default_factory=list)
    blacklisted: bool = False
    load_at_boot: bool = False
    file: str | None = None


def module_name(name: str) -> str:
    return name.replace("-", "_")


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined and comments dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    if pending.strip():
        out.append(pending.strip())
    return out


def parse_modprobe_conf(text: str) -> list[tuple[str, str, str]]:
    """modprobe.d text -> [(command, module, rest)] for options/blacklist/install/remove."""
    out = []
    for line in _logical_lines(text):
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] in ("options", "blacklist", "install", "remove"):
            rest = " ".join(parts[2].split()) if len(parts) > 2 else ""
            out.append((parts[0], module_name(parts[1]), rest))
    return out


def parse_modules_load(text: str) -> list[str]:
    """modules-load.d or /etc/modules text -> module names (";" and "#" start comments)."""
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line and line[0] not in "#;":
            names.append(module_name(line.split()[0]))
    return names


_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def shell_value(raw: str, env: dict[str, str]) -> str:
    """The value of a shell assignment's right-hand side: quotes removed, $VAR expanded."""
    out: list[str] = []
    i = 0
    quote: str | None = None

    def expand(segment: str) -> str:
        return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), segment)

    buf = ""
    while i < len(raw):
        c = raw[i]
        if quote == "'":
            if c == "'":
                quote = None
                out.append(buf)
                buf = ""
            else:
                buf += c
        elif quote == '"':
            if c == "\\" and i + 1 < len(raw):
                buf += raw[i + 1]
                i += 1
            elif c == '"':
                quote = None
                out.append(expand(buf))
                buf = ""
            else:
                buf += c
        elif c in "'\"":
            out.append(expand(buf))
            buf = ""
            quote = c
        elif c == "#" and (not buf or buf[-1].isspace()) and not out:
            break
        elif c.isspace():
            break  # an unquoted blank ends the value (the rest is another command)
        else:
            buf += c
        i += 1
    out.append(expand(buf) if quote != "'" else buf)
    return "".join(out)


def parse_shell_assignments(text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Variable assignments of a sourced shell file such as /etc/default/grub."""
    values = dict(env or {})
    for line in text.splitlines():
        m = _ASSIGNMENT.match(line)
        if m:
            values[m.group(1)] = shell_value(m.group(2), values)
    return values


# -- readers -----------------------------------------------------------------------------------
def config_files(root: HostRoot, dirs: tuple[str, ...], suffix: str = ".conf") -> list[str]:
    """Files in application order: by name, an earlier directory hiding a same-named file."""
    chosen: dict[str, str] = {}
    for directory in dirs:
        for name in root.listdir(directory):
            if name.endswith(suffix) and name not in chosen:
                chosen[name] = f"{directory}/{name}"
    return [chosen[name] for name in sorted(chosen)]


def persisted_sysctl(root: HostRoot) -> dict[str, PersistedSysctl]:
    """{key: {"value", "file"}} as the next boot will apply them."""
    files = config_files(root, SYSCTL_DIRS)
    if root.exists("/etc/sysctl.conf") and not any(
            root.realpath(f) == root.realpath("/etc/sysctl.conf") for f in files):
        files.append("/etc/sysctl.conf")
    out: dict[str, PersistedSysctl] = {}
    for path in files:
        for key, value in parse_sysctl_conf(root.read_text(path, "")):
            out[key] = {"value": value, "file": path}
    return dict(sorted(out.items()))


def persisted_modules(root: HostRoot) -> dict[str, PersistedModule]:
    """{module: {"options", "blacklisted", "load_at_boot", "file"}} from modprobe.d and
    modules-load.d (plus Debian's /etc/modules)."""
    mods: dict[str, ModuleConfig] = {}
    for path in config_files(root, MODPROBE_DIRS):
        for command, name, rest in parse_modprobe_conf(root.read_text(path, "")):
            cfg = mods.setdefault(name, ModuleConfig())
            if command == "options":
                cfg.options.append(rest.strip())
            elif command == "blacklist":
                cfg.blacklisted = True
            elif command == "install" and re.fullmatch(r"(/usr)?/bin/(false|true)", rest.strip()):
                cfg.blacklisted = True  # "install foo /bin/false" forbids loading foo at all
            else:
                continue
            cfg.file = path
    load_files = config_files(root, MODULES_LOAD_DIRS)
    if root.exists("/etc/modules"):
        load_files.append("/etc/modules")
    for path in load_files:
        for name in parse_modules_load(root.read_text(path, "")):
            cfg = mods.setdefault(name, ModuleConfig())
            cfg.load_at_boot = True
            cfg.file = cfg.file or path
    return {name: {"options": " ".join(c.options), "blacklisted": c.blacklisted,
                   "load_at_boot": c.load_at_boot, "file": c.file}
            for name, c in sorted(mods.items())}


def persisted_cmdline(root: HostRoot) -> tuple[str | None, str | None]:
    """(kernel command line the next boot gets, the file it came from), or (None, None).

    GRUB: GRUB_CMDLINE_LINUX plus GRUB_CMDLINE_LINUX_DEFAULT from /etc/default/grub and the
    /etc/default/grub.d/*.cfg files sourced after it (Ubuntu). Otherwise /etc/kernel/cmdline
    (kernel-install, systemd-boot, UKIs).
    """
    grub = root.read_text("/etc/default/grub", None)
    if grub is not None:
        values = parse_shell_assignments(grub)
        used = "/etc/default/grub"
        for name in root.listdir("/etc/default/grub.d"):
            if name.endswith(".cfg"):
                path = f"/etc/default/grub.d/{name}"
                values = parse_shell_assignments(root.read_text(path, ""), values)
                used += f", {path}"
        line = " ".join(v for v in (values.get("GRUB_CMDLINE_LINUX", ""),
                                    values.get("GRUB_CMDLINE_LINUX_DEFAULT", "")) if v)
        return normalize_value(line), used
    text = root.read_text("/etc/kernel/cmdline", None)
    if text is not None:
        return normalize_value(text), "/etc/kernel/cmdline"
    return None, None
