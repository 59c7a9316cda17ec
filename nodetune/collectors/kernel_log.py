"""NVIDIA Xid and NVSwitch SXid events of the current boot, from the kernel log.

Where the log comes from, first match wins:
1. `/dev/kmsg` as a character device (the live host, or a container that mounts the host's
   /dev under --root): the kernel ring buffer of this boot, read non-blocking record by record
   within a time budget. Needs root or `kernel.dmesg_restrict=0`.
2. `/dev/kmsg` as a regular file in a --root tree: a saved ring buffer in the same record format
   (`"<prio>,<seq>,<usec>,<flags>;<text>"`, Documentation/ABI/testing/dev-kmsg).
3. `/var/log/kern.log` (Debian/Ubuntu rsyslog), `/var/log/messages` (RHEL), `/var/log/syslog`:
   the last `SYSLOG_TAIL_BYTES`, keeping only lines after the last kernel boot banner.

systemd's binary journal is not parsed (collectors never exec `journalctl`); on a live host the
ring buffer holds the same kernel messages. Snapshots do not capture the kernel log (a ring
buffer cannot be copied as a file and syslog files can be huge): a replayed node has no Xids.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import field

from nodetune.collectors import Context, register
from nodetune.errors import NoData
from nodetune.facts.model import FactSet
from nodetune.facts.pcie import normalize_address
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

SYSLOG_FILES = ("/var/log/kern.log", "/var/log/messages", "/var/log/syslog")
SYSLOG_TAIL_BYTES = 8 << 20
KMSG_BUDGET_S = 0.25
KMSG_MAX_RECORDS = 200_000

# "NVRM: Xid (PCI:0000:3b:00): 79, pid=1101, name=..., GPU has fallen off the bus."
# Older drivers print the address without "PCI:".
_XID = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}(?:\.[0-7])?)\):"
                  r"\s*(\d+)(?:,\s*(.*))?", re.IGNORECASE)
# "nvidia-nvswitch3: SXid (PCI:0000:c8:00.0): 20034, Fatal, Link 18 LTSSM Fault Up"
_SXID = re.compile(r"SXid \((?:PCI:)?([0-9A-Fa-f:.]+)\):\s*(\d+)(?:,\s*(.*))?")
# The kernel's own "[  123.456789]" stamp inside a syslog line.
_STAMP = re.compile(r"\[\s*(\d+\.\d+)\]")
_BOOT_BANNER = "Linux version "


@record(frozen=True, kw_only=True)
class XidEvent:
    code: int
    pci_address: str  # "0000:3b:00.0"
    message: str
    seconds_since_boot: float | None  # kernel timestamp, when the source has one
    age_s: float | None  # now - event, when both are known


@record(frozen=True, kw_only=True)
class SxidEvent:
    code: int
    pci_address: str
    fatal: bool
    message: str
    seconds_since_boot: float | None
    age_s: float | None


@record(frozen=True, kw_only=True)
class KernelLogFacts(FactSet):
    source: str  # the path read
    uptime_s: float | None
    xids: list[XidEvent] = field(default_factory=list)
    sxids: list[SxidEvent] = field(default_factory=list)


def normalize_pci(address: str) -> str:
    """Xid addresses omit the function ("0000:3b:00") and may use 8-digit domains."""
    return normalize_address(address) or address.lower()


def parse_kmsg_record(record: str) -> tuple[float | None, str]:
    """One /dev/kmsg record -> (seconds since boot, message text)."""
    header, sep, text = record.partition(";")
    if not sep:
        return None, record.strip()
    fields = header.split(",")
    try:
        usec = int(fields[2])
    except (IndexError, ValueError):
        return None, text.split("\n", 1)[0].strip()
    # Continuation lines (" KEY=value" device properties) follow the text after a newline.
    return usec / 1e6, text.split("\n", 1)[0].strip()


def parse_syslog(text: str) -> list[tuple[float | None, str]]:
    """Kernel lines of a syslog file after the last boot, with their kernel timestamps."""
    lines = text.splitlines()
    start = 0
    for i, line in enumerate(lines):
        if _BOOT_BANNER in line and "kernel" in line:
            start = i
    out: list[tuple[float | None, str]] = []
    for line in lines[start:]:
        if "Xid" not in line:
            continue
        stamp = _STAMP.search(line)
        out.append((float(stamp.group(1)) if stamp else None, line))
    return out


def parse_events(records: list[tuple[float | None, str]], uptime_s: float | None
                 ) -> tuple[list[XidEvent], list[SxidEvent]]:
    xids: list[XidEvent] = []
    sxids: list[SxidEvent] = []
    for when, text in records:
        age = round(uptime_s - when, 3) if uptime_s is not None and when is not None else None
        if (m := _XID.search(text)) is not None:
            xids.append(XidEvent(code=int(m.group(2)), pci_address=normalize_pci(m.group(1)),
                                 message=(m.group(3) or "").strip(), seconds_since_boot=when,
                                 age_s=age))
        elif (m := _SXID.search(text)) is not None:
            detail = (m.group(3) or "").strip()
            sxids.append(SxidEvent(code=int(m.group(2)), pci_address=normalize_pci(m.group(1)),
                                   fatal=detail.lower().startswith("fatal"), message=detail,
                                   seconds_since_boot=when, age_s=age))
    return xids, sxids


def read_kmsg_device(path: str, budget_s: float = KMSG_BUDGET_S) -> list[tuple[float | None, str]]:
    """Read the ring buffer without blocking: one record per read(), stop at EAGAIN."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    records: list[tuple[float | None, str]] = []
    deadline = time.monotonic() + budget_s
    try:
        while len(records) < KMSG_MAX_RECORDS and time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # EPIPE: the record was overwritten while we read; go on
                continue
            if not chunk:
                break
            text = chunk.decode("utf-8", "replace")
            if "Xid" in text:
                records.append(parse_kmsg_record(text))
    finally:
        os.close(fd)
    return records


def _tail(root: HostRoot, hostpath: str) -> str | None:
    data = root.read_tail(hostpath, SYSLOG_TAIL_BYTES)
    return None if data is None else data.decode("utf-8", "replace")


def _uptime(root: HostRoot) -> float | None:
    text = root.read_str("/proc/uptime", None)
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


@register("kernel_log")
class KernelLogCollector:
    """NVIDIA Xid/SXid events of this boot from /dev/kmsg or /var/log/{kern.log,messages}."""

    def collect(self, ctx: Context) -> KernelLogFacts:
        root = ctx.root
        uptime = _uptime(root)
        unknown: dict[str, str] = {}
        kmsg = root.path("/dev/kmsg")
        mode = root.file_mode("/dev/kmsg")
        if stat.S_ISCHR(mode):
            try:
                records = read_kmsg_device(kmsg)
            except OSError as exc:
                unknown["kmsg"] = f"cannot read /dev/kmsg: {exc.strerror} (needs root or " \
                                  "kernel.dmesg_restrict=0)"
            else:
                return self._facts("/dev/kmsg", records, uptime, unknown)
        elif stat.S_ISREG(mode):
            text = root.read_text("/dev/kmsg", "")
            records = [parse_kmsg_record(line) for line in text.splitlines() if "Xid" in line]
            return self._facts("/dev/kmsg", records, uptime, unknown)
        for path in SYSLOG_FILES:
            tail = _tail(root, path)
            if tail is not None:
                return self._facts(path, parse_syslog(tail), uptime, unknown)
        why = "; ".join(unknown.values()) or "no /dev/kmsg and none of " + ", ".join(SYSLOG_FILES)
        raise NoData(f"no kernel log: {why}")

    @staticmethod
    def _facts(source: str, records: list[tuple[float | None, str]], uptime: float | None,
               unknown: dict[str, str]) -> KernelLogFacts:
        xids, sxids = parse_events(records, uptime)
        return KernelLogFacts(source=source, uptime_s=uptime, xids=xids, sxids=sxids,
                              sources={"xids": source, "uptime_s": "/proc/uptime"},
                              unknown=unknown)
