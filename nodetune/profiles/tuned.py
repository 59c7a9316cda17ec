"""nodetune's tunables in TuneD's terms: which TuneD plugin option sets each one, read and write.

One table for both directions: `set_by(tunable, settings)` finds the value an active TuneD
profile gives a tunable (the facts' `services.tuned.settings`), `overrides()` says whether
TuneD re-applying it would undo what a setting wants, and `option_for()` is the option a TuneD
profile carries to write a value nodetune would write. Plugin options as TuneD 2.20 documents
them (tuned/plugins/plugin_*.py of https://github.com/redhat-performance/tuned/tree/v2.20.0):
[sysctl] NAME, [sysfs] PATH, [vm] transparent_hugepages / transparent_hugepage.defrag,
[cpu] governor / energy_perf_bias / energy_performance_preference / no_turbo,
[disk] elevator / readahead, [bootloader] cmdline, [modules] MODULE, [service] service.UNIT.
A PCI config register has no TuneD plugin.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodetune.profiles import tunables as t
from nodetune.rules.operators import as_text, number, satisfied

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
THP_DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"
GOVERNOR = "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
EPP = "/sys/devices/system/cpu/cpu*/cpufreq/energy_performance_preference"
EPB = "/sys/devices/system/cpu/cpu*/power/energy_perf_bias"
BOOST = "/sys/devices/system/cpu/cpufreq/boost"

# sysfs knob -> (plugin, option) TuneD sets it with; the knob's own path under [sysfs] also
# does, and is the option of a knob not listed here
KNOB_OPTIONS: dict[str, tuple[str, str]] = {
    THP_ENABLED: ("vm", "transparent_hugepages"),
    THP_DEFRAG: ("vm", "transparent_hugepage.defrag"),
    GOVERNOR: ("cpu", "governor"),
    EPP: ("cpu", "energy_performance_preference"),
    EPB: ("cpu", "energy_perf_bias"),
    BOOST: ("sysfs", BOOST),
}
# block queue attribute -> the [disk] option that sets it on every disk
DISK_OPTIONS = {"scheduler": "elevator", "read_ahead_kb": "readahead"}
# TuneD names an EPB value the kernel calls "power" `powersave` (plugin_cpu.py)
_EPB_NAMES = {"powersave": "power"}


@dataclass(frozen=True)
class Option:
    """One option of a TuneD profile: [plugin] option=value."""

    plugin: str
    option: str
    value: str

    @property
    def text(self) -> str:
        return f"[{self.plugin}] {self.option}={self.value}"


def set_by(tunable: t.Tunable, settings: Mapping[str, Mapping[str, str]]) -> Option | None:
    """The option of an active TuneD profile that sets `tunable`, or None when none does."""
    def get(plugin: str, *options: str) -> Option | None:
        section = settings.get(plugin) or {}
        found = next((o for o in options if o in section), None)
        return Option(plugin, found, section[found]) if found else None

    if isinstance(tunable, t.Sysctl):
        return get("sysctl", tunable.sysctl)
    if isinstance(tunable, t.SysfsKnob):
        plugin, option = KNOB_OPTIONS.get(tunable.path, ("sysfs", tunable.path))
        found = get(plugin, option, "transparent_hugepage") if tunable.path == THP_ENABLED \
            else get(plugin, option)
        if tunable.path == BOOST and found is None:
            found = get("cpu", "no_turbo")
        return found or get("sysfs", tunable.path)
    if isinstance(tunable, t.CmdlineArg):
        cmdline = get("bootloader", "cmdline")
        words = [w for w in (cmdline.value.split() if cmdline else [])
                 if w.split("=", 1)[0] == tunable.arg]
        return Option("bootloader", "cmdline", words[-1]) if words else None
    if isinstance(tunable, t.BlockQueue):
        disk = DISK_OPTIONS.get(tunable.attribute)
        queue = [k for k in settings.get("sysfs") or {}
                 if fnmatch.fnmatchcase(k, f"/sys/block/*/queue/{tunable.attribute}")]
        return (get("disk", disk) if disk else None) or (get("sysfs", queue[-1]) if queue
                                                         else None)
    if isinstance(tunable, t.ModuleOption):
        return get("modules", tunable.module)
    if isinstance(tunable, t.Service):
        return get("service", f"service.{tunable.unit}")
    return None  # a module TuneD loads is loaded; a PCI register TuneD cannot set


def tuned_value(tunable: t.Tunable, option: Option) -> tuple[str, Any]:
    """(modifier, value) TuneD writes: modifier ">" raises to the value only when the current
    value is lower, "<" lowers, "" sets; the value in nodetune's terms (the first of TuneD's
    `a|b` alternatives, readahead in KiB, boost as a boolean, a service's state)."""
    raw = option.value.strip()
    if isinstance(tunable, t.CmdlineArg):
        return "", raw.split("=", 1)[1] if "=" in raw else ""
    if isinstance(tunable, t.Service):
        commands = {c.strip() for c in raw.replace(";", ",").split(",")}
        return "", "running" if "start" in commands else "stopped" if "stop" in commands \
            else raw
    if isinstance(tunable, t.ModuleOption):
        return "", raw
    modifier = raw[0] if raw[:1] in (">", "<") else ""
    raw = raw[len(modifier):].strip().split("|")[0].strip()
    if option.plugin == "disk" and option.option == "readahead" and raw.endswith(" s"):
        sectors = number(raw[:-2].strip())
        return modifier, raw if sectors is None else int(sectors) // 2
    if option.option == "no_turbo":
        return "", as_text(raw) not in ("1", "true")
    if isinstance(tunable, t.SysfsKnob) and tunable.path == BOOST:
        return "", as_text(raw) in ("1", "on", "true")
    if option.option == "energy_perf_bias":
        return modifier, _EPB_NAMES.get(raw, raw)
    value = number(raw)
    return modifier, raw if value is None else value


def overrides(tunable: t.Tunable, option: Option, expect: Mapping[str, Any],
              written: Any) -> bool | None:
    """Whether TuneD applying `option` leaves `expect` unmet once nodetune wrote `written`;
    None when TuneD's value is computed at run time (${f:...})."""
    if "${" in option.value:
        return None
    modifier, value = tuned_value(tunable, option)
    ours = number(written)
    if modifier and ours is not None and number(value) is not None:
        lower_than_tuned = ours < number(value)  # type: ignore[operator]
        if lower_than_tuned != (modifier == ">"):
            return False  # TuneD leaves the value nodetune wrote alone
    return not satisfied(value, expect)


def option_for(tunable: t.Tunable, value: Any, subject: str | None = None) -> Option | None:
    """The TuneD option that writes `value` to `tunable` (of `subject`, a block device), or None
    when no TuneD plugin can."""
    text = as_text(value)
    if isinstance(tunable, t.Sysctl):
        return Option("sysctl", tunable.sysctl, text)
    if isinstance(tunable, t.SysfsKnob):
        plugin, option = KNOB_OPTIONS.get(tunable.path, ("sysfs", tunable.path))
        if tunable.path == BOOST:
            text = "1" if t.SYSFS_KNOBS[BOOST].encode(value) == "on" else "0"
        return Option(plugin, option, text)
    if isinstance(tunable, t.CmdlineArg):
        return Option("bootloader", "cmdline", tunable.shown(value))
    if isinstance(tunable, t.BlockQueue):
        if subject:
            return Option("sysfs", f"/sys/block/{subject}/queue/{tunable.attribute}", text)
        disk = DISK_OPTIONS.get(tunable.attribute)
        return Option("disk", disk, text) if disk else None
    if isinstance(tunable, t.ModuleOption):
        return Option("modules", tunable.module, f"{tunable.option}={text}")
    if isinstance(tunable, t.Module):
        return Option("modules", tunable.module, "+r")
    if isinstance(tunable, t.Service):
        return Option("service", f"service.{tunable.unit}",
                      "start,enable" if value == "running" else "stop,disable")
    return None
