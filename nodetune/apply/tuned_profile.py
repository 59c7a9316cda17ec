"""`nodetune apply --as tuned DIR`: the apply plan as a TuneD child profile, not an Ansible run.

The plan is the one `nodetune apply --dry-run` shows (remediate.prepare): each change's role
variables go back to the tunables that declare them (tunables.written_by) and from there to
TuneD options (nodetune.profiles.tuned). The profile includes a TuneD profile, so the node keeps
the rest of its tuning:

    the active TuneD profile              the node stays tuned as it is, nodetune's values on top
    accelerator-performance               else, where the host has it (throughput-performance
                                          with C-states above C1 off, made for accelerators)
    throughput-performance                else, where the host has it
    none                                  else (the summary says so)

The settings the included profile would set to other values (audit.tuned.find) are carried
too, so activating the child does not undo what already passes. A change no TuneD plugin can
make (a PCI config register, a free-form remediation) is listed as a comment in tuned.conf and
in the output, never dropped. Writing DIR/tuned.conf changes nothing on the host.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune import __version__
from nodetune.apply import remediate
from nodetune.apply.render.plan import Change
from nodetune.audit import tuned as tuned_check
from nodetune.collectors import tuned as tuned_files
from nodetune.errors import ProfileError, Refused
from nodetune.facts.model import Finding
from nodetune.node.hostroot import HostRoot
from nodetune.profiles import tunables
from nodetune.profiles import tuned as terms
from nodetune.profiles.catalog import Library
from nodetune.views.templating import render

FILE = "tuned.conf"
SECTIONS = ("sysctl", "sysfs", "vm", "cpu", "disk", "bootloader", "modules", "service")
FALLBACK_INCLUDES = ("accelerator-performance", "throughput-performance")
NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")  # TuneD's Loader.safe_name
CMDLINE_OPTION = "cmdline_nodetune"  # appended (+) after the included profile's arguments
ETC_DIRS = ("/etc/tuned", "/etc/tuned/profiles")


@dataclass(frozen=True)
class Entry:
    """One option of the written profile and the setting it carries."""

    option: terms.Option
    setting: str  # the change's key, "storage.read_ahead[nvme0n1]"
    current: str
    wanted: str
    disruption: str
    origin: str  # "plan": a change the plan makes; "include": the included profile differs


@dataclass(frozen=True)
class NotExpressible:
    setting: str
    current: str
    wanted: str
    reason: str


@dataclass
class TunedProfile:
    name: str
    directory: Path
    profile: str  # the nodetune profile
    include: str  # "" when none
    include_reason: str
    entries: list[Entry] = field(default_factory=list)
    left_out: list[NotExpressible] = field(default_factory=list)
    manual: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)  # the audit's cpu.tuned_overrides
    text: str = ""

    def describe(self, entry: Entry) -> str:
        """What an option carries: "memory.swappiness: 60 -> 10"."""
        if entry.origin == "include":
            return f"{entry.setting}: {self.include} sets {entry.current}, nodetune wants " \
                   f"{entry.wanted}"
        reboot = " (reboot)" if entry.disruption == "reboot" else ""
        return f"{entry.setting}: {entry.current} -> {entry.wanted}{reboot}"

    @property
    def file(self) -> Path:
        return self.directory / FILE

    @property
    def activate(self) -> str:
        """The commands that make TuneD use the profile."""
        parent = os.path.dirname(os.path.abspath(self.directory))
        if parent in ETC_DIRS:
            return f"tuned-adm profile {self.name}"
        return (f"cp -r {self.directory} /etc/tuned/{self.name} && "
                f"tuned-adm profile {self.name}")


def build(prepared: remediate.Plan, directory: Path) -> TunedProfile:
    """The TuneD profile that makes the plan's changes (nothing written yet)."""
    name = directory.resolve().name
    if not NAME.match(name):
        raise ProfileError(f"{name!r} cannot name a TuneD profile (the directory's name is the "
                           "profile's)", fix="use letters, digits, '_', '.' and '-' only")
    request, audit = prepared.request, prepared.audit
    root = HostRoot(request.host_root)
    include, reason = choose_include(root, audit.facts, name)
    result = TunedProfile(name=name, directory=directory, profile=audit.profile,
                          include=include, include_reason=reason,
                          manual=[f for f in prepared.plan.manual if not _about_tuned(f)],
                          warnings=tuned_check.for_changes(audit.findings,
                                                           (c.id for c in prepared.changes)))
    for change in prepared.changes:
        options, missing = options_of(change)
        result.entries += [Entry(o, change.key, change.current, change.wanted,
                                 change.disruption.value, "plan") for o in options]
        result.left_out += [NotExpressible(change.key, change.current, change.wanted, m)
                            for m in missing]
    if include:
        _carry_included(result, prepared, root)
    result.text = render("tuned/tuned.conf.j2", profile=result, version=__version__,
                         sections=_sections(result.entries))
    return result


def _about_tuned(finding: Finding) -> bool:
    """A finding this profile answers: TuneD runs, or its profile overrides a setting."""
    return finding.id == tuned_check.SETTING_ID or finding.fact.startswith(
        "services.units.tuned.")


def choose_include(root: HostRoot, facts: dict[str, Any], name: str) -> tuple[str, str]:
    """(profile to include, why): the active one, else the first fallback the host has."""
    active = ((facts.get("services") or {}).get("tuned") or {}).get("active") or ""
    names = [n for n in active.split() if n != name]
    if names:
        return ",".join(names), "the active TuneD profile"
    for fallback in FALLBACK_INCLUDES:
        if tuned_files.exists(root, fallback):
            return fallback, "no active TuneD profile; the host has it"
    return "", f"no active TuneD profile and none of {', '.join(FALLBACK_INCLUDES)} here"


def options_of(change: Change) -> tuple[list[terms.Option], list[str]]:
    """The TuneD options that make `change`, and why each part that none can make is left."""
    options: list[terms.Option] = []
    missing: list[str] = []

    def add(tunable: tunables.Tunable, value: Any, subject: str | None = None) -> None:
        option = terms.option_for(tunable, value, subject)
        if option is None:
            missing.append(f"no TuneD plugin writes {tunable.name}")
        else:
            options.append(_appended(option))

    for variable, value in change.variables.items():
        if variable == "storage_block" and isinstance(value, dict):
            for device, attributes in value.items():
                for attribute, wanted in (attributes or {}).items():
                    add(tunables.BlockQueue(attribute=str(attribute)), wanted, str(device))
        elif variable == "modules_load":
            for module in value:
                add(tunables.Module(module=str(module)), "loaded")
        elif variable == "modules_options" and isinstance(value, dict):
            options += [terms.Option("modules", str(m), str(o)) for m, o in value.items()]
        elif variable in ("services_enabled", "services_disabled"):
            state = "running" if variable == "services_enabled" else "stopped"
            for unit in value:
                add(tunables.Service(unit=str(unit)), state)
        else:
            written = tunables.written_by({variable: value})
            if not written:
                missing.append(f"role variable {variable} has no TuneD equivalent")
            for tunable, wanted in written:
                add(tunable, wanted)
    return options, missing


def _carry_included(result: TunedProfile, prepared: remediate.Plan, root: HostRoot) -> None:
    """Add the settings the included profile sets to values the nodetune profile does not
    want (they pass now, or are already in the plan)."""
    request, audit = prepared.request, prepared.audit
    try:
        settings, _ = tuned_files.load(root, re.split(r"\s*,\s*", result.include))
    except tuned_files.ProfileUnreadable as exc:
        result.include_reason += f" (its settings cannot be compared: {exc})"
        return
    profile = Library(list(request.profiles_dirs)).load(audit.profile, request.overrides)
    planned = {c.id for c in prepared.changes}
    for override in tuned_check.find(profile.rules, audit.findings, settings,
                                     profile.variables):
        if override.setting in planned:
            continue
        current = override.option.value
        option = terms.option_for(override.tunable, override.value) \
            if override.value is not None else None
        option = option and _appended(option)
        if option is None:
            result.left_out.append(NotExpressible(override.setting, current, override.wanted,
                                                  f"no TuneD option writes "
                                                  f"{override.tunable.name}"))
        else:
            result.entries.append(Entry(option, override.setting, current, override.wanted,
                                        override.tunable.disruption.value, "include"))


def _appended(option: terms.Option) -> terms.Option:
    """A kernel argument as an option of its own, appended to the included profile's."""
    if option.plugin != "bootloader":
        return option
    return terms.Option("bootloader", CMDLINE_OPTION, "+" + option.value.lstrip("+"))


def _sections(entries: list[Entry]) -> dict[str, list[tuple[str, str, list[Entry]]]]:
    """section -> [(option, value, the entries it carries)], in SECTIONS order; the kernel
    arguments joined into one appended `cmdline_nodetune=+...`, a module's parts into one."""
    grouped: dict[str, dict[str, tuple[list[str], list[Entry]]]] = {}
    for entry in entries:
        option = entry.option
        values, carried = grouped.setdefault(option.plugin, {}).setdefault(option.option,
                                                                            ([], []))
        value = option.value.lstrip("+") if option.plugin == "bootloader" else option.value
        if value not in values:
            values.append(value)
        carried.append(entry)
    out: dict[str, list[tuple[str, str, list[Entry]]]] = {}
    for section in SECTIONS:
        for key, (values, carried) in (grouped.get(section) or {}).items():
            if section == "bootloader":
                value = "+" + " ".join(values)
            elif section == "modules":
                value = " ".join(sorted(values, key=lambda v: v != "+r"))
            else:
                value = values[-1]
            out.setdefault(section, []).append((key, value, carried))
    return out


def write(result: TunedProfile, *, force: bool) -> None:
    """Write DIR/tuned.conf; refuse a DIR that holds anything unless `force`."""
    directory = result.directory
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise Refused(f"{directory} is not empty; nothing was written",
                      fix="give a new or empty directory, or --force to write its tuned.conf")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        result.file.write_text(result.text, encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot write {result.file}: {exc.strerror or exc}",
                           fix="give a directory you can write") from exc
