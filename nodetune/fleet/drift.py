"""Configuration drift: facts that should be the same on every node of one profile.

`digest(facts)` turns a facts document (whole or lean) into one short text per compared fact
("8x NVIDIA H100 80GB HBM3", "2 nodes: 96+96 CPUs"); `find_drift` reports, per profile and
fact, the majority value and the nodes that differ from it. Facts a node does not report
(null, section missing) are left out of the comparison rather than counted as a value.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Modules whose presence changes GPU/RDMA behaviour (GPUDirect RDMA, GDS, UVM).
WATCHED_MODULES = ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm", "nvidia_peermem",
                   "nv_peer_mem", "nvidia_fs", "gdrdrv", "mlx5_core", "mlx5_ib", "ib_core",
                   "ib_uverbs", "rdma_ucm")
# Kernel command-line arguments that differ per node by design (boot image, root disk, PXE
# interface, addresses), left out of the comparison.
PER_NODE_ARGS = frozenset({"BOOT_IMAGE", "root", "initrd", "BOOTIF", "ip", "resume",
                           "resume_offset", "hostname", "systemd.machine_id", "rd.luks.uuid",
                           "netroot", "nfsroot", "ifname", "rd.md.uuid", "rd.lvm.lv"})
_PER_NODE_VALUE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                             r"|(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}|\d+\.\d+\.\d+\.\d+", re.I)


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _counted(items: list[str]) -> str:
    return ", ".join(f"{n}x {name}" for name, n in sorted(Counter(items).items()))


def _gpus(f: dict[str, Any]) -> str | None:
    gpus = f.get("gpus")
    if not isinstance(gpus, list):
        return None
    return _counted([str(g.get("name") or "unknown model") for g in gpus]) or "none"


def _vbios(f: dict[str, Any]) -> str | None:
    versions = sorted({str(g["vbios_version"]) for g in f.get("gpus") or []
                       if g.get("vbios_version")})
    return ", ".join(versions) or None


def _nic_firmware(f: dict[str, Any]) -> str | None:
    devices = _get(f, "rdma", "devices")
    if not isinstance(devices, list):
        return None
    return _counted([f"{d.get('hca_type') or d.get('board_id') or 'NIC'} fw "
                     f"{d.get('fw_ver') or 'unknown'}" for d in devices]) or "none"


def _cmdline(f: dict[str, Any]) -> str | None:
    text = _get(f, "kernel", "cmdline")
    if not isinstance(text, str):
        return None
    kept = set()
    for token in text.split():
        if token == "--":  # the rest goes to init, not the kernel
            break
        key, _, value = token.partition("=")
        if key in PER_NODE_ARGS or _PER_NODE_VALUE.search(value):
            continue
        kept.add(token)
    return " ".join(sorted(kept)) or "(empty)"


def _modules(f: dict[str, Any]) -> str | None:
    modules = _get(f, "kernel", "modules")
    if not isinstance(modules, list):
        return None
    loaded = set(modules)
    return ", ".join(m for m in WATCHED_MODULES if m in loaded) or "none"


def _cpu_topology(f: dict[str, Any]) -> str | None:
    cpu = f.get("cpu") or {}
    if cpu.get("sockets") is None or cpu.get("cores") is None:
        return None
    return (f"{_plural(cpu['sockets'], 'socket')}, {_plural(cpu['cores'], 'core')}, "
            f"{cpu.get('threads_per_core') or '?'} threads/core")


def _numa_layout(f: dict[str, Any]) -> str | None:
    nodes = _get(f, "numa", "nodes")
    if not isinstance(nodes, list) or not nodes:
        return None
    with_cpus = [len(n.get("cpus") or []) for n in nodes if n.get("cpus")]
    text = f"{_plural(len(with_cpus), 'node')}: {'+'.join(map(str, with_cpus))} CPUs"
    cpuless = len(nodes) - len(with_cpus)
    return f"{text}, {cpuless} CPU-less" if cpuless else text


def _memory(f: dict[str, Any]) -> str | None:
    total = _get(f, "memory", "total_bytes")
    return f"{round(total / 2**30)} GiB" if isinstance(total, (int, float)) else None


def _hugepages(f: dict[str, Any]) -> str | None:
    pools = _get(f, "memory", "hugepages")
    if not isinstance(pools, list):
        return None
    used = [f"{p['size_kb']} kB x {p['total']}" for p in pools
            if p.get("total") and p.get("size_kb")]
    return ", ".join(used) or "none"


def _freq_limits(f: dict[str, Any]) -> str | None:
    """"0-4,10-14: 338-2808 MHz; 5-9,15-19: 1378-3900 MHz" (hybrid and capped CPUs)."""
    limits = _get(f, "cpu", "freq_limits")
    if not isinstance(limits, list) or not limits:
        return None
    return "; ".join(f"{x.get('cpus')}: {(x.get('min_khz') or 0) // 1000}-"
                     f"{(x.get('max_khz') or 0) // 1000} MHz" for x in limits)


def _thp(f: dict[str, Any]) -> str | None:
    thp = _get(f, "memory", "thp")
    if not isinstance(thp, dict) or thp.get("enabled") is None:
        return None
    return f"enabled={thp.get('enabled')} defrag={thp.get('defrag')}"


def _path(*path: str, fmt: Callable[[Any], str] = str) -> Callable[[dict[str, Any]], str | None]:
    def read(f: dict[str, Any]) -> str | None:
        value = _get(f, *path)
        return None if value is None else fmt(value)
    return read


def _on_off(value: Any) -> str:
    return "on" if value else "off"


def _iommu(f: dict[str, Any]) -> str | None:
    mode = _get(f, "kernel", "iommu", "mode")
    return None if mode in (None, "unknown") else str(mode)


@dataclass(frozen=True)
class DriftFact:
    key: str
    label: str
    read: Callable[[dict[str, Any]], str | None]
    separator: str | None = None  # values are sets of items: report what was added/removed


FACTS: tuple[DriftFact, ...] = (
    DriftFact("gpu_driver", "GPU driver", _path("gpu", "driver_version")),
    DriftFact("cuda_driver", "CUDA driver", _path("gpu", "cuda_driver_version")),
    DriftFact("gpu_vbios", "GPU VBIOS", _vbios),
    DriftFact("gpus", "GPUs", _gpus),
    DriftFact("nic_firmware", "RDMA NICs and firmware", _nic_firmware),
    DriftFact("kernel", "kernel release", _path("kernel", "release")),
    DriftFact("os", "OS release", _path("system", "os", "pretty_name")),
    DriftFact("bios", "system BIOS version", _path("system", "dmi", "bios_version")),
    DriftFact("clocksource", "clock source", _path("kernel", "clocksource", "current")),
    DriftFact("cmdline", "kernel command line", _cmdline, separator=" "),
    DriftFact("modules", "GPU/RDMA kernel modules", _modules, separator=", "),
    DriftFact("iommu", "IOMMU mode", _iommu),
    DriftFact("cpu_model", "CPU model", _path("cpu", "model_name")),
    DriftFact("cpu_topology", "CPU sockets/cores/threads", _cpu_topology),
    DriftFact("smt", "SMT", _path("cpu", "smt_active", fmt=_on_off)),
    DriftFact("boost", "turbo boost", _path("cpu", "boost", fmt=_on_off)),
    DriftFact("governor", "CPU governor", _path("cpu", "governor")),
    DriftFact("cpufreq_driver", "cpufreq driver", _path("cpu", "frequency_driver")),
    DriftFact("max_freq", "CPU max frequency",
              _path("cpu", "max_freq_khz", fmt=lambda v: f"{v / 1000:.0f} MHz")),
    DriftFact("freq_limits", "CPU frequency limits per CPU set", _freq_limits, separator="; "),
    DriftFact("cstates", "C-states enabled",
              _path("cpu", "cstates_enabled", fmt=lambda v: ", ".join(v) or "none")),
    DriftFact("epp", "energy/performance preference",
              _path("cpu", "energy_performance_preference")),
    DriftFact("numa_layout", "NUMA layout", _numa_layout),
    DriftFact("numa_balancing", "NUMA balancing", _path("numa", "balancing")),
    DriftFact("memory", "memory size", _memory),
    DriftFact("hugepages", "hugepages", _hugepages),
    DriftFact("thp", "transparent hugepages", _thp),
)


# The facts sections FACTS reads (a reader of the facts document may skip the others).
SECTIONS = ("cpu", "numa", "memory", "kernel", "system", "gpu", "gpus", "rdma")


def _diff(fact: DriftFact, majority: str, value: str) -> str | None:
    """"+added -removed" items of a set-valued fact, relative to the majority."""
    if fact.separator is None:
        return None
    have, want = set(value.split(fact.separator)), set(majority.split(fact.separator))
    return " ".join([f"+{x}" for x in sorted(have - want)] + [f"-{x}" for x in sorted(want - have)])


def digest(facts: dict[str, Any] | None) -> tuple[str | None, ...]:
    """One short text per fact of FACTS (None where the node does not report it)."""
    if not isinstance(facts, dict):
        return (None,) * len(FACTS)
    out = []
    for fact in FACTS:
        try:
            value = fact.read(facts)
        except (TypeError, KeyError, AttributeError, ValueError):  # a malformed section
            value = None
        out.append(None if value is None else sys.intern(value))
    return tuple(out)


def find_drift(hosts: Sequence[str],
               digests: Sequence[tuple[str | None, ...]]) -> list[dict[str, Any]]:
    """Facts that differ among these nodes (one profile): the majority value, then every
    other value with its nodes, fewest first."""
    out = []
    for i, fact in enumerate(FACTS):
        by_value: dict[str, list[str]] = {}
        unknown = 0
        for host, values in zip(hosts, digests, strict=True):
            value = values[i]
            if value is None:
                unknown += 1
            else:
                by_value.setdefault(value, []).append(host)
        if len(by_value) < 2:
            continue
        ranked = sorted(by_value.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        majority, majority_hosts = ranked[0]
        minority = sorted(ranked[1:], key=lambda kv: (len(kv[1]), kv[0]))
        out.append({
            "fact": fact.key, "label": fact.label, "majority": majority,
            "majority_nodes": len(majority_hosts),
            "tie": len(ranked[1][1]) == len(majority_hosts),
            "minority": [{"value": v, "diff": _diff(fact, majority, v), "nodes": sorted(h)}
                         for v, h in minority],
            "minority_nodes": sum(len(h) for _, h in minority),
            "unknown_nodes": unknown,
        })
    return out
