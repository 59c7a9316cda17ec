"""The gpu suite (GEMM, HBM) over timings replayed from a recorded H200 run, its expectations
from SKU peaks, the slow-GPU flags and the clocks/power summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodetune.bench import gpucompute, gpuspec, gputelemetry, session
from nodetune.bench.base import RunContext, RunOptions
from nodetune.bench.gpuengine import DeviceInfo
from nodetune.bench.results import SuiteResult
from nodetune.check.bench import gpu_items

BENCH = Path(__file__).parent / "fixtures" / "bench"
H200_RUN = BENCH / "h200-fc-vm-gpu.json"


def recorded() -> SuiteResult:
    doc = json.loads(H200_RUN.read_text())
    [suite] = [SuiteResult.from_json(s) for s in doc["suites"] if s["suite"] == "gpu"]
    return suite


class ReplayEngine:
    """Returns, for each call, the time that gives the recorded H200 sample back, on `count`
    GPUs; `scale` slows one GPU's kind down (GPU index -> {kind: factor})."""

    name = "replay"

    def __init__(self, count: int = 1, scale: dict[int, dict[str, float]] | None = None) -> None:
        suite = recorded()
        self.samples = {m.key.split(".")[1]: list(m.samples) for m in suite.metrics}
        self.count = count
        self.scale = scale or {}
        self.calls: dict[tuple[int, str], int] = {}

    def versions(self) -> dict[str, str]:
        return {"torch": "2.11.0+cu130"}

    def devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(i, f"0000:{i + 6:02x}:00.0", "NVIDIA H200", 132, (9, 0))
                for i in range(self.count)]

    def warm(self, ordinal: int, seconds: float, n: int) -> None:
        pass

    def gemm_error(self, ordinal: int, n: int) -> float:
        return 3.1e-3

    def _value(self, ordinal: int, kind: str) -> float:
        i = self.calls.get((ordinal, kind), 0)
        self.calls[(ordinal, kind)] = i + 1
        return self.samples[kind][i % len(self.samples[kind])] * \
            self.scale.get(ordinal, {}).get(kind, 1.0)

    def gemm_ms(self, ordinal: int, dtype: str, n: int, iters: int) -> float:
        return 2.0 * n ** 3 * iters / (self._value(ordinal, f"gemm_{dtype}") * 1e12) * 1e3

    def hbm_ms(self, ordinal: int, kind: str, nbytes: int, iters: int) -> float:
        moved = gpucompute.HBM_BYTES_MOVED[kind] * nbytes * iters
        return moved / (self._value(ordinal, f"hbm_{kind}") * 1e9) * 1e3

    def release(self) -> None:
        pass


def run(engine: Any, **options: Any) -> SuiteResult:
    runner = gpucompute.GpuComputeRunner(engine=lambda: engine,
                                         sampler=gputelemetry.NullSampler)
    return runner.run(RunContext(facts={"gpus": [{}]}, options=RunOptions(**options)))


def test_replayed_h200_run_gives_the_recorded_figures_and_ratios() -> None:
    result = run(ReplayEngine())
    want = {m.key: m.samples for m in recorded().metrics}
    got = {m.key: m.samples for m in result.metrics}
    assert got.keys() == want.keys() == {"gpu.gemm_bf16.GPU0", "gpu.gemm_fp8.GPU0",
                                         "gpu.hbm_copy.GPU0", "gpu.hbm_triad.GPU0"}
    for key, samples in want.items():
        assert got[key] == pytest.approx(samples, rel=1e-9)
    bf16 = next(m for m in result.metrics if m.key == "gpu.gemm_bf16.GPU0")
    assert bf16.expected is not None and bf16.expected.value == 989.4
    assert bf16.ratio == pytest.approx(704.16 / 989.4, abs=1e-3)
    assert all(m.status == "ok" for m in result.metrics)
    assert result.flags == []
    assert session.exit_code([result], None) == 0


def test_a_gpu_at_a_third_of_its_flops_is_flagged_and_fails_the_run() -> None:
    engine = ReplayEngine(count=8, scale={5: {"gemm_bf16": 1 / 3, "gemm_fp8": 1 / 3},
                                          2: {"hbm_copy": 0.90}})
    result = run(engine, repeat=3)
    by_subject = {(f["subject"], f["metric"]): f for f in result.flags or []}
    assert set(by_subject) == {("GPU5", "gemm_bf16"), ("GPU5", "gemm_fp8"),
                               ("GPU2", "hbm_copy")}
    assert "below 55%" in by_subject[("GPU5", "gemm_bf16")]["why"]
    # 10% under the median of 8 GPUs, over the noise bound, yet above the HBM minimum ratio
    copy = by_subject[("GPU2", "hbm_copy")]
    assert "-10% against the median of 8 (" in copy["why"]
    assert next(m for m in result.metrics if m.key == "gpu.hbm_copy.GPU2").status == "ok"
    assert result.note is not None and "GPU2 HBM copy 3656.6 GB/s" in result.note
    assert session.exit_code([result], None) == 1


def test_gpu_within_noise_of_the_median_is_not_flagged() -> None:
    result = run(ReplayEngine(count=4, scale={1: {"hbm_triad": 0.97}}), repeat=3)
    assert result.flags == []


def test_no_fp8_metric_on_a_gpu_without_fp8_tensor_cores() -> None:
    class A100(ReplayEngine):
        def devices(self) -> list[DeviceInfo]:
            return [DeviceInfo(0, "0000:07:00.0", "NVIDIA A100-SXM4-80GB", 108, (8, 0))]

    result = run(A100(), quick=True)
    assert [m.key for m in result.metrics] == ["gpu.gemm_bf16.GPU0", "gpu.hbm_copy.GPU0",
                                               "gpu.hbm_triad.GPU0"]
    hbm = next(m for m in result.metrics if m.key == "gpu.hbm_copy.GPU0")
    assert hbm.expected is not None and hbm.expected.value == 2039.0


def test_a_wrong_product_fails_the_suite() -> None:
    class Broken(ReplayEngine):
        def gemm_error(self, ordinal: int, n: int) -> float:
            return float("nan")

    with pytest.raises(Exception, match="bf16 product is wrong"):
        run(Broken())


@pytest.mark.parametrize(("name", "dtype", "sms", "tflops"), [
    ("NVIDIA H200", "bf16", 132, 989.4),
    ("NVIDIA H200", "fp8", 132, 1978.9),
    ("NVIDIA H100 80GB HBM3", "bf16", 132, 989.4),
    ("NVIDIA H100 PCIe", "bf16", 114, 756.5),
    ("NVIDIA A100-SXM4-80GB", "bf16", 108, 311.9),
])
def test_gemm_expectation_is_sms_times_rate_times_spec_clock(name: str, dtype: str, sms: int,
                                                             tflops: float) -> None:
    expected = gpuspec.gemm(name, dtype, sms)
    assert expected is not None and expected.value == pytest.approx(tflops, abs=0.2)
    assert f"{sms} SMs" in expected.basis


def test_expectations_unknown_for_unknown_gpus_and_missing_fp8() -> None:
    assert gpuspec.gemm("NVIDIA A100-SXM4-80GB", "fp8", 108) is None
    assert gpuspec.gemm("Tesla T4", "bf16", 40) is None
    assert gpuspec.hbm("Tesla T4") is None


def test_recorded_telemetry_shows_the_power_cap() -> None:
    telemetry = recorded().telemetry or {}
    gpu0 = telemetry["GPU0"]
    assert gpu0["throttled"] == ["sw_power_cap"]
    assert gpu0["sm_clock_mhz"]["min"] < gpu0["max_sm_clock_mhz"]
    assert gpu0["bf16_peak_at_clock_tflops"] < 989.4


def test_summarize_samples() -> None:
    samples = [gputelemetry.Sample(t=i * 0.1, sm_mhz=mhz, mem_mhz=3201, power_w=w, temp_c=50,
                                   reasons=mask)
               for i, (mhz, w, mask) in enumerate([(1980, 300.0, 0), (1500, 700.0, 0x4),
                                                   (1200, 702.0, 0x4 | 0x1)])]
    summary = gputelemetry.summarize(samples, max_sm_mhz=1980, power_limit_w=700.0)
    assert summary["sm_clock_mhz"] == {"min": 1200, "median": 1500, "max": 1980}
    assert summary["power_w"]["max"] == 702.0
    assert summary["clock_event_reasons"] == ["gpu_idle", "sw_power_cap"]
    assert summary["throttled"] == ["sw_power_cap"]
    assert gputelemetry.summarize([])["sm_clock_mhz"] is None


def test_check_items_from_the_recorded_run_and_a_slow_gpu() -> None:

    [item] = gpu_items(recorded(), {})
    assert item["subject"] == "GPU0" and item["name"] == "NVIDIA H200"
    assert item["gemm_bf16_tflops"] == 704.2
    assert item["gemm_floor_tflops"] == round(989.4 * gpuspec.GEMM_MIN_RATIO, 1)
    assert item["hbm_floor_gbps"] == 4800 * gpuspec.HBM_MIN_RATIO
    assert (item["slow"], item["why"], item["throttled"]) == (False, "", "sw_power_cap")
    assert item["sm_clock_mhz"] == 1500.0
    slow = run(ReplayEngine(count=4, scale={3: {"gemm_bf16": 0.5}}), quick=True)
    items = {i["subject"]: i for i in gpu_items(slow, {"gpu_gemm_min_tflops": 300})}
    assert items["GPU3"]["slow"] and "GPU3 GEMM bf16" in items["GPU3"]["why"]
    assert not items["GPU0"]["slow"]
    assert items["GPU0"]["gemm_floor_tflops"] == 300.0
    assert gpu_items(SuiteResult(suite="gpu", status="skipped"), {}) == []


def test_a_gpu_below_its_peers_but_above_its_minimum_fails_the_run() -> None:
    result = run(ReplayEngine(count=4, scale={1: {"hbm_triad": 0.9}}), repeat=3)
    assert all(m.status == "ok" for m in result.metrics)
    assert [f["subject"] for f in result.flags or []] == ["GPU1"]
    assert session.exit_code([result], None) == 1
