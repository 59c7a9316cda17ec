"""Storage facts: block devices with their queue settings and PCI placement, NVMe controllers
(model, firmware, state) and mounts."""

from __future__ import annotations

import re
from dataclasses import field

from nodetune.collectors import Context, register
from nodetune.collectors.kernel import read_mounts
from nodetune.collectors.sysfs import FactNotes, bracketed, device_pci_address, pci_numa_node
from nodetune.facts.model import FactSet
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

SECTOR_BYTES = 512  # /sys/block/*/size counts 512-byte sectors whatever the device's block size


@record(frozen=True, kw_only=True)
class BlockDevice:
    name: str
    kind: str  # "nvme" | "disk" | "virtual"
    rotational: bool | None
    scheduler: str | None
    schedulers: list[str]
    read_ahead_kb: int | None
    nr_requests: int | None
    max_sectors_kb: int | None
    size_bytes: int | None
    pci_address: str | None
    numa_node: int | None
    model: str | None


@record(frozen=True, kw_only=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str
    options: list[str]
    read_only: bool


@record(frozen=True, kw_only=True)
class NvmeController:
    name: str  # "nvme0"
    model: str | None
    firmware_rev: str | None
    state: str | None  # "live" when usable; "resetting", "connecting", "dead" otherwise
    transport: str | None  # "pcie", "tcp", "rdma", "fc"
    pci_address: str | None
    numa_node: int | None


@record(frozen=True, kw_only=True)
class StorageFacts(FactSet):
    block: list[BlockDevice] = field(default_factory=list)
    nvme: list[NvmeController] = field(default_factory=list)
    mounts: list[Mount] | None = None


def parse_scheduler(text: str | None) -> tuple[str | None, list[str]]:
    """"none [mq-deadline] kyber" -> ("mq-deadline", [...]); "none" alone -> ("none", ["none"])."""
    if not text:
        return None, []
    chosen, choices = bracketed(text)
    if chosen is None and len(choices) == 1:
        chosen = choices[0]
    return chosen, choices


def block_names(root: HostRoot) -> list[str]:
    """Whole-disk block devices: /sys/block, plus /sys/class/block entries without a
    `partition` file (some gathered trees list NVMe only there). Unused loop and ram disks
    are left out, as lsblk does; an entry whose link target a gathered tree lacks stays, with
    unknown values."""
    names = set(root.listdir("/sys/block"))
    for name in root.listdir("/sys/class/block"):
        if name not in names and root.isdir(f"/sys/class/block/{name}") \
                and not root.exists(f"/sys/class/block/{name}/partition"):
            names.add(name)  # a gathered tree may list a device only here
    out = []
    for name in sorted(names):
        base = _block_dir(root, name) or f"/sys/block/{name}"
        if re.fullmatch(r"ram\d+", name):
            continue
        if re.fullmatch(r"loop\d+", name) and root.read_int(f"{base}/size", 0) == 0:
            continue
        out.append(name)
    return out


def _block_dir(root: HostRoot, name: str) -> str | None:
    for base in (f"/sys/block/{name}", f"/sys/class/block/{name}"):
        if root.isdir(base):
            return base
    return None


def _nvme_pci(root: HostRoot, base: str) -> str | None:
    """PCI address of a multipath NVMe namespace (under nvme-subsystem): via a controller."""
    for entry in root.listdir(f"{base}/device"):
        if re.fullmatch(r"nvme\d+", entry):
            address = device_pci_address(root, f"{base}/device/{entry}")
            if address:
                return address
    return None


def read_block(root: HostRoot, notes: FactNotes, name: str) -> BlockDevice:
    base = _block_dir(root, name) or f"/sys/block/{name}"
    target = root.realpath(base)
    has_device = root.exists(f"{base}/device") or root.readlink(f"{base}/device") is not None
    address = device_pci_address(root, base) if has_device or "/devices/" in target else None
    if name.startswith("nvme"):
        kind = "nvme"
        address = address or _nvme_pci(root, base)
    elif "/devices/virtual/" in target or not has_device:
        kind = "virtual"
    else:
        kind = "disk"
    if kind == "nvme" and address is None:
        notes.missing(f"block.{name}.pci_address",
                      f"{base}/device does not resolve to a PCI device")
    if not root.isdir(base):
        notes.missing(f"block.{name}", f"{base} links to {target}, which this tree lacks")
    queue = f"{base}/queue"
    scheduler, schedulers = parse_scheduler(root.read_str(f"{queue}/scheduler", None))
    rotational = root.read_int(f"{queue}/rotational", None)
    size = root.read_int(f"{base}/size", None)
    model = root.read_str(f"{base}/device/model", None)
    return BlockDevice(
        name=name, kind=kind, rotational=bool(rotational) if rotational is not None else None,
        scheduler=scheduler, schedulers=schedulers,
        read_ahead_kb=root.read_int(f"{queue}/read_ahead_kb", None),
        nr_requests=root.read_int(f"{queue}/nr_requests", None),
        max_sectors_kb=root.read_int(f"{queue}/max_sectors_kb", None),
        size_bytes=size * SECTOR_BYTES if size is not None else None,
        pci_address=address, numa_node=pci_numa_node(root, address, base),
        model=model.replace("\x00", "").strip() or None if model is not None else None,
    )


NVME_CLASS = "/sys/class/nvme"


def read_nvme_controllers(root: HostRoot, notes: FactNotes) -> list[NvmeController]:
    """NVMe controllers (/sys/class/nvme/nvmeN): model, firmware, state, transport, PCI place.
    The serial number is never read."""
    out = []
    for name in root.listdir(NVME_CLASS):
        if not re.fullmatch(r"nvme\d+", name):
            continue
        base = f"{NVME_CLASS}/{name}"

        def text(leaf: str, base: str = base) -> str | None:
            value = root.read_str(f"{base}/{leaf}", None)
            return value.replace("\x00", "").strip() or None if value is not None else None

        transport = text("transport")
        address = device_pci_address(root, base) if transport in (None, "pcie") else None
        out.append(NvmeController(
            name=name, model=text("model"), firmware_rev=text("firmware_rev"),
            state=text("state"), transport=transport, pci_address=address,
            numa_node=pci_numa_node(root, address, base)))
        for leaf in ("model", "firmware_rev", "state"):
            if getattr(out[-1], leaf) is None:
                notes.missing(f"nvme.{name}.{leaf}", f"{base}/{leaf} is not readable")
    if out:
        notes.source("nvme", f"{NVME_CLASS}/*/model,firmware_rev,state,transport")
    return sorted(out, key=lambda c: int(c.name[4:]))


@register("storage")
class StorageCollector:
    """Block devices (kind, rotational, scheduler, read-ahead, queue depth, size, NVMe PCI address
    and NUMA node) and mounts (device, type, options)."""

    requires = ("/sys/block", "/proc/mounts")

    def collect(self, ctx: Context) -> StorageFacts:
        root = ctx.root
        notes = FactNotes(root)
        block = [read_block(root, notes, n) for n in block_names(root)]
        if block:
            notes.source("block", "/sys/block/*, /sys/block/*/queue")
        elif not root.isdir("/sys/block"):
            notes.missing("block", "/sys/block is not present")
        parsed, path = read_mounts(root)
        mounts = None
        if parsed is None:
            notes.missing("mounts", "neither /proc/self/mounts nor /proc/mounts is readable")
        else:
            notes.source("mounts", str(path))
            mounts = [Mount(device=dev, mountpoint=mp, fstype=fs, options=opts.split(","),
                            read_only="ro" in opts.split(",")) for dev, mp, fs, opts in parsed]
        return StorageFacts(block=block, nvme=read_nvme_controllers(root, notes), mounts=mounts,
                            sources=notes.sources,
                            unknown=notes.unknown)
