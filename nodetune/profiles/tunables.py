"""Tunables: one declaration of a kernel or system knob gives a setting's check and its fix.

A profile setting that names a tunable states only what it wants of it:

    swappiness:
      tunable: {sysctl: vm.swappiness}
      max: 10

and everything else follows from the tunable: the fact the check reads (`memory.swappiness`),
where the value is persisted (`kernel.persisted.sysctl.vm.swappiness.value`), the disruption
of changing it, the fix text (`sysctl -w vm.swappiness=10 and persist it in /etc/sysctl.d/`)
and the Ansible remediation (`{kernel_sysctl: {vm.swappiness: "10"}}`). The value a fix writes
is derived from the expectation (`rules.operators.target`): `equals` its value, `one_of` its
first item, `min`/`max` the bound, both bounds the one nearest the current value; `write:`
names it explicitly. An override `max: 5` therefore writes 5.

Kinds (the key of the `tunable:` mapping):

    sysctl: NAME                      /proc/sys value; persisted in /etc/sysctl.d
    sysfs: PATH                       a known sysfs knob (SYSFS_KNOBS): THP, cpufreq governor, ...
    cmdline: ARG                      kernel command line argument (reboot)
    module: NAME                      a loaded kernel module (`equals: loaded`)
    module: NAME, option: OPT         a module option, as persisted in /etc/modprobe.d (reboot)
    service: UNIT                     a systemd unit's state (`equals: running` or `stopped`)
    block_queue: ATTR, devices: SEL   /sys/block/<dev>/queue/ATTR of the devices SEL selects
    pci_register: NAME, devices: SEL  a PCI config register of the devices SEL selects

`parse(value)` builds a Tunable from its YAML mapping; `written_by(vars)` recognises the
tunables a free-form remediation writes, so a loader can refuse one that contradicts its own
expectation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from nodetune.facts.model import Disruption
from nodetune.facts.record import record
from nodetune.rules.operators import OPERATORS, as_text, describe, format_value, satisfied, target

VALUE_OPERATORS = ("equals", "one_of", "min", "max")


class TunableError(ValueError):
    """A tunable declaration or expectation that cannot work; `keys` locate it in the setting."""

    def __init__(self, keys: tuple[str, ...], text: str) -> None:
        super().__init__(text)
        self.keys, self.text = keys, text


@record(frozen=True)
class Tunable:
    """One knob: how to read it, where it persists, how to write a value to it."""

    kind: ClassVar[str]
    disruption: ClassVar[Disruption] = Disruption.NONE

    @property
    def name(self) -> str:
        raise NotImplementedError

    def fact(self) -> str:
        raise NotImplementedError

    def persisted(self) -> Any:
        """The persisted fact as a setting writes it (a path, or a condition), or None."""
        return None

    def expectation(self, expect: Mapping[str, Any]) -> dict[str, Any]:
        """The rule's expectation on `fact()` for what the setting wants of the tunable."""
        return dict(expect)

    def value_problem(self, value: Any) -> str | None:
        """Why `value` cannot be written to this tunable (None when it can)."""
        return None

    def fix(self, value: Any) -> str:
        raise NotImplementedError

    def variables(self, value: Any) -> dict[str, Any]:
        raise NotImplementedError

    role: ClassVar[str] = ""
    task: ClassVar[str] = ""

    def shown(self, value: Any) -> str:
        """The value as the host will hold it, for a plan or a diff ("iommu=pt")."""
        return format_value(value)

    def remediation(self, value: Any) -> dict[str, Any]:
        return {"role": self.role, "task": self.task, "vars": self.variables(value),
                "value": value}


def _text_of(value: Any) -> str:
    return as_text(value)


# -- sysctl -------------------------------------------------------------------------------

# sysctls whose collector reports them under a section of their own
SYSCTL_FACTS: dict[str, str] = {
    "vm.swappiness": "memory.swappiness", "vm.zone_reclaim_mode": "memory.zone_reclaim_mode",
    "vm.dirty_ratio": "memory.dirty_ratio",
    "vm.dirty_background_ratio": "memory.dirty_background_ratio",
    "kernel.numa_balancing": "numa.balancing",
}


@record(frozen=True)
class Sysctl(Tunable):
    kind: ClassVar[str] = "sysctl"
    role: ClassVar[str] = "kernel"
    task: ClassVar[str] = "sysctl"
    sysctl: str = ""

    @property
    def name(self) -> str:
        return f"sysctl {self.sysctl}"

    def fact(self) -> str:
        return SYSCTL_FACTS.get(self.sysctl, f"kernel.sysctl.{self.sysctl}")

    def persisted(self) -> Any:
        return f"kernel.persisted.sysctl.{self.sysctl}.value"

    def value_problem(self, value: Any) -> str | None:
        if isinstance(value, (dict, list)) or not _text_of(value):
            return f"a sysctl takes a number or text, not {format_value(value)}"
        return None

    def fix(self, value: Any) -> str:
        return f"sysctl -w {self.sysctl}={_text_of(value)} and persist it in /etc/sysctl.d/"

    def variables(self, value: Any) -> dict[str, Any]:
        return {"kernel_sysctl": {self.sysctl: _text_of(value)}}


# -- sysfs knobs --------------------------------------------------------------------------

# energy_perf_bias names as the kernel maps them (arch/x86/kernel/cpu/intel_epb.c)
EPB_VALUES = {"performance": 0, "balance-performance": 4, "normal": 6, "balance-power": 8,
              "power": 15}


@record(frozen=True)
class Knob:
    """A sysfs file one of nodetune's roles writes, and the fact that reports it."""

    fact: str
    role: str
    task: str
    variable: str
    fix: Callable[[Any], str]
    choices: tuple[Any, ...] = ()  # empty: any text
    encode: Callable[[Any], Any] = _text_of  # the role variable's form of a value


def _boolean(value: Any) -> bool:
    return as_text(value).lower() in ("1", "y", "yes", "on", "true", "enabled")


def _epb_number(value: Any) -> str:
    return str(EPB_VALUES.get(as_text(value), as_text(value)))


SYSFS_KNOBS: dict[str, Knob] = {
    "/sys/kernel/mm/transparent_hugepage/enabled": Knob(
        "memory.thp.enabled", "memory", "thp", "memory_thp_enabled",
        lambda v: f"echo {_text_of(v)} > /sys/kernel/mm/transparent_hugepage/enabled",
        choices=("always", "madvise", "never")),
    "/sys/kernel/mm/transparent_hugepage/defrag": Knob(
        "memory.thp.defrag", "memory", "thp", "memory_thp_defrag",
        lambda v: f"echo {_text_of(v)} > /sys/kernel/mm/transparent_hugepage/defrag",
        choices=("always", "defer", "defer+madvise", "madvise", "never")),
    "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor": Knob(
        "cpu.governor", "cpu", "governor", "cpu_governor",
        lambda v: f"cpupower frequency-set -g {_text_of(v)}"),
    "/sys/devices/system/cpu/cpu*/cpufreq/energy_performance_preference": Knob(
        "cpu.energy_performance_preference", "cpu", "energy_performance_preference",
        "cpu_energy_performance_preference",
        lambda v: f"echo {_text_of(v)} > "
                  "/sys/devices/system/cpu/cpu*/cpufreq/energy_performance_preference"),
    "/sys/devices/system/cpu/cpu*/power/energy_perf_bias": Knob(
        "cpu.energy_perf_bias", "cpu", "energy_perf_bias", "cpu_energy_perf_bias",
        lambda v: f"cpupower set -b {_epb_number(v)}",
        choices=(*EPB_VALUES, *range(16))),
    "/sys/devices/system/cpu/cpufreq/boost": Knob(
        "cpu.boost", "cpu", "boost", "cpu_boost",
        lambda v: (f"echo {1 if _boolean(v) else 0} > /sys/devices/system/cpu/cpufreq/boost "
                   f"(or echo {0 if _boolean(v) else 1} > "
                   "/sys/devices/system/cpu/intel_pstate/no_turbo)"),
        choices=(True, False), encode=lambda v: "on" if _boolean(v) else "off"),
}


@record(frozen=True)
class SysfsKnob(Tunable):
    kind: ClassVar[str] = "sysfs"
    path: str = ""

    @property
    def knob(self) -> Knob:
        return SYSFS_KNOBS[self.path]

    @property
    def name(self) -> str:
        return f"sysfs {self.path}"

    def fact(self) -> str:
        return self.knob.fact

    def value_problem(self, value: Any) -> str | None:
        choices = self.knob.choices
        if choices and not any(satisfied(value, {"equals": c}) for c in choices):
            return (f"{format_value(value)} cannot be written to {self.path} (one of "
                    f"{', '.join(format_value(c) for c in choices)})")
        return None

    def fix(self, value: Any) -> str:
        return self.knob.fix(value)

    def remediation(self, value: Any) -> dict[str, Any]:
        return {"role": self.knob.role, "task": self.knob.task,
                "vars": {self.knob.variable: self.knob.encode(value)}, "value": value}


# -- kernel command line ------------------------------------------------------------------

@record(frozen=True)
class CmdlineArg(Tunable):
    kind: ClassVar[str] = "cmdline"
    role: ClassVar[str] = "kernel"
    task: ClassVar[str] = "cmdline"
    disruption: ClassVar[Disruption] = Disruption.REBOOT
    arg: str = ""

    @property
    def name(self) -> str:
        return f"kernel argument {self.arg}"

    def fact(self) -> str:
        return f"kernel.cmdline_args.{self.arg}"

    def persisted(self) -> Any:
        return f"derived.persisted_cmdline_args.{self.arg}"

    def value_problem(self, value: Any) -> str | None:
        if isinstance(value, (dict, list)) or " " in as_text(value):
            return f"a kernel argument takes one word, not {format_value(value)}"
        return None

    def fix(self, value: Any) -> str:
        return f"add {self.arg}={_text_of(value)} to the kernel command line and reboot"

    def shown(self, value: Any) -> str:
        return f"{self.arg}={_text_of(value)}"

    def variables(self, value: Any) -> dict[str, Any]:
        return {"kernel_cmdline": {self.arg: _text_of(value)}}


# -- kernel modules -----------------------------------------------------------------------

@record(frozen=True)
class Module(Tunable):
    kind: ClassVar[str] = "module"
    role: ClassVar[str] = "modules"
    task: ClassVar[str] = "load"
    module: str = ""

    @property
    def name(self) -> str:
        return f"module {self.module}"

    def fact(self) -> str:
        return "kernel.modules"

    def persisted(self) -> Any:
        return {"fact": f"kernel.persisted.modprobe.{self.module}.load_at_boot", "equals": True}

    def expectation(self, expect: Mapping[str, Any]) -> dict[str, Any]:
        return {"contains": self.module}

    def value_problem(self, value: Any) -> str | None:
        return None if value == "loaded" else "a module tunable wants `equals: loaded`"

    def fix(self, value: Any) -> str:
        return f"modprobe {self.module} and add it to /etc/modules-load.d/"

    def variables(self, value: Any) -> dict[str, Any]:
        return {"modules_load": [self.module]}


@record(frozen=True)
class ModuleOption(Tunable):
    kind: ClassVar[str] = "module"
    role: ClassVar[str] = "modules"
    task: ClassVar[str] = "options"
    disruption: ClassVar[Disruption] = Disruption.REBOOT
    module: str = ""
    option: str = ""

    @property
    def name(self) -> str:
        return f"module option {self.module} {self.option}"

    def fact(self) -> str:
        return f"kernel.persisted.modprobe.{self.module}.options"

    def expectation(self, expect: Mapping[str, Any]) -> dict[str, Any]:
        value = re.escape(_text_of(expect.get("equals")))
        return {"regex": rf"(^|\s){re.escape(self.option)}={value}(\s|$)"}

    def value_problem(self, value: Any) -> str | None:
        if isinstance(value, (dict, list)) or " " in as_text(value) or not as_text(value):
            return f"a module option takes one word, not {format_value(value)}"
        return None

    def fix(self, value: Any) -> str:
        return (f"add `options {self.module} {self.option}={_text_of(value)}` to "
                "/etc/modprobe.d/ and reboot (or reload the module)")

    def variables(self, value: Any) -> dict[str, Any]:
        return {"modules_options": {self.module: f"{self.option}={_text_of(value)}"}}


# -- services -----------------------------------------------------------------------------

SERVICE_STATES = ("running", "stopped")


@record(frozen=True)
class Service(Tunable):
    kind: ClassVar[str] = "service"
    role: ClassVar[str] = "services"
    disruption: ClassVar[Disruption] = Disruption.SERVICE_RESTART
    unit: str = ""

    @property
    def name(self) -> str:
        return f"service {self.unit}"

    def fact(self) -> str:
        return f"services.units.{self.unit}.state"

    def value_problem(self, value: Any) -> str | None:
        if value not in SERVICE_STATES:
            return f"a service is {' or '.join(SERVICE_STATES)}, not {format_value(value)}"
        return None

    def fix(self, value: Any) -> str:
        verb = "enable --now" if value == "running" else "disable --now"
        return f"systemctl {verb} {self.unit}"

    def remediation(self, value: Any) -> dict[str, Any]:
        on = value == "running"
        return {"role": self.role, "task": "enable" if on else "disable",
                "vars": {"services_enabled" if on else "services_disabled": [self.unit]},
                "value": value}


# -- devices: block queues and PCI registers ----------------------------------------------

BLOCK_QUEUE_ATTRIBUTES = ("scheduler", "read_ahead_kb", "nr_requests", "max_sectors_kb")


@record(frozen=True)
class BlockQueue(Tunable):
    kind: ClassVar[str] = "block_queue"
    role: ClassVar[str] = "storage"
    task: ClassVar[str] = "block"
    attribute: str = ""
    devices: str = ""  # an item selector of storage.block: "kind=nvme|disk"

    @property
    def name(self) -> str:
        return f"block queue {self.attribute}" + (f" of [{self.devices}]" if self.devices else "")

    def fact(self) -> str:
        return f"storage.block[{self.devices or '*'}].{self.attribute}"

    def value_problem(self, value: Any) -> str | None:
        if self.attribute != "scheduler" and (isinstance(value, bool) or not isinstance(
                value, int) or value <= 0):
            return f"{self.attribute} takes a positive whole number, not {format_value(value)}"
        return None

    def fix(self, value: Any) -> str:
        return f"echo {_text_of(value)} > /sys/block/${{subject}}/queue/{self.attribute}"

    def variables(self, value: Any) -> dict[str, Any]:
        return {"storage_block": {"${subject}": {self.attribute: value}}}


# PCIe Device Control register, Max_Read_Request_Size field (bits 14:12): 128 << code
MRRS_CODES = {128 << code: code for code in range(6)}


@record(frozen=True)
class PciRegister(Tunable):
    kind: ClassVar[str] = "pci_register"
    role: ClassVar[str] = "nic"
    task: ClassVar[str] = "max_read_request"
    register: str = "max_read_request"
    devices: str = ""  # an item selector of pci.devices: "vendor=0x15b3,kind=nic|infiniband"

    REGISTERS: ClassVar[tuple[str, ...]] = ("max_read_request",)

    @property
    def name(self) -> str:
        return f"PCI register {self.register}" + (f" of [{self.devices}]" if self.devices else "")

    def fact(self) -> str:
        return f"pci.devices[{self.devices or '*'}].max_read_request_bytes"

    def value_problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or value not in MRRS_CODES:
            return (f"max_read_request takes one of {', '.join(map(str, MRRS_CODES))} bytes, "
                    f"not {format_value(value)}")
        return None

    def fix(self, value: Any) -> str:
        code = MRRS_CODES.get(int(value), 5)
        return (f"setpci -s ${{subject}} CAP_EXP+8.w={code:x}000:7000 (runtime only; nodetune "
                "apply repeats it at every boot)")

    def variables(self, value: Any) -> dict[str, Any]:
        return {"nic_max_read_request": {"${subject}": value}}


# -- parsing ------------------------------------------------------------------------------

KINDS = ("sysctl", "sysfs", "cmdline", "module", "service", "block_queue", "pci_register")
QUALIFIERS = {"module": ("option",), "block_queue": ("devices",), "pci_register": ("devices",)}


def parse(data: Any) -> Tunable:
    """The tunable a setting's `tunable:` mapping declares; TunableError names what is wrong."""
    if not isinstance(data, Mapping):
        raise TunableError((), f"tunable must be a mapping {{<kind>: NAME}} (kinds: "
                               f"{', '.join(KINDS)})")
    kinds = [k for k in data if k in KINDS]
    if len(kinds) != 1:
        raise TunableError((), f"tunable names exactly one kind of {', '.join(KINDS)}")
    kind = kinds[0]
    for key in data:
        if key != kind and key not in QUALIFIERS.get(kind, ()):
            allowed = ", ".join(QUALIFIERS.get(kind, ())) or "nothing else"
            raise TunableError((str(key),), f"unknown key {key!r} for a {kind} tunable "
                                            f"(allowed: {allowed})")
    for key, value in data.items():
        if not isinstance(value, str) or not value or (key != "devices" and " " in value):
            raise TunableError((str(key),), f"{key} must be a name, not {format_value(value)}")
    name = data[kind]
    if kind == "sysctl":
        return Sysctl(sysctl=name)
    if kind == "sysfs":
        if name not in SYSFS_KNOBS:
            raise TunableError((kind,), f"no nodetune role writes {name} (known sysfs knobs: "
                                        f"{', '.join(SYSFS_KNOBS)})")
        return SysfsKnob(path=name)
    if kind == "cmdline":
        return CmdlineArg(arg=name)
    if kind == "module":
        return ModuleOption(module=name, option=data["option"]) if "option" in data else \
            Module(module=name)
    if kind == "service":
        return Service(unit=name)
    if kind == "block_queue":
        if name not in BLOCK_QUEUE_ATTRIBUTES:
            raise TunableError((kind,), f"unknown block queue attribute {name!r} (one of "
                                        f"{', '.join(BLOCK_QUEUE_ATTRIBUTES)})")
        return BlockQueue(attribute=name, devices=data.get("devices", ""))
    if name not in PciRegister.REGISTERS:
        raise TunableError((kind,), f"unknown PCI register {name!r} (one of "
                                    f"{', '.join(PciRegister.REGISTERS)})")
    return PciRegister(register=name, devices=data.get("devices", ""))


# -- a setting bound to a tunable ---------------------------------------------------------

@record(frozen=True)
class TunableSetting:
    """A tunable plus what a setting wants of it: the rule engine's `Remedy` for the setting."""

    tunable: Tunable
    write: Any = None  # the value to write, when the setting names it
    fix_text: str = ""  # the setting's own fix text, replacing the generated one
    static_value: Any = None  # known at load time: a module's state, a module option's value

    @property
    def name(self) -> str:
        return self.tunable.name

    def wanted(self, expect: Mapping[str, Any], current: Any) -> Any:
        if self.static_value is not None:
            return self.static_value
        if self.write is not None:
            return self.write
        return target(expect, current)

    def fix(self, value: Any) -> str:
        return self.fix_text or self.tunable.fix(value)

    def remediation(self, value: Any) -> dict[str, Any]:
        return self.tunable.remediation(value)


@record(frozen=True)
class Bound:
    """A setting bound to its tunable: the remedy, the rule's expectation on `tunable.fact()`,
    and the value written for the first documented subject (None: known only on a node)."""

    remedy: TunableSetting
    expect: dict[str, Any]
    example: Any = None


def bind(tunable: Tunable, setting: Mapping[str, Any], variables: Mapping[str, Any]) -> Bound:
    """The remedy and the rule expectation of a setting on `tunable`.

    Refuses (TunableError) an expectation no written value can satisfy: one that names no
    value (`regex`, `contains`, ...), a contradictory one, a `write:` that fails it, or a value
    the tunable cannot take.
    """
    wanted = {op: _with_variables(setting[op], variables) for op in OPERATORS if op in setting}
    others = [op for op in wanted if op not in VALUE_OPERATORS]
    if others:
        raise TunableError((others[0],), f"{others[0]} names no value to write to "
                                         f"{tunable.name}: use {', '.join(VALUE_OPERATORS)}")
    if not wanted:
        raise TunableError((), f"no expectation for {tunable.name}: give one of "
                               f"{', '.join(VALUE_OPERATORS)}")
    write = _with_variables(setting.get("write"), variables)
    remedy = TunableSetting(tunable, write=write, fix_text=str(setting.get("fix") or ""))
    if isinstance(tunable, Module):
        remedy = TunableSetting(tunable, fix_text=remedy.fix_text,
                                static_value=wanted.get("equals"))
        _check_value(tunable, ("equals",), remedy.static_value, wanted)
        return Bound(remedy, tunable.expectation(wanted), remedy.static_value)
    if isinstance(tunable, ModuleOption) and set(wanted) != {"equals"}:
        raise TunableError((next(iter(wanted)),), "a module option wants `equals: VALUE`")
    example = None
    for subject_expect in static_expectations(wanted):
        value = write if write is not None else target(subject_expect)
        keys = ("write",) if write is not None else (next(iter(subject_expect)),)
        if value is None:
            raise TunableError(keys, f"{describe(subject_expect)} names no value that "
                                     f"satisfies it: nothing to write to {tunable.name}")
        _check_value(tunable, keys, value, subject_expect)
        example = value if example is None else example
    if isinstance(tunable, ModuleOption):  # the check is a pattern: the value is the wanted one
        remedy = TunableSetting(tunable, fix_text=remedy.fix_text, static_value=example)
        return Bound(remedy, tunable.expectation(wanted), example)
    return Bound(remedy, {op: setting[op] for op in OPERATORS if op in setting}, example)


def _check_value(tunable: Tunable, keys: tuple[str, ...], value: Any,
                 expect: Mapping[str, Any]) -> None:
    if not satisfied(value, expect):
        raise TunableError(keys, f"writing {format_value(value)} to {tunable.name} would not "
                                 f"satisfy {describe(expect)}")
    problem = tunable.value_problem(value)
    if problem:
        raise TunableError(keys, problem)


def static_expectations(expect: Mapping[str, Any],
                        variables: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The expectation as known at load time, variables filled in: one per documented subject
    of a per_subject operand; operands read from other facts are left out (they are known only
    on a node)."""
    if variables is not None:
        expect = {op: _with_variables(v, variables) for op, v in expect.items()}
    subjects: set[str | None] = set()
    for value in expect.values():
        if isinstance(value, Mapping) and isinstance(value.get("per_subject"), Mapping):
            subjects |= {str(s) for s in value["per_subject"]}
    out = []
    for subject in sorted(subjects, key=str) or [None]:
        one: dict[str, Any] = {}
        for op, value in expect.items():
            if isinstance(value, Mapping) and "per_subject" in value:
                if subject in value["per_subject"]:
                    one[op] = value["per_subject"][subject]
            elif not (isinstance(value, Mapping) and "fact" in value):
                one[op] = value
        if one:
            out.append(one)
    return out


_WHOLE_VAR = re.compile(r"\$\{([^}:]+)\}")


def _with_variables(value: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _WHOLE_VAR.fullmatch(value.strip())
        if whole and whole.group(1) in variables:
            return variables[whole.group(1)]
        return value
    if isinstance(value, list):
        return [_with_variables(v, variables) for v in value]
    if isinstance(value, Mapping):
        return {k: _with_variables(v, variables) for k, v in value.items()}
    return value


# -- recognising the tunables a free-form remediation writes -------------------------------

def written_by(variables: Mapping[str, Any]) -> list[tuple[Tunable, Any]]:
    """(tunable, literal value) for each value-kind tunable these role variables write."""
    out: list[tuple[Tunable, Any]] = []
    for name, value in (variables.get("kernel_sysctl") or {}).items():
        out.append((Sysctl(sysctl=str(name)), value))
    for name, value in (variables.get("kernel_cmdline") or {}).items():
        out.append((CmdlineArg(arg=str(name)), value))
    for per_device in (variables.get("storage_block") or {}).values():
        for attribute, value in (per_device or {}).items():
            out.append((BlockQueue(attribute=str(attribute)), value))
    for value in (variables.get("nic_max_read_request") or {}).values():
        out.append((PciRegister(), value))
    for path, knob in SYSFS_KNOBS.items():
        if knob.variable in variables:
            out.append((SysfsKnob(path=path), variables[knob.variable]))
    return [(t, v) for t, v in out if not (isinstance(v, str) and "${" in v)]
