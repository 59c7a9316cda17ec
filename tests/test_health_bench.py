"""The standard tier's benchmark checks: the memcpy and all-reduce runners over the byte-moving
CUDA/NCCL stand-in on the real H200 VM's facts, judged by the checks of checks/standard.yaml."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodetune.bench import allreduce, memcpy
from nodetune.bench.base import RunContext, RunOptions
from nodetune.bench.results import MIB, SuiteResult
from nodetune.check.bench import bench_section, bench_unit
from nodetune.check.suite import load_suite
from nodetune.rules.evaluation import evaluate
from nodetune.rules.rule import Rule
from tests.fake_cuda import FakeCuda, FakeNccl

NVML = Path(__file__).parent / "fixtures" / "nvml" / "h200x2-vm.json"
H200_GPU_RUN = Path(__file__).parent / "fixtures" / "bench" / "h200-fc-vm-gpu-quick.json"
GPUS = ["0000:00:06.0", "0000:00:07.0"]
# measured on that VM (tests/fixtures/README.md): H2D pinned 55.5 GB/s, all-reduce 329 GB/s
RATES = {"h2d_pinned": 55.5, "d2h_pinned": 55.0, "h2d_pageable": 20.6, "d2h_pageable": 20.0,
         "d2d": 4100.0, "p2p": 394.0}


@pytest.fixture(scope="module")
def facts(host_tree: Callable[[str], Path]) -> dict[str, Any]:
    from nodetune.node.source import open_node

    with open_node(root=str(host_tree("h200x2-vm-gather")), nvml=str(NVML)) as node:
        doc: dict[str, Any] = node.facts().to_json()
    return doc


def judge(results: dict[str, Any], variables: dict[str, Any] | None = None) -> dict[str, list]:
    """Evaluate the standard tier's bench checks: {check id: [(subject, status, message)]}."""
    doc = {"health": {"bench": bench_section(results, variables or {})}}
    out = {}
    for check in load_suite("standard").checks:
        if check.bench:
            findings = evaluate([Rule.from_dict(check.rule)], doc, variables or {})
            out[check.id] = [(f.subject, f.status.value, f.message) for f in findings]
    return out


def run_memcpy(facts: dict[str, Any], h2d: float) -> Any:
    api = FakeCuda(GPUS, {**RATES, "h2d_pinned": h2d})
    return memcpy.MemcpyRunner().run_with(api, RunContext(facts=facts), [4 * MIB], repeat=1)


def run_allreduce(facts: dict[str, Any], busbw: float, corrupt: bool = False) -> Any:
    api = FakeCuda(GPUS, RATES)
    return allreduce.AllReduceRunner().run_builtin_with(
        api, FakeNccl(api, busbw=busbw, corrupt=corrupt),
        RunContext(facts=facts, options=RunOptions(quick=True)), (4 * MIB,), repeat=1)


def test_healthy_copies_and_all_reduce_pass(facts: dict[str, Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allreduce, "EXPECTED_FROM", 4 * MIB)
    verdict = judge({"memcpy": run_memcpy(facts, 55.5), "allreduce": run_allreduce(facts, 329)})
    assert {k: {s for _, s, _ in v} for k, v in verdict.items()} == {
        "bench.memcpy.h2d": {"pass"}, "bench.memcpy.d2h": {"pass"},
        "bench.allreduce.busbw": {"pass"}, "bench.allreduce.correct": {"pass"},
        "bench.gpu.gemm": {"skipped"}, "bench.gpu.hbm": {"skipped"},
        "bench.gpu.outlier": {"skipped"}}
    assert [s for s, _, _ in verdict["bench.memcpy.h2d"]] == ["GPU0", "GPU1"]


def test_slow_copies_fail_against_the_link_rate(facts: dict[str, Any]) -> None:
    """28 GB/s from a Gen5 x16 link (63.0 GB/s, floor 80%) is what an x8 link would give."""
    verdict = judge({"memcpy": run_memcpy(facts, 28.0)})
    assert verdict["bench.memcpy.h2d"][0] == (
        "GPU0", "fail", "GPU0 host-to-GPU copy 28 GB/s (expected >= 50.42 GB/s)")
    assert {s for _, s, _ in verdict["bench.memcpy.d2h"]} == {"pass"}
    assert {s for _, s, _ in judge({"memcpy": run_memcpy(facts, 28.0)},
                                   {"memcpy_min_gbps": 25})["bench.memcpy.h2d"]} == {"pass"}


def test_slow_or_wrong_all_reduce_fails(facts: dict[str, Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allreduce, "EXPECTED_FROM", 4 * MIB)
    verdict = judge({"allreduce": run_allreduce(facts, 150)})
    assert verdict["bench.allreduce.busbw"] == [(None, "fail", (
        "all-reduce 150 GB/s bus bandwidth over 2 GPUs (expected >= 270 GB/s)"))]
    wrong = judge({"allreduce": run_allreduce(facts, 329, corrupt=True)})
    assert wrong["bench.allreduce.correct"][0][1] == "fail"
    assert "elements wrong" in wrong["bench.allreduce.correct"][0][2]


def test_benchmarks_run_only_on_the_live_host(facts: dict[str, Any]) -> None:
    result = bench_unit("memcpy", facts, live=False)()
    assert result.status == "skipped" and "only on the live host" in result.note
    verdict = judge({"memcpy": result})  # and no all-reduce result at all
    assert {k: [s for _, s, _ in v] for k, v in verdict.items()} == {
        "bench.memcpy.h2d": ["skipped"], "bench.memcpy.d2h": ["skipped"],
        "bench.allreduce.busbw": ["skipped"], "bench.allreduce.correct": ["unknown"],
        "bench.gpu.gemm": ["skipped"], "bench.gpu.hbm": ["skipped"],
        "bench.gpu.outlier": ["skipped"]}


def recorded_gpu_run(scale: float = 1.0) -> Any:
    """The quick `bench gpu` run recorded on an H200 VM, its GEMM rate scaled by `scale`."""
    suite = json.loads(H200_GPU_RUN.read_text())["suites"][0]
    for metric in suite["metrics"]:
        if metric["key"].startswith("gpu.gemm_"):
            metric["value"] *= scale
            metric["samples"] = [sample * scale for sample in metric["samples"]]
    return SuiteResult.from_json(suite)


def test_the_recorded_h200_gpu_run_passes() -> None:
    item, = bench_section({"gpu": recorded_gpu_run()}, {})["gpu"]
    assert (item["gemm_bf16_tflops"], item["gemm_floor_tflops"]) == (790.1, 544.2)  # 989.4 x 0.55
    verdict = judge({"gpu": recorded_gpu_run()})
    assert [s for _, s, _ in verdict["bench.gpu.gemm"]] == ["pass"]
    assert [s for _, s, _ in verdict["bench.gpu.hbm"]] == ["pass"]
    assert [s for _, s, _ in verdict["bench.gpu.outlier"]] == ["pass"]


def test_a_gpu_at_a_third_of_its_rate_fails_the_gemm_check() -> None:
    verdict = judge({"gpu": recorded_gpu_run(scale=1 / 3)})
    assert verdict["bench.gpu.gemm"][0][1] == "fail"
    assert verdict["bench.gpu.gemm"][0][2].startswith(
        "GPU0 bf16 GEMM 263.4 TFLOP/s (expected >= 544.2 TFLOP/s; SM clock")
    assert [s for _, s, _ in verdict["bench.gpu.hbm"]] == ["pass"]
    relaxed = judge({"gpu": recorded_gpu_run(scale=1 / 3)}, {"gpu_gemm_min_tflops": 200})
    assert [s for _, s, _ in relaxed["bench.gpu.gemm"]] == ["pass"]
