"""What a benchmark produces: metrics with their samples, expectations and binding, plus the
raw tables (nccl-tests rows, fio jobs, bandwidth matrices) they were read from.

Every type here converts to plain JSON (`to_json`) and back (`from_json`), so a saved run
(`--save FILE`) can be compared with a later one (`--compare FILE`).
"""

from __future__ import annotations

import math
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any, Union, get_args, get_origin, get_type_hints

from nodetune.bench import stats
from nodetune.errors import BenchError
from nodetune.facts.model import to_jsonable

_MISSING: Any = MISSING

GIB = 1 << 30
MIB = 1 << 20
KIB = 1 << 10


@dataclass(frozen=True, kw_only=True)
class Binding:
    """Where a measurement ran: the CPUs of its thread(s) and the NUMA node of its memory."""

    method: str  # "numactl", "sched_setaffinity+set_mempolicy", "nvbandwidth", "none"
    cpus: str | None = None  # kernel cpulist of the measuring thread(s)
    mem_node: int | None = None  # NUMA node the host buffer was bound to
    mem_nodes_seen: tuple[int, ...] | None = None  # nodes the kernel reports for sampled pages


@dataclass(frozen=True, kw_only=True)
class Expected:
    """What the hardware should reach, and why."""

    value: float
    basis: str  # e.g. "PCIe Gen5 x16: 32 GT/s x 16 lanes x 128b/130b / 8 = 63.0 GB/s per direction"
    min_ratio: float | None = None  # below value * min_ratio the metric is reported "low"


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One measured quantity: the median of its samples, in `unit`."""

    key: str  # stable id matched by --compare, e.g. "memcpy.h2d_pinned.GPU0.node0"
    suite: str
    name: str  # short human label, e.g. "H2D pinned GPU0 <- node0"
    unit: str  # "GB/s", "IOPS", "us"
    samples: tuple[float, ...]
    higher_is_better: bool = True
    subject: str | None = None  # "GPU0", "GPU0->GPU1", "node0", "seqread"
    size_bytes: int | None = None
    binding: Binding | None = None
    expected: Expected | None = None

    @property
    def value(self) -> float:
        return stats.median(self.samples)

    @property
    def ratio(self) -> float | None:
        if self.expected is None or self.expected.value <= 0:
            return None
        return self.value / self.expected.value

    @property
    def status(self) -> str | None:
        """"ok" or "low" against the expectation's minimum ratio; None without one."""
        ratio = self.ratio
        if ratio is None or self.expected is None or self.expected.min_ratio is None:
            return None
        return "ok" if ratio >= self.expected.min_ratio else "low"

    def to_json(self) -> dict[str, Any]:
        spread = stats.spread(self.samples)
        ratio = self.ratio
        return {
            "key": self.key, "suite": self.suite, "name": self.name, "subject": self.subject,
            "size_bytes": self.size_bytes, "unit": self.unit, "value": _round(self.value),
            "samples": [_round(s) for s in self.samples],
            "spread": {"min": _round(spread.low), "max": _round(spread.high),
                       "relative": _round(spread.relative)},
            "higher_is_better": self.higher_is_better,
            "expected": to_jsonable(self.expected),
            "ratio": None if ratio is None else round(ratio, 4),
            "status": self.status,
            "binding": to_jsonable(self.binding),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Metric:
        binding = doc.get("binding")
        expected = doc.get("expected")
        samples = doc.get("samples") or [doc["value"]]
        return cls(
            key=doc["key"], suite=doc.get("suite", ""), name=doc.get("name", doc["key"]),
            unit=doc.get("unit", ""), samples=tuple(float(s) for s in samples),
            higher_is_better=doc.get("higher_is_better", True), subject=doc.get("subject"),
            size_bytes=doc.get("size_bytes"),
            binding=_build(Binding, binding) if binding else None,
            expected=_build(Expected, expected) if expected else None,
        )


@dataclass(frozen=True, kw_only=True)
class NcclPoint:
    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int | None  # elements that failed the result check; None when not checked ("N/A")


@dataclass(frozen=True, kw_only=True)
class NcclRow:
    """One row of an nccl-tests table; the top-level numbers are the out-of-place run."""

    size_bytes: int
    count: int
    type: str
    redop: str
    root: int | None
    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int | None
    in_place: NcclPoint | None = None


@dataclass(frozen=True, kw_only=True)
class FioJob:
    """One fio job; bandwidths in bytes per second whatever the fio version wrote."""

    name: str
    read_bw_bytes: float
    read_iops: float
    write_bw_bytes: float
    write_iops: float
    read_clat_p99_us: float | None = None
    write_clat_p99_us: float | None = None
    runtime_ms: float | None = None
    error: int = 0
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Matrix:
    """A bandwidth matrix (nvbandwidth, peer copies): cells[row][col], None where not measured."""

    name: str
    title: str
    row_kind: str  # "CPU" or "GPU" (or a NUMA node label for the built-in runner)
    col_kind: str
    direction: str  # "->" data flows row to column, "<-" column to row, "<->" both
    unit: str
    row_ids: tuple[str, ...]
    col_ids: tuple[str, ...]
    cells: tuple[tuple[float | None, ...], ...]
    total: float | None = None  # nvbandwidth's SUM line


@dataclass(kw_only=True)
class SuiteResult:
    """The outcome of one suite (or one imported file)."""

    suite: str
    status: str  # "ok", "skipped", "failed"
    runner: str | None = None  # "nccl-tests", "nccl", "torch.distributed", "cuda-bindings", ...
    note: str | None = None
    tool_versions: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] | None = None
    seconds: float | None = None
    source: str | None = None  # imported file
    collective: str | None = None
    ranks: int | None = None
    hosts: list[str] | None = None
    metrics: list[Metric] = field(default_factory=list)
    rows: list[NcclRow] | None = None
    jobs: list[FioJob] | None = None
    matrices: list[Matrix] | None = None
    telemetry: dict[str, Any] | None = None  # per GPU: clocks, power, throttle reasons
    flags: list[dict[str, Any]] | None = None  # subjects flagged slow, with why

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "metrics":
                out["metrics"] = [m.to_json() for m in value]
            elif value is not None or f.name in ("note", "runner"):
                out[f.name] = to_jsonable(value)
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SuiteResult:
        return cls(
            suite=doc.get("suite", ""), status=doc.get("status", "ok"), runner=doc.get("runner"),
            note=doc.get("note"), tool_versions=dict(doc.get("tool_versions") or {}),
            env=dict(doc.get("env") or {}), argv=doc.get("argv"), seconds=doc.get("seconds"),
            source=doc.get("source"), collective=doc.get("collective"), ranks=doc.get("ranks"),
            hosts=doc.get("hosts"),
            metrics=[Metric.from_json(m) for m in doc.get("metrics") or []],
            rows=[_nccl_row(r) for r in doc["rows"]] if doc.get("rows") is not None else None,
            jobs=[_build(FioJob, j) for j in doc["jobs"]] if doc.get("jobs") is not None else None,
            matrices=[_matrix(m) for m in doc["matrices"]] if doc.get("matrices") is not None
            else None,
            telemetry=doc.get("telemetry"), flags=doc.get("flags"),
        )


SAVED_FIX = "give a file written by nodetune bench --save (or the tool's own output)"


def suites_from_json(doc: Any, path: str) -> list[SuiteResult]:
    """The suites of a saved result, every field checked against its type first.

    A file edited by hand or cut short must not reach the comparison as a string where a
    number belongs: the first misfit is reported as `PATH: suites[0].metrics[2].samples[0]:
    ...` (BenchError, exit 3).
    """
    suites = doc.get("suites") if isinstance(doc, dict) else None
    if suites is None:
        suites = []
    try:
        if not isinstance(suites, list):
            raise _Misfit("suites", "is not a list")
        for i, suite in enumerate(suites):
            _check_suite(suite, f"suites[{i}]")
        return [SuiteResult.from_json(s) for s in suites]
    except _Misfit as exc:
        raise BenchError(f"{path}: {exc.where} {exc.what}", fix=SAVED_FIX) from None


class _Misfit(Exception):
    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where} {what}")
        self.where = where
        self.what = what


def _check_suite(doc: Any, where: str) -> None:
    if not isinstance(doc, dict):
        raise _Misfit(where, "is not an object")
    hints = get_type_hints(SuiteResult)
    for f in fields(SuiteResult):
        if f.name in doc and f.name != "metrics":
            _check_value(hints[f.name], doc[f.name], f"{where}.{f.name}")
    metrics = doc.get("metrics") or []
    if not isinstance(metrics, list):
        raise _Misfit(f"{where}.metrics", "is not a list")
    for i, m in enumerate(metrics):
        _check_metric(m, f"{where}.metrics[{i}]")


def _check_metric(doc: Any, where: str) -> None:
    if not isinstance(doc, dict):
        raise _Misfit(where, "is not an object")
    if not isinstance(doc.get("key"), str):
        raise _Misfit(f"{where}.key", "is missing or not a string")
    samples = doc.get("samples") or [doc.get("value")]
    _check_value(tuple[float, ...], samples, f"{where}.samples")
    hints = get_type_hints(Metric)
    for f in fields(Metric):
        if f.name not in ("key", "samples") and f.name in doc:
            _check_value(hints[f.name], doc[f.name], f"{where}.{f.name}")


def _check_value(tp: Any, value: Any, where: str) -> None:
    """`value` (parsed JSON) fits the annotation `tp`, or _Misfit naming `where`."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                _check_value(option, value, where)
            except _Misfit as exc:
                errors.append(exc)
            else:
                return
        raise errors[0]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Misfit(where, f"is {_kind(value)}, not a number")
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            raise _Misfit(where, f"is {value!r:.40}, not a finite number")
        return
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**63:
            raise _Misfit(where, f"is {_kind(value)}, not an integer")
        return
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise _Misfit(where, f"is {_kind(value)}, not a {tp.__name__}")
        return
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _Misfit(where, f"is {_kind(value)}, not a list")
        for i, item in enumerate(value):
            _check_value(args[0], item, f"{where}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise _Misfit(where, f"is {_kind(value)}, not an object")
        for k, item in value.items():
            _check_value(args[1], item, f"{where}.{k}")
        return
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Misfit(where, f"is {_kind(value)}, not an object")
        hints = get_type_hints(tp)
        for f in fields(tp):
            if f.name in value:
                _check_value(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is f.default_factory is _MISSING:
                raise _Misfit(f"{where}.{f.name}", "is missing")
        return
    raise _Misfit(where, f"has a type nodetune cannot check ({tp!r})")  # pragma: no cover


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _build(cls: type, doc: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in doc.items() if k in names}
    if cls is Binding and kwargs.get("mem_nodes_seen") is not None:
        kwargs["mem_nodes_seen"] = tuple(kwargs["mem_nodes_seen"])
    return cls(**kwargs)


def _nccl_row(doc: dict[str, Any]) -> NcclRow:
    row = {k: v for k, v in doc.items() if k != "in_place"}  # keys of other versions ignored
    in_place = doc.get("in_place")
    built: NcclRow = _build(NcclRow, row)
    return replace(built,
                   in_place=_build(NcclPoint, in_place) if isinstance(in_place, dict) else None)


def _matrix(doc: dict[str, Any]) -> Matrix:
    m = dict(doc)
    m["row_ids"] = tuple(m["row_ids"])
    m["col_ids"] = tuple(m["col_ids"])
    m["cells"] = tuple(tuple(r) for r in m["cells"])
    return Matrix(**m)


def size_label(size: int) -> str:
    """1073741824 -> "1GiB", 4096 -> "4KiB", 1000 -> "1000B"."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"
