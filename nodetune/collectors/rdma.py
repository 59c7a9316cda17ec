"""RDMA facts: /sys/class/infiniband devices, their ports (rates, link layers, LIDs, GUIDs,
error and traffic counters) and netdevs."""

from __future__ import annotations

import re
from dataclasses import field

from nodetune.collectors import Context, register
from nodetune.collectors.sysfs import FactNotes, device_pci_address, pci_numa_node
from nodetune.errors import NoData
from nodetune.facts.model import FactSet
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

IB_DIR = "/sys/class/infiniband"
IB_MTUS = (4096, 2048, 1024, 512, 256)


@record(frozen=True, kw_only=True)
class Port:
    port: int
    state: str | None
    phys_state: str | None
    rate: str | None
    rate_gbps: float | None
    link_layer: str | None
    active_mtu: int | None
    lid: int | None  # the port's base LID (InfiniBand; 0 on RoCE)
    sm_lid: int | None  # the LID of the subnet manager the port answers to
    lmc: int | None
    port_guid: str | None  # from the port's GID 0, as ibstat prints it ("0x946dae0300cde72c")
    counters: dict[str, int] = field(default_factory=dict)  # ports/N/counters/*
    hw_counters: dict[str, int] = field(default_factory=dict)  # ports/N/hw_counters/*


@record(frozen=True, kw_only=True)
class RdmaDevice:
    name: str
    pci_address: str | None
    numa_node: int | None
    fw_ver: str | None
    hca_type: str | None
    board_id: str | None
    node_guid: str | None  # as ibstat prints it ("0x946dae0300cde72c")
    sys_image_guid: str | None
    netdevs: list[str]
    ports: list[Port]


@record(frozen=True, kw_only=True)
class RdmaFacts(FactSet):
    devices: list[RdmaDevice] = field(default_factory=list)


def parse_state(text: str | None) -> str | None:
    """"4: ACTIVE" -> "ACTIVE"; "5: LinkUp" -> "LinkUp"."""
    if text is None:
        return None
    return text.split(":", 1)[-1].strip() or None


def parse_rate(text: str | None) -> float | None:
    """"400 Gb/sec (4X NDR)" -> 400.0; "2.5 Gb/sec (1X SDR)" -> 2.5."""
    m = re.match(r"\s*([\d.]+)\s*Gb/sec", text or "")
    return float(m.group(1)) if m else None


def parse_lid(text: str | None) -> int | None:
    """A sysfs LID ("0x4b", ibstat's "Base lid: 75") as a number."""
    try:
        return int(text, 0) if text else None
    except ValueError:
        return None


def parse_guid(text: str | None) -> str | None:
    """A sysfs GUID ("946d:ae03:00cd:e72c") as ibstat prints it ("0x946dae0300cde72c")."""
    digits = (text or "").strip().replace(":", "").lower()
    if len(digits) != 16 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return "0x" + digits


def port_guid_of_gid(text: str | None) -> str | None:
    """The port GUID in GID 0 (its low 64 bits: "fe80:0000:0000:0000:946d:ae03:00cd:e72c")."""
    groups = (text or "").strip().split(":")
    return parse_guid(":".join(groups[4:])) if len(groups) == 8 else None


def read_counters(root: HostRoot, directory: str) -> dict[str, int]:
    """{file name: value} of a port's counters/ or hw_counters/ directory (unreadable or
    non-numeric files left out: some need root, and the kernel answers N/A for a few)."""
    out: dict[str, int] = {}
    for name in sorted(root.listdir(directory)):
        value = root.read_int(f"{directory}/{name}", None)
        if value is not None:
            out[name] = value
    return out


def roce_active_mtu(netdev_mtu: int) -> int:
    """The RoCE path MTU the kernel derives from the netdev MTU (`iboe_get_mtu()` in
    include/rdma/ib_addr.h): the MTU less the RoCEv2 headers, rounded down to an IB MTU."""
    payload = netdev_mtu - (40 + 8 + 12 + 4 + 28 + 4)  # GRH, UDP, BTH, DETH, AtomicETH, ICRC
    return next((m for m in IB_MTUS if payload >= m), 256)


def _netdevs(root: HostRoot, base: str) -> list[str]:
    names = set(root.listdir(f"{base}/device/net"))
    for port in root.listdir(f"{base}/ports"):  # kernel >= 5.x lists a port's netdev per GID
        for index in root.listdir(f"{base}/ports/{port}/gid_attrs/ndevs")[:1]:
            name = root.read_str(f"{base}/ports/{port}/gid_attrs/ndevs/{index}", "")
            if name:
                names.add(name)
    return sorted(names)


def _port(root: HostRoot, base: str, port: str, netdevs: list[str]) -> Port:
    path = f"{base}/ports/{port}"
    rate = root.read_str(f"{path}/rate", None)
    link_layer = root.read_str(f"{path}/link_layer", None)
    mtu = None
    if link_layer == "Ethernet" and netdevs:
        netdev_mtu = root.read_int(f"/sys/class/net/{netdevs[0]}/mtu", None)
        mtu = roce_active_mtu(netdev_mtu) if netdev_mtu is not None else None
    return Port(port=int(port), state=parse_state(root.read_str(f"{path}/state", None)),
                phys_state=parse_state(root.read_str(f"{path}/phys_state", None)),
                rate=rate, rate_gbps=parse_rate(rate), link_layer=link_layer, active_mtu=mtu,
                lid=parse_lid(root.read_str(f"{path}/lid", None)),
                sm_lid=parse_lid(root.read_str(f"{path}/sm_lid", None)),
                lmc=root.read_int(f"{path}/lid_mask_count", None),
                port_guid=port_guid_of_gid(root.read_str(f"{path}/gids/0", None)),
                counters=read_counters(root, f"{path}/counters"),
                hw_counters=read_counters(root, f"{path}/hw_counters"))


def read_device(root: HostRoot, notes: FactNotes, name: str) -> RdmaDevice:
    base = f"{IB_DIR}/{name}"
    address = device_pci_address(root, base)
    if address is None:
        notes.missing(f"devices.{name}.pci_address",
                      f"{base}/device does not resolve to a PCI device")
    netdevs = _netdevs(root, base)
    ports = [_port(root, base, p, netdevs) for p in
             sorted((p for p in root.listdir(f"{base}/ports") if p.isdigit()), key=int)]
    if any(p.link_layer == "InfiniBand" for p in ports):
        notes.missing(f"devices.{name}.ports.active_mtu", "sysfs does not expose an "
                      "InfiniBand port's active MTU (ibv_devinfo shows it)")
    return RdmaDevice(
        name=name, pci_address=address, numa_node=pci_numa_node(root, address, base),
        fw_ver=root.read_str(f"{base}/fw_ver", None),
        hca_type=root.read_str(f"{base}/hca_type", None),
        board_id=root.read_str(f"{base}/board_id", None),
        node_guid=parse_guid(root.read_str(f"{base}/node_guid", None)),
        sys_image_guid=parse_guid(root.read_str(f"{base}/sys_image_guid", None)),
        netdevs=netdevs, ports=ports,
    )


@register("rdma")
class RdmaCollector:
    """RDMA devices (/sys/class/infiniband): firmware, PCI address, NUMA node, netdevs, ports with
    state, rate and link layer."""

    requires = (IB_DIR,)

    def collect(self, ctx: Context) -> RdmaFacts:
        root = ctx.root
        names = [n for n in root.listdir(IB_DIR) if not n.startswith(".")]
        if not names:
            raise NoData(f"no RDMA devices: {IB_DIR} is absent or empty")
        notes = FactNotes(root)
        devices = [read_device(root, notes, n) for n in names]
        notes.source("devices", f"{IB_DIR}/*")
        notes.source("devices.*.ports", f"{IB_DIR}/*/ports/*")
        notes.source("devices.*.ports.*.counters", f"{IB_DIR}/*/ports/*/counters/*")
        notes.source("devices.*.ports.*.hw_counters", f"{IB_DIR}/*/ports/*/hw_counters/*")
        return RdmaFacts(devices=devices, sources=notes.sources, unknown=notes.unknown)
