"""What the GPU compute suite needs from a GPU library: devices, and timed GEMMs and HBM
kernels. `nodetune.bench.gputorch` implements it on PyTorch; tests replay recorded timings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class DeviceInfo:
    ordinal: int
    bus_id: str  # "0000:18:00.0"
    name: str
    sms: int
    capability: tuple[int, int]


class GpuEngine(Protocol):
    name: str

    def versions(self) -> dict[str, str]: ...

    def devices(self) -> list[DeviceInfo]: ...

    def warm(self, ordinal: int, seconds: float, n: int) -> None: ...

    def gemm_error(self, ordinal: int, n: int) -> float: ...

    def gemm_ms(self, ordinal: int, dtype: str, n: int, iters: int) -> float:
        """Milliseconds for `iters` n x n x n products after one warm-up product."""
        ...

    def hbm_ms(self, ordinal: int, kind: str, nbytes: int, iters: int) -> float:
        """Milliseconds for `iters` passes of "copy" (a = b) or "triad" (a = b + s c) over
        arrays of `nbytes` each, after one warm-up pass."""
        ...

    def release(self) -> None: ...
