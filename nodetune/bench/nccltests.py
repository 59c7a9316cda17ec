"""nccl-tests output (all_reduce_perf and every other collective): argv and a tolerant parser.

The parser reads what real launches print: lines prefixed by the launcher (`[1,0]<stdout>:` from
Open MPI's --tag-output, `0: ` from `srun -l`, `(head, rank=0, pid=1) ` from Ray), NCCL INFO or
other log lines inside the table, tables with or without the `root` column (nccl-tests >= 2.12
prints it) or the `redop` column (older releases print none for all_gather, broadcast and
alltoall; such rows read as redop "none", as newer releases print), `N/A` in the error column
(`-c 0`), and several tables in one file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from nodetune.bench.ncclib import version_string
from nodetune.bench.results import NcclPoint, NcclRow

_ROW = re.compile(
    r"(?P<size>\d+)\s+(?P<count>\d+)\s+(?P<type>[A-Za-z]\w*)(?:\s+(?P<redop>[A-Za-z]\w*))?"
    r"(?:\s+(?P<root>-?\d+))?"
    r"\s+(?P<t1>\d+(?:\.\d+)?)\s+(?P<a1>\d+(?:\.\d+)?)\s+(?P<b1>\d+(?:\.\d+)?)\s+(?P<w1>\S+)"
    r"(?:\s+(?P<t2>\d+(?:\.\d+)?)\s+(?P<a2>\d+(?:\.\d+)?)\s+(?P<b2>\d+(?:\.\d+)?)\s+(?P<w2>\S+))?"
    r"\s*$"
)
# nccl-tests before 2.10 print no redop column (all_gather: "type time", broadcast: "type root")
_HEADER = re.compile(r"#\s*size\s+count\s+type\s+(?:redop|root|time)\b")
_RANK = re.compile(r"#\s+Rank\s+(?P<rank>\d+)\s+(?:Group\s+\d+\s+)?Pid\s+\d+\s+on\s+(?P<host>\S+)"
                   r"\s+device\s+(?P<dev>\d+)\s+\[(?P<bus>[^\]]*)\]\s+(?P<name>.*?)\s*$")
_AVG = re.compile(r"#\s*Avg bus bandwidth\s*:\s*(?P<v>[\d.]+)")
_OOB = re.compile(r"#\s*Out of bounds values\s*:\s*(?P<n>\d+)\s*(?P<ok>\w+)?")
_COLLECTIVE = re.compile(r"Collective test starting:\s*(?P<name>\w+)")
_VERSION = re.compile(r"nccl-tests version\s+(?P<v>\S+)(?:.*nccl-library=(?P<lib>\d+))?")
_NCCL_VERSION = re.compile(r"NCCL version\s+(?P<v>[\w.+-]+)")
_PARAMS = re.compile(r"#\s*nThread\s+\d+\s+nGpus\s+\d+")
_ITERS = re.compile(r"(?<!warmup )iters:\s*(?P<n>\d+)")

# bus bandwidth factor of each collective, as nccl-tests' *_perf GetBw() computes it
BUSBW_FACTORS = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "alltoall": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
    "sendrecv": lambda n: 1.0,
}


@dataclass
class NcclTable:
    rows: list[NcclRow] = field(default_factory=list)
    collective: str | None = None
    ranks: int | None = None
    hosts: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    avg_busbw_gbps: float | None = None
    out_of_bounds: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    iters: int | None = None

    @property
    def wrong_total(self) -> int | None:
        counts = [r.wrong for r in self.rows if r.wrong is not None]
        counts += [r.in_place.wrong for r in self.rows
                   if r.in_place is not None and r.in_place.wrong is not None]
        return sum(counts) if counts else None


def _wrong(text: str | None) -> int | None:
    if text is None or text.upper() == "N/A":
        return None
    try:
        return int(float(text))
    except (ValueError, OverflowError):  # "inf", "nan": not a count
        return None


def _int(text: str) -> int | None:
    """A count as nccl-tests prints it; None for one of over 19 digits, which no run produces
    (and int() refuses past 4300 digits)."""
    return int(text) if len(text.lstrip("-")) <= 19 else None


def parse_row(line: str) -> NcclRow | None:
    """One table row (anything before it on the line is ignored), or None."""
    m = _ROW.search(line)
    if m is None:
        return None
    numbers = [m[k] for k in ("t1", "a1", "b1", "t2", "a2", "b2") if m[k] is not None]
    if not all(math.isfinite(float(n)) for n in numbers):
        return None  # a row with inf or nan is no measurement
    size, count = _int(m["size"]), _int(m["count"])
    root = _int(m["root"]) if m["root"] is not None else None
    if size is None or count is None or (m["root"] is not None and root is None):
        return None
    in_place = None
    if m["t2"] is not None:
        in_place = NcclPoint(time_us=float(m["t2"]), algbw_gbps=float(m["a2"]),
                             busbw_gbps=float(m["b2"]), wrong=_wrong(m["w2"]))
    return NcclRow(size_bytes=size, count=count, type=m["type"], redop=m["redop"] or "none",
                   root=root,
                   time_us=float(m["t1"]), algbw_gbps=float(m["a1"]), busbw_gbps=float(m["b1"]),
                   wrong=_wrong(m["w1"]), in_place=in_place)


def parse(text: str, *, name_hint: str = "") -> list[NcclTable]:
    """Every nccl-tests table in `text` (an empty list when there is none)."""
    tables: list[NcclTable] = []
    meta = NcclTable()
    current: NcclTable | None = None
    for line in text.splitlines():
        if (m := _COLLECTIVE.search(line)) is not None:
            meta.collective = m["name"].removesuffix("_perf")
        if (m := _VERSION.search(line)) is not None:
            meta.versions["nccl-tests"] = m["v"]
            if m["lib"] and (lib := _int(m["lib"])) is not None:
                meta.versions["nccl"] = version_string(lib)
        elif (m := _NCCL_VERSION.search(line)) is not None:
            meta.versions.setdefault("nccl", m["v"])
        if _PARAMS.search(line) and (m := _ITERS.search(line)) is not None:
            meta.iters = _int(m["n"])
        if (m := _RANK.search(line)) is not None:
            if current is not None and current.rows:  # a new run begins
                meta = NcclTable(collective=meta.collective, versions=dict(meta.versions))
                current = None
            meta.hosts.append(m["host"])
            meta.devices.append(m["name"])
            continue
        if _HEADER.search(line):
            if current is None or current.rows:
                current = NcclTable(collective=meta.collective, hosts=list(meta.hosts),
                                    devices=list(meta.devices), versions=dict(meta.versions),
                                    iters=meta.iters)
                tables.append(current)
            continue
        if current is None:
            continue
        if (m := _AVG.search(line)) is not None:
            current.avg_busbw_gbps = float(m["v"])
            continue
        if (m := _OOB.search(line)) is not None:
            current.out_of_bounds = _int(m["n"])
            continue
        row = parse_row(line)
        if row is not None:
            current.rows.append(row)
    for table in tables:
        table.ranks = len(table.devices) or None
        table.collective = table.collective or _infer_collective(table, name_hint)
    return [t for t in tables if t.rows]


def _infer_collective(table: NcclTable, name_hint: str) -> str | None:
    """The collective from a file name, else from busbw/algbw (the factor is per collective)."""
    hint = name_hint.lower().replace("-", "_")
    for name in sorted(BUSBW_FACTORS, key=len, reverse=True):
        if name in hint or name.replace("_", "") in hint.replace("_", ""):
            return name
    n = table.ranks
    big = [r for r in table.rows if r.algbw_gbps >= 1.0]
    if not n or n < 2 or not big:
        return None
    factor = big[-1].busbw_gbps / big[-1].algbw_gbps
    reduces = big[-1].redop != "none"
    if abs(factor - 2 * (n - 1) / n) < 0.02:
        return "all_reduce"
    if abs(factor - (n - 1) / n) < 0.02:
        return "reduce_scatter" if reduces else None
    return None


def build_argv(binary: str, *, gpus: int, min_bytes: int, max_bytes: int, iters: int,
               warmup: int, check: bool = True) -> list[str]:
    """all_reduce_perf over [min_bytes, max_bytes] doubling, one process driving `gpus` GPUs."""
    return [binary, "-b", str(min_bytes), "-e", str(max_bytes), "-f", "2", "-g", str(gpus),
            "-n", str(iters), "-w", str(warmup), "-c", "1" if check else "0"]
