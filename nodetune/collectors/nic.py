"""Network interface facts: driver, speed, MTU, state, PCI device, NUMA node, IRQ CPUs,
carrier changes, bonding members and SR-IOV virtual functions."""

from __future__ import annotations

from dataclasses import field

from nodetune.collectors import Context, register
from nodetune.collectors.sysfs import (
    FactNotes,
    device_pci_address,
    link_name,
    pci_address_in,
    pci_numa_node,
    why_unreadable,
)
from nodetune.errors import NoData
from nodetune.facts import cpulist
from nodetune.facts.model import FactSet
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

NET_DIR = "/sys/class/net"
ECN_PRIORITIES = range(8)  # IEEE 802.1p priorities, ecn/<protocol>/enable/<prio>
QOS_MAX_FILES = 32  # qos/ holds a handful of small attribute files
# ARPHRD_* values of /sys/class/net/<if>/type (include/uapi/linux/if_arp.h)
LINK_TYPES = {1: "ethernet", 32: "infiniband", 772: "loopback", 65534: "none"}


@record(frozen=True, kw_only=True)
class RoceEcn:
    """RoCE ECN (DCQCN) per priority, /sys/class/net/<if>/ecn/roce_rp|roce_np/enable/<prio>:
    the reaction point slows the sender on CNPs, the notification point sends them."""

    rp_enabled: list[int]  # priorities whose reaction point is on
    np_enabled: list[int]
    priorities_read: int  # priorities whose two enable files could be read


@record(frozen=True, kw_only=True)
class Interface:
    name: str
    driver: str | None
    speed_mbps: int | None
    mtu: int | None
    operstate: str | None
    link_type: str | None
    pci_address: str | None
    numa_node: int | None
    irq_cpus: list[int] | None
    virtual: bool
    rdma_device: str | None
    carrier_changes: int | None  # link ups and downs since boot (flaps)
    bond_slaves: list[str] | None  # a bonding master's member interfaces; None if not a bond
    bond_mode: str | None
    sriov_numvfs: int | None  # SR-IOV virtual functions enabled (None: no SR-IOV)
    sriov_totalvfs: int | None
    ecn: RoceEcn | None  # RoCE interfaces with the ecn/ directory (MLNX_OFED mlx5_core)
    qos: dict[str, str] | None  # RoCE: qos/<file> as text (trust, pfc, ...: MLNX_OFED)


@record(frozen=True, kw_only=True)
class NicFacts(FactSet):
    interfaces: list[Interface] = field(default_factory=list)


def parse_speed(text: str | None) -> int | None:
    """/sys/class/net/<if>/speed: Mb/s; -1 or 4294967295 (SPEED_UNKNOWN) mean no link speed."""
    try:
        value = int(text) if text else -1
    except ValueError:
        return None
    return value if 0 < value < 0xFFFFFFFF else None


def _irq_cpus(root: HostRoot, notes: FactNotes, name: str, device: str) -> list[int] | None:
    """CPUs allowed to serve the device's interrupts (MSI/MSI-X vectors, else its INTx line)."""
    irqs = [i for i in root.listdir(f"{device}/msi_irqs") if i.isdigit()]
    if not irqs:
        legacy = root.read_int(f"{device}/irq", 0)
        irqs = [str(legacy)] if legacy else []
    if not irqs:
        notes.missing(f"interfaces.{name}.irq_cpus", f"{device} lists no msi_irqs and no irq")
        return None
    cpus: set[int] = set()
    read = 0
    for irq in irqs:
        text = root.read_str(f"/proc/irq/{irq}/smp_affinity_list", None)
        if text is not None:
            cpus.update(cpulist.parse_or_none(text) or ())
            read += 1
    if not read:
        notes.missing(f"interfaces.{name}.irq_cpus",
                      why_unreadable(root, f"/proc/irq/{irqs[0]}/smp_affinity_list"))
        return None
    return sorted(cpus)


def read_ecn(root: HostRoot, base: str) -> RoceEcn | None:
    """The ECN enable state per priority; None when the driver has no ecn/ directory."""
    if not root.isdir(f"{base}/ecn"):
        return None
    enabled: dict[str, list[int]] = {"roce_rp": [], "roce_np": []}
    read = 0
    for prio in ECN_PRIORITIES:
        values = {point: root.read_int(f"{base}/ecn/{point}/enable/{prio}", None)
                  for point in enabled}
        if None in values.values():
            continue
        read += 1
        for point, value in values.items():
            if value:
                enabled[point].append(prio)
    return RoceEcn(rp_enabled=enabled["roce_rp"], np_enabled=enabled["roce_np"],
                   priorities_read=read)


def read_qos(root: HostRoot, base: str) -> dict[str, str] | None:
    """The files of qos/ as text (first line each); None when there is no qos/ directory."""
    if not root.isdir(f"{base}/qos"):
        return None
    out = {}
    for name in sorted(root.listdir(f"{base}/qos"))[:QOS_MAX_FILES]:
        text = root.read_str(f"{base}/qos/{name}", None)
        if text is not None:
            out[name] = " ".join(text.split())
    return out


def read_interface(root: HostRoot, notes: FactNotes, name: str) -> Interface:
    base = f"{NET_DIR}/{name}"
    device = f"{base}/device"
    target = root.readlink(base) or ""
    has_device = root.exists(device) or root.readlink(device) is not None
    # a gathered tree may keep the class link into the PCI device but not its `device` link
    address = device_pci_address(root, base) if has_device else pci_address_in(
        root.realpath(base))
    virtual = "/devices/virtual/" in target or (not has_device and address is None)
    driver = link_name(root, f"{device}/driver") if has_device else None
    if has_device and driver is None:
        notes.missing(f"interfaces.{name}.driver", f"{device}/driver is not present")
    speed_text = root.read_str(f"{base}/speed", None)
    speed = parse_speed(speed_text)
    if speed is None and not virtual:
        present = speed_text is not None or root.exists(f"{base}/speed")
        notes.missing(f"interfaces.{name}.speed_mbps", "link down or speed not reported"
                      if present else f"{base}/speed is not present")
    kind = root.read_int(f"{base}/type", None)
    numa = None
    if address is not None:
        numa = pci_numa_node(root, address, base)
        if numa is None:
            notes.missing(f"interfaces.{name}.numa_node",
                          "numa_node is -1: firmware gives no NUMA affinity")
    elif has_device:
        notes.missing(f"interfaces.{name}.pci_address",
                      f"{device} does not resolve to a PCI device")
    rdma = root.listdir(f"{device}/infiniband") if has_device else []
    slaves_text = root.read_str(f"{base}/bonding/slaves", None)
    bond_mode = root.read_str(f"{base}/bonding/mode", None)
    roce = bool(rdma) and kind == 1  # an RDMA device on an Ethernet link: RoCE
    ecn = read_ecn(root, base) if roce else None
    if roce and ecn is None:
        notes.missing(f"interfaces.{name}.ecn", f"{base}/ecn is not present (MLNX_OFED's "
                      "mlx5_core has it; the upstream driver does not)")
    return Interface(
        name=name, driver=driver, speed_mbps=speed, mtu=root.read_int(f"{base}/mtu", None),
        operstate=root.read_str(f"{base}/operstate", None),
        link_type=LINK_TYPES.get(kind, str(kind)) if kind is not None else None,
        pci_address=address, numa_node=numa,
        irq_cpus=_irq_cpus(root, notes, name, f"/sys/bus/pci/devices/{address}" if address
                           else device) if has_device else None,
        virtual=virtual, rdma_device=rdma[0] if rdma else None,
        carrier_changes=root.read_int(f"{base}/carrier_changes", None),
        bond_slaves=slaves_text.split() if slaves_text is not None else None,
        bond_mode=bond_mode.split()[0] if bond_mode else None,
        sriov_numvfs=root.read_int(f"{device}/sriov_numvfs", None) if has_device else None,
        sriov_totalvfs=root.read_int(f"{device}/sriov_totalvfs", None) if has_device else None,
        ecn=ecn, qos=read_qos(root, base) if roce else None,
    )


def interface_names(root: HostRoot) -> list[str]:
    """The interfaces of /sys/class/net: its links and directories, not lo, not its regular
    files (`bonding_masters`, written by the bonding driver, lists bonds; it is no interface)."""
    out = []
    for name in root.listdir(NET_DIR):
        path = f"{NET_DIR}/{name}"
        if name == "lo" or name.startswith("."):
            continue
        if root.islink(path) or root.isdir(path) or root.readlink(path) is not None:
            out.append(name)
    return out


@register("nic")
class NicCollector:
    """Network interfaces (not lo): driver, speed, MTU, state, PCI address, NUMA node, IRQ CPUs."""

    requires = (NET_DIR,)

    def collect(self, ctx: Context) -> NicFacts:
        root = ctx.root
        if not root.isdir(NET_DIR):
            raise NoData(f"{NET_DIR} is not present")
        notes = FactNotes(root)
        interfaces = [read_interface(root, notes, n) for n in interface_names(root)]
        notes.source("interfaces", f"{NET_DIR}/*")
        notes.source("interfaces.*.ecn", f"{NET_DIR}/*/ecn/roce_rp|roce_np/enable/*")
        notes.source("interfaces.*.qos", f"{NET_DIR}/*/qos/*")
        notes.source("interfaces.*.irq_cpus",
                     "/proc/irq/*/smp_affinity_list of the device's msi_irqs")
        return NicFacts(interfaces=interfaces, sources=notes.sources, unknown=notes.unknown)
