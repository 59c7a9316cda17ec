"""An hwloc XML topology (`lstopo --of xml`, hwloc 2.x) as a host tree nodetune can read.

Many sites keep these files (Slurm and Open MPI use hwloc). The XML is turned into the sysfs
and procfs files the collectors read: CPUs with their core and package, NUMA nodes with their
CPUs and memory, the PCI tree (host bridges, switch ports, devices with class, ids, NUMA node and
local CPUs) and the OS devices hwloc names below them (network interfaces, InfiniBand devices,
block devices). What hwloc does not record stays unknown: PCIe generation and width (hwloc keeps
only the link's GB/s), config space (ACS, MaxReadReq), sysctls, the kernel command line, NVML.

    with open_hwloc_xml("node.xml") as node: ...   # nodetune facts/topo/manifests --from node.xml
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nodetune.errors import SourceError
from nodetune.facts import cpulist
from nodetune.node.memroot import MemoryRoot
from nodetune.node.model import Node

MAX_XML_BYTES = 64 * 1024 * 1024  # an lstopo XML of a 1,000-device node is under 2 MiB
FIX = "give the output of `lstopo --of xml` (or `lstopo-no-graphics --of xml`) from hwloc 2.x"
OSDEV_BLOCK, OSDEV_NETWORK, OSDEV_OPENFABRICS = "0", "2", "3"
_BRIDGE_RANGE = re.compile(r"^([0-9a-fA-F]{4,}):\[([0-9a-fA-F]{2})-[0-9a-fA-F]{2}\]$")
_PCI_TYPE = re.compile(r"^([0-9a-fA-F]{4}) \[([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\] "
                       r"\[([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\] ([0-9a-fA-F]{2})")


def parse_bitmap(text: str | None) -> list[int]:
    """hwloc's bitmap text ("0x000000ff,0xffffffff": 32-bit words, most significant first;
    "0x1,,0x0": an empty word is a zero word)."""
    if not text:
        return []
    words = text.split(",")
    value = 0
    for word in words:
        word = word.strip()
        if word == "0xf...f":  # an infinite set: only its finite words name real CPUs
            continue
        if word == "":  # hwloc writes a run of zero words as nothing between the commas
            value <<= 32
            continue
        if not re.fullmatch(r"0x[0-9a-fA-F]{1,8}", word):
            raise ValueError(f"bad hwloc bitmap {text!r}")
        value = (value << 32) | int(word, 16)
    return [bit for bit in range(value.bit_length()) if value >> bit & 1]


@dataclass
class _Tree:
    files: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)

    def write(self, path: str, text: str) -> None:
        self.files[path] = text if text.endswith("\n") else text + "\n"

    def doc(self) -> dict[str, Any]:
        return {"dirs": sorted(self.dirs), "files": self.files, "links": self.links}


def _relative(src: str, dest: str) -> str:
    """A link target from the directory of `src` to `dest`, as sysfs writes them."""
    up = src.rstrip("/").split("/")[1:-1]
    down = dest.strip("/").split("/")
    common = 0
    while common < min(len(up), len(down)) and up[common] == down[common]:
        common += 1
    return "/".join([".."] * (len(up) - common) + down[common:]) or "."


class _Builder:
    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.t = _Tree()
        self.pus: dict[int, dict[str, Any]] = {}
        self.numa: dict[int, dict[str, Any]] = {}
        self.info: dict[str, str] = {}
        self.pci_count = 0

    def bad(self, why: str) -> SourceError:
        return SourceError(f"{self.origin}: {why}", fix=FIX)

    # -- walking ---------------------------------------------------------------------------
    def walk(self, obj: ET.Element, ctx: dict[str, Any]) -> None:
        kind = obj.get("type")
        ctx = dict(ctx)
        for info in obj.findall("info"):
            if kind in ("Machine", "Package"):
                self.info.setdefault(f"{kind}.{info.get('name')}", info.get("value") or "")
        if obj.get("cpuset") is not None and kind not in ("Bridge", "PCIDev", "OSDev"):
            ctx["cpus"] = parse_bitmap(obj.get("cpuset"))
            ctx["nodes"] = parse_bitmap(obj.get("nodeset"))
        if kind == "Package":
            # no os_index where the kernel gave none (physical_package_id -1, POWER7)
            ctx["package"] = _int(obj.get("os_index"), -1)
            ctx["package_cpus"] = parse_bitmap(obj.get("cpuset"))
            ctx["model"] = _info(obj, "CPUModel")
            ctx["vendor"] = _info(obj, "CPUVendor")
        elif kind == "Core":
            ctx["core"] = _int(obj.get("os_index"), 0)
            ctx["core_cpus"] = parse_bitmap(obj.get("cpuset"))
        elif kind == "PU":
            index = _int(obj.get("os_index"), None)
            if index is None:
                raise self.bad("a PU object has no os_index")
            self.pus[index] = ctx
        elif kind == "NUMANode":
            index = _int(obj.get("os_index"), None)
            if index is not None:
                pages = {int(p.get("size") or 0): int(p.get("count") or 0)
                         for p in obj.findall("page_type")}
                self.numa[index] = {"cpus": parse_bitmap(obj.get("cpuset")),
                                    "memory": _int(obj.get("local_memory"), 0), "pages": pages}
        elif kind == "Bridge" and obj.get("bridge_type", "").startswith("0-"):
            ctx["pci_dir"] = self.host_bridge(obj)
        elif kind in ("Bridge", "PCIDev") and obj.get("pci_busid"):
            ctx["pci_dir"] = self.pci_device(obj, ctx)
        elif kind == "OSDev" and ctx.get("pci_dir"):
            self.os_device(obj, ctx)
        for child in obj.findall("object"):
            self.walk(child, ctx)

    # -- PCI ---------------------------------------------------------------------------------
    def host_bridge(self, obj: ET.Element) -> str:
        match = _BRIDGE_RANGE.match(obj.get("bridge_pci") or "")
        if match is None:
            raise self.bad(f"host bridge bridge_pci {obj.get('bridge_pci')!r} is not "
                           "DOMAIN:[BB-BB]")
        path = f"/sys/devices/pci{match[1].lower()}:{match[2].lower()}"
        self.t.dirs.add(path)
        return path

    def pci_device(self, obj: ET.Element, ctx: dict[str, Any]) -> str:
        address = (obj.get("pci_busid") or "").lower()
        if not re.fullmatch(r"[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", address):
            raise self.bad(f"pci_busid {address!r} is not DOMAIN:BB:DD.F")
        parent = ctx.get("pci_dir") or f"/sys/devices/pci{address[:-8]}:{address[-7:-5]}"
        path = f"{parent}/{address}"
        match = _PCI_TYPE.match(obj.get("pci_type") or "")
        if match is None:
            raise self.bad(f"{address}: pci_type {obj.get('pci_type')!r} is not "
                           "'CLASS [VEN:DEV] [SUBVEN:SUBDEV] REV'")
        cls, ven, dev, sven, sdev, rev = (g.lower() for g in match.groups())
        numa = ctx.get("nodes") or []
        cpus = ctx.get("cpus") or []
        w = self.t.write
        w(f"{path}/class", f"0x{cls}00")
        w(f"{path}/vendor", f"0x{ven}")
        w(f"{path}/device", f"0x{dev}")
        w(f"{path}/subsystem_vendor", f"0x{sven}")
        w(f"{path}/subsystem_device", f"0x{sdev}")
        w(f"{path}/revision", f"0x{rev}")
        w(f"{path}/numa_node", str(numa[0]) if len(numa) == 1 else "-1")
        if cpus:
            w(f"{path}/local_cpulist", cpulist.format(cpus))
        self.t.links[f"/sys/bus/pci/devices/{address}"] = _relative(
            f"/sys/bus/pci/devices/{address}", path)
        self.pci_count += 1
        return path

    def os_device(self, obj: ET.Element, ctx: dict[str, Any]) -> None:
        name = obj.get("name") or ""
        if not re.fullmatch(r"[\w.:-]+", name):
            return
        pci_dir = ctx["pci_dir"]
        kind = obj.get("osdev_type")
        if kind == OSDEV_NETWORK:
            self.class_link("net", name, f"{pci_dir}/net/{name}", pci_dir)
            address = _info(obj, "Address")
            if address:
                self.t.write(f"{pci_dir}/net/{name}/address", address)
        elif kind == OSDEV_OPENFABRICS:
            base = f"{pci_dir}/infiniband/{name}"
            self.class_link("infiniband", name, base, pci_dir)
            for info in obj.findall("info"):
                port = re.fullmatch(r"Port(\d+)State", info.get("name") or "")
                if port:
                    self.t.write(f"{base}/ports/{port[1]}/state", _ib_state(info.get("value")))
        elif kind == OSDEV_BLOCK:
            controller = re.fullmatch(r"(nvme\d+)n\d+", name)
            base = (f"{pci_dir}/nvme/{controller[1]}/{name}" if controller
                    else f"{pci_dir}/block/{name}")
            self.t.dirs.add(base)
            self.t.links[f"/sys/block/{name}"] = _relative(f"/sys/block/{name}", base)
            self.t.links[f"/sys/class/block/{name}"] = _relative(f"/sys/class/block/{name}",
                                                                 base)

    def class_link(self, cls: str, name: str, target: str, pci_dir: str) -> None:
        self.t.dirs.add(target)
        self.t.links[f"/sys/class/{cls}/{name}"] = _relative(f"/sys/class/{cls}/{name}", target)
        self.t.links[f"{target}/device"] = _relative(f"{target}/device", pci_dir)

    # -- CPUs, NUMA, identity --------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        if not self.pus:
            raise self.bad("no PU objects: not an hwloc topology")
        w = self.t.write
        online = sorted(self.pus)
        cpu = "/sys/devices/system/cpu"
        for name in ("online", "possible", "present"):
            w(f"{cpu}/{name}", cpulist.format(online))
        w(f"{cpu}/offline", "")
        blocks = []
        for index in online:
            ctx = self.pus[index]
            top = f"{cpu}/cpu{index}/topology"
            w(f"{cpu}/cpu{index}/online", "1")
            w(f"{top}/core_id", str(ctx.get("core", index)))
            w(f"{top}/physical_package_id", str(ctx.get("package", 0)))
            w(f"{top}/thread_siblings_list",
              cpulist.format(ctx.get("core_cpus") or [index]))
            w(f"{top}/core_siblings_list",
              cpulist.format(ctx.get("package_cpus") or online))
            lines = [f"processor\t: {index}"]
            if ctx.get("vendor"):
                lines.append(f"vendor_id\t: {ctx['vendor']}")
            if ctx.get("model"):
                lines.append(f"model name\t: {ctx['model']}")
            lines += [f"physical id\t: {ctx.get('package', 0)}",
                      f"core id\t\t: {ctx.get('core', index)}"]
            blocks.append("\n".join(lines) + "\n")
        w("/proc/cpuinfo", "\n".join(blocks))
        self.numa_files()
        self.identity()
        return self.t.doc()

    def numa_files(self) -> None:
        w = self.t.write
        node = "/sys/devices/system/node"
        nodes = self.numa or {0: {"cpus": sorted(self.pus), "memory": 0, "pages": {}}}
        ids = sorted(nodes)
        w(f"{node}/online", cpulist.format(ids))
        w(f"{node}/possible", cpulist.format(ids))
        w(f"{node}/has_cpu", cpulist.format([i for i in ids if nodes[i]["cpus"]]))
        w(f"{node}/has_memory", cpulist.format([i for i in ids if nodes[i]["memory"]]))
        total_kb = 0
        for i in ids:
            info = nodes[i]
            kb = info["memory"] // 1024
            total_kb += kb
            w(f"{node}/node{i}/cpulist", cpulist.format(info["cpus"]))
            w(f"{node}/node{i}/meminfo", f"Node {i} MemTotal:       {kb} kB\n")
            for size, count in info["pages"].items():
                if size > 4096 and size % 1024 == 0:
                    pool = f"{node}/node{i}/hugepages/hugepages-{size // 1024}kB"
                    w(f"{pool}/nr_hugepages", str(count))
            for cpu in info["cpus"]:
                self.t.links[f"{node}/node{i}/cpu{cpu}"] = f"../../cpu/cpu{cpu}"
        if total_kb:
            w("/proc/meminfo", f"MemTotal:       {total_kb} kB\n")

    def identity(self) -> None:
        get = self.info.get
        release = get("Machine.OSRelease")
        if release:
            self.t.write("/proc/sys/kernel/osrelease", release)
        host = get("Machine.HostName")
        if host:
            self.t.write("/proc/sys/kernel/hostname", host)
        dmi = {"sys_vendor": "DMISysVendor", "product_name": "DMIProductName",
               "product_version": "DMIProductVersion", "board_vendor": "DMIBoardVendor",
               "board_name": "DMIBoardName", "bios_vendor": "DMIBIOSVendor",
               "bios_version": "DMIBIOSVersion", "bios_date": "DMIBIOSDate"}
        for leaf, key in dmi.items():
            value = get(f"Machine.{key}")
            if value is not None:
                self.t.write(f"/sys/class/dmi/id/{leaf}", value)


def _info(obj: ET.Element, name: str) -> str | None:
    for info in obj.findall("info"):
        if info.get("name") == name:
            return info.get("value")
    return None


def _int(text: str | None, default: int | None) -> int | None:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _ib_state(value: str | None) -> str:
    names = {"1": "DOWN", "2": "INIT", "3": "ARMED", "4": "ACTIVE", "5": "ACTIVE_DEFER"}
    return f"{value}: {names.get(value or '', 'UNKNOWN')}"


def tree_from_xml(data: bytes, origin: str) -> dict[str, Any]:
    """The tree.json document (dirs, files, links) of an hwloc XML; SourceError if it is not."""
    if len(data) > MAX_XML_BYTES:
        raise SourceError(f"{origin}: {len(data)} bytes, more than an hwloc XML holds "
                          f"({MAX_XML_BYTES // 1024 // 1024} MiB)", fix=FIX)
    if b"<!ENTITY" in data:
        raise SourceError(f"{origin}: declares XML entities, which hwloc never writes", fix=FIX)
    try:
        top = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SourceError(f"{origin}: not well-formed XML ({exc})", fix=FIX) from None
    if top.tag != "topology":
        raise SourceError(f"{origin}: the root element is <{top.tag}>, not <topology>", fix=FIX)
    if not str(top.get("version", "2")).startswith("2"):
        raise SourceError(f"{origin}: hwloc XML version {top.get('version')}; nodetune reads "
                          "version 2 (hwloc 2.x)", fix=FIX)
    machine = top.find("object")
    if machine is None:
        raise SourceError(f"{origin}: no topology object", fix=FIX)
    builder = _Builder(origin)
    try:
        builder.walk(machine, {})
    except ValueError as exc:
        raise SourceError(f"{origin}: {exc}", fix=FIX) from None
    return builder.finish()


@contextmanager
def open_hwloc_xml(path: str) -> Iterator[Node]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_XML_BYTES + 1)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}", fix=FIX) from None
    tree = tree_from_xml(data, path)
    root = MemoryRoot.from_tree(f"hwloc:{path}", tree)
    yield Node(root=root, nvml=None, origin=f"hwloc:{path}",
               nvml_note="an hwloc XML holds no NVML data (GPUs are read from its PCI tree)")
