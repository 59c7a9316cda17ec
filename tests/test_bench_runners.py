"""Benchmark runners: expectations from a real node's facts, statistics and comparison, the
CPU-side suites run for real, the GPU runners' bookkeeping over a byte-moving CUDA stand-in."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from nodetune.bench import allreduce, cpumem, expect, importer, memcpy, session, stats, torchdist
from nodetune.bench import compare as bench_compare
from nodetune.bench.base import RunContext, RunOptions
from nodetune.bench.fio import FioRunner
from nodetune.bench.results import MIB, Metric, SuiteResult
from nodetune.errors import BenchError
from tests.fake_cuda import FakeCuda, FakeNccl

FIXTURES = Path(__file__).parent / "fixtures"
A100_LOG = FIXTURES / "bench" / "a100x8-nccl-allreduce.log"
H200_GPUS = ["0000:00:06.0", "0000:00:07.0"]
# measured on that VM (tests/fixtures/README.md): H2D pinned 55.5, pageable 20.6, GPU0->GPU1 394
H200_RATES = {"h2d_pinned": 55.5, "d2h_pinned": 55.0, "h2d_pageable": 20.6,
              "d2h_pageable": 20.0, "d2d": 4100.0, "p2p": 394.0}



# -- expectations ----------------------------------------------------------------------------
@pytest.mark.parametrize(("gen", "width", "gbps"), [(5, 16, 63.02), (4, 16, 31.51), (3, 16, 15.75),
                                                    (4, 8, 15.75), (2, 16, 8.0), (1, 1, 0.25),
                                                    (6, 16, 121.0)])
def test_pcie_rate(gen: int, width: int, gbps: float) -> None:
    rate = expect.pcie_rate(gen, width)
    assert rate is not None and rate.value == pytest.approx(gbps, abs=0.01)


def test_expectations_from_the_h200_vm(h200_facts: dict[str, Any]) -> None:
    a, b = H200_GPUS
    h2d = expect.host_copy(h200_facts, a, "h2d", pinned=True)
    assert h2d.value == pytest.approx(63.02) and "Gen5 x16" in h2d.basis
    assert 55.5 / h2d.value >= 0.85  # the VM's measured H2D meets the target
    pageable = expect.host_copy(h200_facts, a, "h2d", pinned=False)
    assert pageable.min_ratio is None
    peer = expect.peer_copy(h200_facts, a, b)
    assert peer.value == 450.0 and "NV18" in peer.basis
    assert 394 / peer.value >= peer.min_ratio
    ring = expect.allreduce_busbw(h200_facts, [a, b])
    assert ring.value == 450.0 and 329 / ring.value >= ring.min_ratio
    assert expect.device_copy(h200_facts, a).value == 4000.0
    assert expect.allreduce_busbw(h200_facts, [a]) is None


def test_expectations_without_facts_are_unknown() -> None:
    assert expect.host_copy({}, "0000:18:00.0", "h2d", pinned=True) is None
    assert expect.peer_copy({}, "0000:18:00.0", "0000:19:00.0") is None
    assert expect.allreduce_busbw({}, ["0000:18:00.0", "0000:19:00.0"]) is None


def test_bus_id_forms() -> None:
    assert expect.normalize_bus_id("00000000:18:00.0") == "0000:18:00.0"
    assert expect.normalize_bus_id("0000:1A:00.0") == "0000:1a:00.0"
    assert expect.normalize_bus_id("18:00.0") == "0000:18:00.0"


# -- statistics and comparison ---------------------------------------------------------------
def test_median_spread_and_noise() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    spread = stats.spread([99.0, 100.0, 101.0])
    assert (spread.low, spread.high) == (99.0, 101.0) and spread.relative == pytest.approx(0.01)
    within = stats.compare([99.0, 100.0, 101.0], [100.5, 101.0, 101.5])
    assert within.verdict == "no significant change" and within.noise == stats.NOISE_FLOOR
    better = stats.compare([99.0, 100.0, 101.0], [109.0, 110.0, 111.0])
    assert better.verdict == "improved" and better.relative == pytest.approx(0.10)
    worse_latency = stats.compare([10.0, 10.1, 10.2], [12.0, 12.1, 12.2], higher_is_better=False)
    assert worse_latency.verdict == "regressed"
    # overlapping ranges are noise even when the medians differ by more than the floor
    noisy = stats.compare([80.0, 100.0, 120.0], [90.0, 105.0, 125.0])
    assert noisy.verdict == "no significant change" and noisy.noise == pytest.approx(0.2)
    # single samples: 5% floor
    assert stats.compare([100.0], [104.0]).verdict == "no significant change"
    assert stats.compare([100.0], [94.0]).verdict == "regressed"


def a100_suite(scale_1gib: float = 1.0) -> SuiteResult:
    """The real A100 run, out-of-place and in-place busbw as two samples of each size."""
    from nodetune.bench import nccltests

    [table] = nccltests.parse(A100_LOG.read_text())
    metrics = []
    for r in table.rows:
        if r.size_bytes >= MIB and r.in_place is not None:
            scale = scale_1gib if r.size_bytes == 1 << 30 else 1.0
            metrics.append(Metric(key=f"allreduce.busbw.{r.size_bytes}", suite="allreduce",
                                  name=f"busbw {r.size_bytes}", unit="GB/s",
                                  samples=(r.busbw_gbps * scale, r.in_place.busbw_gbps * scale),
                                  size_bytes=r.size_bytes))
    return SuiteResult(suite="allreduce", status="ok", metrics=metrics)


def test_compare_recorded_run_with_itself_and_with_a_slower_copy() -> None:
    same = bench_compare.compare([a100_suite()], [a100_suite()])
    assert same["summary"] == {"improved": 0, "regressed": 0, "unchanged": 14, "incomparable": 0}
    slower = bench_compare.compare([a100_suite()], [a100_suite(scale_1gib=0.9)])
    assert slower["summary"]["regressed"] == 1
    [changed] = [c for c in slower["changes"] if c.change.verdict == "regressed"]
    assert changed.key == f"allreduce.busbw.{1 << 30}"
    assert changed.change.relative == pytest.approx(-0.10, abs=0.001)
    assert session.exit_code([a100_suite()], bench_compare.to_json(slower, "b", {}, "x")) == 1


def test_results_roundtrip_through_json(tmp_path: Path) -> None:
    [suite] = importer.import_file(str(A100_LOG))
    doc = session.document([suite], {}, {"files": [str(A100_LOG)]})
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(doc))
    [back] = bench_compare.baseline_suites(bench_compare.load_baseline(str(saved)))
    assert back.rows == suite.rows
    assert [m.samples for m in back.metrics] == [m.samples for m in suite.metrics]


def test_baseline_must_be_a_bench_result(tmp_path: Path) -> None:
    other = tmp_path / "facts.json"
    other.write_text(json.dumps({"schema": "nodetune.facts/1"}))
    with pytest.raises(BenchError, match="not a nodetune bench result"):
        bench_compare.load_baseline(str(other))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(BenchError, match="is not JSON"):
        bench_compare.load_baseline(str(broken))


# -- cpu-mem ---------------------------------------------------------------------------------
def test_cpu_mem_pairs() -> None:
    assert cpumem.pairs([0], {}, quick=False) == [(0, 0)]
    assert cpumem.pairs([0, 1], {0: [10, 21], 1: [21, 10]}, quick=False) == [
        (0, 0), (1, 1), (0, 1), (1, 0)]
    eight = list(range(8))
    dist = {n: [10 if m == n else (16 if m // 2 == n // 2 else 32) for m in eight] for n in eight}
    quick = cpumem.pairs(eight, dist, quick=True)
    assert (0, 1) in quick and len(quick) == 16  # local + nearest other node
    full = cpumem.pairs(eight, dist, quick=False)
    assert (0, 2) in full and (0, 1) not in full  # the farthest other node


def test_cpu_mem_runs_for_real() -> None:
    ctx = RunContext(facts={}, options=RunOptions(quick=True, sizes=(8 * MIB,)))
    result = cpumem.CpuMemRunner().run(ctx)
    assert result.status == "ok"
    assert result.runner == ("c-openmp" if ctx.which("gcc") else "numpy")
    [triad] = result.metrics  # one NUMA node: nothing remote
    assert triad.key == "cpu-mem.triad.cpu0.mem0" and triad.value > 0.1
    assert triad.binding is not None and triad.binding.mem_node == 0
    assert triad.binding.mem_nodes_seen == (0,)
    assert triad.binding.method == ("numactl" if ctx.which("numactl")
                                    else "sched_setaffinity+set_mempolicy")
    assert "one NUMA node" in result.note


def test_cpu_mem_binds_itself_when_numactl_is_refused(tmp_path: Path) -> None:
    """Containers without CAP_SYS_NICE make numactl fail; the worker then binds itself."""
    import shutil

    refusing = tmp_path / "numactl"
    refusing.write_text("#!/bin/sh\necho 'set_mempolicy: Operation not permitted' >&2\nexit 1\n")
    refusing.chmod(0o755)
    ctx = RunContext(facts={}, options=RunOptions(quick=True, sizes=(8 * MIB,)),
                     which=lambda name: str(refusing) if name == "numactl" else shutil.which(name))
    [triad] = cpumem.CpuMemRunner().run(ctx).metrics
    assert triad.binding.method == "sched_setaffinity+set_mempolicy"
    assert triad.binding.mem_node == 0 and triad.value > 0.1


# -- fio -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fio_runs_for_real_on_a_temporary_file(tmp_path: Path) -> None:
    ctx = RunContext(facts={}, options=RunOptions(quick=True, fio_dir=str(tmp_path),
                                                  sizes=(8 * MIB,)))
    result = FioRunner().run(ctx)
    assert [j.name for j in result.jobs] == ["seqwrite", "seqread", "randread"]
    keys = {m.key for m in result.metrics}
    assert {"fio.seqwrite.write_bw", "fio.seqread.read_bw", "fio.randread.read_iops",
            "fio.randread.read_p99_us"} <= keys
    assert all(m.value > 0 for m in result.metrics)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone
    assert result.tool_versions["fio"].startswith("fio-3")


def test_fio_needs_a_target() -> None:
    reason = FioRunner().check_enabled(RunContext(facts={}, options=RunOptions()))
    assert reason is not None and "--dir" in reason


# -- memcpy over the CUDA stand-in -----------------------------------------------------------
def fake_context(facts: dict[str, Any], **options: Any) -> RunContext:
    return RunContext(facts=facts, options=RunOptions(**options))


def test_memcpy_bookkeeping_and_expectations(h200_facts: dict[str, Any]) -> None:
    api = FakeCuda(H200_GPUS, H200_RATES)
    result = memcpy.MemcpyRunner().run_with(api, fake_context(h200_facts), [4 * MIB], repeat=3)
    metrics = {m.key: m for m in result.metrics}
    h2d = metrics["memcpy.h2d_pinned.GPU0.node0.4MiB"]
    assert h2d.value == pytest.approx(55.5) and len(h2d.samples) == 3
    assert h2d.expected.value == pytest.approx(63.02) and h2d.status == "ok"
    assert "(local)" in h2d.name  # one NUMA node: it is the GPUs' node
    assert h2d.binding.mem_node == 0 and h2d.binding.mem_nodes_seen == (0,)
    assert metrics["memcpy.h2d_pageable.GPU1.node0.4MiB"].value == pytest.approx(20.6)
    assert metrics["memcpy.h2d_pageable.GPU1.node0.4MiB"].status is None
    assert metrics["memcpy.d2d.GPU0.4MiB"].value == pytest.approx(4100)
    p2p = metrics["memcpy.p2p.GPU0-GPU1.4MiB"]
    assert p2p.value == pytest.approx(394) and p2p.expected.value == 450 and p2p.status == "ok"
    assert len(result.metrics) == 2 * 4 + 2 + 2
    assert api.peer_enabled == {(0, 1), (1, 0)}
    assert not api.pinned  # pinned buffers freed
    names = [m.name for m in result.matrices]
    assert names == ["h2d_pinned", "d2h_pinned", "p2p"]
    assert result.matrices[2].cells == ((None, 394.0), (394.0, None))
    assert session.exit_code([result], None) == 0


def test_memcpy_low_host_copy_is_a_warning(h200_facts: dict[str, Any]) -> None:
    api = FakeCuda(H200_GPUS, {**H200_RATES, "h2d_pinned": 28.0})  # as if trained to x8
    result = memcpy.MemcpyRunner().run_with(api, fake_context(h200_facts), [2 * MIB], repeat=1)
    low = [m.key for m in result.metrics if m.status == "low"]
    assert low == ["memcpy.h2d_pinned.GPU0.node0.2MiB", "memcpy.h2d_pinned.GPU1.node0.2MiB"]
    assert session.exit_code([result], None) == 1


def test_memcpy_gpu_selection(h200_facts: dict[str, Any]) -> None:
    api = FakeCuda(H200_GPUS, H200_RATES)
    ctx = fake_context(h200_facts, gpus=(1,))
    result = memcpy.MemcpyRunner().run_with(api, ctx, [MIB], repeat=1)
    assert {m.subject.split("<")[0].split("-")[0] for m in result.metrics} == {"GPU1"}
    with pytest.raises(BenchError, match="this node has 2 GPUs"):
        memcpy.MemcpyRunner().run_with(api, fake_context(h200_facts, gpus=(2,)), [MIB], 1)


# -- all-reduce over the CUDA/NCCL stand-in --------------------------------------------------
def test_builtin_allreduce_bandwidth_and_result_check(h200_facts: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allreduce, "EXPECTED_FROM", 4 * MIB)
    api = FakeCuda(H200_GPUS, H200_RATES)
    runner = allreduce.AllReduceRunner()
    result = runner.run_builtin_with(api, FakeNccl(api, busbw=329.0), fake_context(h200_facts),
                                     (MIB, 4 * MIB), repeat=2)
    assert result.status == "ok" and result.runner == "nccl" and result.ranks == 2
    row = result.rows[-1]
    assert row.size_bytes == 4 * MIB and row.wrong == 0
    assert row.busbw_gbps == pytest.approx(329, rel=0.01)
    assert row.algbw_gbps == pytest.approx(329, rel=0.01)  # 2 ranks: factor 2(n-1)/n = 1
    metric = result.metrics[-1]
    assert metric.key == "allreduce.busbw.4MiB" and len(metric.samples) == 2
    assert metric.expected.value == 450 and metric.status == "ok"
    assert result.metrics[0].expected is None  # 1 MiB: below EXPECTED_FROM


def test_builtin_allreduce_detects_wrong_results(h200_facts: dict[str, Any]) -> None:
    api = FakeCuda(H200_GPUS, H200_RATES)
    result = allreduce.AllReduceRunner().run_builtin_with(
        api, FakeNccl(api, busbw=329.0, corrupt=True), fake_context(h200_facts), (MIB,), repeat=1)
    assert result.status == "failed" and "2 elements wrong" in result.note


def test_nccl_environment_keeps_the_users_choice() -> None:
    assert allreduce.nccl_env({})["NCCL_NVLS_ENABLE"] == "0"
    assert allreduce.nccl_env({"NCCL_NVLS_ENABLE": "1"})["NCCL_NVLS_ENABLE"] == "1"


def test_torchdist_table_is_read_like_nccl_tests() -> None:
    from nodetune.bench import nccltests

    ranks = [("gpu-a", 11, 0, "NVIDIA H200", "0000:00:06"), ("gpu-a", 12, 1, "NVIDIA H200",
                                                            "0000:00:07")]
    text = torchdist.format_table(
        {"min": MIB, "max": 1 << 30, "warmup": 5, "iters": 20, "versions": "torch 2.9 NCCL "
         "version 2.27.3"}, ranks, [(MIB, 30.0, 0), (1 << 30, 3263.6, 0)])
    [table] = nccltests.parse(text)
    assert table.collective == "all_reduce" and table.ranks == 2
    assert table.versions == {"nccl": "2.27.3"}
    assert table.rows[1].busbw_gbps == pytest.approx(329.0, abs=0.01)
    assert torchdist.parse_sizes("1M,64MiB,1G") == [MIB, 64 * MIB, 1 << 30]


# -- the command -----------------------------------------------------------------------------
def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from nodetune.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", *args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_import_json_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "import", str(A100_LOG),
                           str(FIXTURES / "bench" / "fio2-sample.json"), "--json")
    assert code == 0
    doc = json.loads(out)
    assert next(iter(doc)) == "schema" and doc["schema"] == "nodetune.bench/1"
    nccl, fio_suite = doc["suites"]
    assert nccl["collective"] == "all_reduce" and nccl["ranks"] == 8
    row = next(r for r in nccl["rows"] if r["size_bytes"] == 1 << 30)
    assert {k: row[k] for k in ("size_bytes", "time_us", "algbw_gbps", "busbw_gbps")} == {
        "size_bytes": 1 << 30, "time_us": 8159.5, "algbw_gbps": 131.59, "busbw_gbps": 230.29}
    job = fio_suite["jobs"][0]
    assert {k: job[k] for k in ("name", "read_bw_bytes", "read_iops", "write_bw_bytes",
                                "write_iops")} == {
        "name": "sequential_write", "read_bw_bytes": 0.0, "read_iops": 0.0,
        "write_bw_bytes": 68118.0 * 1024, "write_iops": 133.0}


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this machine has a GPU")
def test_cli_gpu_suites_without_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "memcpy", "allreduce")
    assert code == 3 and out == ""
    assert err.strip().count("\n") == 0
    assert err.startswith("nodetune: error: no NVIDIA GPU on this node")
    code, out, _ = run_cli(capsys, "memcpy", "cpu-mem", "--quick", "--sizes", "8M", "--json")
    assert code == 0
    suites = {s["suite"]: s for s in json.loads(out)["suites"]}
    assert suites["memcpy"]["status"] == "skipped"
    assert suites["memcpy"]["note"] == "memcpy: no NVIDIA GPU on this node"
    assert suites["cpu-mem"]["status"] == "ok"


@pytest.mark.slow
def test_cli_save_compare_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "before.json"
    assert run_cli(capsys, "import", str(A100_LOG), "--save", str(base))[0] == 0
    slower = tmp_path / "all_reduce_after.log"
    lines = A100_LOG.read_text().splitlines()
    idx = next(i for i, line in enumerate(lines) if line.strip().startswith("1073741824"))
    lines[idx] = lines[idx].replace("230.29", "200.00")
    slower.write_text("\n".join(lines) + "\n")
    png = tmp_path / "cmp.png"
    code, out, _ = run_cli(capsys, "import", str(slower), "--compare", str(base), "--plot",
                           str(png), "--json")
    assert code == 1
    comparison = json.loads(out)["comparison"]
    assert comparison["summary"]["regressed"] == 1
    [regressed] = [m for m in comparison["metrics"] if m["verdict"] == "regressed"]
    assert regressed["key"] == "allreduce.busbw.1GiB"
    assert regressed["change_percent"] == pytest.approx(-13.15, abs=0.01)
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli(capsys, "import", str(slower), "--compare", str(tmp_path / "no.json"))
    assert code == 3 and "cannot read" in err


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "fio", "--sizes", "abc")[0] == 3
    assert run_cli(capsys, "nosuch")[0] == 3
    code, _, err = run_cli(capsys, "fio", "--destructive")
    assert code == 3 and "--destructive only applies to --device" in err


def test_suite_result_json_keeps_skip_notes() -> None:
    skipped = SuiteResult(suite="memcpy", status="skipped", note="memcpy: no NVIDIA GPU")
    doc = skipped.to_json()
    assert doc["status"] == "skipped" and doc["note"] == "memcpy: no NVIDIA GPU"
    assert dataclasses.asdict(SuiteResult.from_json(doc)) == dataclasses.asdict(skipped)
