"""Which CPUs are online and which NUMA node holds each: shared by the cpu and numa collectors.

Real trees differ: old kernels have no `cpu/online` (then every `cpuN` directory whose own
`online` file is not "0" is online; gathered trees may keep `cpu/offline` alone: then the present
CPUs less those are online), hwloc gathers of single-node machines have no
`/sys/devices/system/node` (then one implicit node 0 holds every online CPU), node ids can be
sparse (POWER: 0,1,4,5,...), and a node may list only a `cpumap` mask.
"""

from __future__ import annotations

import re

from nodetune.facts import cpulist
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

CPU_DIR = "/sys/devices/system/cpu"
NODE_DIR = "/sys/devices/system/node"
_CPU_ENTRY = re.compile(r"cpu(\d+)$")
_NODE_ENTRY = re.compile(r"node(\d+)$")


@record(frozen=True)
class CpuSet:
    ids: list[int]
    source: str


def cpu_dirs(root: HostRoot) -> list[int]:
    """Ids of the `cpuN` directories under /sys/devices/system/cpu, sorted."""
    return sorted(int(m.group(1)) for n in root.listdir(CPU_DIR) if (m := _CPU_ENTRY.match(n)))


def online_cpus(root: HostRoot) -> CpuSet | None:
    """The online CPUs and where that came from; None when the tree cannot tell."""
    text = root.read_str(f"{CPU_DIR}/online", None)
    online = cpulist.parse_or_none(text)
    if online:  # an unreadable or corrupt file: the other sources below
        return CpuSet(online, f"{CPU_DIR}/online")
    dirs = cpu_dirs(root)
    offline = root.read_str(f"{CPU_DIR}/offline", None)
    if offline is not None and (dirs or root.exists(f"{CPU_DIR}/present")):
        # a gathered tree may keep cpu/offline without cpu/online
        gone = set(cpulist.parse_or_none(offline) or [])
        return CpuSet([c for c in present_cpus(root) if c not in gone],
                      f"{CPU_DIR}/present (or cpu*) minus {CPU_DIR}/offline")
    if dirs:
        # cpu0 usually has no `online` file: it cannot be taken offline.
        ids = [i for i in dirs if root.read_str(f"{CPU_DIR}/cpu{i}/online", "1") != "0"]
        return CpuSet(ids, f"{CPU_DIR}/cpu*/online")
    stat = root.read_text("/proc/stat", None)
    if stat is not None:
        ids = sorted(int(m.group(1)) for m in re.finditer(r"^cpu(\d+)\s", stat, re.M))
        if ids:
            return CpuSet(ids, "/proc/stat")
    info = root.read_text("/proc/cpuinfo", None)
    if info is not None:
        ids = sorted(int(m.group(1)) for m in re.finditer(r"^processor\s*:\s*(\d+)", info, re.M))
        if ids:
            return CpuSet(ids, "/proc/cpuinfo")
    return None


def present_cpus(root: HostRoot) -> list[int]:
    text = root.read_str(f"{CPU_DIR}/present", None)
    return cpulist.parse_or_none(text) or cpu_dirs(root)


@record(frozen=True)
class NodeCpus:
    cpus: dict[int, list[int]]  # node id -> online CPUs
    source: str
    implicit: bool  # no node directory: one node 0 holding every online CPU


def node_ids(root: HostRoot) -> list[int]:
    return sorted(int(m.group(1)) for n in root.listdir(NODE_DIR) if (m := _NODE_ENTRY.match(n)))


def node_cpus(root: HostRoot, online: list[int]) -> NodeCpus:
    """CPUs of every NUMA node, limited to online CPUs (old kernels list offline ones too)."""
    ids = node_ids(root)
    if not ids:
        return NodeCpus({0: list(online)}, f"{NODE_DIR} absent: one node", implicit=True)
    alive = set(online)
    out: dict[int, list[int]] = {}
    for node in ids:
        base = f"{NODE_DIR}/node{node}"
        text = root.read_str(f"{base}/cpulist", None)
        parsed = cpulist.parse_or_none(text)
        if parsed is not None:
            cpus = parsed
        else:
            mask = root.read_str(f"{base}/cpumap", None)
            from_mask = cpulist.parse_or_none(mask, mask=True)
            if from_mask is not None:
                cpus = from_mask
            else:
                cpus = [int(m.group(1)) for n in root.listdir(base) if (m := _CPU_ENTRY.match(n))]
        out[node] = sorted(c for c in cpus if c in alive)
    return NodeCpus(out, f"{NODE_DIR}/node*/cpulist", implicit=False)


def cpu_to_node(nodes: NodeCpus) -> dict[int, int]:
    return {cpu: node for node, cpus in nodes.cpus.items() for cpu in cpus}
