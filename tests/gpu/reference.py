"""Reference figures for `nodetune bench gpu`, measured on the same GPU with other harnesses:
triton.testing.do_bench over torch.matmul / torch._scaled_mm (GEMM), CuPy (device copy through
cudaMemcpyAsync, triad through an ElementwiseKernel). Run on a GPU node:

    python tests/gpu/reference.py NODETUNE_RESULT.json > reference.json

It prints one JSON document: per metric key, the reference value and nodetune's, and their ratio.
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

N = 8192
GIB = 1 << 30


def gemm(dtype: str, dev: int) -> float:
    torch.cuda.set_device(dev)
    a = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    b = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    if dtype == "bf16":
        ms = triton.testing.do_bench(lambda: torch.matmul(a, b), warmup=500, rep=2000,
                                     return_mode="median")
    else:
        fa = a.to(torch.float8_e4m3fn)
        fb = b.t().contiguous().to(torch.float8_e4m3fn).t()
        one = torch.ones((), device=dev)
        ms = triton.testing.do_bench(
            lambda: torch._scaled_mm(fa, fb, scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
            warmup=500, rep=2000, return_mode="median")
    return 2 * N ** 3 / (ms / 1e3) / 1e12


def cupy_hbm(kind: str, dev: int, nbytes: int = GIB, iters: int = 20) -> float:
    with cupy.cuda.Device(dev):
        count = nbytes // 4
        b = cupy.random.random(count, dtype=cupy.float32)
        c = cupy.random.random(count, dtype=cupy.float32)
        a = cupy.empty_like(b)
        triad = cupy.ElementwiseKernel("float32 b, float32 c", "float32 a", "a = b + 3.0f * c",
                                       "nodetune_ref_triad")
        stream = cupy.cuda.get_current_stream()

        def op() -> None:
            if kind == "copy":
                cupy.cuda.runtime.memcpyAsync(a.data.ptr, b.data.ptr, nbytes,
                                              cupy.cuda.runtime.memcpyDeviceToDevice, stream.ptr)
            else:
                triad(b, c, a)

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
                f"gpu.hbm_triad.GPU{dev}": ("cupy ElementwiseKernel triad",
                                            cupy_hbm("triad", dev))}
        if torch.cuda.get_device_capability(dev) >= (8, 9):
            refs[f"gpu.gemm_fp8.GPU{dev}"] = ("torch._scaled_mm, triton do_bench median",
                                              gemm("fp8", dev))
        for key, (how, value) in refs.items():
            mine = ours.get(key)
            out["metrics"][key] = {"reference": round(value, 2), "reference_how": how,
                                   "nodetune": mine,
                                   "ratio": None if mine is None else round(mine / value, 4)}
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
