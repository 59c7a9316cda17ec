"""Human output of benchmark results: rich tables on stdout, progress bars on stderr."""

from __future__ import annotations

import time
from typing import Any

from nodetune.bench.results import Matrix, Metric, SuiteResult, size_label
from nodetune.views.output import console, print_table, view

GROUP_LIMIT = 8


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "IOPS" or abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def _metric_row(m: Metric) -> list[str]:
    ratio = m.ratio
    status = m.status or ""
    style = {"ok": "green", "low": "bold red"}.get(status, "")
    spread = f"±{m.to_json()['spread']['relative'] * 100:.1f}%" if len(m.samples) > 1 else ""
    return [m.name, _num(m.value, m.unit), spread,
            _num(m.expected.value, m.unit) if m.expected else "-",
            f"{ratio * 100:.0f}%" if ratio is not None else "-",
            f"[{style}]{status}[/]" if style else status]


def suite_tables(suite: SuiteResult) -> list[Any]:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    out: list[Any] = []
    if suite.rows:
        table = Table(box=None, pad_edge=False)
        for col in ("size", "time (us)", "algbw (GB/s)", "busbw (GB/s)", "#wrong"):
            table.add_column(col, justify="right", no_wrap=True)
        for r in suite.rows:
            table.add_row(size_label(r.size_bytes), _num(r.time_us), _num(r.algbw_gbps),
                          _num(r.busbw_gbps), "N/A" if r.wrong is None else str(r.wrong))
        out.append(table)
    if suite.jobs:
        table = Table(box=None, pad_edge=False)
        for col in ("job", "read", "read IOPS", "write", "write IOPS", "read p99"):
            table.add_column(col, justify="right" if col != "job" else "left", no_wrap=True)
        for j in suite.jobs:
            table.add_row(j.name, _num(j.read_bw_bytes / 1e9, "GB/s"), _num(j.read_iops, "IOPS"),
                          _num(j.write_bw_bytes / 1e9, "GB/s"), _num(j.write_iops, "IOPS"),
                          _num(j.read_clat_p99_us, "us"))
        out.append(table)
    for matrix in suite.matrices or []:
        out.append(matrix_table(matrix))
    shown = suite.metrics
    if suite.rows or suite.matrices:  # the tables above show the values; keep the judged ones
        shown = [m for m in suite.metrics if m.expected is not None]
    if shown:
        table = Table(box=None, pad_edge=False)
        for col, justify in (("metric", "left"), ("median", "right"), ("spread", "right"),
                             ("expected", "right"), ("ratio", "right"), ("", "left")):
            table.add_column(col, justify=justify, no_wrap=col != "metric")  # type: ignore[arg-type]
        for row in _rows_with_summaries(shown):
            table.add_row(*row)
        out.append(table)
    return out


def _rows_with_summaries(metrics: list[Metric]) -> list[list[str]]:
    """One row per metric; a kind with more than GROUP_LIMIT metrics (e.g. 56 GPU pairs) is
    summarised in one row (median, lowest) plus a row for each metric that is "low"."""
    groups: dict[str, list[Metric]] = {}
    for m in metrics:
        groups.setdefault(".".join(m.key.split(".")[:2]), []).append(m)
    rows: list[list[str]] = []
    for kind, group in groups.items():
        if len(group) <= GROUP_LIMIT:
            rows += [_metric_row(m) for m in group]
            continue
        values = sorted(group, key=lambda m: m.ratio if m.ratio is not None else m.value)
        lowest = values[0]
        low = [m for m in group if m.status == "low"]
        median = sorted(m.value for m in group)[len(group) // 2]
        verdict = f"[bold red]{len(low)} low[/]" if low else (
            "[green]all ok[/]" if all(m.status == "ok" for m in group) else "")
        rows.append([f"{kind}: {len(group)} results, lowest {lowest.subject}",
                     f"{_num(median, lowest.unit)} (median)",
                     "", _num(lowest.expected.value, lowest.unit) if lowest.expected else "-",
                     f"{lowest.ratio * 100:.0f}%" if lowest.ratio is not None else "-", verdict])
        rows += [_metric_row(m) for m in low]
    return rows


def matrix_table(matrix: Matrix) -> Any:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    table.add_column(f"{matrix.row_kind}\\{matrix.col_kind}")
    for col in matrix.col_ids:
        table.add_column(col, justify="right")
    for row_id, cells in zip(matrix.row_ids, matrix.cells, strict=True):
        table.add_row(row_id, *[_num(c) if c is not None else "N/A" for c in cells])
    return Group(Text(f"{matrix.title} ({matrix.unit})", style="italic"), table)


def print_suites(suites: list[SuiteResult], node: dict[str, Any]) -> None:
    v = view()
    out = console(v=v)
    out.print(f"[bold]nodetune bench[/] on {node.get('hostname')} "
              f"(fingerprint {node.get('fingerprint')})")
    for suite in suites:
        runner = f" ({suite.runner})" if suite.runner else ""
        took = f", {suite.seconds:.1f} s" if suite.seconds is not None else ""
        source = f" from {suite.source}" if suite.source else ""
        style = {"ok": "green", "skipped": "yellow", "failed": "bold red"}[suite.status]
        out.print(f"\n[bold]{suite.suite}[/]{runner}{source}: [{style}]{suite.status}[/]{took}")
        if suite.note:
            out.print(f"  {suite.note}")
        if suite.tool_versions:
            out.print("  " + ", ".join(f"{k} {v}" for k, v in suite.tool_versions.items()),
                      style="dim")
        for table in suite_tables(suite):
            print_table(out, table, v, stack=1)


def print_comparison(comparison: dict[str, Any]) -> None:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    v = view()
    out = console(v=v)
    same = comparison.get("same_node")
    where = ""
    if same is not None:
        where = " (same node)" if same else \
            " [bold yellow](a different node or setup: fingerprints differ)[/]"
    out.print(f"\n[bold]compared with[/] {comparison['baseline']}"
              f" of {comparison.get('baseline_created')}{where}")
    table = Table(box=None, pad_edge=False)
    for col, justify in (("metric", "left"), ("before", "right"), ("after", "right"),
                         ("change", "right"), ("noise", "right"), ("verdict", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "metric")  # type: ignore[arg-type]
    for c in comparison["metrics"]:
        style = {"improved": "green", "regressed": "bold red",
                 "incomparable": "bold yellow"}.get(c["verdict"], "dim")
        verdict = "within noise" if c["verdict"] == "no significant change" else c["verdict"]
        if c["verdict"] == "incomparable":
            verdict += ": " + "; ".join(c.get("mismatches") or [])
        change = "-" if c["change_percent"] is None else f"{c['change_percent']:+.1f}%"
        table.add_row(c["name"], _num(c["before"], c["unit"]), _num(c["after"], c["unit"]),
                      change, f"±{c['noise_percent']:.1f}%", f"[{style}]{verdict}[/]")
    print_table(out, table, v, prose=("verdict",), stack=1)
    s = comparison["summary"]
    incomparable = f", {s['incomparable']} incomparable" if s.get("incomparable") else ""
    out.print(f"{s['improved']} improved, {s['regressed']} regressed, "
              f"{s['unchanged']} within noise{incomparable}")
    for line in comparison.get("run_mismatches") or []:
        out.print(f"[bold yellow]runs differ:[/] {line}")
    if comparison["only_in_baseline"]:
        out.print(f"{len(comparison['only_in_baseline'])} metrics only in the baseline",
                  style="dim")


def print_explanations(items: list[Any]) -> None:
    """`bench explain`: per result, the path, the likely cause, its fix and the gain."""
    out = console()
    if not items:
        out.print("every result meets its expectation: nothing to explain")
        return
    for item in items:
        m = item.metric
        ratio = f" = {m.ratio:.0%} of {_num(m.expected.value, m.unit)}" \
            if m.ratio is not None and m.expected else ""
        out.print(f"\n[bold]{m.name}[/]: {_num(m.value, m.unit)}{ratio}")
        if item.flag:
            out.print(f"  flagged: {item.flag}", markup=False)
        out.print("  path: " + " -> ".join(item.path), markup=False)
        for n, cause in enumerate(item.causes):
            label = "[bold]likely cause[/]" if n == 0 else "also"
            out.print(f"  {label}: ", end="")
            out.print(cause.found, markup=False)
            gain = f" (expected gain: {cause.gain})" if cause.gain else ""
            out.print(f"    fix: {cause.fix}{gain}", markup=False)


class LineProgress:
    """Progress for a pipe or a log: one line per finished step on stderr, with the time spent
    and the time left at the pace so far."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.description = ""
        self.total = 0
        self.done = 0
        self.started = 0.0

    def start(self, description: str, total: int) -> None:
        self.description, self.total, self.done = description, max(1, total), 0
        self.started = self.clock()
        self._line(f"{description}: {self.total} step{'s' if self.total > 1 else ''}")

    def advance(self, steps: int = 1, what: str = "") -> None:
        self.done += steps
        spent = self.clock() - self.started
        left = spent / self.done * (self.total - self.done) if self.done else 0.0
        label = f" ({what})" if what else ""
        self._line(f"{self.description}: step {self.done}/{self.total}{label}, {spent:.1f} s, "
                   f"ETA {left:.1f} s")

    def suite_started(self, name: str) -> None:
        self._line(f"{name}: started")

    def suite_done(self, result: SuiteResult) -> None:
        self._line(suite_line(result))

    @staticmethod
    def _line(text: str) -> None:
        console(stderr=True).print(text, highlight=False, markup=False, soft_wrap=True)


def suite_line(result: SuiteResult) -> str:
    """One line for a finished suite: its status, time and its headline figure (the result
    furthest below its expectation, else the first one)."""
    took = f" in {result.seconds:.1f} s" if result.seconds is not None else ""
    text = f"{result.suite}: {result.status}{took}"
    if result.note and result.status != "ok":
        return f"{text}: {result.note}"
    if not result.metrics:
        return text
    judged = [m for m in result.metrics if m.ratio is not None]
    head = min(judged, key=lambda m: m.ratio or 0.0) if judged else result.metrics[0]
    ratio = f" ({head.ratio * 100:.0f}% of expected)" if head.ratio is not None else ""
    count = len(result.metrics)
    return (f"{text}, {count} result{'s' if count > 1 else ''}; "
            f"{head.name} {_num(head.value, head.unit)}{ratio}")


class RichProgress:
    """A progress bar on stderr with steps, elapsed time and ETA; one task at a time."""

    def __init__(self) -> None:
        # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("step {task.completed}/{task.total}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=console(stderr=True), transient=True)
        self.task: Any = None
        self.description = ""

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def start(self, description: str, total: int) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.description = description
        self.task = self.bar.add_task(description, total=max(1, total))

    def advance(self, steps: int = 1, what: str = "") -> None:
        if self.task is not None:
            self.bar.advance(self.task, steps)
            if what:
                self.bar.update(self.task, description=f"{self.description} {what}")

    def suite_started(self, name: str) -> None:
        pass  # the bar names the suite at its first step

    def suite_done(self, result: SuiteResult) -> None:
        pass  # the results are printed when every suite has run
