"""The GPU / NIC / NVMe topology of a node, computed from its facts document alone.

`build_topology(facts)` reads `pci.devices`, `gpus`, `numa.nodes`, `rdma.devices`,
`nic.interfaces` and `storage.block` and returns a `Topology`: the devices with their NUMA node
and local CPUs, and the matrix of path classes between every pair, as `nvidia-smi topo -m`
names them:

    X     the device itself
    NV#   NVLink: # active links between two GPUs (through NVSwitch: the links both GPUs have)
    PIX   through at most one PCIe switch
    PXB   through several PCIe switches, not through a host bridge
    PHB   through a PCIe host bridge (root ports of one root complex)
    NODE  between host bridges of one NUMA node
    SYS   across NUMA nodes (the socket interconnect, or NVLink-C2C to a Grace GPU's memory)

Where the facts cannot tell (numa_node -1 on a multi-socket host, devices stored as plain
directories without their parent bridges), the class is decided by what is known and the
reason is added to `notes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from nodetune.facts import cpulist
from nodetune.facts.pcie import normalize_address

# Classes ordered nearest first; NV# ranks with "NV".
CLASS_ORDER: tuple[str, ...] = ("X", "NV", "PIX", "PXB", "PHB", "NODE", "SYS")
LEGEND: tuple[tuple[str, str], ...] = (
    ("X", "Self"),
    ("SYS", "Connection traversing PCIe as well as the SMP interconnect between NUMA nodes "
            "(e.g., QPI/UPI), or NVLink-C2C to a GPU's own memory node"),
    ("NODE", "Connection traversing PCIe as well as the interconnect between PCIe Host "
             "Bridges within a NUMA node"),
    ("PHB", "Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)"),
    ("PXB", "Connection traversing multiple PCIe bridges (without traversing the PCIe Host "
            "Bridge)"),
    ("PIX", "Connection traversing at most a single PCIe bridge"),
    ("NV#", "Connection traversing a bonded set of # NVLinks"),
)


def class_rank(value: str) -> int:
    """Sort key of a matrix cell: smaller is nearer ("NV18" ranks as NV)."""
    key = "NV" if value.startswith("NV") else value
    return CLASS_ORDER.index(key) if key in CLASS_ORDER else len(CLASS_ORDER)


@dataclass(frozen=True)
class TopoDevice:
    """A GPU, NIC or NVMe drive placed in the topology."""

    name: str  # GPU0, NIC0, NVME0
    kind: str  # gpu, nic, nvme
    index: int
    pci_address: str | None
    numa_node: int | None
    cpus: list[int] | None
    label: str  # mlx5_0, nvme0n1, the GPU's model name
    gpu_numa_id: int | None = None  # a GPU's own memory NUMA node (Grace: NVLink-C2C)
    numa_source: str = "unknown"  # sysfs, gpus, local_cpus, single-node, unknown
    switch: str | None = None
    root_port: str | None = None
    host_bridge: str | None = None
    path: tuple[str, ...] = ()
    link: dict[str, Any] | None = None
    driver: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "index": self.index,
            "pci_address": self.pci_address, "numa_node": self.numa_node,
            "cpus": self.cpus, "label": self.label, "gpu_numa_id": self.gpu_numa_id,
            "numa_source": self.numa_source, "switch": self.switch,
            "root_port": self.root_port, "host_bridge": self.host_bridge,
            "link": self.link, "driver": self.driver,
        }


@dataclass
class Topology:
    devices: list[TopoDevice]
    matrix: dict[str, dict[str, str]]
    numa: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def device(self, ref: str | TopoDevice) -> TopoDevice:
        """A device by name ("GPU0"), label ("mlx5_0", "nvme0n1") or PCI address."""
        if isinstance(ref, TopoDevice):
            return ref
        for dev in self.devices:
            if ref in (dev.name, dev.label, dev.pci_address):
                return dev
        raise KeyError(f"no device {ref!r} in the topology")

    def of_kind(self, kind: str) -> list[TopoDevice]:
        return [d for d in self.devices if d.kind == kind]

    def numa_of(self, ref: str | TopoDevice) -> int | None:
        """The NUMA node (with CPUs) a device is attached to; None when unknown."""
        return self.device(ref).numa_node

    def gpu_cpus(self, index: int) -> list[int]:
        """The CPUs local to GPU `index` (its NUMA node's CPUs when sysfs gives none)."""
        gpu = self.device(f"GPU{index}")
        if gpu.cpus:
            return list(gpu.cpus)
        for node in self.numa:
            if node["id"] == gpu.numa_node:
                return list(node["cpus"])
        return []

    def nearest_nic(self, gpu_index: int) -> TopoDevice | None:
        """The NIC with the nearest path class to GPU `gpu_index`; on a tie, one on the GPU's
        NUMA node, then the first in NIC order."""
        gpu = self.device(f"GPU{gpu_index}")
        nics = self.of_kind("nic")
        if not nics:
            return None
        row = self.matrix[gpu.name]
        return min(nics, key=lambda nic: (class_rank(row[nic.name]),
                                          nic.numa_node != gpu.numa_node, nic.index))

    def cell(self, a: str, b: str) -> str:
        return self.matrix[a][b]

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": [d.to_json() for d in self.devices],
            "matrix": self.matrix,
            "numa": self.numa,
            "legend": dict(LEGEND),
            "notes": self.notes,
        }


# -- building ----------------------------------------------------------------------------------
def _norm_address(address: str | None) -> str | None:
    """"00000000:1B:00.0" (NVML) or "0000:1b:00.0" -> "0000:1b:00.0"."""
    if not address:
        return None
    return normalize_address(address) or address.strip().lower()


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _address_key(address: str | None) -> tuple[Any, ...]:
    if not address:
        return (1 << 32,)
    try:
        domain, bus, devfn = address.split(":")
        dev, _, fn = devfn.partition(".")
        return int(domain, 16), int(bus, 16), int(dev, 16), int(fn or "0", 16)
    except ValueError:
        return (1 << 31, address)


class _Builder:
    def __init__(self, facts: dict[str, Any]) -> None:
        self.facts = facts
        self.notes: list[str] = []
        pci = (facts.get("pci") or {}).get("devices") or []
        self.pci: dict[str, dict[str, Any]] = {}
        for dev in pci:
            address = _norm_address(dev.get("address"))
            if address:
                self.pci[address] = dev
        self.nodes = self._numa_nodes()
        self.cpu_nodes = [n for n in self.nodes if n["has_cpus"]]
        self.cpuless = {n["id"] for n in self.nodes if not n["has_cpus"]}
        self.upstream_ports = {d["switch"] for d in self.pci.values() if d.get("switch")}
        self.upstream_ports |= {a for a, d in self.pci.items() if d.get("port_type") == "upstream"}
        self._switch_of: dict[str, str | None] = {}

    # -- NUMA ------------------------------------------------------------------------------
    def _numa_nodes(self) -> list[dict[str, Any]]:
        numa = self.facts.get("numa") or {}
        nodes = []
        for node in numa.get("nodes") or []:
            cpus = list(node.get("cpus") or [])
            nodes.append({"id": node["id"], "cpus": cpus,
                          "has_cpus": bool(node.get("has_cpus", bool(cpus))),
                          "memory_total_bytes": node.get("memory_total_bytes")})
        if not nodes:
            online = (self.facts.get("cpu") or {}).get("online") or []
            if online:
                nodes.append({"id": 0, "cpus": list(online), "has_cpus": True,
                              "memory_total_bytes": (self.facts.get("memory") or {})
                              .get("total_bytes")})
                self.notes.append("no NUMA facts: one implicit NUMA node 0 holding every "
                                  "online CPU")
        return nodes

    def _node_of_cpus(self, cpus: list[int]) -> int | None:
        """The one CPU node whose CPUs include all of `cpus` (None if none or several)."""
        wanted = set(cpus)
        hits = [n["id"] for n in self.cpu_nodes if wanted and wanted <= set(n["cpus"])]
        return hits[0] if len(hits) == 1 else None

    def _node_cpus(self, node_id: int | None) -> list[int] | None:
        for node in self.nodes:
            if node["id"] == node_id:
                return list(node["cpus"])
        return None

    # -- devices ---------------------------------------------------------------------------
    def place(self, kind: str, index: int, address: str | None, label: str,
              numa_hint: int | None = None, cpus_hint: list[int] | None = None) -> TopoDevice:
        pci = self.pci.get(address or "") or {}
        numa = pci.get("numa_node")
        source = "sysfs" if numa is not None else "unknown"
        gpu_numa_id = None
        if numa_hint is not None:
            if numa_hint in self.cpuless:
                gpu_numa_id = numa_hint
            elif numa is None:
                numa, source = numa_hint, "gpus"
        cpus = cpus_hint or pci.get("local_cpus") or None
        name = f"{kind.upper()}{index}"
        if numa is None and cpus and len(self.cpu_nodes) > 1:
            numa = self._node_of_cpus(cpus)
            if numa is not None:
                source = "local_cpus"
        if numa is None and len(self.cpu_nodes) == 1:
            numa, source = self.cpu_nodes[0]["id"], "single-node"
        if not cpus:
            cpus = self._node_cpus(numa)
        path = tuple(pci.get("path") or ())
        return TopoDevice(
            name=name, kind=kind, index=index, pci_address=address, numa_node=numa,
            cpus=cpus, label=label, gpu_numa_id=gpu_numa_id, numa_source=source,
            switch=pci.get("switch"), root_port=pci.get("root_port"),
            host_bridge=pci.get("host_bridge"), path=path,
            link=pci.get("link") if pci else None, driver=pci.get("driver"),
        )

    def gpus(self) -> tuple[list[TopoDevice], list[dict[str, Any]]]:
        records = list(self.facts.get("gpus") or [])
        if not records:
            found = sorted((a for a, d in self.pci.items() if d.get("kind") == "gpu"),
                           key=_address_key)
            records = [{"index": i, "pci_address": a} for i, a in enumerate(found)]
        # NVML order; a GPU NVML cannot see (index null) follows, numbered after the others
        records.sort(key=lambda g: (g.get("index") is None, g.get("index") or 0,
                                    _address_key(_norm_address(g.get("pci_address")))))
        numbered = [r["index"] for r in records if isinstance(r.get("index"), int)]
        spare = iter(range(max(numbered, default=-1) + 1, 1 << 16))
        devices = []
        for rec in records:
            address = _norm_address(rec.get("pci_address"))
            index = rec["index"] if isinstance(rec.get("index"), int) else next(spare)
            if not isinstance(rec.get("index"), int):
                self.notes.append(f"GPU{index} ({address}) is not visible to NVML; it is "
                                  f"numbered after the GPUs NVML lists")
            label = rec.get("name") or (address or f"GPU{index}")
            device = self.place("gpu", index, address, label, rec.get("numa_node"),
                                rec.get("local_cpus") or None)
            memory_node = rec.get("memory_numa_node")
            if memory_node is not None and memory_node in self.cpuless:
                device = replace(device, gpu_numa_id=memory_node)
            devices.append(device)
        return devices, records

    def nics(self) -> list[TopoDevice]:
        rdma_by_pci: dict[str, str] = {}
        for dev in (self.facts.get("rdma") or {}).get("devices") or []:
            address = _norm_address(dev.get("pci_address"))
            if address and dev.get("name"):
                current = rdma_by_pci.get(address)
                if current is None or _natural(dev["name"]) < _natural(current):
                    rdma_by_pci[address] = dev["name"]
        netdev_by_pci: dict[str, str] = {}
        for iface in (self.facts.get("nic") or {}).get("interfaces") or []:
            address = _norm_address(iface.get("pci_address"))
            if address and iface.get("name") and address not in netdev_by_pci:
                netdev_by_pci[address] = iface["name"]
        network = {a for a, d in self.pci.items() if d.get("kind") in ("nic", "infiniband")}
        if rdma_by_pci:
            chosen = set(rdma_by_pci)
            left_out = sorted(network - chosen, key=_address_key)
            if left_out:
                names = ", ".join(netdev_by_pci.get(a, a) for a in left_out)
                self.notes.append(f"NICs are the RDMA devices, as in nvidia-smi topo -m; "
                                  f"network functions without RDMA left out: {names}")
        else:
            chosen = network | set(netdev_by_pci)
        ordered = sorted(chosen, key=_address_key)
        return [self.place("nic", i, a, rdma_by_pci.get(a) or netdev_by_pci.get(a) or a)
                for i, a in enumerate(ordered)]

    def nvme(self) -> list[TopoDevice]:
        block_by_pci: dict[str, str] = {}
        for blk in (self.facts.get("storage") or {}).get("block") or []:
            address = _norm_address(blk.get("pci_address"))
            if blk.get("kind") == "nvme" and address:
                current = block_by_pci.get(address)
                if current is None or _natural(blk["name"]) < _natural(current):
                    block_by_pci[address] = blk["name"]
        drives = {a for a, d in self.pci.items() if d.get("kind") == "nvme"} | set(block_by_pci)
        ordered = sorted(drives, key=_address_key)
        return [self.place("nvme", i, a, block_by_pci.get(a, a)) for i, a in enumerate(ordered)]

    # -- classes ---------------------------------------------------------------------------
    def switch_of(self, bridge: str) -> str | None:
        """The switch (its upstream port) a bridge belongs to; None for root ports."""
        if bridge not in self._switch_of:
            parent = (self.pci.get(bridge) or {}).get("parent")
            self._switch_of[bridge] = bridge if bridge in self.upstream_ports else \
                parent if parent in self.upstream_ports else None
        return self._switch_of[bridge]

    def pcie_class(self, a: TopoDevice, b: TopoDevice) -> str:
        if a.pci_address is not None and a.pci_address == b.pci_address:
            return "PIX"  # two functions of one device seen twice
        if a.host_bridge is None or b.host_bridge is None:
            return self._by_numa(a, b)
        shared = 0
        for x, y in zip(a.path, b.path, strict=False):
            if x != y:
                break
            shared += 1
        if shared:
            hops = [*a.path[shared - 1:], *b.path[shared:]]
            switches = {self.switch_of(h) for h in hops} - {None}
            return "PIX" if len(switches) <= 1 else "PXB"
        if a.gpu_numa_id is not None or b.gpu_numa_id is not None:
            return "SYS"
        if a.host_bridge == b.host_bridge:
            return "PHB"
        return self._by_numa(a, b)

    def _by_numa(self, a: TopoDevice, b: TopoDevice) -> str:
        if a.gpu_numa_id is not None or b.gpu_numa_id is not None:
            return "SYS"
        if a.numa_node is None or b.numa_node is None:
            return "SYS"
        return "NODE" if a.numa_node == b.numa_node else "SYS"


def _nvlink_counts(records: list[dict[str, Any]],
                   gpus: list[TopoDevice]) -> dict[tuple[str, str], int]:
    """Active NVLinks between GPU pairs (the NV# of `nvidia-smi topo -m`).

    `gpus[].nvlink.peers` (peer address -> links, from NVML's P2P status) is used when present.
    Otherwise the links are counted: direct links name the peer GPU; GPUs that both reach
    NVSwitches get the smaller of their active switch-link counts (DGX H100: NV18).
    """
    by_address = {g.pci_address: g.name for g in gpus if g.pci_address}
    counts: dict[tuple[str, str], int] = {}
    switch_links: dict[str, int] = {}
    from_peers: set[str] = set()
    for rec, gpu in zip(records, gpus, strict=True):
        nvlink = rec.get("nvlink") or {}
        peers = nvlink.get("peers") or {}
        if peers:
            from_peers.add(gpu.name)
        for address, n in peers.items():
            peer = by_address.get(_norm_address(address) or "")
            if peer is not None and peer != gpu.name and n:
                counts[(gpu.name, peer)] = int(n)
        for link in nvlink.get("links") or []:
            if not link.get("active"):
                continue
            peer = by_address.get(_norm_address(link.get("peer_pci_address")) or "")
            if peer is not None and peer != gpu.name:
                if gpu.name not in from_peers:
                    counts[(gpu.name, peer)] = counts.get((gpu.name, peer), 0) + 1
            elif link.get("peer_kind") == "switch":
                switch_links[gpu.name] = switch_links.get(gpu.name, 0) + 1
    for a in gpus:
        for b in gpus:
            if a.name == b.name or a.name in from_peers:
                continue
            if a.name in switch_links and b.name in switch_links:
                n = min(switch_links[a.name], switch_links[b.name])
                counts[(a.name, b.name)] = counts.get((a.name, b.name), 0) + n
    # A link seen from one end only (a peer that reported nothing) still joins both.
    for (first, second), n in list(counts.items()):
        counts.setdefault((second, first), n)
    return counts


def build_topology(facts: dict[str, Any]) -> Topology:
    """The topology of the node the facts document describes (see the module docstring)."""
    b = _Builder(facts)
    gpus, records = b.gpus()
    devices = [*gpus, *b.nics(), *b.nvme()]
    nv = _nvlink_counts(records, gpus)
    matrix: dict[str, dict[str, str]] = {}
    for x in devices:
        row: dict[str, str] = {}
        for y in devices:
            if x.name == y.name:
                row[y.name] = "X"
            elif (x.name, y.name) in nv:
                row[y.name] = f"NV{nv[(x.name, y.name)]}"
            else:
                row[y.name] = b.pcie_class(x, y)
        matrix[x.name] = row
    _explain(b, devices)
    numa = []
    for node in b.nodes:
        numa.append({
            **node,
            "devices": [d.name for d in devices if d.numa_node == node["id"]],
            "gpu_memory_of": next((d.name for d in devices if d.gpu_numa_id == node["id"]),
                                  None),
        })
    return Topology(devices=devices, matrix=matrix, numa=numa, notes=b.notes)


def _explain(b: _Builder, devices: list[TopoDevice]) -> None:
    gpus = [d for d in devices if d.kind == "gpu"]
    unread = [g for g in b.facts.get("gpus") or [] if g.get("nvlink") is None]
    if len(gpus) > 1 and unread:
        b.notes.append("NVLink unknown (it needs NVML): GPU pairs show their PCIe class, where "
                       "nvidia-smi topo -m may show NV#")
    if not b.pci:
        b.notes.append("no PCI facts: every PCIe class is unknown and shown as SYS")
        return
    if any(d.pci_address and d.host_bridge is None for d in devices):
        b.notes.append("PCI parent bridges are unknown (the tree stores PCI devices as plain "
                       "directories): PCIe classes are NODE or SYS by NUMA node only")
    single = [d.name for d in devices if d.numa_source == "single-node"]
    if single:
        b.notes.append(f"sysfs gives no NUMA node for {', '.join(single)}; the host has one "
                       f"NUMA node with CPUs ({b.cpu_nodes[0]['id']}), so they are placed on it")
    by_cpus = [d.name for d in devices if d.numa_source == "local_cpus"]
    if by_cpus:
        b.notes.append(f"NUMA node of {', '.join(by_cpus)} taken from the device's local CPU "
                       f"list (sysfs numa_node is -1)")
    unknown = [d.name for d in devices if d.numa_node is None]
    if unknown:
        b.notes.append(f"NUMA node unknown for {', '.join(unknown)}: their PCIe classes to "
                       f"devices on other host bridges are shown as SYS")
    coherent = [d for d in devices if d.gpu_numa_id is not None]
    if coherent:
        pairs = ", ".join(f"{d.name} on {d.gpu_numa_id}" for d in coherent)
        b.notes.append(f"GPU memory is a CPU-less NUMA node reached over NVLink-C2C ({pairs}): "
                       f"PCIe peers outside a GPU's own root port are SYS, as nvidia-smi "
                       f"reports")


def format_cpus(cpus: list[int] | None) -> str:
    return cpulist.format(cpus) if cpus else "N/A"
