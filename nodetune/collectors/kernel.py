"""Kernel facts: release, command line, modules, sysctls in effect and persisted, cgroup, IOMMU,
clock source."""

from __future__ import annotations

import re
from dataclasses import field
from typing import Annotated

from nodetune.collectors import Context, register
from nodetune.collectors.persisted import (
    Persisted,
    normalize_value,
    persisted_cmdline,
    persisted_modules,
    persisted_sysctl,
)
from nodetune.collectors.sysfs import FactNotes
from nodetune.facts.model import FactSet, Keyed, NumStr
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

# Sysctls that matter for GPU/RDMA/storage throughput; persisted keys are read as well.
RELEVANT_SYSCTLS = (
    "kernel.numa_balancing", "kernel.sched_autogroup_enabled", "kernel.timer_migration",
    "kernel.nmi_watchdog", "kernel.watchdog", "kernel.sched_rt_runtime_us",
    "kernel.perf_event_paranoid", "kernel.pid_max", "kernel.threads-max", "kernel.shmmax",
    "kernel.shmall", "kernel.randomize_va_space",
    "vm.swappiness", "vm.zone_reclaim_mode", "vm.dirty_ratio", "vm.dirty_background_ratio",
    "vm.dirty_bytes", "vm.dirty_background_bytes", "vm.dirty_expire_centisecs",
    "vm.dirty_writeback_centisecs", "vm.nr_hugepages", "vm.nr_overcommit_hugepages",
    "vm.max_map_count", "vm.overcommit_memory", "vm.min_free_kbytes", "vm.stat_interval",
    "vm.vfs_cache_pressure", "vm.compaction_proactiveness", "vm.watermark_scale_factor",
    "net.core.rmem_max", "net.core.wmem_max", "net.core.rmem_default", "net.core.wmem_default",
    "net.core.optmem_max", "net.core.netdev_max_backlog", "net.core.somaxconn",
    "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_mem", "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_sack", "net.ipv4.tcp_congestion_control", "net.ipv4.tcp_mtu_probing",
    "net.ipv4.ip_local_port_range", "fs.file-max", "fs.nr_open", "fs.aio-max-nr",
    "fs.inotify.max_user_watches", "fs.inotify.max_user_instances",
)


@record(frozen=True, kw_only=True)
class Iommu:
    mode: str  # "off" | "passthrough" | "translated" | "unknown"
    groups: int | None


@record(frozen=True, kw_only=True)
class Clocksource:
    current: str | None  # "tsc" is what timing-heavy jobs want on x86; "hpet" costs ~us a read
    available: list[str] | None


@record(frozen=True, kw_only=True)
class KernelFacts(FactSet):
    release: str | None = None
    version: str | None = None
    hostname: str | None = None
    cmdline: str | None = None
    cmdline_args: Annotated[dict[str, str | bool], Keyed("arg")] = field(default_factory=dict)
    modules: list[str] | None = None
    sysctl: Annotated[dict[str, NumStr], Keyed("name")] = field(default_factory=dict)
    persisted: Persisted = field(default_factory=lambda: Persisted())
    cgroup_version: int | None = None
    iommu: Iommu = field(default_factory=lambda: Iommu(mode="unknown", groups=None))
    virtualization: str | None = None
    clocksource: Clocksource = field(
        default_factory=lambda: Clocksource(current=None, available=None))


# -- pure parsers ------------------------------------------------------------------------------
def parse_cmdline(text: str) -> dict[str, str | bool]:
    """Kernel command line -> {param: value, or True for a bare flag}; the last one wins.

    Follows the kernel's `next_arg()`: double quotes group blanks ("a=\"b c\""), and
    everything after a bare "--" belongs to init, not the kernel.
    """
    args: dict[str, str | bool] = {}
    for token in re.findall(r'(?:[^\s"]|"[^"]*")+', text):
        if token == "--":
            break
        token = token.replace('"', "")
        key, sep, value = token.partition("=")
        args[key] = value if sep else True
    return args


def parse_modules(text: str) -> list[str]:
    """/proc/modules -> sorted module names."""
    return sorted({line.split()[0] for line in text.splitlines() if line.strip()})


def parse_version(text: str) -> tuple[str | None, str | None]:
    """/proc/version -> (release, version) as `uname -r` and `uname -v` print them."""
    m = re.match(r"Linux version (\S+)", text)
    release = m.group(1) if m else None
    v = re.search(r"\s(#\d+.*)$", text.strip())
    return release, v.group(1) if v else None


def parse_mounts(text: str) -> list[tuple[str, str, str, str]]:
    """/proc/mounts -> [(device, mountpoint, fstype, options)] with octal escapes decoded."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append(tuple(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p)
                             for p in parts[:4]))
    return out  # type: ignore[return-value]


def cgroup_version_from_mounts(mounts: list[tuple[str, str, str, str]]) -> int | None:
    """2 when cgroup2 is mounted at /sys/fs/cgroup (unified), 1 for v1 or hybrid, else None."""
    types = {mp: fs for _, mp, fs, _ in mounts}
    if types.get("/sys/fs/cgroup") == "cgroup2":
        return 2
    if any(fs == "cgroup" for fs in types.values()):
        return 1
    return None


def iommu_mode_from_cmdline(args: dict[str, str | bool]) -> str | None:
    """What the command line asks of the IOMMU, or None when it says nothing."""
    iommu = str(args.get("iommu", ""))
    intel = str(args.get("intel_iommu", ""))
    amd = str(args.get("amd_iommu", ""))
    passthrough = str(args.get("iommu.passthrough", ""))
    if iommu == "off" or "off" in intel.split(",") or amd == "off":
        return "off"
    if iommu == "pt" or passthrough in ("1", "y", "on") or amd == "pt":
        return "passthrough"
    if iommu == "nopt" or passthrough in ("0", "n", "off") or "on" in intel.split(","):
        return "translated"
    return None


HOSTNAME_FILE = "/proc/sys/kernel/hostname"
UNSET_HOSTNAME = "(none)"  # the kernel's nodename until something sets it (init/version.c)


# -- reading -----------------------------------------------------------------------------------
def read_mounts(root: HostRoot) -> tuple[list[tuple[str, str, str, str]] | None, str | None]:
    for path in ("/proc/self/mounts", "/proc/mounts"):
        text = root.read_text(path, None)
        if text is not None:
            return parse_mounts(text), path
    return None, None


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def _sysctls(root: HostRoot, keys: list[str]) -> dict[str, str]:
    values = {}
    for key in keys:
        if "*" in key:
            continue
        text = root.read_text(sysctl_path(key), None)
        if text is not None:
            values[key] = normalize_value(text)
    return values


def _hostname(root: HostRoot, notes: FactNotes) -> str | None:
    """The kernel's host name, as `hostname` prints it (the reader's UTS namespace on a live
    host, so a container sees its own name unless it shares the host's)."""
    name = notes.text("hostname", HOSTNAME_FILE)
    if name == UNSET_HOSTNAME or name == "":
        notes.missing("hostname", f"{HOSTNAME_FILE} says the host name is not set ({name!r})")
        return None
    return name


def _iommu(root: HostRoot, notes: FactNotes, args: dict[str, str | bool] | None) -> Iommu:
    wanted = iommu_mode_from_cmdline(args) if args is not None else None
    if root.isdir("/sys/kernel/iommu_groups"):
        groups = [g for g in root.listdir("/sys/kernel/iommu_groups") if g.isdigit()]
        notes.source("iommu.groups", "/sys/kernel/iommu_groups")
        if not groups and not root.listdir("/sys/class/iommu"):
            notes.source("iommu.mode", "/sys/kernel/iommu_groups (empty: no IOMMU in use)")
            return Iommu(mode="off", groups=0)
        types = {root.read_str(f"/sys/kernel/iommu_groups/{g}/type", "") for g in groups}
        types.discard("")
        if types:  # kernel >= 5.11: the default domain type of each group
            notes.source("iommu.mode", "/sys/kernel/iommu_groups/*/type")
            translated = any(t.startswith("DMA") for t in types)
            return Iommu(mode="translated" if translated else "passthrough"
                         if "identity" in types else "unknown", groups=len(groups))
        notes.source("iommu.mode", "/proc/cmdline and /sys/kernel/iommu_groups")
        return Iommu(mode=wanted or "translated", groups=len(groups))
    notes.missing("iommu.groups", "/sys/kernel/iommu_groups is not present")
    if wanted is not None:
        notes.source("iommu.mode", "/proc/cmdline")
        return Iommu(mode=wanted, groups=None)
    notes.missing("iommu.mode", "no /sys/kernel/iommu_groups and no IOMMU option on the "
                                "command line")
    return Iommu(mode="unknown", groups=None)


_DMI_HYPERVISORS = (("KVM", "kvm"), ("QEMU", "kvm"), ("VMware", "vmware"), ("VirtualBox", "oracle"),
                    ("Xen", "xen"), ("Amazon EC2", "amazon"), ("Google Compute Engine", "google"),
                    ("Microsoft Corporation Virtual Machine", "microsoft"), ("OpenStack", "kvm"),
                    ("Parallels", "parallels"), ("BHYVE", "bhyve"))


def _virtualization(root: HostRoot, notes: FactNotes) -> str | None:
    """The hypervisor this node runs under (systemd-detect-virt names), None on bare metal."""
    xen = root.read_str("/sys/hypervisor/type", None)
    if xen:
        notes.source("virtualization", "/sys/hypervisor/type")
        return xen
    dmi = " ".join(root.read_str(f"/sys/class/dmi/id/{n}", "") for n in
                   ("sys_vendor", "product_name", "bios_vendor")).replace("\x00", "")
    for marker, name in _DMI_HYPERVISORS:
        if marker in dmi:
            notes.source("virtualization", "/sys/class/dmi/id")
            return name
    info = root.read_text("/proc/cpuinfo", "")
    if re.search(r"^flags\s*:.*\bhypervisor\b", info, re.M):
        notes.source("virtualization", "/proc/cpuinfo hypervisor flag (vendor not in DMI)")
        return "vm"
    container = root.read_str("/run/systemd/container", None)
    if container:
        notes.source("virtualization", "/run/systemd/container")
        return container
    notes.source("virtualization", "/proc/cpuinfo, /sys/class/dmi/id: no hypervisor seen")
    return None


CLOCKSOURCE_DIR = "/sys/devices/system/clocksource/clocksource0"


def _clocksource(notes: FactNotes) -> Clocksource:
    current = notes.text("clocksource.current", f"{CLOCKSOURCE_DIR}/current_clocksource")
    available = notes.parsed("clocksource.available", f"{CLOCKSOURCE_DIR}/available_clocksource",
                             str.split)
    return Clocksource(current=current or None, available=available)


@register("kernel")
class KernelCollector:
    """Kernel release, command line, modules, relevant sysctls (in effect and persisted),
    persisted module options and boot command line, cgroup version, IOMMU mode."""

    requires = ("/proc/cmdline", "/proc/sys")

    def collect(self, ctx: Context) -> KernelFacts:
        root = ctx.root
        notes = FactNotes(root)
        release = root.read_str("/proc/sys/kernel/osrelease", None)
        version = root.read_str("/proc/sys/kernel/version", None)
        proc_version = root.read_str("/proc/version", None)
        if proc_version is not None:
            parsed = parse_version(proc_version)
            release = release or parsed[0]
            version = version or parsed[1]
        for fact, value in (("release", release), ("version", version)):
            if value is None:
                notes.missing(fact, "neither /proc/sys/kernel/os* nor /proc/version is present")
            else:
                notes.source(fact, "/proc/sys/kernel, /proc/version")
        hostname = _hostname(root, notes)
        cmdline = notes.text("cmdline", "/proc/cmdline")
        args = parse_cmdline(cmdline) if cmdline is not None else None
        if args is not None:
            notes.source("cmdline_args", "/proc/cmdline")
        modules = notes.parsed("modules", "/proc/modules", parse_modules,
                               "kernel without loadable module support, or not captured")
        sysctl_persisted = persisted_sysctl(root)
        boot_cmdline, boot_file = persisted_cmdline(root)
        persisted: Persisted = {"sysctl": sysctl_persisted, "modprobe": persisted_modules(root),
                                "cmdline": boot_cmdline, "cmdline_file": boot_file}
        if root.isdir("/etc"):
            notes.source("persisted.sysctl", "/etc/sysctl.d, /run/sysctl.d, /usr/lib/sysctl.d, "
                                             "/etc/sysctl.conf")
            notes.source("persisted.modprobe", "/etc/modprobe.d, /usr/lib/modprobe.d, "
                                               "/etc/modules-load.d, /etc/modules")
        else:
            for fact in ("persisted.sysctl", "persisted.modprobe"):
                notes.missing(fact, "/etc is not present in this tree")
        if boot_file is None:
            notes.missing("persisted.cmdline", "no /etc/default/grub or /etc/kernel/cmdline")
        else:
            notes.source("persisted.cmdline", boot_file)
        if root.isdir("/proc/sys"):
            keys = list(dict.fromkeys([*RELEVANT_SYSCTLS, *sysctl_persisted]))
            sysctl = _sysctls(root, keys)
            notes.source("sysctl", "/proc/sys")
        else:
            sysctl = {}
            notes.missing("sysctl", "/proc/sys is not present")
        mounts, mounts_path = read_mounts(root)
        cgroup = cgroup_version_from_mounts(mounts) if mounts else None
        if cgroup is not None:
            notes.source("cgroup_version", str(mounts_path))
        elif root.exists("/sys/fs/cgroup/cgroup.controllers"):
            cgroup = 2
            notes.source("cgroup_version", "/sys/fs/cgroup/cgroup.controllers")
        else:
            notes.missing("cgroup_version", "no cgroup mount in /proc/mounts and no "
                                            "/sys/fs/cgroup/cgroup.controllers")
        return KernelFacts(
            release=release, version=version, hostname=hostname, cmdline=cmdline,
            cmdline_args=args or {}, modules=modules, sysctl=sysctl, persisted=persisted,
            cgroup_version=cgroup,
            iommu=_iommu(root, notes, args), virtualization=_virtualization(root, notes),
            clocksource=_clocksource(notes),
            sources=notes.sources, unknown=notes.unknown,
        )
