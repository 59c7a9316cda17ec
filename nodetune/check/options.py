"""Every option of `nodetune check`, declared once.

The click command (`nodetune/commands/check.py`) is built from `OPTIONS`, and the start-up fast
path (`nodetune/check/fastpath.py`) parses a command line with `parse`, so the two cannot
disagree. `parse` accepts exactly what click would accept and gives the same values; for
anything else (--help, a misspelt option, a value click would refuse) it returns None and click
answers, so usage errors read as for every other command.

This module is on the path of a cached `nodetune check --max-age` answer: it imports nothing
that costs start-up time (no click, no dataclasses).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from nodetune.profiles.names import is_profile_name

TIERS = ("quick", "standard")


class Option(NamedTuple):
    """One option: its flags, the CheckRequest field it fills and what it accepts.

    kind: flag (on when given), tier (one of TIERS), float and int (at least `minimum`,
    finite), text, profile (a profile name, nodetune.profiles.names),
    file (a path that is not a directory), dir (a path that is not a file).
    group: check (declared here for click too), node (click gets it from cli.node_source_options),
    profile (from commands.audit.profile_options, exactly as `audit`), output (how the result
    is printed, not part of the request), answer (where the answer may come from, not part of
    the request either).
    """

    flags: tuple[str, ...]
    dest: str
    kind: str
    default: Any
    help: str
    metavar: str | None = None
    minimum: float | None = None
    multiple: bool = False
    envvar: str | None = None
    group: str = "check"
    variable: str | None = None  # the suite variable this option sets


OPTIONS: tuple[Option, ...] = (
    Option(("--root",), "root", "dir", None, "Read the host from DIR laid out like / "
           "(env NODETUNE_ROOT).", "DIR", envvar="NODETUNE_ROOT", group="node"),
    Option(("--from",), "snapshot", "file", None, "Replay a node from a snapshot (.tar.gz) or "
           "an hwloc XML topology (lstopo).", "FILE", group="node"),
    Option(("--nvml",), "nvml", "text", "auto", "NVML source: live on the live host, off, or a "
           "recorded NVML JSON file.", "auto|live|off|FILE", group="node"),
    Option(("--tier",), "tier", "tier", "quick", "quick: files and NVML only (every job "
           "start); standard: adds quick memcpy, all-reduce and per-GPU GEMM/HBM runs."),
    Option(("--json",), "as_json", "flag", False,
           "Print the nodetune.check/2 document instead of text.", group="output"),
    Option(("--npd",), "npd", "flag", False, "Answer as a Node Problem Detector custom plugin: "
           "the summary line, exit 0 healthy, 1 unhealthy, 2 unknown or nodetune could not run.",
           group="output"),
    Option(("--from-agent",), "from_agent", "flag", False, "Answer from the agent's last check "
           "when it is at most --max-age seconds old (default 360), of this boot and with these "
           "options; else run the check (saying why on stderr).", group="answer"),
    Option(("--timeout",), "timeout", "float", None, "Seconds the whole check may take (default "
           "30 quick, 120 standard); each check also has its own timeout.", "S", minimum=0.1),
    Option(("--max-age",), "max_age", "float", None, "Reuse a cached result at most S seconds "
           "old (same node, tier, profile, expectations, boot); with --from-agent, the "
           "agent's answer instead.", "S", minimum=0),
    Option(("--profile",), "profile", "profile", None, "Take expectations (GPU count, model, port "
           "rate ...) from this profile; 'auto' picks the matching one.", "NAME|auto"),
    Option(("--profiles-dir",), "profiles_dirs", "dir", (), "Extra profile directory, searched "
           "before the shipped profiles (repeatable; env NODETUNE_PROFILES_DIR).", "DIR",
           multiple=True, envvar="NODETUNE_PROFILES_DIR", group="profile"),
    Option(("--overrides",), "overrides", "file", None, "Site YAML overriding single settings "
           "(severity, expectation, disable).", "FILE", group="profile"),
    Option(("--expect-gpus",), "expect_gpus", "int", None,
           "Expected number of GPUs (overrides the profile).", "N", minimum=0,
           variable="gpu_count"),
    Option(("--expect-model",), "expect_model", "text", None,
           "Expected GPU model, e.g. H100 (overrides the profile).", "NAME", variable="gpu_model"),
    Option(("--mount",), "mounts", "text", (), "A mount point that must be mounted read-write, "
           "e.g. /scratch (repeatable).", "PATH", multiple=True, variable="required_mounts"),
    Option(("--require-module",), "modules", "text", (), "A kernel module that must be loaded, "
           "e.g. nvidia_peermem (repeatable).", "NAME", multiple=True,
           variable="required_modules"),
    Option(("--expect-idle",), "expect_idle", "flag", False, "GPUs must have no compute "
           "process (at job start: a process left by the last job holds memory and SMs).",
           "", variable="gpu_processes_max"),
    Option(("--write-probe",), "write_probe", "flag", False, "Also write and remove a small "
           "file in each required mount and in /, /tmp and /dev/shm (live host only)."),
    Option(("--cache-file",), "cache_file", "file", None, "Keep the cached result in PATH "
           "(default: /run/nodetune, $XDG_RUNTIME_DIR or the temp directory).", "PATH"),
    Option(("-v", "--verbose"), "verbose", "flag", False, "List every check with its status.",
           group="output"),
)

BY_FLAG: dict[str, Option] = {flag: opt for opt in OPTIONS for flag in opt.flags}
REQUEST_FIELDS: tuple[str, ...] = tuple(
    o.dest for o in OPTIONS if o.group not in ("output", "answer"))
DEFAULTS: dict[str, Any] = {o.dest: o.default for o in OPTIONS if o.dest in REQUEST_FIELDS}
# A check skipped for want of a variable names the option that sets it.
VARIABLE_FLAGS: dict[str, str] = {
    o.variable: f"{o.flags[-1]} {o.metavar}".strip() for o in OPTIONS if o.variable}


def convert(opt: Option, text: str) -> Any:
    """The value of `opt` given as `text`, or ValueError where click would refuse it."""
    if opt.kind == "tier":
        if text not in TIERS:
            raise ValueError(text)
        return text
    if opt.kind in ("float", "int"):
        number: float = float(text) if opt.kind == "float" else int(text)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(text)  # click refuses it (commands.params.FiniteFloatRange)
        if opt.minimum is not None and number < opt.minimum:
            raise ValueError(text)
        return number
    if opt.kind in ("file", "dir"):
        _check_path(opt.kind, text)
    if opt.kind == "profile" and not is_profile_name(text):
        raise ValueError(text)
    return text


def _check_path(kind: str, text: str) -> None:
    """click.Path(dir_okay=False) or (file_okay=False): a missing path is fine, an existing
    one must be of the right kind and readable."""
    if not os.path.lexists(text):
        return
    if (kind == "dir" and os.path.isfile(text)) or (kind == "file" and os.path.isdir(text)):
        raise ValueError(text)
    if not os.access(text, os.R_OK):
        raise ValueError(text)


def _from_env(opt: Option, environ: Mapping[str, str]) -> Any:
    """The option's value from its environment variable, split as click splits it."""
    text = environ.get(opt.envvar or "")
    if not text:
        return None
    if not opt.multiple:
        return convert(opt, text)
    parts = text.split(os.pathsep) if opt.kind in ("file", "dir") else text.split()
    return tuple(convert(opt, part) for part in parts)


def parse(argv: list[str], environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Every option's value for `nodetune check ARGV` (defaults included), or None when click
    should handle the command line."""
    environ = os.environ if environ is None else environ
    given: dict[str, Any] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        opt = BY_FLAG.get(arg)
        if opt is not None and opt.kind == "flag":
            given[opt.dest] = True
            continue
        name, eq, text = arg.partition("=")
        opt = BY_FLAG.get(name)
        if opt is None or opt.kind == "flag" or (eq and not name.startswith("--")):
            return None
        if not eq:
            if not args:
                return None
            text = args.pop(0)
        try:
            value = convert(opt, text)
        except ValueError:
            return None
        if opt.multiple:
            given[opt.dest] = (*given.get(opt.dest, ()), value)
        else:
            given[opt.dest] = value
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.dest in given:
            values[opt.dest] = given[opt.dest]
            continue
        try:
            env_value = _from_env(opt, environ) if opt.envvar else None
        except ValueError:
            return None
        values[opt.dest] = opt.default if env_value is None else env_value
    return values


def request_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The CheckRequest fields among parsed values (without the output options)."""
    return {name: values[name] for name in REQUEST_FIELDS}
