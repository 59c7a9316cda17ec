"""nvbandwidth (github.com/NVIDIA/nvbandwidth) plain-text output: argv and parser.

A run prints a version header, then per testcase `Running <testcase>.`, one or more titled
matrices ("memcpy CE CPU(row) -> GPU(column) bandwidth (GB/s)", cells "N/A" where a pair is not
measured), and `SUM <name> <value>` lines.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from nodetune.bench.results import Matrix, Metric

_RUNNING = re.compile(r"^\s*Running\s+(?:benchmark\s+)?(?P<name>\w+)\.?\s*$")
_KIND = r"(?P<{0}>CPU|GPU)\({1}s?\)"
_PART = r"\s*(?:(?P<part>(?!bandwidth|latency)\w+)\s+)?(?:bandwidth|latency)?"
_UNIT = r"\s*\((?P<unit>[^)]+)\)\s*$"
_TITLE = re.compile(r"^\s*(?P<title>.*?" + _KIND.format("row", "row") + r"\s*(?P<dir><->|->|<-)\s*"
                    + _KIND.format("col", "column") + _PART + ")" + _UNIT)
# older releases print the column kind first: "GPU(columns) <- CPU(rows)"
_TITLE_COLS_FIRST = re.compile(r"^\s*(?P<title>.*?" + _KIND.format("col", "column")
                               + r"\s*(?P<dir><->|->|<-)\s*" + _KIND.format("row", "row")
                               + _PART + ")" + _UNIT)
_FLIP = {"->": "<-", "<-": "->", "<->": "<->"}
_SUM = re.compile(r"^\s*SUM\s+(?P<name>\w+)\s+(?P<v>\d+(?:\.\d+)?)\s*$")
_VERSION = re.compile(r"^\s*nvbandwidth Version:\s*(?P<v>\S+)")
_DRIVER = re.compile(r"^\s*Driver Version:\s*(?P<v>\S+)")
_CUDA = re.compile(r"^\s*CUDA Runtime Version:\s*(?P<v>.+?)\s*$")
_DEVICE = re.compile(r"^\s*Device\s+(?P<i>\d+):\s*(?P<name>.+?)\s*$")
_NUMBERS = re.compile(r"^\s*\d+(\s+\d+)*\s*$")

# testcase -> metric name, for host<->device and GPU<->GPU copies
HOST_TESTS = {
    "host_to_device_memcpy_ce": "h2d_pinned",
    "device_to_host_memcpy_ce": "d2h_pinned",
    "host_to_device_memcpy_sm": "h2d_pinned_sm",
    "device_to_host_memcpy_sm": "d2h_pinned_sm",
}
PEER_TESTS = {
    "device_to_device_memcpy_read_ce": "p2p_read",
    "device_to_device_memcpy_write_ce": "p2p_write",
    "device_to_device_memcpy_read_sm": "p2p_read_sm",
    "device_to_device_memcpy_write_sm": "p2p_write_sm",
}
DEFAULT_TESTCASES = ("host_to_device_memcpy_ce", "device_to_host_memcpy_ce",
                     "device_to_device_memcpy_write_ce")


@dataclass
class NvbandwidthRun:
    matrices: list[Matrix] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)


def build_argv(binary: str, *, testcases: tuple[str, ...] = DEFAULT_TESTCASES,
               buffer_mib: int | None = None, samples: int | None = None) -> list[str]:
    argv = [binary]
    for test in testcases:
        argv += ["-t", test]
    if buffer_mib is not None:
        argv += ["-b", str(buffer_mib)]
    if samples is not None:
        argv += ["-i", str(samples)]
    return argv


def _cell(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass
class _Reading:
    """The matrix being read."""

    name: str
    title: str
    row: str
    direction: str
    col: str
    unit: str
    cols: list[str] | None = None
    rows: list[tuple[str, tuple[float | None, ...]]] = field(default_factory=list)

    def matrix(self) -> Matrix:
        return Matrix(name=self.name, title=self.title, row_kind=self.row, col_kind=self.col,
                      direction=self.direction, unit=self.unit,
                      row_ids=tuple(r for r, _ in self.rows), col_ids=tuple(self.cols or ()),
                      cells=tuple(cells for _, cells in self.rows))

    def take(self, line: str) -> bool:
        """Read a header or matrix row; False when the line is neither."""
        tokens = line.split()
        if self.cols is None and _NUMBERS.match(line):
            self.cols = tokens
            return True
        if self.cols is not None and tokens and tokens[0].isdigit() \
                and len(tokens) == len(self.cols) + 1:
            self.rows.append((tokens[0], tuple(_cell(t) for t in tokens[1:])))
            return True
        return False


def parse(text: str) -> NvbandwidthRun:
    run = NvbandwidthRun()
    testcase: str | None = None
    reading: _Reading | None = None

    def finish() -> None:
        nonlocal reading
        if reading is not None and reading.rows:
            run.matrices.append(reading.matrix())
        reading = None

    for line in text.splitlines():
        if (m := _VERSION.match(line)) is not None:
            run.versions["nvbandwidth"] = m["v"]
        elif (m := _DRIVER.match(line)) is not None:
            run.versions["driver"] = m["v"]
        elif (m := _CUDA.match(line)) is not None:
            run.versions["cuda_runtime"] = m["v"]
        elif (m := _DEVICE.match(line)) is not None and reading is None:
            run.devices.append(m["name"])
        elif (m := _RUNNING.match(line)) is not None:
            finish()
            testcase = m["name"]
        elif (m := _TITLE.match(line) or _TITLE_COLS_FIRST.match(line)) is not None and testcase:
            finish()
            direction = m["dir"] if m.re is _TITLE else _FLIP[m["dir"]]
            name = f"{testcase}_{m['part'].lower()}" if m["part"] else testcase
            reading = _Reading(name=name, title=m["title"].strip(), row=m["row"],
                               direction=direction, col=m["col"], unit=m["unit"])
        elif (m := _SUM.match(line)) is not None:
            finish()
            _set_total(run, m["name"], float(m["v"]))
        elif reading is not None and not reading.take(line) and not line.strip() \
                and reading.rows:
            finish()
    finish()
    return run


def _set_total(run: NvbandwidthRun, name: str, value: float) -> None:
    """Attach a SUM line to its matrix (bidirectional tests name theirs `<test>_read1`...)."""
    for i in range(len(run.matrices) - 1, -1, -1):
        matrix = run.matrices[i]
        if name == matrix.name:
            if matrix.total is None:
                run.matrices[i] = dataclasses.replace(matrix, total=value)
            return


def metrics(run: NvbandwidthRun, suite: str = "nvbandwidth") -> list[Metric]:
    """Per-GPU metrics of host copies, per-pair metrics of peer copies (GB/s)."""
    out: list[Metric] = []
    for matrix in run.matrices:
        host = HOST_TESTS.get(matrix.name)
        peer = PEER_TESTS.get(matrix.name)
        for r, row_id in enumerate(matrix.row_ids):
            for c, col_id in enumerate(matrix.col_ids):
                value = matrix.cells[r][c]
                if value is None or (matrix.row_kind == matrix.col_kind and row_id == col_id):
                    continue
                if host and "CPU" in (matrix.row_kind, matrix.col_kind):
                    gpu = col_id if matrix.col_kind == "GPU" else row_id
                    subject = f"GPU{gpu}"
                    key, label = f"{suite}.{host}.{subject}", f"{host} {subject}"
                elif peer:
                    src, dst = (row_id, col_id) if matrix.direction == "->" else (col_id, row_id)
                    subject = f"GPU{src}->GPU{dst}"
                    key, label = f"{suite}.{peer}.{subject}", f"{peer} {subject}"
                else:
                    subject = f"{matrix.row_kind}{row_id}/{matrix.col_kind}{col_id}"
                    key, label = f"{suite}.{matrix.name}.{subject}", f"{matrix.name} {subject}"
                out.append(Metric(key=key, suite=suite, name=label, unit=matrix.unit,
                                  samples=(value,), subject=subject))
    return out
