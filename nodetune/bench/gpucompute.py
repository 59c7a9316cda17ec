"""gpu: each GPU's own dense GEMM rate (bf16, and fp8 where it has fp8 tensor cores) and HBM
bandwidth (device copy and STREAM triad), with the clocks and power it held meanwhile.

Per GPU: bf16 products until the clocks have ramped, a bf16 correctness check against float64,
then `--repeat` samples of `iters` back-to-back n x n x n products (n = 8192) timed with CUDA
events, and the same for copy (bytes read + written) and triad (two reads, one write) over
1 GiB arrays (256 MiB with --quick). Expectations come from the SKU's published peak
(`nodetune.bench.gpuspec`). A GPU is flagged when a metric is "low" against its expectation or
below the median of this node's GPUs by more than the noise bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from nodetune.bench import gpuspec, gputelemetry
from nodetune.bench.base import RunContext, Runner, module_available
from nodetune.bench.gpuengine import DeviceInfo, GpuEngine
from nodetune.bench.outliers import flags
from nodetune.bench.results import GIB, MIB, Expected, Metric, SuiteResult
from nodetune.errors import BenchError

GEMM_N = 8192
MAX_GEMM_ERROR = 1e-2  # bf16 operands land between 1e-3 and 1e-2 against float64
KINDS = ("gemm_bf16", "gemm_fp8", "hbm_copy", "hbm_triad")
HBM_BYTES_MOVED = {"copy": 2, "triad": 3}  # arrays touched per element pass


def tflops(n: int, iters: int, ms: float) -> float:
    return 2.0 * n ** 3 * iters / (ms / 1e3) / 1e12


def hbm_gbps(kind: str, nbytes: int, iters: int, ms: float) -> float:
    return HBM_BYTES_MOVED[kind] * nbytes * iters / (ms / 1e3) / 1e9


def _load_engine() -> GpuEngine:
    from nodetune.bench.gputorch import TorchEngine  # optional: torch, only when the suite runs

    return TorchEngine()


class GpuComputeRunner(Runner):
    """Per-GPU GEMM TFLOP/s and HBM bandwidth against the SKU's peak."""

    name = "gpu"
    summary = "per-GPU dense GEMM (bf16, fp8) and HBM copy/triad, with clocks and power"
    gpu = True
    requires = ("torch",)
    cmd_timeout = 600

    def __init__(self, engine: Callable[[], GpuEngine] = _load_engine,
                 sampler: Callable[[], gputelemetry.Sampler] = gputelemetry.NvmlSampler.open
                 ) -> None:
        self._engine = engine
        self._sampler = sampler

    def check_enabled(self, ctx: RunContext) -> str | None:
        if ctx.gpu_count() == 0 and not os.path.exists("/dev/nvidiactl"):
            return "gpu: no NVIDIA GPU on this node"
        if self._engine is _load_engine and not module_available("torch"):
            return "gpu: Python module torch is missing; fix: pip install torch"
        return None

    def run(self, ctx: RunContext) -> SuiteResult:
        opts = ctx.options
        engine = self._engine()
        sampler = self._sampler()
        devices = engine.devices()
        if opts.gpus is not None:
            devices = [d for d in devices if d.ordinal in opts.gpus]
        if not devices:
            raise BenchError("gpu: no CUDA device visible", fix="check CUDA_VISIBLE_DEVICES")
        nbytes = opts.sizes[0] if opts.sizes else (256 * MIB if opts.quick else GIB)
        repeat = opts.repeats()
        gemm_iters, hbm_iters = (10, 10) if opts.quick else (30, 20)
        warm_s = 0.5 if opts.quick else 2.0
        kinds = [(k, dev) for dev in devices for k in self._kinds(dev)]
        ctx.progress.start(f"gpu GEMM/HBM on {len(devices)} GPU(s)", len(kinds) * repeat)
        start = time.monotonic()
        metrics: list[Metric] = []
        telemetry: dict[str, Any] = {}
        try:
            for dev in devices:
                sampler.start(dev.ordinal, dev.bus_id)
                engine.warm(dev.ordinal, warm_s, GEMM_N)
                error = engine.gemm_error(dev.ordinal, 2048)
                if not error <= MAX_GEMM_ERROR:
                    sampler.stop()
                    raise BenchError(f"gpu: GPU{dev.ordinal} bf16 product is wrong "
                                     f"(relative error {error:.2g})",
                                     fix="check the GPU's health (nodetune check, dcgmi diag)")
                for kind in self._kinds(dev):
                    samples = []
                    for _ in range(repeat):
                        samples.append(self._sample(engine, dev, kind, nbytes, gemm_iters,
                                                    hbm_iters))
                        unit = "TFLOP/s" if kind.startswith("gemm") else "GB/s"
                        ctx.progress.advance(
                            what=f"GPU{dev.ordinal} {kind} {samples[-1]:,.0f} {unit}")
                    metrics.append(self._metric(dev, kind, tuple(samples), nbytes))
                summary = sampler.stop()
                if summary:
                    telemetry[f"GPU{dev.ordinal}"] = self._with_clock_bound(summary, dev)
        finally:
            engine.release()
        flagged = flags(metrics, gpuspec.FLEET_NOISE)
        note = "; ".join(f["why"] for f in flagged) or None
        return SuiteResult(suite=self.name, status="ok", runner=engine.name, note=note,
                           tool_versions=engine.versions(),
                           seconds=round(time.monotonic() - start, 2), metrics=metrics,
                           telemetry=telemetry or None, flags=flagged)

    @staticmethod
    def _kinds(dev: DeviceInfo) -> list[str]:
        fp8 = gpuspec.has_fp8(dev.capability)
        return [k for k in KINDS if k != "gemm_fp8" or fp8]

    @staticmethod
    def _sample(engine: GpuEngine, dev: DeviceInfo, kind: str, nbytes: int, gemm_iters: int,
                hbm_iters: int) -> float:
        family, _, variant = kind.partition("_")
        if family == "gemm":
            ms = engine.gemm_ms(dev.ordinal, variant, GEMM_N, gemm_iters)
            return tflops(GEMM_N, gemm_iters, ms)
        ms = engine.hbm_ms(dev.ordinal, variant, nbytes, hbm_iters)
        return hbm_gbps(variant, nbytes, hbm_iters, ms)

    def _metric(self, dev: DeviceInfo, kind: str, samples: tuple[float, ...],
                nbytes: int) -> Metric:
        family, _, variant = kind.partition("_")
        gpu = f"GPU{dev.ordinal}"
        expected: Expected | None
        if family == "gemm":
            expected = gpuspec.gemm(dev.name, variant, dev.sms)
            return Metric(key=f"gpu.{kind}.{gpu}", suite=self.name,
                          name=f"{gpu} GEMM {variant} {GEMM_N}^3", unit="TFLOP/s",
                          samples=samples, subject=gpu, size_bytes=GEMM_N, expected=expected)
        expected = gpuspec.hbm(dev.name)
        return Metric(key=f"gpu.{kind}.{gpu}", suite=self.name, name=f"{gpu} HBM {variant}",
                      unit="GB/s", samples=samples, subject=gpu, size_bytes=nbytes,
                      expected=expected)

    @staticmethod
    def _with_clock_bound(summary: dict[str, Any], dev: DeviceInfo) -> dict[str, Any]:
        """Adds the bf16 peak at the median SM clock held during the run."""
        sku = gpuspec.sku(dev.name)
        clock = (summary.get("sm_clock_mhz") or {}).get("median")
        out = {"name": dev.name, "bus_id": dev.bus_id, **summary}
        if sku is not None and clock:
            at_clock = gpuspec.peak_tflops(sku, "bf16", dev.sms, clock)
            out["bf16_peak_at_clock_tflops"] = None if at_clock is None else round(at_clock, 1)
        return out
