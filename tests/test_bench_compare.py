"""--compare refuses apples and oranges: recorded quick and full runs of one node."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from nodetune.bench import compare, session
from nodetune.bench.results import Binding, Metric, SuiteResult

BENCH = Path(__file__).parent / "fixtures" / "bench"
QUICK = BENCH / "h100x2-fc-vm-bench-quick.json"
FULL = BENCH / "h100x2-fc-vm-bench.json"


def _doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def test_quick_run_against_full_run_is_incomparable_not_regressed() -> None:
    quick, full = _doc(QUICK), _doc(FULL)
    result = compare.compare(compare.baseline_suites(quick), compare.baseline_suites(full),
                             before_options=quick["options"], after_options=full["options"])
    assert result["summary"]["regressed"] == 0
    assert result["summary"]["improved"] == 0
    assert result["summary"]["incomparable"] == len(result["changes"]) > 0
    busbw = next(c for c in result["changes"] if c.key == "allreduce.busbw.1MiB")
    assert busbw.verdict == "incomparable"
    assert busbw.mismatches == ("option quick True vs False", "samples 1 vs 3")
    doc = compare.to_json(result, str(QUICK), quick, "fp")
    assert session.exit_code([], doc) == 3
    line = compare.mismatch_summary(doc)
    assert line is not None and "option quick True vs False" in line


def test_same_parameters_are_compared() -> None:
    full = _doc(FULL)
    result = compare.compare(compare.baseline_suites(full), compare.baseline_suites(full),
                             before_options=full["options"], after_options=full["options"])
    assert result["summary"]["incomparable"] == 0
    assert result["summary"]["regressed"] == 0
    assert result["summary"]["unchanged"] == len(result["changes"])
    assert compare.mismatch_summary(compare.to_json(result, "b", full, "fp")) is None


def _suite(metric: Metric, **kw: Any) -> SuiteResult:
    return SuiteResult(suite=metric.suite, status="ok", metrics=[metric], **kw)


def _metric(samples: tuple[float, ...], **kw: Any) -> Metric:
    base = {"key": "cpu-mem.triad.cpu0.mem0", "suite": "cpu-mem", "name": "triad",
            "unit": "GB/s", "size_bytes": 1 << 30,
            "binding": Binding(method="numactl", cpus="0-7", mem_node=0)}
    base.update(kw)
    return Metric(samples=samples, **base)


@pytest.mark.parametrize(("change", "expected"), [
    ({"size_bytes": 1 << 28}, "size 1073741824 vs 268435456 bytes"),
    ({"binding": Binding(method="numactl", cpus="8-15", mem_node=0)},
     "binding numactl cpus 0-7 mem node0 vs numactl cpus 8-15 mem node0"),
    ({"binding": None}, "binding numactl cpus 0-7 mem node0 vs unbound"),
])
def test_metric_parameters_that_differ_are_named(change: dict[str, Any], expected: str) -> None:
    before = _metric((60.0, 61.0, 62.0))
    after = dataclasses.replace(before, samples=(17.0, 17.5, 18.0), **change)
    [c] = compare.compare([_suite(before)], [_suite(after)])["changes"]
    assert c.verdict == "incomparable"
    assert c.mismatches == (expected,)
    assert c.to_json()["significant"] is False


def test_tool_versions_and_gpu_set_are_checked_per_suite() -> None:
    m = _metric((60.0, 61.0, 62.0))
    before = _suite(m, tool_versions={"numpy": "2.1.0"}, ranks=8)
    after = _suite(dataclasses.replace(m, samples=(50.0, 50.5, 51.0)),
                   tool_versions={"numpy": "2.2.0"}, ranks=4)
    [c] = compare.compare([before], [after])["changes"]
    assert c.mismatches == ("numpy 2.1.0 vs 2.2.0", "GPU set: 8 vs 4 ranks")
    same = _suite(dataclasses.replace(m, samples=(50.0, 50.5, 51.0)),
                  tool_versions={"numpy": "2.1.0"}, ranks=8)
    [c] = compare.compare([before], [same])["changes"]
    assert c.verdict == "regressed"


def test_run_options_that_differ_make_a_comparison_without_common_keys_fail() -> None:
    quick, full = _doc(QUICK), _doc(FULL)
    memcpy_quick = [s for s in compare.baseline_suites(quick) if s.suite == "memcpy"]
    memcpy_full = [s for s in compare.baseline_suites(full) if s.suite == "memcpy"]
    result = compare.compare(memcpy_quick, memcpy_full, before_options=quick["options"],
                             after_options=full["options"])
    doc = compare.to_json(result, "b", quick, "fp")
    assert doc["run_mismatches"] == ["option quick True vs False"]
    assert session.exit_code([], doc) == 3


def test_cli_import_quick_against_full_exits_3_naming_the_mismatch(
        capsys: pytest.CaptureFixture[str]) -> None:
    from nodetune.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "import", str(QUICK), "--compare", str(FULL), "--json"])
    out, err = capsys.readouterr()
    assert exc.value.code == 3
    comparison = json.loads(out)["comparison"]
    assert comparison["summary"]["regressed"] == 0
    assert "cannot be compared with the baseline" in err
    assert "samples 3 vs 1" in err


def test_recorded_quick_and_full_cpu_mem_triads_are_incomparable() -> None:
    """The same H200 VM, `bench cpu-mem --quick` then `bench cpu-mem` (recorded together)."""
    quick = _doc(BENCH / "h200-fc-vm-cpumem-quick.json")
    full = _doc(BENCH / "h200-fc-vm-cpumem.json")
    result = compare.compare(compare.baseline_suites(quick), compare.baseline_suites(full),
                             before_options=quick["options"], after_options=full["options"])
    [triad] = result["changes"]
    assert triad.change.verdict == "regressed"  # what the numbers alone would have said
    assert triad.verdict == "incomparable"
    assert triad.mismatches == ("option quick True vs False",
                                "size 268435456 vs 527371776 bytes", "samples 1 vs 3")
    assert full["comparison"]["summary"]["incomparable"] == 1


def test_line_progress_prints_a_line_per_step_with_eta(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from nodetune.views.bench_text import LineProgress

    ticks = iter([100.0, 102.0, 104.0, 110.0])
    progress = LineProgress(clock=lambda: next(ticks))
    progress.start("cpu-mem triad", 4)
    progress.advance()
    progress.advance(what="node0 <- node1")
    progress.advance(2)
    err = capsys.readouterr().err.splitlines()
    assert err == ["cpu-mem triad: 4 steps",
                   "cpu-mem triad: step 1/4, 2.0 s, ETA 6.0 s",
                   "cpu-mem triad: step 2/4 (node0 <- node1), 4.0 s, ETA 4.0 s",
                   "cpu-mem triad: step 4/4, 10.0 s, ETA 0.0 s"]


@pytest.mark.parametrize("as_json", [False, True])
def test_bench_all_piped_says_each_suite_and_step_on_stderr(as_json: bool) -> None:
    """stdout not a terminal (a CI log): every suite's start and end, with its figure, and
    every step, on stderr, as they happen; --json keeps stdout a JSON document."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "nodetune", "bench", "all", "--quick",
                           "--sizes", "8M", *(["--json"] if as_json else [])], cwd=repo,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode in (0, 1, 2), proc.stderr
    err = proc.stderr.splitlines()
    doc = json.loads(proc.stdout) if as_json else None
    statuses = {s["suite"]: s["status"] for s in doc["suites"]} if doc else {}
    for name in ("memcpy", "allreduce", "fio", "gpu"):  # no GPU, no --dir here
        skipped = next(line for line in err if line.startswith(f"{name}: skipped"))
        assert skipped.startswith(f"{name}: skipped: {name}: ")
        assert statuses.get(name, "skipped") == "skipped"
    start, steps = err.index("cpu-mem: started"), err.index("cpu-mem triad: 1 step")
    assert start < steps < err.index(next(line for line in err
                                          if line.startswith("cpu-mem triad: step 1/1 (")))
    done = next(line for line in err if line.startswith("cpu-mem: "))
    assert done == err[start]  # the first cpu-mem line is its start; its end comes last
    end = [line for line in err if line.startswith("cpu-mem: ok in ")]
    assert len(end) == 1 and " GB/s" in end[0] and "1 result; triad" in end[0]


@pytest.mark.parametrize("option", ["--save", "--plot"])
def test_an_unwritable_output_is_one_line_and_exit_3(
        option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nodetune.cli import main

    target = tmp_path / "missing-dir" / "out"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "import", str(FULL), option, str(target)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 3
    assert err == (f"nodetune: error: cannot write {target}: No such file or directory; "
                   f"fix: give a writable path to {option}")
