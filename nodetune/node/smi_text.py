"""`nvidia-smi` text as a `nodetune.nvml/1` recording: what a support ticket pastes, replayable.

    doc = convert(read_text("smi-q.txt"), topo=..., nvlink=..., origin="smi-q.txt")

`nvidia-smi -q` (or `-a`) gives every device field nodetune reads except NVLink peers, CPU
affinity and the GPU's NUMA node: `nvidia-smi topo -m` and `nvidia-smi nvlink -s` add those
when given. Every value comes from the text; what the text does not show is null, with the
reason under the device's `errors`, so a check on it is unknown, never pass.

The formats of drivers R470 to R590 are read: `Ecc Mode`/`ECC Mode`, `Power Readings` (R470)
and `GPU Power Readings` (R510+), `Clocks Throttle Reasons` (up to R525) and `Clocks Event
Reasons`, ECC counters per `Single Bit`/`Double Bit` block (Volta) or per SRAM/DRAM line
(Ampere+), `CUDA Version : Not Found` and any note after the version number. A line that
cannot be read raises `SmiTextError` naming the source and line number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from nodetune.errors import SourceError
from nodetune.facts import cpulist
from nodetune.node.nvml import clock_event_reason_names
from nodetune.schemas import NVML_SCHEMA

NOT_IN_Q: Final = "not in nvidia-smi -q"
NA: Final = "N/A in nvidia-smi -q"
FIX: Final = ("pass the unedited output of `nvidia-smi -q` (`--topo`: `nvidia-smi topo -m`, "
              "`--nvlink`: `nvidia-smi nvlink -s`)")
# nvidia-smi's names of the clocks event (throttle) reason bits of nvml.h
REASON_BITS: Final = {
    "idle": 0x1, "applications clocks setting": 0x2, "sw power cap": 0x4, "hw slowdown": 0x8,
    "sync boost": 0x10, "sw thermal slowdown": 0x20, "hw thermal slowdown": 0x40,
    "hw power brake slowdown": 0x80, "display clock setting": 0x100,
}
# Values nvidia-smi prints where a field has no value (R470-R590).
NO_VALUE: Final = ("n/a", "not found", "unknown error", "not supported", "unknown",
                   "requested functionality has been deprecated", "insufficient permissions",
                   "gpu is lost", "none")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KEY_VALUE = re.compile(r"^(\S.*?)\s*:(?:\s+(.*))?$")
_GPU_HEADER = re.compile(r"^GPU\s+([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])$")
_NUMBER = re.compile(r"^[^\d-]*?(-?\d+(?:\.\d+)?)")
_SHELL_PROMPT = re.compile(r"^(\S*[$#]|\[[^\]]*\][$#]|[>\u276f])\s")


class SmiTextError(SourceError):
    """nvidia-smi text that nodetune cannot read; the message names FILE:LINE."""


@dataclass
class Item:
    """One line of `nvidia-smi -q`: a key with a value, or a section holding more items."""

    key: str
    line: int
    value: str | None = None
    items: list[Item] = field(default_factory=list)

    def find(self, *path: str) -> Item | None:
        node: Item | None = self
        for key in path:
            if node is None:
                return None
            wanted = key.lower()
            node = next((i for i in node.items if i.key.lower() == wanted), None)
        return node

    def text(self, *path: str) -> str | None:
        item = self.find(*path)
        return None if item is None else item.value

    def sections(self) -> list[Item]:
        return [i for i in self.items if i.value is None]


def read_text(path: str, stdin: Callable[[], str] | None = None) -> str:
    """The text of `path` ("-": standard input); SmiTextError when it cannot be read."""
    if path == "-":
        if stdin is None:
            raise SmiTextError("no standard input to read", fix=FIX)
        return stdin()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        raise SmiTextError(f"{path} does not exist", fix=FIX) from None
    except OSError as exc:
        raise SmiTextError(f"cannot read {path}: {exc.strerror or exc}", fix=FIX) from None


def clean_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) without colour codes, carriage returns and pasted shell prompts."""
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _ANSI.sub("", raw).rstrip("\r").rstrip()
        if line.strip() and not _SHELL_PROMPT.match(line.lstrip()):
            out.append((number, line.expandtabs(4)))
    return out


def parse_q(text: str, origin: str) -> Item:
    """`nvidia-smi -q` as a tree of items, by indentation."""
    root = Item(key="", line=0)
    stack: list[tuple[int, Item]] = [(-1, root)]
    for number, line in clean_lines(text):
        body = line.strip()
        if body.startswith("=") and "NVSMI LOG" in body.upper():
            continue
        if set(body) <= set("=-+|") or body.startswith("|"):
            continue  # banners and the table of plain `nvidia-smi`, pasted alongside
        indent = len(line) - len(line.lstrip(" "))
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        match = _KEY_VALUE.match(body)
        if match and match.group(2) is not None:
            parent.items.append(Item(key=match.group(1).strip(), line=number,
                                     value=match.group(2).strip()))
            continue
        title = match.group(1).strip() if match else body
        if parent is root and not _GPU_HEADER.match(title) and not title.startswith("Unit "):
            raise _bad(origin, number, body, "neither `Key : value` nor a `GPU <bus id>` header")
        section = Item(key=title, line=number)
        parent.items.append(section)
        stack.append((indent, section))
    return root


def _bad(origin: str, line: int, body: str, why: str) -> SmiTextError:
    shown = body if len(body) <= 60 else body[:57] + "..."
    return SmiTextError(f"{origin}:{line}: cannot read {shown!r}: {why}", fix=FIX)


# -- values -----------------------------------------------------------------------------------

def no_value(text: str) -> bool:
    return text.strip().lower() in NO_VALUE


def enabled(text: str) -> bool | None:
    return {"enabled": True, "disabled": False, "yes": True, "no": False, "active": True,
            "not active": False}.get(text.strip().lower())


class DeviceReader:
    """One `GPU <bus id>` section of `nvidia-smi -q` as a recording's device."""

    def __init__(self, index: int, gpu: Item, origin: str) -> None:
        self.index = index
        self.gpu = gpu
        self.origin = origin
        self.errors: dict[str, str] = {}

    def item(self, field_name: str, paths: tuple[tuple[str, ...], ...]) -> Item | None:
        for path in paths:
            found = self.gpu.find(*path)
            if found is not None and found.value is not None:
                return found
        self.errors[field_name] = NOT_IN_Q
        return None

    def number(self, field_name: str, *paths: tuple[str, ...], cast: Any = int) -> Any:
        found = self.item(field_name, paths)
        if found is None:
            return None
        return self.parse_number(field_name, found, cast)

    def parse_number(self, field_name: str, found: Item, cast: Any = int) -> Any:
        assert found.value is not None
        if no_value(found.value):
            self.errors[field_name] = f"{found.value} in nvidia-smi -q"
            return None
        match = _NUMBER.match(found.value)
        if match is None:
            raise _bad(self.origin, found.line, f"{found.key} : {found.value}",
                       f"{field_name} is not a number")
        return cast(float(match.group(1))) if cast is int else cast(match.group(1))

    def flag(self, field_name: str, *paths: tuple[str, ...]) -> bool | None:
        found = self.item(field_name, paths)
        if found is None:
            return None
        assert found.value is not None
        value = enabled(found.value)
        if value is None:
            if not no_value(found.value):
                raise _bad(self.origin, found.line, f"{found.key} : {found.value}",
                           f"{field_name} is neither Enabled nor Disabled")
            self.errors[field_name] = f"{found.value} in nvidia-smi -q"
        return value

    def string(self, field_name: str, *paths: tuple[str, ...]) -> str | None:
        found = self.item(field_name, paths)
        if found is None or found.value is None:
            return None
        if no_value(found.value):
            self.errors[field_name] = f"{found.value} in nvidia-smi -q"
            return None
        return found.value

    def read(self) -> dict[str, Any]:
        header = _GPU_HEADER.match(self.gpu.key)
        assert header is not None
        mib = self.number("memory_total_bytes", ("FB Memory Usage", "Total"))
        reasons = self.reasons()
        link = ("PCI", "GPU Link Info")
        power = ("GPU Power Readings",), ("Power Readings",)
        return {
            "index": self.index,
            "pci_bus_id": header.group(1).upper(),
            "name": self.string("name", ("Product Name",)),
            "uuid": self.string("uuid", ("GPU UUID",)),
            "vbios_version": self.string("vbios_version", ("VBIOS Version",)),
            "memory_total_bytes": None if mib is None else mib * 1024 * 1024,
            "persistence_mode": self.flag("persistence_mode", ("Persistence Mode",)),
            "ecc": self.ecc(),
            "retired_pages": self.retired_pages(),
            "remapped_rows": self.remapped_rows(),
            "clocks": {
                "sm_mhz": self.number("clocks.sm_mhz", ("Clocks", "SM")),
                "mem_mhz": self.number("clocks.mem_mhz", ("Clocks", "Memory")),
                "sm_max_mhz": self.number("clocks.sm_max_mhz", ("Max Clocks", "SM")),
                "mem_max_mhz": self.number("clocks.mem_max_mhz", ("Max Clocks", "Memory")),
            },
            "clock_event_reasons_mask": reasons,
            "clock_event_reasons": None if reasons is None else clock_event_reason_names(reasons),
            "performance_state": self.number("performance_state", ("Performance State",)),
            "power_draw_w": self.number(
                "power_draw_w", *[(p[0], k) for p in power
                                  for k in ("Average Power Draw", "Power Draw")], cast=float),
            "power_limit_w": self.number(
                "power_limit_w", *[(p[0], k) for p in power
                                   for k in ("Current Power Limit", "Enforced Power Limit",
                                             "Power Limit")], cast=float),
            "temperature_c": self.number("temperature_c", ("Temperature", "GPU Current Temp")),
            "mig": {"current": self.flag("mig.current", ("MIG Mode", "Current")),
                    "pending": self.flag("mig.pending", ("MIG Mode", "Pending"))},
            "pcie": {
                "current_gen": self.number("pcie.current_gen",
                                           (*link, "PCIe Generation", "Current")),
                "max_gen": self.number("pcie.max_gen", (*link, "PCIe Generation", "Max")),
                "current_width": self.number("pcie.current_width",
                                             (*link, "Link Width", "Current")),
                "max_width": self.number("pcie.max_width", (*link, "Link Width", "Max")),
            },
            "numa_node": None,
            "cpu_affinity": None,
            "nvlink": [],
            "nvlink_peers": {},
            "fabric": self.fabric(),
            "errors": {**self.errors, "numa_node": NOT_IN_Q, "cpu_affinity": NOT_IN_Q,
                       "nvlink": NOT_IN_Q},
        }

    def ecc(self) -> dict[str, Any]:
        ecc: dict[str, Any] = {
            "current": self.flag("ecc.current", ("ECC Mode", "Current")),
            "pending": self.flag("ecc.pending", ("ECC Mode", "Pending")),
        }
        for counter in ("volatile", "aggregate"):
            block = self.gpu.find("ECC Errors", counter)
            totals: dict[str, int | None] = {"corrected": None, "uncorrected": None}
            if block is None or block.value is not None:
                self.errors[f"ecc.{counter}"] = NOT_IN_Q if block is None else NA
            else:
                for kind, lines in self._ecc_lines(block).items():
                    values = [self.parse_number(f"ecc.{counter}.{kind}", i) for i in lines]
                    if values and None not in values:
                        totals[kind] = sum(values)
                    else:
                        self.errors[f"ecc.{counter}.{kind}"] = NA
            ecc[counter] = totals
        return ecc

    @staticmethod
    def _ecc_lines(block: Item) -> dict[str, list[Item]]:
        """Corrected and uncorrected counter lines: `Single/Double Bit` totals (Volta and older)
        or the SRAM/DRAM lines (Ampere and later; R550 splits SRAM uncorrectable in two)."""
        single, double = block.find("Single Bit", "Total"), block.find("Double Bit", "Total")
        if single is not None or double is not None:
            return {"corrected": [single] if single else [],
                    "uncorrected": [double] if double else []}
        lines = [i for i in block.items if i.value is not None]
        return {"corrected": [i for i in lines if "correctable" in i.key.lower()
                              and "uncorrectable" not in i.key.lower()],
                "uncorrected": [i for i in lines if "uncorrectable" in i.key.lower()]}

    def retired_pages(self) -> dict[str, Any] | None:
        """Page retirement (up to Volta); Ampere and later print N/A and remap rows instead."""
        single = self.number("retired_pages", ("Retired Pages", "Single Bit ECC"))
        if single is None:
            return None
        block = self.gpu.find("Retired Pages")
        assert block is not None
        pending = next((i for i in block.items if i.key.lower().startswith("pending")), None)
        double = block.find("Double Bit ECC")
        return {"single_bit": single,
                "double_bit": None if double is None else
                self.parse_number("retired_pages.double_bit", double),
                "pending": None if pending is None or pending.value is None
                else enabled(pending.value)}

    def remapped_rows(self) -> dict[str, Any] | None:
        block = self.gpu.find("Remapped Rows")
        if block is not None and block.value is not None:  # "Remapped Rows : N/A" (pre-Ampere)
            self.errors["remapped_rows"] = f"{block.value} in nvidia-smi -q"
            return None
        corr = self.number("remapped_rows", ("Remapped Rows", "Correctable Error"))
        if corr is None or block is None:
            return None
        return {"correctable": corr,
                "uncorrectable": self.number("remapped_rows.uncorrectable",
                                             ("Remapped Rows", "Uncorrectable Error")),
                "pending": self.flag("remapped_rows.pending", ("Remapped Rows", "Pending")),
                "failure": self.flag("remapped_rows.failure",
                                     ("Remapped Rows", "Remapping Failure Occurred"))}

    def reasons(self) -> int | None:
        block = self.gpu.find("Clocks Event Reasons") or self.gpu.find("Clocks Throttle Reasons")
        if block is None or block.value is not None:
            self.errors["clock_event_reasons_mask"] = NOT_IN_Q if block is None else NA
            return None
        mask = 0
        stack = list(block.items)
        while stack:
            item = stack.pop()
            stack.extend(item.items)
            bit = REASON_BITS.get(item.key.lower())
            if bit is not None and item.value is not None and enabled(item.value):
                mask |= bit
        return mask

    def fabric(self) -> dict[str, Any] | None:
        state = self.gpu.text("Fabric", "State")
        if state is None or no_value(state):
            self.errors["fabric"] = NOT_IN_Q if state is None else f"{state} in nvidia-smi -q"
            return None
        clique = self.gpu.find("Fabric", "CliqueId")
        status = self.gpu.text("Fabric", "Status")
        return {"state": state.lower().replace(" ", "_"),
                "status": None if status is None else status.lower(),
                "cluster_uuid": self.gpu.text("Fabric", "ClusterUUID"),
                "clique_id": None if clique is None else
                self.parse_number("fabric.clique_id", clique)}


def cuda_version(item: Item | None, origin: str) -> int | None:
    """"13.0" -> 13000, "12.2" -> 12020 (NVML's integer form); None for "Not Found" or N/A.

    Newer drivers may follow the number with a note ("13.0 [Deprecated ...]"): only the
    leading version counts.
    """
    if item is None or item.value is None or no_value(item.value):
        return None
    match = re.match(r"^(\d+)\.(\d+)", item.value)
    if match is None:
        raise _bad(origin, item.line, f"{item.key} : {item.value}",
                   "the CUDA version is not MAJOR.MINOR")
    return int(match.group(1)) * 1000 + int(match.group(2)) * 10


# -- topo -m and nvlink -s ---------------------------------------------------------------------

def parse_topo(text: str, origin: str) -> dict[str, dict[str, str]]:
    """Rows of `nvidia-smi topo -m` by name: {"GPU0": {"GPU1": "NV18", "CPU Affinity": ...}}."""
    header: list[str] = []
    rows: dict[str, dict[str, str]] = {}
    for number, line in clean_lines(text):
        if line.strip() == "Legend:":
            break
        cells = [c.strip() for c in re.split(r"\t|\s{2,}", line.strip()) if c.strip()]
        if not header:
            if not cells or not cells[0].startswith("GPU"):
                raise _bad(origin, number, line.strip(),
                           "the first line of `nvidia-smi topo -m` names GPU0, GPU1, ...")
            header = cells
            continue
        if not re.match(r"^(GPU|NIC|mlx|NVMe|nvme)\S*$", cells[0]):
            if cells[0].startswith(("NIC Legend", "NIC")) or ":" in cells[0]:
                continue
            raise _bad(origin, number, line.strip(), "not a row of the topology matrix")
        rows[cells[0]] = dict(zip(header, cells[1:], strict=False))
    if not header:
        raise SmiTextError(f"{origin}: no `nvidia-smi topo -m` matrix in it", fix=FIX)
    return rows


def parse_nvlink(text: str, origin: str) -> dict[int, list[tuple[int, bool]]]:
    """`nvidia-smi nvlink -s`: {gpu index: [(link, active)]}; inactive links say <inactive>."""
    links: dict[int, list[tuple[int, bool]]] = {}
    gpu = -1
    for number, line in clean_lines(text):
        head = re.match(r"^GPU (\d+):", line)
        if head:
            gpu = int(head.group(1))
            links[gpu] = []
            continue
        link = re.match(r"^\s+Link (\d+): (.*)$", line)
        if link and gpu >= 0:
            links[gpu].append((int(link.group(1)), "inactive" not in link.group(2).lower()))
        elif gpu < 0 or not line.startswith((" ", "\t")):
            raise _bad(origin, number, line.strip(),
                       "neither `GPU N: ...` nor `Link N: ...` of `nvidia-smi nvlink -s`")
    return links


def add_topology(devices: list[dict[str, Any]], topo: dict[str, dict[str, str]]) -> None:
    by_name = {f"GPU{d['index']}": d for d in devices}
    for name, dev in by_name.items():
        row = topo.get(name, {})
        affinity = row.get("CPU Affinity")
        if affinity and not no_value(affinity):
            dev["cpu_affinity"] = cpulist.parse(affinity)
            del dev["errors"]["cpu_affinity"]
        numa = row.get("GPU NUMA ID") or row.get("NUMA Affinity")
        if numa is not None and no_value(numa):
            dev["errors"]["numa_node"] = "N/A in nvidia-smi topo -m"
        elif numa is not None and row.get("GPU NUMA ID") and numa.isdigit():
            dev["numa_node"] = int(numa)
            del dev["errors"]["numa_node"]
        for peer, cell in row.items():
            nv = re.fullmatch(r"NV(\d+)", cell)
            if nv and peer in by_name:
                dev["nvlink_peers"][by_name[peer]["pci_bus_id"]] = int(nv.group(1))


def add_nvlink(devices: list[dict[str, Any]], links: dict[int, list[tuple[int, bool]]]) -> None:
    for dev in devices:
        if dev["index"] not in links:
            continue
        dev["nvlink"] = [{"link": n, "active": active, "remote_pci_bus_id": None,
                          "remote_kind": None} for n, active in links[dev["index"]]]
        dev["errors"]["nvlink"] = "remote ends not shown by nvidia-smi nvlink -s"


def convert(smi_q: str, topo: str | None = None, nvlink: str | None = None,
            origin: str = "nvidia-smi -q", topo_origin: str = "topo -m",
            nvlink_origin: str = "nvlink -s") -> dict[str, Any]:
    """A `nodetune.nvml/1` document from nvidia-smi text; SmiTextError naming FILE:LINE."""
    tree = parse_q(smi_q, origin)
    gpus = [s for s in tree.sections() if _GPU_HEADER.match(s.key)]
    if not gpus:
        raise SmiTextError(f"{origin}: no `GPU <bus id>` section: not `nvidia-smi -q` output",
                           fix=FIX)
    devices = [DeviceReader(i, gpu, origin).read() for i, gpu in enumerate(gpus)]
    if topo is not None:
        add_topology(devices, parse_topo(topo, topo_origin))
    if nvlink is not None:
        add_nvlink(devices, parse_nvlink(nvlink, nvlink_origin))
    driver = tree.text("Driver Version")
    return {"schema": NVML_SCHEMA, "captured_from": origin,
            "driver_version": None if driver is None or no_value(driver) else driver,
            "cuda_driver_version": cuda_version(tree.find("CUDA Version"), origin),
            "devices": devices}
