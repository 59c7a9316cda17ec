"""CPU facts: model, sockets/cores/threads, online and isolated CPUs, cpufreq (limits per CPU
set), core kinds of hybrid CPUs, thermal throttling and C-states."""

from __future__ import annotations

import re
from dataclasses import field
from typing import Any

from nodetune.collectors import Context, register
from nodetune.collectors.cpuset import (
    CPU_DIR,
    cpu_dirs,
    cpu_to_node,
    node_cpus,
    online_cpus,
    present_cpus,
)
from nodetune.collectors.sysfs import FactNotes
from nodetune.errors import CollectorError
from nodetune.facts import cpulist
from nodetune.facts.model import FactSet
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

# lscpu's names for Arm implementers and parts (util-linux sys-utils/lscpu-arm.c).
ARM_IMPLEMENTERS = {
    0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon",
    0x4E: "NVIDIA", 0x50: "APM", 0x51: "Qualcomm", 0x53: "Samsung", 0x56: "Marvell",
    0x61: "Apple", 0x69: "Intel", 0xC0: "Ampere",
}
ARM_PARTS = {
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD05): "Cortex-A55", (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73", (0x41, 0xD0A): "Cortex-A75",
    (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1", (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78", (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD46): "Cortex-A510", (0x41, 0xD47): "Cortex-A710", (0x41, 0xD48): "Cortex-X2",
    (0x41, 0xD49): "Neoverse-N2", (0x41, 0xD4A): "Neoverse-E1", (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD80): "Cortex-A520", (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4",
    (0x41, 0xD84): "Neoverse-V3", (0x41, 0xD85): "Cortex-X925", (0x41, 0xD87): "Cortex-A725",
    (0x41, 0xD8E): "Neoverse-N3", (0x48, 0xD01): "Kunpeng-920", (0x4E, 0x004): "Carmel",
    (0x4E, 0x010): "Olympus", (0xC0, 0xAC3): "Ampere-1", (0xC0, 0xAC4): "Ampere-1a",
}


@record(frozen=True, kw_only=True)
class CState:
    name: str
    latency_us: int | None
    disabled_cpus: int


@record(frozen=True, kw_only=True)
class CpuInfo:
    id: int
    core_id: int | None
    socket_id: int | None
    numa_node: int | None


@record(frozen=True, kw_only=True)
class CacheGroup:
    """CPUs sharing one cache (an L2 or L3 of sysfs `cpu*/cache/index*`)."""

    level: int
    cpus: list[int]


@record(frozen=True, kw_only=True)
class FreqLimits:
    """The cpufreq limits one set of CPUs shares (hybrid and big.LITTLE CPUs, or an operator's
    cap on some cores, give several sets)."""

    cpus: str  # a CPU list, "0-4,10-14"
    min_khz: int | None  # scaling_min_freq
    max_khz: int | None  # scaling_max_freq
    cpuinfo_min_khz: int | None  # what the hardware allows
    cpuinfo_max_khz: int | None


@record(frozen=True, kw_only=True)
class CpuKind:
    """One kind of core on a hybrid or heterogeneous CPU: Intel P-cores and E-cores, Arm
    big.LITTLE parts (one kind on a homogeneous CPU)."""

    name: str  # "P-core", "E-core", "Cortex-X925"
    cpus: str  # a CPU list
    cpuinfo_max_freq_khz: int | None


@record(frozen=True, kw_only=True)
class ThermalThrottle:
    """Thermal throttling events since boot, x86 `cpu*/thermal_throttle/*_count`."""

    core_events: int | None  # sum over CPUs of core_throttle_count
    package_events: int | None  # sum over packages of package_throttle_count
    cpus_throttled: str  # CPUs whose core counter is not 0, a CPU list ("" when none)


@record(frozen=True, kw_only=True)
class CpuFacts(FactSet):
    architecture: str | None = None
    vendor: str | None = None
    model_name: str | None = None
    sockets: int | None = None
    cores: int | None = None
    threads_per_core: int | None = None
    smt_active: bool | None = None
    online: list[int] = field(default_factory=list)
    offline: list[int] = field(default_factory=list)
    isolated: list[int] = field(default_factory=list)
    nohz_full: list[int] = field(default_factory=list)
    cpus: list[CpuInfo] = field(default_factory=list)
    hypervisor: bool = False
    frequency_driver: str | None = None
    governor: str | None = None
    governors: dict[str, str] = field(default_factory=dict)
    energy_performance_preference: str | None = None
    energy_perf_bias: int | str | None = None
    boost: bool | None = None
    min_freq_khz: int | None = None
    max_freq_khz: int | None = None
    cpuinfo_min_freq_khz: int | None = None
    cpuinfo_max_freq_khz: int | None = None
    freq_limits: list[FreqLimits] = field(default_factory=list)
    kinds: list[CpuKind] = field(default_factory=list)
    thermal_throttle: ThermalThrottle | None = None
    cpuidle_driver: str | None = None
    cstates: list[CState] = field(default_factory=list)
    cstates_enabled: list[str] = field(default_factory=list)
    cache_groups: list[CacheGroup] = field(default_factory=list)  # outermost level first


# -- pure parsers ------------------------------------------------------------------------------
def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """/proc/cpuinfo -> one dict per block (per processor, plus trailing machine blocks)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


@record(frozen=True)
class CpuIdentity:
    architecture: str | None
    vendor: str | None
    model_name: str | None
    hypervisor: bool


def identify(blocks: list[dict[str, str]]) -> CpuIdentity:
    """Architecture, vendor, model name and the x86 `hypervisor` flag from cpuinfo blocks."""
    procs = [b for b in blocks if "processor" in b] or blocks
    first = procs[0] if procs else {}
    if "vendor_id" in first or "flags" in first:  # x86
        flags = first.get("flags", "").split()
        arch = "x86_64" if "lm" in flags else "i686"
        return CpuIdentity(arch, first.get("vendor_id"), first.get("model name"),
                           "hypervisor" in flags)
    if "cpu implementer" in first:  # Arm: one name per distinct part, in order (big.LITTLE)
        arch = "aarch64" if first.get("cpu architecture", "8").startswith("8") else "armv7l"
        impl = int(first["cpu implementer"], 16)
        names: list[str] = []
        for b in procs:
            part = int(b.get("cpu part", "0"), 16)
            name = ARM_PARTS.get((int(b.get("cpu implementer", "0"), 16), part), f"part {part:#x}")
            if name not in names:
                names.append(name)
        return CpuIdentity(arch, ARM_IMPLEMENTERS.get(impl, f"{impl:#x}"), " / ".join(names), False)
    if "cpu" in first and any("timebase" in b for b in blocks):  # POWER
        model = first["cpu"].split(",")[0].strip()
        vendor = "IBM" if model.startswith("POWER") else None
        return CpuIdentity("ppc64", vendor, model, False)
    if "isa" in first:
        return CpuIdentity("riscv64", first.get("mvendorid"), first.get("uarch"), False)
    return CpuIdentity(None, None, None, False)


def parse_boot_cpulist(cmdline: str, key: str) -> list[int] | None:
    """CPUs of `isolcpus=` / `nohz_full=` on a command line; flags like "domain," are dropped."""
    m = re.search(rf"(?:^|\s){key}=(\S+)", cmdline)
    if not m:
        return None
    parts = [p for p in m.group(1).split(",") if p and (p[0].isdigit())]
    return cpulist.parse(",".join(parts))


def common_value(values: list[str]) -> str | None:
    """The one value all CPUs share, "mixed" when they differ, None when there is none."""
    distinct = set(values)
    if not distinct:
        return None
    return distinct.pop() if len(distinct) == 1 else "mixed"


# -- reading -----------------------------------------------------------------------------------
def _cpuset_file(root: HostRoot, base: str, names: tuple[str, str]) -> list[int] | None:
    """A topology CPU set: the `*_list` file, else the mask (older kernels, some gathers)."""
    text = root.read_str(f"{base}/{names[0]}", None)
    if text is not None:
        return cpulist.parse_or_none(text)
    return cpulist.parse_or_none(root.read_str(f"{base}/{names[1]}", None), mask=True)


def _topology(root: HostRoot, notes: FactNotes, online: list[int], node_of: dict[int, int],
              blocks: list[dict[str, str]]) -> dict[str, Any]:
    """Sockets, cores and threads per core counted as hwloc counts them (Slurm uses hwloc):

    - a package is a set of CPUs sharing `package_cpus` (`core_siblings`), so POWER LPARs with
      physical_package_id -1 and firmware that reuses one id for two packages count right;
      the ids count when no tree file gives the sets;
    - a core is a set of CPUs sharing `thread_siblings` *and* `core_id`: the two cores of an
      AMD Bulldozer compute unit share thread_siblings but not core_id, and hwloc makes them
      two cores (hwloc topology-linux.c, look_sysfscpu); without thread_siblings, a core is
      a (package, core_id) pair.
    """
    alive = set(online)
    cpus: list[CpuInfo] = []
    packages: set[tuple[int, ...]] = set()
    package_ids: set[int] = set()
    cores: dict[tuple[Any, ...], int] = {}
    for cpu in online:
        base = f"{CPU_DIR}/cpu{cpu}/topology"
        core = root.read_int(f"{base}/core_id", None)
        socket = root.read_int(f"{base}/physical_package_id", None)
        if socket is not None and socket < 0:  # POWER LPARs report -1: no package known
            socket = None
        package = _cpuset_file(root, base, ("package_cpus_list", "package_cpus")) or \
            _cpuset_file(root, base, ("core_siblings_list", "core_siblings"))
        package_set = tuple(c for c in package if c in alive) if package else None
        if package_set:
            packages.add(package_set)
        if socket is not None:
            package_ids.add(socket)
        sib = _cpuset_file(root, base, ("core_cpus_list", "core_cpus")) or \
            _cpuset_file(root, base, ("thread_siblings_list", "thread_siblings"))
        key: tuple[Any, ...] | None = None
        if sib:
            key = ("siblings", tuple(c for c in sib if c in alive), core)
        elif core is not None and (package_set or socket is not None):
            key = ("package", package_set or socket, core)
        if key is not None:
            cores[key] = cores.get(key, 0) + 1
        cpus.append(CpuInfo(id=cpu, core_id=core, socket_id=socket, numa_node=node_of.get(cpu)))
    out: dict[str, Any] = {"cpus": cpus, "sockets": None, "cores": None, "threads_per_core": None}
    if packages:
        out["sockets"] = len(packages)
        notes.source("sockets", f"{CPU_DIR}/cpu*/topology/package_cpus_list (core_siblings)")
    elif package_ids:
        out["sockets"] = len(package_ids)
        notes.source("sockets", f"{CPU_DIR}/cpu*/topology/physical_package_id")
    else:
        ids = {b["physical id"] for b in blocks if "physical id" in b}
        if ids:
            out["sockets"] = len(ids)
            notes.source("sockets", "/proc/cpuinfo")
        else:
            notes.missing("sockets", "no core_siblings, no physical_package_id (or it is -1) "
                                     "and no 'physical id' in /proc/cpuinfo")
    if cores:
        out["cores"] = len(cores)
        out["threads_per_core"] = max(cores.values())
        src = f"{CPU_DIR}/cpu*/topology/thread_siblings_list,core_id"
        notes.source("cores", src)
        notes.source("threads_per_core", src)
    else:
        for fact in ("cores", "threads_per_core"):
            notes.missing(fact, f"no {CPU_DIR}/cpu*/topology/thread_siblings or core_id with "
                                "a package in this tree")
    notes.source("cpus", f"{CPU_DIR}/cpu*/topology")
    return out


def _kinds(root: HostRoot, notes: FactNotes, online: list[int],
           blocks: list[dict[str, str]]) -> list[CpuKind]:
    """Core kinds: Intel hybrid CPUs name their P- and E-cores in the perf PMU directories
    /sys/devices/cpu_core/cpus and cpu_atom/cpus (Linux >= 5.13); Arm CPUs give each CPU's
    part in /proc/cpuinfo. One kind on a homogeneous CPU; none when the tree cannot tell."""
    alive = set(online)
    groups: dict[str, list[int]] = {}
    for pmu, name in (("cpu_core", "P-core"), ("cpu_atom", "E-core")):
        text = root.read_str(f"/sys/devices/{pmu}/cpus", None)
        if text is not None:
            groups[name] = [c for c in cpulist.parse_or_none(text) or [] if c in alive]
    source = "/sys/devices/cpu_core/cpus,cpu_atom/cpus"
    if not groups:
        source = "/proc/cpuinfo CPU implementer/part"
        for b in blocks:
            if "cpu part" not in b or not b.get("processor", "").isdigit():
                continue
            impl, part = int(b.get("cpu implementer", "0"), 16), int(b["cpu part"], 16)
            name = ARM_PARTS.get((impl, part), f"part {part:#x}")
            if int(b["processor"]) in alive:
                groups.setdefault(name, []).append(int(b["processor"]))
    if not groups:
        notes.missing("kinds", "neither /sys/devices/cpu_core/cpus (Intel hybrid) nor Arm "
                               "CPU parts in /proc/cpuinfo")
        return []
    notes.source("kinds", source)
    out = []
    for name, ids in sorted(groups.items(), key=lambda item: min(item[1], default=0)):
        maxes = [v for c in ids if (v := root.read_int(
            f"{CPU_DIR}/cpu{c}/cpufreq/cpuinfo_max_freq", None)) is not None]
        out.append(CpuKind(name=name, cpus=cpulist.format(sorted(ids)),
                           cpuinfo_max_freq_khz=max(maxes) if maxes else None))
    return out


def _thermal_throttle(root: HostRoot, notes: FactNotes, online: list[int],
                      cpus: list[CpuInfo]) -> ThermalThrottle | None:
    """Sums of the x86 thermal-throttle counters (drivers/thermal/intel/therm_throt.c)."""
    core_total, package_total, hit = 0, 0, False
    throttled: list[int] = []
    by_package: dict[Any, int] = {}
    socket_of = {c.id: c.socket_id for c in cpus}
    for cpu in online:
        base = f"{CPU_DIR}/cpu{cpu}/thermal_throttle"
        core = root.read_int(f"{base}/core_throttle_count", None)
        if core is None:  # the name before Linux 2.6.31
            core = root.read_int(f"{base}/count", None)
        if core is not None:
            hit = True
            core_total += core
            if core:
                throttled.append(cpu)
        package = root.read_int(f"{base}/package_throttle_count", None)
        if package is not None:
            hit = True
            by_package[socket_of.get(cpu)] = max(package, by_package.get(socket_of.get(cpu), 0))
    if not hit:
        notes.missing("thermal_throttle", f"no {CPU_DIR}/cpu*/thermal_throttle (x86 only)")
        return None
    package_total = sum(by_package.values())
    notes.source("thermal_throttle", f"{CPU_DIR}/cpu*/thermal_throttle/*_throttle_count")
    return ThermalThrottle(core_events=core_total, package_events=package_total if by_package
                           else None, cpus_throttled=cpulist.format(throttled))


_POLICY_FILES = ("scaling_governor", "scaling_max_freq", "cpuinfo_max_freq", "scaling_driver")


def _policies(root: HostRoot, online: list[int]) -> list[tuple[str, list[int]]]:
    """(cpufreq directory, its online CPUs) per policy; per-CPU directories on old kernels."""
    base = f"{CPU_DIR}/cpufreq"
    alive = set(online)
    out: list[tuple[str, list[int]]] = []
    for name in root.listdir(base):
        if re.fullmatch(r"policy\d+", name):
            text = root.read_str(f"{base}/{name}/affected_cpus", "")
            cpus = cpulist.parse_or_none(text.replace(" ", ",")) or []
            cpus = [c for c in cpus if c in alive]
            if cpus:
                out.append((f"{base}/{name}", cpus))
    if out:
        return out
    # old kernels, and gathered trees that keep cpuN/cpufreq but not cpufreq/policyN (the
    # link target); a policy shared by several CPUs is read once, by its first CPU
    out, seen = [], set()
    for c in online:
        path = f"{CPU_DIR}/cpu{c}/cpufreq"
        if c in seen or not any(root.exists(f"{path}/{name}") for name in _POLICY_FILES):
            continue
        shared = root.read_str(f"{path}/affected_cpus", None)
        cpus = [x for x in cpulist.parse_or_none(shared.replace(" ", ",")) or [] if x in alive] \
            if shared else [c]
        seen.update(cpus or [c])
        out.append((path, cpus or [c]))
    return out


def src_of(policy: str) -> str:
    return f"{CPU_DIR}/cpufreq/policy*" if "/policy" in policy else f"{CPU_DIR}/cpu*/cpufreq"


def _cpufreq(root: HostRoot, notes: FactNotes, online: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    policies = _policies(root, online)
    if not policies:
        why = (f"no cpufreq driver: {CPU_DIR}/cpufreq is empty or absent "
               "(common in VMs, or cpufreq disabled in firmware)")
        for fact in ("frequency_driver", "governor", "energy_performance_preference", "boost",
                     "min_freq_khz", "max_freq_khz", "freq_limits"):
            notes.missing(fact, why)
        return out
    first = policies[0][0]
    out["frequency_driver"] = notes.text("frequency_driver", f"{first}/scaling_driver")
    by_gov: dict[str, list[int]] = {}
    epps: list[str] = []
    mins: list[int] = []
    maxs: list[int] = []
    hw_mins: list[int] = []
    hw_maxs: list[int] = []
    by_limits: dict[tuple[int | None, ...], list[int]] = {}
    for path, cpus in policies:
        gov = root.read_str(f"{path}/scaling_governor", None)
        if gov is not None:
            by_gov.setdefault(gov, []).extend(cpus)
        epp = root.read_str(f"{path}/energy_performance_preference", None)
        if epp is not None:
            epps.append(epp)
        limits: list[int | None] = []
        for name, into in (("scaling_min_freq", mins), ("scaling_max_freq", maxs),
                           ("cpuinfo_min_freq", hw_mins), ("cpuinfo_max_freq", hw_maxs)):
            value = root.read_int(f"{path}/{name}", None)
            limits.append(value)
            if value is not None:
                into.append(value)
        if any(v is not None for v in limits):
            by_limits.setdefault(tuple(limits), []).extend(cpus)
    out["governors"] = {g: cpulist.format(c) for g, c in sorted(by_gov.items())}
    out["freq_limits"] = [
        FreqLimits(cpus=cpulist.format(sorted(c)), min_khz=k[0], max_khz=k[1],
                   cpuinfo_min_khz=k[2], cpuinfo_max_khz=k[3])
        for k, c in sorted(by_limits.items(), key=lambda item: min(item[1]))]
    if out["freq_limits"]:
        notes.source("freq_limits", f"{src_of(first)}/scaling_*_freq,cpuinfo_*_freq")
    out["governor"] = common_value(list(by_gov))
    src = src_of(first)
    for fact, values in (("governor", by_gov), ("energy_performance_preference", epps)):
        if values:
            notes.source(fact, f"{src}/{'scaling_governor' if fact == 'governor' else fact}")
        else:
            notes.missing(fact, f"{src} has no {fact} file (driver {out['frequency_driver']})")
    out["energy_performance_preference"] = common_value(epps)
    for fact, found, pick, name in (("min_freq_khz", mins, min, "scaling_min_freq"),
                                    ("max_freq_khz", maxs, max, "scaling_max_freq"),
                                    ("cpuinfo_min_freq_khz", hw_mins, min, "cpuinfo_min_freq"),
                                    ("cpuinfo_max_freq_khz", hw_maxs, max, "cpuinfo_max_freq")):
        out[fact] = pick(found) if found else None
        if found:
            notes.source(fact, f"{src}/{name}")
        else:
            notes.missing(fact, f"no {src}/{name}")
    out["boost"] = _boost(root, notes, first)
    return out


def _boost(root: HostRoot, notes: FactNotes, policy: str) -> bool | None:
    """Turbo/boost: cpufreq/boost (acpi-cpufreq, cppc), intel_pstate/no_turbo, policy boost."""
    for path, invert in ((f"{CPU_DIR}/cpufreq/boost", False),
                         (f"{CPU_DIR}/intel_pstate/no_turbo", True),
                         (f"{policy}/boost", False)):
        value = root.read_int(path, None)
        if value is not None:
            notes.source("boost", path)
            return (value == 0) if invert else (value != 0)
    notes.missing("boost", "no cpufreq/boost, intel_pstate/no_turbo or policy boost file")
    return None


def _energy_perf_bias(root: HostRoot, notes: FactNotes, online: list[int]) -> int | str | None:
    def epb(cpu: int) -> int | None:
        return root.read_int(f"{CPU_DIR}/cpu{cpu}/power/energy_perf_bias", None)

    first = epb(online[0]) if online else None  # absent on the first CPU: absent on all
    values = set() if first is None else {first} | {
        v for c in online[1:] if (v := epb(c)) is not None}
    if not values:
        notes.missing("energy_perf_bias", f"no {CPU_DIR}/cpu*/power/energy_perf_bias "
                                          "(Intel only, kernel >= 5.6)")
        return None
    notes.source("energy_perf_bias", f"{CPU_DIR}/cpu*/power/energy_perf_bias")
    return values.pop() if len(values) == 1 else "mixed"


def _cstates(root: HostRoot, notes: FactNotes, online: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"cstates": [], "cstates_enabled": []}
    out["cpuidle_driver"] = notes.text("cpuidle_driver", f"{CPU_DIR}/cpuidle/current_driver")
    if not online:
        return out
    first = f"{CPU_DIR}/cpu{online[0]}/cpuidle"
    states = sorted((s for s in root.listdir(first) if re.fullmatch(r"state\d+", s)),
                    key=lambda s: int(s[5:]))
    if not states:
        notes.missing("cstates", f"no {first}/state* (no cpuidle driver, or a VM without one)")
        return out
    for state in states:
        name = root.read_str(f"{first}/{state}/name", state)
        latency = root.read_int(f"{first}/{state}/latency", None)
        disabled = sum(1 for c in online
                       if root.read_str(f"{CPU_DIR}/cpu{c}/cpuidle/{state}/disable", "0") == "1")
        out["cstates"].append(CState(name=name, latency_us=latency, disabled_cpus=disabled))
        if disabled < len(online):
            out["cstates_enabled"].append(name)
    notes.source("cstates", f"{CPU_DIR}/cpu*/cpuidle/state*")
    notes.source("cstates_enabled", f"{CPU_DIR}/cpu*/cpuidle/state*/disable")
    return out


def _cache_groups(root: HostRoot, notes: FactNotes) -> list[CacheGroup]:
    """The CPU sets sharing each L2 and L3 cache, outermost level first (what hwloc nests
    between a NUMA node and its cores)."""
    by_level: dict[int, set[tuple[int, ...]]] = {}
    covered: dict[str, set[int]] = {}  # index name -> CPUs already in one of its groups
    # The kernel numbers a CPU's caches by level (L1d, L1i, L2, L3 from CPUID leaf 4 on x86,
    # from the device tree or PPTT on Arm), so an index that holds an L1 on one CPU holds an L1
    # on every CPU: read once, not once per CPU (a 256-thread host has 512 of them).
    first_level: set[str] = set()
    for cpu in cpu_dirs(root):
        base = f"{CPU_DIR}/cpu{cpu}/cache"
        for index in root.listdir(base):
            if not index.startswith("index") or index in first_level or \
                    cpu in covered.get(index, ()):
                continue  # every member of a group lists the same shared_cpu_list: read it once
            level = root.read_int(f"{base}/{index}/level", None)
            if level == 1:
                first_level.add(index)
            if level is None or level < 2:
                continue
            shared = root.read_str(f"{base}/{index}/shared_cpu_list", None)
            if shared is not None:
                group = tuple(cpulist.parse_or_none(shared) or ())
            else:  # older kernels have only the mask (the hwloc gathers 16em64t, 256ppc)
                mask = root.read_str(f"{base}/{index}/shared_cpu_map", None)
                group = tuple(cpulist.parse_or_none(mask, mask=True) or ())
            if not group:
                continue
            covered.setdefault(index, set()).update(group)
            by_level.setdefault(level, set()).add(group)
    if not by_level:
        notes.missing("cache_groups", f"no {CPU_DIR}/cpu*/cache/index*/shared_cpu_list (or "
                                      "shared_cpu_map) of an L2 or L3 cache in this tree")
        return []
    notes.source("cache_groups", f"{CPU_DIR}/cpu*/cache/index*/level,shared_cpu_list (or "
                                 "shared_cpu_map)")
    return [CacheGroup(level=level, cpus=list(group))
            for level in sorted(by_level, reverse=True) for group in sorted(by_level[level])]


def _special_cpus(root: HostRoot, notes: FactNotes, fact: str, cmd_key: str) -> list[int]:
    path = f"{CPU_DIR}/{fact}"
    text = root.read_str(path, None)
    if text is not None:
        notes.source(fact, path)
        return [] if text == "(null)" else cpulist.parse_or_none(text) or []
    cmdline = root.read_str("/proc/cmdline", None)
    if cmdline is not None:
        notes.source(fact, f"/proc/cmdline {cmd_key}=")
        return parse_boot_cpulist(cmdline, cmd_key) or []
    notes.missing(fact, f"neither {path} nor /proc/cmdline is present")
    return []


@register("cpu")
class CpuCollector:
    """CPU model, sockets/cores/SMT, online/isolated CPUs, governor, boost, C-states."""

    requires = ("/sys/devices/system/cpu", "/proc/cpuinfo")

    def collect(self, ctx: Context) -> CpuFacts:
        root = ctx.root
        notes = FactNotes(root)
        online_set = online_cpus(root)
        if online_set is None:
            raise CollectorError(f"cannot tell the online CPUs: no {CPU_DIR}, /proc/stat or "
                                 "/proc/cpuinfo under " + root.name,
                                 fix="point --root at a tree that has sys/ and proc/")
        online = online_set.ids
        notes.source("online", online_set.source)
        alive = set(online)
        offline = [c for c in present_cpus(root) if c not in alive]
        notes.source("offline", f"{CPU_DIR}/present minus online")
        nodes = node_cpus(root, online)
        info_text = root.read_text("/proc/cpuinfo", None)
        blocks = parse_cpuinfo(info_text) if info_text is not None else []
        ident = identify(blocks)
        for fact in ("vendor", "model_name"):
            if getattr(ident, fact) is not None:
                notes.source(fact, "/proc/cpuinfo")
            else:
                notes.missing(fact, "/proc/cpuinfo is absent or has no such field")
        arch = root.read_str("/proc/sys/kernel/arch", None)
        if arch is not None:
            notes.source("architecture", "/proc/sys/kernel/arch")
        elif ident.architecture is not None:
            arch = ident.architecture
            notes.source("architecture", "/proc/cpuinfo (inferred from its fields)")
        else:
            notes.missing("architecture",
                          "no /proc/sys/kernel/arch and /proc/cpuinfo not understood")
        hypervisor = ident.hypervisor or root.exists("/sys/hypervisor/type")
        notes.source("hypervisor", "/proc/cpuinfo flags, /sys/hypervisor/type")
        topo = _topology(root, notes, online, cpu_to_node(nodes), blocks)
        smt_text = root.read_str(f"{CPU_DIR}/smt/active", None)
        if smt_text is not None:
            smt: bool | None = smt_text == "1"
            notes.source("smt_active", f"{CPU_DIR}/smt/active")
        elif topo["threads_per_core"] is not None:
            smt = topo["threads_per_core"] > 1
            notes.source("smt_active", f"{CPU_DIR}/cpu*/topology/thread_siblings_list")
        else:
            smt = None
            notes.missing("smt_active", f"no {CPU_DIR}/smt/active and no thread siblings")
        freq = _cpufreq(root, notes, online)
        idle = _cstates(root, notes, online)
        return CpuFacts(
            architecture=arch, vendor=ident.vendor, model_name=ident.model_name,
            sockets=topo["sockets"], cores=topo["cores"], threads_per_core=topo["threads_per_core"],
            smt_active=smt, online=online, offline=offline,
            isolated=_special_cpus(root, notes, "isolated", "isolcpus"),
            nohz_full=_special_cpus(root, notes, "nohz_full", "nohz_full"),
            cpus=topo["cpus"], hypervisor=hypervisor,
            frequency_driver=freq.get("frequency_driver"), governor=freq.get("governor"),
            governors=freq.get("governors", {}),
            energy_performance_preference=freq.get("energy_performance_preference"),
            energy_perf_bias=_energy_perf_bias(root, notes, online), boost=freq.get("boost"),
            min_freq_khz=freq.get("min_freq_khz"), max_freq_khz=freq.get("max_freq_khz"),
            cpuinfo_min_freq_khz=freq.get("cpuinfo_min_freq_khz"),
            cpuinfo_max_freq_khz=freq.get("cpuinfo_max_freq_khz"),
            cpuidle_driver=idle["cpuidle_driver"], cstates=idle["cstates"],
            cstates_enabled=idle["cstates_enabled"],
            cache_groups=_cache_groups(root, notes),
            freq_limits=freq.get("freq_limits", []),
            kinds=_kinds(root, notes, online, blocks),
            thermal_throttle=_thermal_throttle(root, notes, online, topo["cpus"]),
            sources=notes.sources, unknown=notes.unknown,
        )

