"""Reference figures for `nodetune bench gpu`, measured on the same GPU with other harnesses:
triton.testing.do_bench over torch.matmul / torch._scaled_mm (GEMM), CuPy (device copy through
cudaMemcpyAsync, triad through an ElementwiseKernel). Run on a GPU node:

    python tests/gpu/reference.py NODETUNE_RESULT.json > reference.json

It prints one JSON document: per metric key, the reference value and nodetune's, and their ratio:
`saved` against the saved run, `interleaved` against nodetune's engine timed in alternation with
the reference (three rounds each, medians), so both see the same clocks and power cap.
Not collected by pytest (needs a GPU); the recorded output is tests/fixtures/bench/*-reference.json.
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

import cupy  # type: ignore[import-not-found,unused-ignore]
import torch  # type: ignore[import-not-found,unused-ignore]
import triton.testing  # type: ignore[import-not-found,unused-ignore]

from nodetune.bench import gpucompute
from nodetune.bench.gputorch import TorchEngine

N = 8192
GIB = 1 << 30
TRIAD_SRC = r"""
extern "C" __global__ void triad4(const float4* b, const float4* c, float4* a, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) {
        float4 x = b[i], y = c[i];
        a[i] = make_float4(x.x + 3.0f * y.x, x.y + 3.0f * y.y, x.z + 3.0f * y.z, x.w + 3.0f * y.w);
    }
}
"""


def interleaved(key: str, dev: int) -> tuple[float, float]:
    """(nodetune engine, reference) medians of three alternating rounds."""
    engine = TorchEngine()
    kind = key.split(".")[1]
    family, _, variant = kind.partition("_")
    ours, refs = [], []
    for _ in range(3):
        if family == "gemm":
            ms = engine.gemm_ms(dev, variant, N, 30)
            ours.append(gpucompute.tflops(N, 30, ms))
            refs.append(gemm(variant, dev, rep=300))
        else:
            ms = engine.hbm_ms(dev, variant, GIB, 50)
            ours.append(gpucompute.hbm_gbps(variant, GIB, 50, ms))
            refs.append(cupy_hbm(variant, dev, iters=50))
    engine.release()
    return float(statistics.median(ours)), float(statistics.median(refs))


def gemm(dtype: str, dev: int, rep: int = 2000) -> float:
    torch.cuda.set_device(dev)
    a = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    b = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    if dtype == "bf16":
        ms = triton.testing.do_bench(lambda: torch.matmul(a, b), warmup=100, rep=rep,
                                     return_mode="median")
    else:
        fa = a.to(torch.float8_e4m3fn)
        fb = b.t().contiguous().to(torch.float8_e4m3fn).t()
        one = torch.ones((), device=dev)
        ms = triton.testing.do_bench(
            lambda: torch._scaled_mm(fa, fb, scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
            warmup=100, rep=rep, return_mode="median")
    return 2 * N ** 3 / (ms / 1e3) / 1e12


def cupy_hbm(kind: str, dev: int, nbytes: int = GIB, iters: int = 20) -> float:
    with cupy.cuda.Device(dev):
        count = nbytes // 4
        b = cupy.random.random(count, dtype=cupy.float32)
        c = cupy.random.random(count, dtype=cupy.float32)
        a = cupy.empty_like(b)
        triad = cupy.RawKernel(TRIAD_SRC, "triad4")
        blocks = (count // 4 + 255) // 256
        stream = cupy.cuda.get_current_stream()

        def op() -> None:
            if kind == "copy":
                cupy.cuda.runtime.memcpyAsync(a.data.ptr, b.data.ptr, nbytes,
                                              cupy.cuda.runtime.memcpyDeviceToDevice, stream.ptr)
            else:
                triad((blocks,), (256,), (b, c, a, cupy.int64(count // 4)))

        samples = []
        for _ in range(5):
            op()
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record(stream)
            for _ in range(iters):
                op()
            stop.record(stream)
            stop.synchronize()
            ms = cupy.cuda.get_elapsed_time(start, stop)
            samples.append((2 if kind == "copy" else 3) * nbytes * iters / (ms / 1e3) / 1e9)
        return float(statistics.median(samples))


def main(path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    [suite] = [s for s in doc["suites"] if s["suite"] == "gpu"]
    ours = {m["key"]: m["value"] for m in suite["metrics"]}
    out: dict[str, Any] = {"torch": torch.__version__, "cupy": cupy.__version__,
                           "triton": triton.__version__, "metrics": {}}
    for dev in range(torch.cuda.device_count()):
        refs = {f"gpu.gemm_bf16.GPU{dev}": ("torch.matmul, triton do_bench median",
                                            gemm("bf16", dev)),
                f"gpu.hbm_copy.GPU{dev}": ("cupy memcpyAsync D2D", cupy_hbm("copy", dev)),
                f"gpu.hbm_triad.GPU{dev}": ("cupy RawKernel float4 triad",
                                            cupy_hbm("triad", dev))}
        if torch.cuda.get_device_capability(dev) >= (8, 9):
            refs[f"gpu.gemm_fp8.GPU{dev}"] = ("torch._scaled_mm, triton do_bench median",
                                              gemm("fp8", dev))
        for key, (how, value) in refs.items():
            mine = ours.get(key)
            ours_now, ref_now = interleaved(key, dev)
            out["metrics"][key] = {
                "reference_how": how,
                "saved": {"reference": round(value, 2), "nodetune": mine,
                          "ratio": None if mine is None else round(mine / value, 4)},
                "interleaved": {"reference": round(ref_now, 2), "nodetune": round(ours_now, 2),
                                "ratio": round(ours_now / ref_now, 4)}}
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
