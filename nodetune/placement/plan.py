"""Where each GPU's work should run: its cores, its memory node and its nearest NIC.

Pure: `compute(facts, topo)` works from the facts document (`nodetune.facts/1`) and the
topology document (`nodetune.topo/1`) only. Every manifest target and `nodetune bind` render
this one plan, so a pod, a container, a Slurm task and a bound rank agree on where a GPU's
work belongs.

Rules the plan keeps:
- whole cores only: a core's online SMT siblings travel together; a core with an isolated or
  offline thread is left out of every pinned set (its free thread would share the core);
- a GPU is pinned only inside the CPU NUMA node it hangs off; when that node is unknown
  (sysfs `numa_node` = -1 on a multi-node host) the GPU is left unpinned and the plan says why;
- a GPU on a CPU-less NUMA node (Grace GPU memory, CXL) is placed on the CPU node its
  `local_cpus` name, or else the nearest CPU node by the firmware's distance table;
- reserved system cores come from every CPU NUMA node, preferring cores outside the GPUs'
  `local_cpus`, and never appear in a GPU's set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodetune.facts import cpulist
from nodetune.facts.model import to_jsonable

# `nvidia-smi topo -m` classes, nearest first.
PATH_RANK = {"X": 0, "PIX": 1, "PXB": 2, "PHB": 3, "NODE": 4, "SYS": 5}
# One reserved core per this many cores of a NUMA node (rounded, at least one).
CORES_PER_RESERVED_CORE = 32


@dataclass(frozen=True)
class Core:
    """One physical core: its online threads and its place in the machine."""

    cpus: tuple[int, ...]
    socket: int | None
    numa_node: int | None
    logical_index: int = -1  # hwloc "Core L#" order, which Slurm's gres.conf Cores= uses


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: tuple[int, ...]  # online CPUs
    memory_bytes: int
    has_cpus: bool
    gpus: tuple[int, ...] = ()  # GPU indices whose work runs here
    hugepages: dict[str, int] = field(default_factory=dict)  # size_kb -> total pages


@dataclass(frozen=True)
class GpuPlacement:
    index: int
    pci_address: str | None
    name: str | None
    uuid: str | None
    numa_node: int | None  # the CPU NUMA node its work runs on; None: unknown, not pinned
    numa_reason: str  # how numa_node was decided
    cpus: tuple[int, ...]  # whole cores; empty when not pinned
    shares_cores: bool = False  # fewer usable cores than GPUs on its node
    memory_node: int | None = None  # bind memory here (the CPU node)
    nic: str | None = None  # nearest RDMA device, e.g. "mlx5_0"
    nic_pci_address: str | None = None
    nic_path: str | None = None  # PIX/PXB/PHB/NODE/SYS
    # Every rail of this GPU, nearest first: `nic` and the other active RDMA devices under the
    # same PCIe switch (PIX/PXB) as the GPU; just `nic` where none shares a switch with it.
    nics: tuple[str, ...] = ()
    nic_paths: tuple[str, ...] = ()  # the path class of each of `nics`
    nic_ports: tuple[int, ...] = ()  # the active port of each of `nics` (UCX_NET_DEVICES)
    nvlinks: dict[int, int] = field(default_factory=dict)  # peer GPU index -> NVLink count


@dataclass(frozen=True)
class GpuGroup:
    """GPUs whose work shares one CPU NUMA node (numa_node None: node unknown)."""

    numa_node: int | None
    gpus: tuple[int, ...]
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class Placement:
    gpus: tuple[GpuPlacement, ...]
    groups: tuple[GpuGroup, ...]
    reserved_cpus: tuple[int, ...]
    numa_nodes: tuple[NumaNode, ...]
    cores: tuple[Core, ...]
    threads_per_core: int
    smt_active: bool | None
    isolated_cpus: tuple[int, ...]
    offline_cpus: tuple[int, ...]
    unpinned_cpus: tuple[int, ...]  # usable, not reserved, not given to a GPU
    rdma_devices: tuple[str, ...]  # RDMA devices with an active port
    notes: tuple[str, ...]  # what the user should know
    warnings: tuple[str, ...]  # where the plan could not pin as it should

    def gpu(self, index: int) -> GpuPlacement:
        for g in self.gpus:
            if g.index == index:
                return g
        raise KeyError(index)

    @property
    def cpu_numa_nodes(self) -> tuple[NumaNode, ...]:
        return tuple(n for n in self.numa_nodes if n.has_cpus)

    @property
    def memory_numa_nodes(self) -> tuple[NumaNode, ...]:
        return tuple(n for n in self.numa_nodes if n.memory_bytes > 0)

    @property
    def gpus_per_numa_node(self) -> int:
        sizes = [len(g.gpus) for g in self.groups if g.numa_node is not None]
        return max(sizes, default=0)

    def logical_cores(self, cpus: Iterable[int]) -> list[int]:
        """hwloc logical core indices (Slurm's abstract core ids) of the cores holding `cpus`."""
        wanted = set(cpus)
        return sorted(c.logical_index for c in self.cores if wanted.intersection(c.cpus))

    def to_json(self) -> dict[str, Any]:
        def cpus(ids: Iterable[int]) -> str:
            return cpulist.format(ids)

        return {
            "threads_per_core": self.threads_per_core,
            "smt_active": self.smt_active,
            "reserved_cpus": cpus(self.reserved_cpus),
            "isolated_cpus": cpus(self.isolated_cpus),
            "offline_cpus": cpus(self.offline_cpus),
            "unpinned_cpus": cpus(self.unpinned_cpus),
            "rdma_devices": list(self.rdma_devices),
            "numa_nodes": [{"id": n.id, "cpus": cpus(n.cpus), "memory_bytes": n.memory_bytes,
                            "has_cpus": n.has_cpus, "gpus": list(n.gpus),
                            "hugepages": to_jsonable(n.hugepages)} for n in self.numa_nodes],
            "groups": [{"numa_node": g.numa_node, "gpus": list(g.gpus), "cpus": cpus(g.cpus)}
                       for g in self.groups],
            "gpus": [{**to_jsonable(g), "cpus": cpus(g.cpus),
                      "nvlinks": {str(k): v for k, v in g.nvlinks.items()}} for g in self.gpus],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }


# -- inputs ------------------------------------------------------------------------------


def _ids(value: Any) -> list[int]:
    """A CPU/node list given as ids or as a kernel list string."""
    if value is None:
        return []
    if isinstance(value, str):
        return cpulist.parse(value)
    return sorted(int(v) for v in value)


@dataclass
class _Cpus:
    online: list[int]
    isolated: set[int]
    offline: list[int]
    node_of: dict[int, int | None]
    socket_of: dict[int, int | None]
    core_of: dict[int, int | None]
    threads_per_core: int
    smt_active: bool | None


def _cpu_inventory(facts: Mapping[str, Any], nodes: dict[int, list[int]]) -> _Cpus:
    cpu = facts.get("cpu") or {}
    entries = cpu.get("cpus") or []
    online = _ids(cpu.get("online")) or sorted(int(e["id"]) for e in entries)
    node_of: dict[int, int | None] = {c: None for c in online}
    for node, ids in nodes.items():
        for c in ids:
            node_of[c] = node
    socket_of: dict[int, int | None] = {}
    core_of: dict[int, int | None] = {}
    for e in entries:
        cid = int(e["id"])
        socket_of[cid] = e.get("socket_id")
        core_of[cid] = e.get("core_id")
        if node_of.get(cid) is None and e.get("numa_node") is not None:
            node_of[cid] = int(e["numa_node"])
    tpc = cpu.get("threads_per_core")
    return _Cpus(online=online, isolated=set(_ids(cpu.get("isolated"))),
                 offline=_ids(cpu.get("offline")), node_of=node_of, socket_of=socket_of,
                 core_of=core_of, threads_per_core=int(tpc) if tpc else 1,
                 smt_active=cpu.get("smt_active"))


def _numa_nodes(facts: Mapping[str, Any]) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """NUMA nodes by id; a host without NUMA facts has one implicit node 0."""
    notes: list[str] = []
    listed = (facts.get("numa") or {}).get("nodes") or []
    if listed:
        return {int(n["id"]): dict(n) for n in listed}, notes
    cpu = facts.get("cpu") or {}
    online = _ids(cpu.get("online")) or [int(e["id"]) for e in cpu.get("cpus") or []]
    memory = (facts.get("memory") or {}).get("total_bytes") or 0
    notes.append("no NUMA information: treating the host as one NUMA node 0")
    return {0: {"id": 0, "cpus": online, "memory_total_bytes": memory, "has_cpus": True,
                "distances": [10], "hugepages": {}}}, notes


def _cache_levels(facts: Mapping[str, Any]) -> list[list[list[int]]]:
    """`cpu.cache_groups` as CPU sets per cache level, outermost level first (L3, then L2)."""
    by_level: dict[int, list[list[int]]] = {}
    for group in (facts.get("cpu") or {}).get("cache_groups") or []:
        by_level.setdefault(int(group["level"]), []).append(_ids(group.get("cpus")))
    return [by_level[level] for level in sorted(by_level, reverse=True)]


def _cores(inv: _Cpus, cache_groups: Sequence[Sequence[Iterable[int]]] = ()) -> list[Core]:
    """Group online CPUs into physical cores and number them as hwloc does (Core L#)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for c in inv.online:
        core_id = inv.core_of.get(c)
        key: tuple[Any, ...] = ((inv.socket_of.get(c), inv.node_of.get(c), core_id)
                                if core_id is not None else ("cpu", c))
        groups.setdefault(key, []).append(c)
    split: list[list[int]] = []
    for ids in groups.values():
        # Some firmware reports one core_id for a whole cluster; a "core" larger than the
        # kernel's threads per core is not a core.
        if len(ids) > max(inv.threads_per_core, 1):
            split.extend([c] for c in ids)
        else:
            split.append(sorted(ids))
    # hwloc orders siblings by the first CPU of their cpuset at every level (package, then
    # NUMA node inside it, then core), so Core L# follows that nesting.
    pkg_first: dict[Any, int] = {}
    node_first: dict[Any, int] = {}
    for ids in split:
        s, n = inv.socket_of.get(ids[0]), inv.node_of.get(ids[0])
        pkg_first[s] = min(pkg_first.get(s, ids[0]), ids[0])
        node_first[(s, n)] = min(node_first.get((s, n), ids[0]), ids[0])

    # Shared caches (L3, then L2) nest between the NUMA node and the core.
    levels = [{c: min(group) for group in map(set, level) if group for c in group}
              for level in cache_groups]

    def order(ids: list[int]) -> tuple[int, ...]:
        s, n = inv.socket_of.get(ids[0]), inv.node_of.get(ids[0])
        return (pkg_first[s], node_first[(s, n)],
                *(level.get(ids[0], ids[0]) for level in levels), ids[0])

    return [Core(cpus=tuple(ids), socket=inv.socket_of.get(ids[0]),
                 numa_node=inv.node_of.get(ids[0]), logical_index=i)
            for i, ids in enumerate(sorted(split, key=order))]


# -- GPU NUMA node -----------------------------------------------------------------------


def _nearest_cpu_node(node: int, numa: dict[int, dict[str, Any]]) -> int | None:
    """The CPU node nearest to CPU-less `node` by the distance table; None if it can't tell."""
    order = sorted(numa)
    distances = numa.get(node, {}).get("distances") or []
    if len(distances) != len(order):
        return None
    by_distance = sorted((d, order[i]) for i, d in enumerate(distances)
                         if numa[order[i]].get("has_cpus", bool(numa[order[i]].get("cpus"))))
    if not by_distance or (len(by_distance) > 1 and by_distance[0][0] == by_distance[1][0]):
        return None
    return by_distance[0][1]


def _gpu_numa(gpu: Mapping[str, Any], numa: dict[int, dict[str, Any]],
              cpu_nodes: list[int]) -> tuple[int | None, str]:
    node = gpu.get("numa_node")
    local = set(_ids(gpu.get("local_cpus")))
    spanned = [n for n in cpu_nodes if local.intersection(_ids(numa[n].get("cpus")))]
    if node is not None and int(node) in cpu_nodes:
        return int(node), f"numa_node {node}"
    if node is not None and int(node) in numa:
        if len(spanned) == 1:
            return spanned[0], (f"NUMA node {node} has no CPUs (GPU or CXL memory); "
                                f"its local_cpus lie on node {spanned[0]}")
        nearest = _nearest_cpu_node(int(node), numa)
        if nearest is not None:
            return nearest, (f"NUMA node {node} has no CPUs; node {nearest} is nearest "
                             "by the firmware distance table")
        return None, (f"NUMA node {node} has no CPUs and neither local_cpus nor the distance "
                      "table names one CPU node for it")
    if len(cpu_nodes) == 1:
        return cpu_nodes[0], (f"numa_node unknown (-1), but the host has one CPU NUMA node "
                              f"({cpu_nodes[0]})")
    if len(spanned) == 1:
        return spanned[0], f"numa_node unknown (-1); its local_cpus lie on node {spanned[0]}"
    return None, ("numa_node unknown (-1) and its local_cpus span "
                  f"{len(spanned) or len(cpu_nodes)} NUMA nodes, so nodetune cannot tell "
                  "which node it hangs off")


# -- NIC and NVLink from the topology ----------------------------------------------------


def _nics_by_device(topo: Mapping[str, Any] | None,
                    facts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Topology NIC devices that carry an RDMA device with a port up: name -> info."""
    rdma = (facts.get("rdma") or {}).get("devices") or []
    by_pci = {d.get("pci_address"): d for d in rdma if d.get("pci_address")}
    by_name = {d.get("name"): d for d in rdma}
    out: dict[str, dict[str, Any]] = {}
    for dev in (topo or {}).get("devices") or []:
        if dev.get("kind") != "nic":
            continue
        r = by_pci.get(dev.get("pci_address")) or by_name.get(dev.get("label"))
        if r is None:
            continue
        ports = r.get("ports") or []
        up = not ports or any(p.get("state") == "ACTIVE" for p in ports)
        port = next((int(p["port"]) for p in ports if p.get("state") == "ACTIVE"
                     and p.get("port") is not None), 1)
        out[dev["name"]] = {"rdma": r["name"], "pci_address": r.get("pci_address"), "up": up,
                            "port": port}
    return out


_NicChoice = tuple[dict[str, Any], str]
# Path classes of a NIC that shares a PCIe switch with the GPU: a rail of that GPU.
RAIL_PATHS = ("PIX", "PXB")


def _nearest_nics(topo: Mapping[str, Any] | None, facts: Mapping[str, Any],
                  gpu_names: dict[int, str], gpu_node: Mapping[int, int | None] | None = None,
                  ) -> tuple[dict[int, list[_NicChoice]], list[str]]:
    """GPU index -> its rails, nearest first (NIC info, path class).

    The first is the nearest NIC, ties going to a NIC on the CPU NUMA node the GPU's work
    runs on (`gpu_node`), then to the NIC fewest GPUs already use; the others are the
    remaining NICs under the same PCIe switch (PIX, then PXB). The NUMA tie-break matters
    where every GPU-NIC pair is SYS: a GB200 GPU's own NUMA node is its CPU-less memory node,
    so nvidia-smi's class cannot tell the tray's local ConnectX-7 from the far ones.
    """
    nics = _nics_by_device(topo, facts)
    numa_of = {d.get("address"): d.get("numa_node")
               for d in (facts.get("pci") or {}).get("devices") or []}
    notes: list[str] = []
    down = sorted(n["rdma"] for n in nics.values() if not n["up"])
    if down:
        notes.append(f"RDMA devices with no active port are never chosen: {', '.join(down)}")
    matrix = (topo or {}).get("matrix") or {}
    used: dict[str, int] = {}
    out: dict[int, list[_NicChoice]] = {}
    for index in sorted(gpu_names):
        row = matrix.get(gpu_names[index]) or {}
        node = (gpu_node or {}).get(index)
        candidates = [(PATH_RANK.get(str(row.get(name)), 9),
                       node is None or numa_of.get(nics[name]["pci_address"]) != node,
                       used.get(name, 0), _natural(nics[name]["rdma"]), name)
                      for name in nics if nics[name]["up"] and row.get(name) is not None]
        if not candidates:
            continue
        best = min(candidates)[-1]
        used[best] = used.get(best, 0) + 1
        rails = [(nics[best], str(row[best]))]
        if str(row[best]) in RAIL_PATHS:
            others = sorted((rank, natural, name) for rank, _, _, natural, name in candidates
                            if name != best and str(row[name]) in RAIL_PATHS)
            rails += [(nics[name], str(row[name])) for _, _, name in others]
        out[index] = rails
    return out, notes


def _natural(name: str) -> tuple[Any, ...]:
    """Sort key that puts mlx5_2 before mlx5_10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _nvlinks(topo: Mapping[str, Any] | None,
             gpu_names: dict[int, str]) -> dict[int, dict[int, int]]:
    matrix = (topo or {}).get("matrix") or {}
    out: dict[int, dict[int, int]] = {}
    for i, name in gpu_names.items():
        row = matrix.get(name) or {}
        for j, peer in gpu_names.items():
            cls = str(row.get(peer) or "")
            if i != j and cls.startswith("NV") and cls[2:].isdigit():
                out.setdefault(i, {})[j] = int(cls[2:])
    return out


# -- the plan ----------------------------------------------------------------------------


def default_reserved_cores(cores_in_node: int) -> int:
    """Reserved system cores for a NUMA node: one per 32 cores, at least one."""
    return max(1, math.floor(cores_in_node / CORES_PER_RESERVED_CORE + 0.5))


def _split(pool: list[Core], count: int) -> tuple[list[list[Core]], list[Core], bool]:
    """Share `pool` among `count` GPUs in equal runs; (shares, left over, GPUs share cores)."""
    if count <= 0:
        return [], pool, False
    if len(pool) < count:
        return [list(pool) for _ in range(count)], [], True
    per = len(pool) // count
    return [pool[i * per:(i + 1) * per] for i in range(count)], pool[per * count:], False


def compute(facts: Mapping[str, Any], topo: Mapping[str, Any] | None = None, *,
            reserve_cores: int | None = None, reserve: bool = True) -> Placement:
    """The placement plan of a node, from its facts document alone.

    `reserve_cores`: system cores to reserve per CPU NUMA node (default: one per 32 cores);
    `reserve=False` reserves nothing (for `nodetune bind`, where no kubelet shares the node).
    The CPUs sharing each cache (`cpu.cache_groups`) refine the logical core numbering Slurm
    uses, which orders the cores reserved and handed out.
    """
    notes: list[str] = []
    warnings: list[str] = []
    numa, numa_notes = _numa_nodes(facts)
    notes.extend(numa_notes)
    node_cpus = {n: _ids(d.get("cpus")) for n, d in numa.items()}
    inv = _cpu_inventory(facts, node_cpus)
    online = set(inv.online)
    cpu_nodes = sorted(n for n, ids in node_cpus.items() if online.intersection(ids))
    if not cpu_nodes:
        cpu_nodes = sorted({n for n in inv.node_of.values() if n is not None}) or [0]
        for c in inv.online:
            if inv.node_of.get(c) is None:
                inv.node_of[c] = cpu_nodes[0]
    cores = _cores(inv, _cache_levels(facts))

    # Whole cores only: a core with an isolated thread is out, and so is the core itself.
    usable_cores = [c for c in cores if not inv.isolated.intersection(c.cpus)]
    partly = sorted(c for core in cores for c in core.cpus
                    if inv.isolated.intersection(core.cpus) and c not in inv.isolated)
    if inv.isolated:
        notes.append(f"isolated CPUs {cpulist.format(inv.isolated)} (isolcpus) are never pinned "
                     "or reserved: the scheduler does not balance threads across them")
    if partly:
        notes.append(f"CPUs {cpulist.format(partly)} share a core with an isolated CPU and are "
                     "left out too (whole cores only)")
    if inv.offline:
        notes.append(f"offline CPUs {cpulist.format(inv.offline)} are left out")
    if inv.threads_per_core <= 1 or inv.smt_active is False:
        notes.append("SMT is off or absent: one thread per core")

    gpus = [{**g, "index": g["index"] if g.get("index") is not None else pos}
            for pos, g in enumerate(facts.get("gpus") or [])]
    gpus.sort(key=lambda g: int(g["index"]))
    gpu_node: dict[int, int | None] = {}
    gpu_reason: dict[int, str] = {}
    for g in gpus:
        node, reason = _gpu_numa(g, numa, cpu_nodes)
        gpu_node[int(g["index"])], gpu_reason[int(g["index"])] = node, reason
        if node is None:
            warnings.append(f"GPU {g['index']}: {reason}; it is left unpinned "
                            "(pinning it to a guessed node could put its work on the far socket)")
    unknown = [i for i, n in gpu_node.items() if n is None]
    guessed = [i for i in gpu_node if gpu_node[i] is not None and "unknown (-1)" in gpu_reason[i]]
    if guessed and not unknown and len(cpu_nodes) == 1:
        notes.append(f"GPUs {', '.join(map(str, guessed))} report numa_node -1 (common in VMs); "
                     "the host has one CPU NUMA node, so everything is placed on node "
                     f"{cpu_nodes[0]}")

    by_node: dict[int, list[Core]] = {n: [] for n in cpu_nodes}
    for core in usable_cores:
        if core.numa_node in by_node:
            by_node[core.numa_node].append(core)
    gpus_on = {n: sorted(i for i, m in gpu_node.items() if m == n) for n in cpu_nodes}
    local_of = {int(g["index"]): set(_ids(g.get("local_cpus"))) for g in gpus}
    gpu_local = set().union(*local_of.values()) if local_of else set()

    reserved = _reserve(by_node, gpus_on, gpu_local, reserve_cores, reserve, notes, warnings)
    reserved_ids = {c for core in reserved for c in core.cpus}

    shares: dict[int, list[Core]] = {}
    shared_nodes: set[int] = set()
    spare: list[Core] = []
    for n in cpu_nodes:
        pool = [c for c in by_node[n] if c not in reserved]
        indices = gpus_on[n]
        if indices and not pool:
            warnings.append(f"NUMA node {n} has no usable cores left for GPUs "
                            f"{', '.join(map(str, indices))}: they are left unpinned")
            continue
        spare.extend(_assign(pool, indices, local_of, shares, shared_nodes))
        if n in shared_nodes:
            warnings.append(f"NUMA node {n} has {len(pool)} usable cores for {len(indices)} GPUs: "
                            "those GPUs share the node's cores instead of owning some each")

    names = {int(g["index"]): f"GPU{g['index']}" for g in gpus}
    known_names = {d.get("name") for d in (topo or {}).get("devices") or []}
    for g in gpus:  # topology devices may be named by PCI order rather than NVML index
        for d in (topo or {}).get("devices") or []:
            if d.get("kind") == "gpu" and d.get("pci_address") == g.get("pci_address"):
                names[int(g["index"])] = d["name"]
    nic_of, nic_notes = _nearest_nics(topo, facts, {i: n for i, n in names.items()
                                                   if not known_names or n in known_names},
                                      gpu_node)
    notes.extend(nic_notes)
    links = _nvlinks(topo, names)

    placed = []
    for g in gpus:
        i = int(g["index"])
        node = gpu_node[i]
        mine = shares.get(i, [])
        rails = nic_of.get(i, [])
        nic = rails[0] if rails else None
        placed.append(GpuPlacement(
            index=i, pci_address=g.get("pci_address"), name=g.get("name"), uuid=g.get("uuid"),
            numa_node=node, numa_reason=gpu_reason[i],
            cpus=tuple(sorted(c for core in mine for c in core.cpus)),
            shares_cores=node in shared_nodes, memory_node=node if mine else None,
            nic=nic[0]["rdma"] if nic else None,
            nic_pci_address=nic[0]["pci_address"] if nic else None,
            nic_path=nic[1] if nic else None, nics=tuple(r[0]["rdma"] for r in rails),
            nic_paths=tuple(r[1] for r in rails), nic_ports=tuple(r[0]["port"] for r in rails),
            nvlinks=links.get(i, {})))

    # A group (one container, one Slurm socket) may use every unreserved core of its node;
    # a group none of whose GPUs could be pinned gets no CPUs at all.
    groups = [GpuGroup(numa_node=n, gpus=tuple(gpus_on[n]),
                       cpus=tuple(sorted(c for core in by_node[n] if core not in reserved
                                         for c in core.cpus))
                       if any(placed_cpus(placed, i) for i in gpus_on[n]) else ())
              for n in cpu_nodes if gpus_on[n]]
    if unknown:
        groups.append(GpuGroup(numa_node=None, gpus=tuple(sorted(unknown)), cpus=()))

    mem_notes = _memory_notes(facts, numa)
    notes.extend(mem_notes)
    nodes = tuple(NumaNode(id=n, cpus=tuple(c for c in node_cpus.get(n, []) if c in online),
                           memory_bytes=int(numa[n].get("memory_total_bytes") or 0),
                           has_cpus=n in cpu_nodes,
                           gpus=tuple(i for i, m in gpu_node.items() if m == n),
                           hugepages={k: int((v or {}).get("total") or 0)
                                      for k, v in (numa[n].get("hugepages") or {}).items()})
                  for n in sorted(numa))
    if not gpus:
        notes.append("no GPUs found: only system CPU reservation applies")
    return Placement(
        gpus=tuple(placed), groups=tuple(groups), reserved_cpus=tuple(sorted(reserved_ids)),
        numa_nodes=nodes, cores=tuple(cores), threads_per_core=max(inv.threads_per_core, 1),
        smt_active=inv.smt_active, isolated_cpus=tuple(sorted(inv.isolated)),
        offline_cpus=tuple(inv.offline),
        unpinned_cpus=tuple(sorted(c for core in spare for c in core.cpus)),
        rdma_devices=_active_rdma(facts),
        notes=tuple(notes), warnings=tuple(warnings))


def _active_rdma(facts: Mapping[str, Any]) -> tuple[str, ...]:
    out = []
    for d in (facts.get("rdma") or {}).get("devices") or []:
        ports = d.get("ports") or []
        if not ports or any(p.get("state") == "ACTIVE" for p in ports):
            out.append(str(d.get("name")))
    return tuple(sorted(out, key=_natural))


def placed_cpus(placed: Iterable[GpuPlacement], index: int) -> tuple[int, ...]:
    for g in placed:
        if g.index == index:
            return g.cpus
    return ()


def _reserve(by_node: dict[int, list[Core]], gpus_on: dict[int, list[int]], gpu_local: set[int],
             reserve_cores: int | None, reserve: bool, notes: list[str],
             warnings: list[str]) -> list[Core]:
    """Whole cores for the system, from every CPU node, outside GPU-local cores first."""
    if not reserve:
        return []
    chosen: list[Core] = []
    for n, pool in by_node.items():
        want = reserve_cores if reserve_cores is not None else default_reserved_cores(len(pool))
        room = max(0, len(pool) - len(gpus_on[n]))
        take = min(want, room)
        if take < want:
            notes.append(f"NUMA node {n}: reserving {take} of {want} system cores, which leaves "
                         f"{len(pool) - take} cores for its {len(gpus_on[n])} GPUs")
        ranked = sorted(pool, key=lambda c: (bool(gpu_local.intersection(c.cpus)), c.logical_index))
        chosen.extend(ranked[:take])
    if not chosen and reserve_cores != 0:
        pools = [p for p in by_node.values() if p]
        if pools:
            biggest = max(pools, key=len)
            chosen.append(sorted(biggest, key=lambda c: c.logical_index)[0])
            warnings.append("every NUMA node needs all its cores for its GPUs; core "
                            f"{cpulist.format(chosen[0].cpus)} is reserved anyway (the static "
                            "CPU manager needs at least one)")
    return chosen


def _assign(pool: list[Core], indices: list[int], local_of: dict[int, set[int]],
            shares: dict[int, list[Core]], shared_nodes: set[int]) -> list[Core]:
    """Give each GPU of one NUMA node an equal run of cores inside its local_cpus."""
    free = list(pool)
    # GPUs whose local_cpus narrow the node (sub-NUMA domains) choose first.
    pools: dict[frozenset[int], list[int]] = {}
    for i in indices:
        local = frozenset(c for core in pool for c in core.cpus
                          if not local_of.get(i) or c in local_of[i])
        pools.setdefault(local or frozenset(c for core in pool for c in core.cpus), []).append(i)
    for local, members in sorted(pools.items(), key=lambda kv: len(kv[0])):
        candidates = [c for c in free if set(c.cpus) <= local]
        runs, _, shared = _split(candidates, len(members))
        if shared:
            node = pool[0].numa_node if pool else None
            if node is not None:
                shared_nodes.add(node)
        for i, run in zip(members, runs, strict=True):
            shares[i] = run
        taken = {id(c) for run in runs for c in run}
        free = [c for c in free if id(c) not in taken]
    return free


def _memory_notes(facts: Mapping[str, Any], numa: dict[int, dict[str, Any]]) -> list[str]:
    """Flag per-node memory totals that disagree with MemTotal (hot-plugged VM memory)."""
    total = (facts.get("memory") or {}).get("total_bytes")
    per_node = sum(int(n.get("memory_total_bytes") or 0) for n in numa.values())
    if total and per_node and abs(per_node - total) > 0.1 * total:
        gib = 1 << 30
        return [f"NUMA nodes hold {per_node / gib:.1f} GiB by their meminfo but MemTotal is "
                f"{total / gib:.1f} GiB (memory hot-plugged outside the node view?): the kubelet "
                "memory manager sizes each node from the per-node figure"]
    return []
