"""PCI devices: class, ids, driver, NUMA locality, link speed and width, the chain of bridges
up to the root port, ACS control, MaxReadReq and Relaxed Ordering from config space, and the
IOMMU domain and ATS (Address Translation Services) enable bit of GPUs and NICs.

Sources: /sys/bus/pci/devices/<address> (a link into /sys/devices/pci<domain>:<bus>/...; the
directories along the link target are the device's parent bridges) and the device's binary
`config` file. Unprivileged readers get only the first 64 bytes of `config` (Linux
drivers/pci/pci-sysfs.c `pci_read_config`), so MaxReadReq, Relaxed Ordering and ACS need root.
The IOMMU domain type of a GPU's or NIC's group (/sys/kernel/iommu_groups/N/type, Linux 5.11+:
"identity" passes DMA through, "DMA" and "DMA-FQ" translate it; Documentation/ABI/testing/
sysfs-kernel-iommu_groups) is read for those devices only.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import field
from typing import TYPE_CHECKING, Annotated, Any, overload

from nodetune.collectors import register
from nodetune.errors import NoData
from nodetune.facts import cpulist
from nodetune.facts.model import FactSet, JsonKey, Keyed, to_jsonable
from nodetune.facts.pcie import gen_of, sysfs_address
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

if TYPE_CHECKING:
    from collections.abc import Callable

    from nodetune.collectors import Context

DEVICES_DIR = "/sys/bus/pci/devices"
IOMMU_GROUPS_DIR = "/sys/kernel/iommu_groups"
IOMMU_KINDS = ("gpu", "nic", "infiniband")  # devices on a GPUDirect path

# ACS Control register bits (PCIe Base Spec 6.0, 7.7.8.3), named as `lspci -vvv` prints them.
ACS_CTL_BITS: tuple[tuple[str, int], ...] = (
    ("SrcValid", 0), ("TransBlk", 1), ("ReqRedir", 2), ("CmpltRedir", 3),
    ("UpstreamFwd", 4), ("EgressCtrl", 5), ("DirectTrans", 6),
)
BRIDGE_CLASSES = (0x0604, 0x0609)  # PCI-to-PCI bridge, semi-transparent bridge
CAP_PCIE = 0x10
EXT_CAP_ACS = 0x000D
EXT_CAP_ATS = 0x000F
# PCIe capability "Device/Port Type" (bits 7:4 of the capability register).
PORT_TYPES: dict[int, str] = {
    0x4: "root_port", 0x5: "upstream", 0x6: "downstream", 0x7: "pcie_to_pci", 0x8: "pci_to_pcie",
}

_HOST_BRIDGE = re.compile(r"^pci[0-9a-fA-F]{4,}:[0-9a-fA-F]{2}$")
_SPEED = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*GT/s")

# Files read per device; listing the directory first avoids opening files that are absent.
_ID_FILES = ("class", "vendor", "device", "subsystem_vendor", "subsystem_device")


@record(frozen=True, kw_only=True)
class PciLink:
    current_speed_gts: float | None = None
    current_width: int | None = None
    max_speed_gts: float | None = None
    max_width: int | None = None
    current_gen: int | None = None
    max_gen: int | None = None


@record(frozen=True, kw_only=True)
class PciAcs:
    ctl: Annotated[dict[str, bool], Keyed("flag")]
    source_validation: bool


@record(frozen=True, kw_only=True)
class PciAer:
    """PCIe Advanced Error Reporting totals since boot (aer_dev_*, Linux >= 4.17)."""

    correctable: int | None
    nonfatal: int | None
    fatal: int | None


@record(frozen=True, kw_only=True)
class PciDevice:
    address: str
    pci_class: Annotated[str | None, JsonKey("class")]  # "0x030200"
    kind: str
    vendor: str | None
    device: str | None
    subsystem_vendor: str | None
    subsystem_device: str | None
    driver: str | None
    numa_node: int | None
    local_cpus: list[int] | None
    link: PciLink
    parent: str | None
    path: list[str]
    root_port: str | None
    switch: str | None
    host_bridge: str | None  # "pci0000:17": the root complex above the chain; None when unknown
    port_type: str | None  # PCIe port role from config space: root_port, upstream, downstream
    acs: PciAcs | None
    max_read_request_bytes: int | None
    aer: PciAer | None = None
    relaxed_ordering: bool | None = None  # Device Control "Enable Relaxed Ordering" (bit 4)
    ats_enabled: bool | None = None  # GPUs and NICs only: ATS Control "Enable" (bit 15); no
    # ATS capability reads as False
    iommu_group: int | None = None  # GPUs and NICs only
    iommu_domain: str | None = None  # the group's type: identity, DMA, DMA-FQ, unmanaged, ...


@record(frozen=True, kw_only=True)
class PciFacts(FactSet):
    devices: list[PciDevice] = field(default_factory=list)


# -- pure parsing ----------------------------------------------------------------------------
def parse_link_speed(text: str | None) -> float | None:
    """"32.0 GT/s PCIe" -> 32.0; "2.5 GT/s" -> 2.5; "Unknown" or None -> None."""
    if not text:
        return None
    match = _SPEED.search(text)
    return float(match.group(1)) if match else None


def parse_width(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text.strip().lstrip("x"))
    except ValueError:
        return None


def device_kind(class_code: int | None, vendor: int | None) -> str:
    """gpu, nic, infiniband, nvme, bridge, storage or other, from the 24-bit class code."""
    if class_code is None:
        return "other"
    base, sub = class_code >> 16, (class_code >> 8) & 0xFF
    if base == 0x03:  # display: NVIDIA/AMD compute GPUs; a BMC's VGA is not a GPU
        return "gpu" if vendor in (0x10DE, 0x1002) else "other"
    if base == 0x12 and vendor in (0x10DE, 0x1002):  # processing accelerator
        return "gpu"
    if base == 0x02:
        return "infiniband" if sub == 0x07 else "nic"
    if base == 0x0C and sub == 0x06:  # serial bus: InfiniBand (e.g. QLogic qib)
        return "infiniband"
    if base == 0x01:
        return "nvme" if sub == 0x08 else "storage"
    if base == 0x06:
        return "bridge"
    return "other"


def parse_chain(resolved: str) -> tuple[str, list[str]] | None:
    """The host bridge and the PCI addresses above a device, from its resolved sysfs path.

    "/sys/devices/pci0000:17/0000:17:01.0/0000:18:00.0/0000:19:01.0/0000:1b:00.0" ->
    ("pci0000:17", ["0000:17:01.0", "0000:18:00.0", "0000:19:01.0"]). The last host bridge
    component wins (an Intel VMD domain nests pci10000:00 inside a 0000 device). None when
    the path holds no host bridge: the tree stores devices as plain directories.
    """
    parts = resolved.strip("/").split("/")
    bridge_at = -1
    for i, part in enumerate(parts):
        if _HOST_BRIDGE.match(part):
            bridge_at = i
    if bridge_at < 0:
        return None
    chain = [p.lower() for p in parts[bridge_at + 1:] if sysfs_address(p)]
    return parts[bridge_at].lower(), chain[:-1]


def chain_roles(chain: list[str], known: dict[str, str | None],
                has_bridge_children: set[str] | None = None) -> list[str | None]:
    """Port role of every bridge in a chain (root port first).

    Roles come from the bridge's PCIe capability when its config space was readable
    (`known`); otherwise from its place in the chain: the first bridge is a root port; a
    bridge below a root port or a downstream port is a switch's upstream port when bridges
    hang below it (`has_bridge_children`; a PCIe-to-PCI bridge has only endpoints below), and
    a bridge below an upstream port is one of its downstream ports.
    """
    roles: list[str | None] = []
    for i, address in enumerate(chain):
        role = known.get(address)
        if role is None:
            if i == 0:
                role = "root_port"
            elif roles[-1] == "upstream":
                role = "downstream"
            elif has_bridge_children is None or address in has_bridge_children:
                role = "upstream"
            else:
                role = "bridge"
        roles.append(role)
    return roles


def nearest_switch(chain: list[str], roles: list[str | None]) -> str | None:
    """The upstream port of the nearest PCIe switch above a device (None if none)."""
    for address, role in zip(reversed(chain), reversed(roles), strict=True):
        if role == "upstream":
            return address
    return None


HEADER = 0x40  # the standard configuration header (type 0 and type 1)


class LazyConfig:
    """A device's config space read on demand: the 64-byte standard header at once, the rest
    (the capability list from 0x40, the extended space from 0x100) only where a parser looks,
    in aligned dwords. The kernel reads config space one dword at a time
    (drivers/pci/pci-sysfs.c `pci_read_config`), 10-17 us each on a KVM or Firecracker guest,
    so reading all 4 KiB of every device cost more than everything else `check` reads; the
    capabilities parsed here are a few dwords of the capability lists."""

    __slots__ = ("_fd", "_head", "_size", "_words", "reads")

    def __init__(self, fd: int, head: bytes, size: int) -> None:
        self._fd = fd
        self._head = head
        self._size = size
        self._words: dict[int, bytes] = {}
        self.reads = 1  # pread calls made, for tests and benchmarks

    @classmethod
    def open(cls, path: str) -> LazyConfig | bytes | None:
        """The config space at `path`: plain bytes when it is no longer than the header
        (an unprivileged reader gets 64 bytes), else a LazyConfig; None when unreadable."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            head = os.pread(fd, HEADER, 0)
            size = os.fstat(fd).st_size
            # an unprivileged reader gets the header only: the next dword reads empty
            rest = os.pread(fd, 4, HEADER) if len(head) == HEADER and size > HEADER else b""
        except OSError:
            os.close(fd)
            return None
        if len(rest) < 4:
            os.close(fd)
            return head
        config = cls(fd, head, size)
        config._words[HEADER] = rest
        config.reads = 2
        return config

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __len__(self) -> int:
        return self._size

    def _word(self, offset: int) -> bytes:
        word = self._words.get(offset)
        if word is None:
            word = b""
            if self._fd >= 0:
                try:
                    word = os.pread(self._fd, 4, offset)
                except OSError:
                    word = b""
                self.reads += 1
            word = word.ljust(4, b"\xff")  # unreadable reads as absent (all ones)
            self._words[offset] = word
        return word

    def _bytes(self, start: int, stop: int) -> bytes:
        stop = min(stop, self._size)
        if stop <= HEADER:
            return self._head[start:stop]
        parts = [self._head[start:HEADER]] if start < HEADER else []
        first = max(start, HEADER)
        for aligned in range(first & ~3, stop, 4):
            word = self._word(aligned)
            parts.append(word[max(first - aligned, 0):stop - aligned])
        return b"".join(parts)

    @overload
    def __getitem__(self, key: int) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> bytes: ...
    def __getitem__(self, key: int | slice) -> int | bytes:
        if isinstance(key, slice):
            start, stop, _ = key.indices(self._size)
            return self._bytes(start, stop)
        if not 0 <= key < self._size:
            raise IndexError(key)
        return self._head[key] if key < HEADER else self._word(key & ~3)[key & 3]


def read_config(root: HostRoot, path: str) -> bytes | LazyConfig | None:
    """The config space of a device: read lazily from a plain tree or the live host, whole
    through `root` where it records what it reads (snapshots) or serves it from memory."""
    if type(root) is HostRoot and not root.recording:
        found = LazyConfig.open(root.path(path))
        if found is not None:
            return found
    data: bytes | None = root.read_bytes(path, None)
    return data


def _u16(data: bytes | LazyConfig, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 2], "little")


def _u32(data: bytes | LazyConfig, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 4], "little")


def find_capability(config: bytes | LazyConfig, cap_id: int) -> int | None:
    """Offset of a standard capability in config space (the list starts at 0x34)."""
    if len(config) < 0x40 or not _u16(config, 0x06) & 0x10:  # Status: Capabilities List
        return None
    offset = config[0x34] & 0xFC
    for _ in range(48):
        if offset < 0x40 or offset + 2 > len(config):
            return None
        if config[offset] == cap_id:
            return offset
        offset = config[offset + 1] & 0xFC
    return None


def find_ext_capability(config: bytes | LazyConfig, cap_id: int) -> int | None:
    """Offset of an extended capability (the list starts at 0x100)."""
    offset = 0x100
    for _ in range(960):
        if offset < 0x100 or offset + 4 > len(config):
            return None
        header = _u32(config, offset)
        if header in (0, 0xFFFFFFFF):
            return None
        if header & 0xFFFF == cap_id:
            return offset
        offset = (header >> 20) & 0xFFC
    return None


def parse_max_read_request(config: bytes | LazyConfig) -> int | None:
    """MaxReadReq in bytes: PCIe Device Control bits 14:12 (128 << value)."""
    cap = find_capability(config, CAP_PCIE)
    if cap is None or cap + 0x0A > len(config):
        return None
    return 128 << ((_u16(config, cap + 0x08) >> 12) & 0x7)


def parse_relaxed_ordering(config: bytes | LazyConfig) -> bool | None:
    """Whether the device may issue Relaxed Ordering requests: Device Control bit 4 (PCIe Base
    Spec 6.0, 7.5.3.4 "Enable Relaxed Ordering")."""
    cap = find_capability(config, CAP_PCIE)
    if cap is None or cap + 0x0A > len(config):
        return None
    return bool(_u16(config, cap + 0x08) >> 4 & 1)


def parse_ats(config: bytes | LazyConfig) -> bool | None:
    """Whether Address Translation Services are enabled: ATS Control bit 15 (PCIe Base Spec
    6.0, 10.5.1.3); None when the device has no ATS capability."""
    cap = find_ext_capability(config, EXT_CAP_ATS)
    if cap is None or cap + 8 > len(config):
        return None
    return bool(_u16(config, cap + 0x06) >> 15 & 1)


def parse_port_type(config: bytes | LazyConfig) -> str | None:
    cap = find_capability(config, CAP_PCIE)
    if cap is None or cap + 4 > len(config):
        return None
    return PORT_TYPES.get((_u16(config, cap + 0x02) >> 4) & 0xF)


def parse_acs(config: bytes | LazyConfig) -> PciAcs | None:
    """The ACS Control register, or None when the device has no ACS capability."""
    cap = find_ext_capability(config, EXT_CAP_ACS)
    if cap is None or cap + 8 > len(config):
        return None
    ctl = _u16(config, cap + 0x06)
    flags = {name: bool(ctl >> bit & 1) for name, bit in ACS_CTL_BITS}
    return PciAcs(ctl=flags, source_validation=flags["SrcValid"])


def _hex(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def _address_key(address: str) -> tuple[int, ...]:
    domain, bus, devfn = address.split(":")
    dev, _, fn = devfn.partition(".")
    return int(domain, 16), int(bus, 16), int(dev, 16), int(fn or "0", 16)


# -- reading -----------------------------------------------------------------------------------
@record
class _Raw:
    """What one device's directory yields before the chain is resolved."""

    address: str
    ids: dict[str, str | None]
    driver: str | None
    numa_node: int | None
    local_cpus: list[int] | None
    link: PciLink
    chain: tuple[str, list[str]] | None
    port_type: str | None
    acs: PciAcs | None
    max_read_request: int | None
    relaxed_ordering: bool | None
    ats_enabled: bool | None
    iommu_group: int | None
    iommu_domain: str | None
    aer: PciAer | None
    unknown: dict[str, str]


AER_FILES = {"correctable": ("aer_dev_correctable", "TOTAL_ERR_COR"),
             "nonfatal": ("aer_dev_nonfatal", "TOTAL_ERR_NONFATAL"),
             "fatal": ("aer_dev_fatal", "TOTAL_ERR_FATAL")}


def parse_aer_total(text: str | None, key: str) -> int | None:
    """The TOTAL_ERR_* line of an aer_dev_* file ("TOTAL_ERR_FATAL 0"), None when absent."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _aer(read: Callable[[str], str | None], names: set[str],
         unknown: dict[str, str]) -> PciAer | None:
    if not any(f in names for f, _ in AER_FILES.values()):
        unknown["aer"] = "no aer_dev_* files (no AER capability, or a kernel before 4.17)"
        return None
    totals = {field_: parse_aer_total(read(f), key) for field_, (f, key) in AER_FILES.items()}
    for field_, value in totals.items():
        if value is None:
            unknown[f"aer.{field_}"] = f"no {AER_FILES[field_][1]} line in {AER_FILES[field_][0]}"
    return PciAer(**totals)


class _ConfigReasons:
    """Why config-space facts are unknown, worded for who runs nodetune."""

    def __init__(self, root: HostRoot) -> None:
        self.privileged = root.is_live and os.geteuid() == 0
        self.live = root.is_live

    def short(self, size: int) -> str:
        return f"config space beyond {size} bytes needs root"

    def no_extended(self) -> str:
        if self.privileged:
            return "device exposes no extended config space"
        return "config space beyond 256 bytes needs root"


def _resolve(root: HostRoot, devices_dir: str, link_path: str) -> str:
    """Where /sys/bus/pci/devices/<address> leads (itself when it is a plain directory).

    sysfs links are relative and the directories along /sys/devices are real, so one readlink
    and a string join replace the component-by-component walk of a general realpath."""
    target = root.readlink(link_path)
    if target is None:
        return link_path
    resolved = posixpath.normpath(posixpath.join(devices_dir, target))
    return resolved if root.isdir(resolved) else root.realpath(link_path)


def _iommu(root: HostRoot, base: str, names: set[str], domains: dict[int, str | None],
           unknown: dict[str, str]) -> tuple[int | None, str | None]:
    """The device's IOMMU group and that group's domain type (read once per group)."""
    if "iommu_group" not in names:
        unknown["iommu_domain"] = "no iommu_group link (no IOMMU in use for this device)"
        return None, None
    target = root.readlink(f"{base}/iommu_group") or ""
    name = target.rstrip("/").rsplit("/", 1)[-1]
    if not name.isdigit():
        unknown["iommu_domain"] = f"iommu_group links to {target!r}, not a group"
        return None, None
    group = int(name)
    if group not in domains:
        domains[group] = root.read_str(f"{IOMMU_GROUPS_DIR}/{group}/type", None)
    if domains[group] is None:
        unknown["iommu_domain"] = (f"{IOMMU_GROUPS_DIR}/{group}/type unreadable "
                                   "(a kernel before 5.11)")
    return group, domains[group]


def _read_device(root: HostRoot, address: str, reasons: _ConfigReasons,
                 devices_dir: str = DEVICES_DIR,
                 domains: dict[int, str | None] | None = None) -> _Raw:
    link_path = f"{DEVICES_DIR}/{address}"
    resolved = _resolve(root, devices_dir, link_path)
    base = resolved
    names = set(root.listdir(base))
    unknown: dict[str, str] = {}

    def read(name: str) -> str | None:
        if name not in names:
            return None
        return root.read_str(f"{base}/{name}", None)

    ids = {name: read(name) for name in _ID_FILES}
    driver = None
    if "driver" in names or "driver.link" in names:
        target = root.readlink(f"{base}/driver")
        driver = target.rstrip("/").rsplit("/", 1)[-1] if target else None

    numa_node: int | None = None
    numa_text = read("numa_node")
    if numa_text is None:
        unknown["numa_node"] = "no numa_node file (kernel built without NUMA, or not readable)"
    else:
        try:
            numa_node = int(numa_text)
        except ValueError:
            unknown["numa_node"] = f"numa_node holds {numa_text!r}"
        else:
            if numa_node < 0:
                numa_node = None
                unknown["numa_node"] = ("sysfs numa_node is -1: the firmware gives no NUMA "
                                        "locality for this device (common in VMs)")

    local_cpus: list[int] | None = None
    cpus_text = read("local_cpulist")
    if cpus_text is not None:
        local_cpus = cpulist.parse_or_none(cpus_text)
        if local_cpus is None:
            unknown["local_cpus"] = f"local_cpulist holds {cpus_text[:40]!r}, not a CPU list"
    else:
        mask = read("local_cpus")
        if mask is not None:
            local_cpus = cpulist.parse_or_none(mask, mask=True)
        else:
            unknown["local_cpus"] = "no local_cpulist or local_cpus file"

    cur_speed = parse_link_speed(read("current_link_speed"))
    max_speed = parse_link_speed(read("max_link_speed"))
    link = PciLink(
        current_speed_gts=cur_speed, current_width=parse_width(read("current_link_width")),
        max_speed_gts=max_speed, max_width=parse_width(read("max_link_width")),
        current_gen=gen_of(cur_speed), max_gen=gen_of(max_speed),
    )
    if "current_link_speed" not in names and "max_link_speed" not in names:
        unknown["link"] = "no *_link_speed files (not a PCI Express link, or an old kernel)"

    chain = parse_chain(resolved) if resolved != link_path else None
    if chain is None:
        unknown["path"] = ("the tree stores the device as a plain directory, not a link into "
                           "/sys/devices/pci*: parent bridges unknown")

    config = read_config(root, f"{base}/config") if "config" in names else None
    on_path = device_kind(_hex(ids["class"]), _hex(ids["vendor"])) in IOMMU_KINDS
    ats = None
    try:
        port_type, acs, mrrs = _config_facts(config, reasons, unknown)
        relaxed = None if config is None else parse_relaxed_ordering(config)
        if on_path and config is not None and len(config) > 0x100:
            ats = bool(parse_ats(config))  # no ATS capability: the device cannot use ATS
    finally:
        if isinstance(config, LazyConfig):
            config.close()
    if relaxed is None:
        unknown["relaxed_ordering"] = unknown.get("max_read_request_bytes", "not read")
    group = domain = None
    if on_path:
        if ats is None:
            unknown["ats_enabled"] = unknown.get("acs", "no readable config file")
        group, domain = _iommu(root, base, names, {} if domains is None else domains, unknown)
    return _Raw(address=address, ids=ids, driver=driver, numa_node=numa_node,
                local_cpus=local_cpus, link=link, chain=chain, port_type=port_type, acs=acs,
                max_read_request=mrrs, relaxed_ordering=relaxed, ats_enabled=ats,
                iommu_group=group,
                iommu_domain=domain, aer=_aer(read, names, unknown), unknown=unknown)


def _config_facts(config: bytes | LazyConfig | None, reasons: _ConfigReasons,
                  unknown: dict[str, str]) -> tuple[str | None, PciAcs | None, int | None]:
    """Port type, ACS and MaxReadReq from config space; why not, in `unknown`."""
    port_type = acs = mrrs = None
    if config is None:
        unknown["acs"] = unknown["max_read_request_bytes"] = "no readable config file"
    else:
        port_type = parse_port_type(config)
        mrrs = parse_max_read_request(config)
        has_pcie = len(config) > 0x40 and find_capability(config, CAP_PCIE) is not None
        if mrrs is None:
            if len(config) <= 0x40:
                unknown["max_read_request_bytes"] = reasons.short(len(config))
            elif not has_pcie:
                unknown["max_read_request_bytes"] = "not a PCI Express device"
            else:
                unknown["max_read_request_bytes"] = "PCIe capability beyond the readable bytes"
        if len(config) <= 0x100:
            if len(config) <= 0x40 or has_pcie:
                unknown["acs"] = (reasons.short(len(config)) if len(config) < 0x100
                                  else reasons.no_extended())
            else:
                unknown["acs"] = "not a PCI Express device: no extended capabilities"
        else:
            acs = parse_acs(config)
            if acs is None:
                unknown["acs"] = "no ACS capability"
    return port_type, acs, mrrs


def _build(raws: list[_Raw]) -> PciFacts:
    known_roles = {r.address: r.port_type for r in raws if r.port_type in PORT_TYPES.values()}
    classes = {r.address: _hex(r.ids["class"]) for r in raws}
    has_bridge_children = {r.chain[1][-1] for r in raws if r.chain and r.chain[1]
                           and (classes[r.address] or 0) >> 8 in BRIDGE_CLASSES}
    devices: list[PciDevice] = []
    unknown: dict[str, str] = {}
    sources: dict[str, str] = {
        "devices": f"{DEVICES_DIR}/*",
        "devices.*.acs": f"{DEVICES_DIR}/*/config (extended capability 0x000D)",
        "devices.*.max_read_request_bytes": f"{DEVICES_DIR}/*/config (PCIe Device Control)",
        "devices.*.relaxed_ordering": f"{DEVICES_DIR}/*/config (PCIe Device Control)",
        "devices.*.ats_enabled": f"{DEVICES_DIR}/*/config (extended capability 0x000F)",
        "devices.*.iommu_domain": f"{DEVICES_DIR}/*/iommu_group, {IOMMU_GROUPS_DIR}/*/type",
        "devices.*.aer": f"{DEVICES_DIR}/*/aer_dev_correctable,aer_dev_nonfatal,aer_dev_fatal",
    }
    for index, raw in enumerate(raws):
        class_code = classes[raw.address]
        path: list[str] = []
        parent = root_port = switch = host_bridge = None
        if raw.chain is not None:
            host_bridge, path = raw.chain
            # Only bridges (class 0x0604/0x0609) count as switch ports; a non-bridge parent
            # (a VMD controller) ends the chain above it.
            path = [a for a in path if classes.get(a) is None or (classes[a] or 0) >> 8
                    in BRIDGE_CLASSES]
            if path:
                parent, root_port = path[-1], path[0]
                switch = nearest_switch(path, chain_roles(path, known_roles, has_bridge_children))
        for name, reason in raw.unknown.items():
            unknown[f"devices.{index}.{name}"] = f"{raw.address}: {reason}"
        devices.append(PciDevice(
            address=raw.address,
            pci_class=raw.ids["class"],
            kind=device_kind(class_code, _hex(raw.ids["vendor"])),
            vendor=raw.ids["vendor"], device=raw.ids["device"],
            subsystem_vendor=raw.ids["subsystem_vendor"],
            subsystem_device=raw.ids["subsystem_device"],
            driver=raw.driver, numa_node=raw.numa_node, local_cpus=raw.local_cpus,
            link=raw.link, parent=parent, path=path, root_port=root_port, switch=switch,
            host_bridge=host_bridge, port_type=raw.port_type, acs=raw.acs,
            max_read_request_bytes=raw.max_read_request, aer=raw.aer,
            relaxed_ordering=raw.relaxed_ordering, ats_enabled=raw.ats_enabled,
            iommu_group=raw.iommu_group,
            iommu_domain=raw.iommu_domain,
        ))
    return PciFacts(devices=devices, sources=sources, unknown=unknown)


def collect_pci(root: HostRoot) -> PciFacts:
    addresses = [a for a in root.listdir(DEVICES_DIR) if sysfs_address(a.removesuffix(".link"))]
    if not addresses:
        raise NoData(f"no PCI devices under {DEVICES_DIR}")
    addresses = sorted({a.removesuffix(".link").lower() for a in addresses}, key=_address_key)
    reasons = _ConfigReasons(root)
    devices_dir = root.realpath(DEVICES_DIR)
    domains: dict[int, str | None] = {}
    return _build([_read_device(root, a, reasons, devices_dir, domains) for a in addresses])


def device_json(dev: PciDevice) -> dict[str, Any]:
    doc = to_jsonable(dev)
    doc = {"address": doc.pop("address"), "class": doc.pop("pci_class"), **doc}
    return doc


@register("pci")
class PciCollector:
    """PCI devices: class, driver, NUMA node, link speed/width, parent bridges, ACS, MaxReadReq,
    Relaxed Ordering, IOMMU domain of GPUs and NICs."""

    requires = ("/sys/bus/pci/devices",)

    def collect(self, ctx: Context) -> PciFacts:
        return collect_pci(ctx.root)

    def to_sections(self, facts: PciFacts) -> dict[str, Any]:
        return {"pci": {"devices": [device_json(d) for d in facts.devices],
                        "sources": facts.sources, "unknown": facts.unknown}}
