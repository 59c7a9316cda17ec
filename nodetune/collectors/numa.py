"""NUMA facts: nodes with their CPUs, memory, distances and hugepages; NUMA balancing."""

from __future__ import annotations

import re
from dataclasses import field
from typing import Annotated, TypedDict

from nodetune.collectors import Context, register
from nodetune.collectors.cpuset import NODE_DIR, node_cpus, online_cpus
from nodetune.collectors.sysfs import FactNotes
from nodetune.errors import CollectorError
from nodetune.facts.model import FactSet, Keyed
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

_HUGEPAGE_DIR = re.compile(r"hugepages-(\d+)kB$")


class NodeHugepages(TypedDict):
    total: int | None
    free: int | None


@record(frozen=True, kw_only=True)
class NumaNode:
    id: int
    cpus: list[int]
    memory_total_bytes: int | None
    memory_free_bytes: int | None
    distances: list[int]
    has_cpus: bool
    hugepages: Annotated[dict[str, NodeHugepages], Keyed("size_kb")]


@record(frozen=True, kw_only=True)
class NumaFacts(FactSet):
    nodes: list[NumaNode] = field(default_factory=list)
    cpuless_nodes: list[int] = field(default_factory=list)
    balancing: int | None = None


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo or a node's meminfo -> {field: value}; "kB" values in bytes.

    Node files prefix each line with "Node N "; HugePages_* counts are plain numbers.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        key = re.sub(r"^Node \d+ ", "", key.strip())
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        value = int(parts[0])
        out[key] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


def parse_distances(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def hugepage_pools(root: HostRoot, base: str) -> dict[str, NodeHugepages]:
    """{"2048": {"total": n, "free": n}} for each hugepages-<size>kB directory under `base`."""
    pools: dict[str, NodeHugepages] = {}
    for name in root.listdir(base):
        m = _HUGEPAGE_DIR.match(name)
        if m:
            pools[m.group(1)] = {
                "total": root.read_int(f"{base}/{name}/nr_hugepages", None),
                "free": root.read_int(f"{base}/{name}/free_hugepages", None),
            }
    return dict(sorted(pools.items(), key=lambda kv: int(kv[0])))


def _node(root: HostRoot, notes: FactNotes, node: int, cpus: list[int]) -> NumaNode:
    base = f"{NODE_DIR}/node{node}"
    meminfo_text = root.read_text(f"{base}/meminfo", None)
    mem = parse_meminfo(meminfo_text) if meminfo_text is not None else {}
    if not mem:
        notes.missing(f"nodes.{node}.memory_total_bytes", f"{base}/meminfo is not present")
    distance_text = root.read_str(f"{base}/distance", None)
    if distance_text is None:
        notes.missing(f"nodes.{node}.distances", f"{base}/distance is not present")
    return NumaNode(
        id=node, cpus=cpus, memory_total_bytes=mem.get("MemTotal"),
        memory_free_bytes=mem.get("MemFree"),
        distances=parse_distances(distance_text) if distance_text else [],
        has_cpus=bool(cpus), hugepages=hugepage_pools(root, f"{base}/hugepages")
        or _meminfo_pool(root, notes, node, mem),
    )


def _meminfo_pool(root: HostRoot, notes: FactNotes, node: int,
                  mem: dict[str, int]) -> dict[str, NodeHugepages]:
    """The default-size pool from a node's meminfo (HugePages_Total/Free), for trees without
    nodeN/hugepages (kernels before 2.6.27, gathered trees); its size is /proc/meminfo's
    Hugepagesize, which node meminfo files do not repeat."""
    if "HugePages_Total" not in mem:
        return {}
    text = root.read_text("/proc/meminfo", None)
    size = parse_meminfo(text).get("Hugepagesize") if text is not None else None
    if size is None:
        return {}
    notes.source(f"nodes.{node}.hugepages", f"{NODE_DIR}/node{node}/meminfo HugePages_*")
    return {str(size // 1024): {"total": mem["HugePages_Total"], "free": mem.get("HugePages_Free")}}


def _implicit_node(root: HostRoot, notes: FactNotes, cpus: list[int]) -> NumaNode:
    """A machine without /sys/devices/system/node: one node 0 holding all CPUs and memory."""
    text = root.read_text("/proc/meminfo", None)
    mem = parse_meminfo(text) if text is not None else {}
    if mem:
        notes.source("nodes.0.memory_total_bytes", "/proc/meminfo")
    else:
        notes.missing("nodes.0.memory_total_bytes", "no node directory and no /proc/meminfo")
    return NumaNode(id=0, cpus=cpus, memory_total_bytes=mem.get("MemTotal"),
                    memory_free_bytes=mem.get("MemFree"), distances=[10], has_cpus=bool(cpus),
                    hugepages=hugepage_pools(root, "/sys/kernel/mm/hugepages"))


@register("numa")
class NumaCollector:
    """NUMA nodes: CPUs, memory, distances, hugepages per node; kernel.numa_balancing."""

    requires = ("/sys/devices/system/node",)

    def collect(self, ctx: Context) -> NumaFacts:
        root = ctx.root
        notes = FactNotes(root)
        online = online_cpus(root)
        if online is None:
            raise CollectorError(f"cannot tell the online CPUs under {root.name}",
                                 fix="point --root at a tree that has sys/ and proc/")
        mapping = node_cpus(root, online.ids)
        notes.source("nodes", mapping.source)
        if mapping.implicit:
            nodes = [_implicit_node(root, notes, mapping.cpus[0])]
        else:
            notes.source("nodes.*.memory_total_bytes", f"{NODE_DIR}/node*/meminfo")
            notes.source("nodes.*.distances", f"{NODE_DIR}/node*/distance")
            nodes = [_node(root, notes, n, cpus) for n, cpus in mapping.cpus.items()]
        notes.source("nodes.*.hugepages", f"{NODE_DIR}/node*/hugepages")
        balancing = notes.int("balancing", "/proc/sys/kernel/numa_balancing",
                              "kernel built without CONFIG_NUMA_BALANCING, or not in this tree")
        return NumaFacts(nodes=nodes, cpuless_nodes=[n.id for n in nodes if not n.has_cpus],
                         balancing=balancing, sources=notes.sources, unknown=notes.unknown)
