"""The GPU compute suite's engine on PyTorch: cuBLAS(Lt) GEMMs and HBM copy / triad kernels,
timed with CUDA events on the device's current stream, on random data (never zeros: a product
of zeros runs faster than real data)."""

from __future__ import annotations

from typing import Any

import torch  # type: ignore[import-not-found,unused-ignore]

from nodetune.bench.gpuengine import DeviceInfo


def _bus_id(props: Any) -> str:
    domain = getattr(props, "pci_domain_id", 0)
    return f"{domain:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"


class TorchEngine:
    """GPU benchmarks through torch.matmul / torch._scaled_mm and tensor copies."""

    name = "torch"

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, str], Any] = {}

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "cuda": str(torch.version.cuda),
                "cublas": str(torch.backends.cuda.preferred_blas_library())}

    def devices(self) -> list[DeviceInfo]:
        out = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append(DeviceInfo(ordinal=i, bus_id=_bus_id(props), name=props.name,
                                  sms=props.multi_processor_count,
                                  capability=(props.major, props.minor)))
        return out

    def _time(self, ordinal: int, iters: int, op: Any) -> float:
        torch.cuda.set_device(ordinal)
        op()
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            op()
        stop.record()
        stop.synchronize()
        return float(start.elapsed_time(stop))

    def _gemm_op(self, ordinal: int, dtype: str, n: int) -> Any:
        dev = torch.device("cuda", ordinal)
        gen = torch.Generator(device=dev).manual_seed(ordinal + 1)
        a = torch.randn(n, n, device=dev, generator=gen, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, generator=gen, dtype=torch.bfloat16)
        if dtype == "bf16":
            out = torch.empty(n, n, device=dev, dtype=torch.bfloat16)

            def bf16() -> None:
                torch.matmul(a, b, out=out)

            self._buffers[(ordinal, "gemm")] = (a, b, out)
            return bf16
        fa = a.to(torch.float8_e4m3fn)
        fb = b.t().contiguous().to(torch.float8_e4m3fn).t()  # column-major, as cuBLASLt wants
        one = torch.ones((), device=dev, dtype=torch.float32)

        def fp8() -> None:
            torch._scaled_mm(fa, fb, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

        self._buffers[(ordinal, "gemm")] = (a, b, fa, fb)
        return fp8

    def gemm_ms(self, ordinal: int, dtype: str, n: int, iters: int) -> float:
        ms = self._time(ordinal, iters, self._gemm_op(ordinal, dtype, n))
        self._buffers.pop((ordinal, "gemm"), None)
        return ms

    def gemm_error(self, ordinal: int, n: int) -> float:
        """‖C - ref‖ / ‖ref‖ of a bf16 product's first 64 rows against float64."""
        dev = torch.device("cuda", ordinal)
        gen = torch.Generator(device=dev).manual_seed(99)
        a = torch.randn(n, n, device=dev, generator=gen, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, generator=gen, dtype=torch.bfloat16)
        c = torch.full((n, n), float("nan"), device=dev, dtype=torch.bfloat16)
        torch.matmul(a, b, out=c)
        ref = a[:64].double() @ b.double()
        got = c[:64].double()
        if not bool(torch.isfinite(c).all()):
            return float("inf")
        return float(torch.linalg.norm(got - ref) / torch.linalg.norm(ref))

    def _hbm_op(self, ordinal: int, kind: str, nbytes: int) -> Any:
        dev = torch.device("cuda", ordinal)
        count = nbytes // 4
        gen = torch.Generator(device=dev).manual_seed(ordinal + 7)
        b = torch.rand(count, device=dev, generator=gen, dtype=torch.float32)
        a = torch.empty_like(b)
        if kind == "copy":
            self._buffers[(ordinal, "hbm")] = (a, b)
            return lambda: a.copy_(b)
        c = torch.rand(count, device=dev, generator=gen, dtype=torch.float32)
        self._buffers[(ordinal, "hbm")] = (a, b, c)
        return lambda: torch.add(b, c, alpha=3.0, out=a)

    def hbm_ms(self, ordinal: int, kind: str, nbytes: int, iters: int) -> float:
        op = self._hbm_op(ordinal, kind, nbytes)
        ms = self._time(ordinal, iters, op)
        bufs = self._buffers.pop((ordinal, "hbm"))
        if kind == "triad":
            a, b, c = bufs
            if not bool(torch.allclose(a[:4096], b[:4096] + 3.0 * c[:4096])):
                raise ValueError("triad wrote wrong values")
        return ms

    def warm(self, ordinal: int, seconds: float, n: int) -> None:
        """Run bf16 products until `seconds` have passed, so the clocks have ramped."""
        op = self._gemm_op(ordinal, "bf16", n)
        spent, iters = 0.0, 1
        while spent < seconds * 1000:
            spent += self._time(ordinal, iters, op)
            iters = min(iters * 2, 64)
        self._buffers.pop((ordinal, "gemm"), None)

    def release(self) -> None:
        self._buffers.clear()
        torch.cuda.empty_cache()
