"""A CUDA runtime and NCCL stand-in for CI machines without a GPU.

"Device" memory is host memory, copies really move bytes (ctypes.memmove), and all-reduce
really sums the ranks' float32 buffers, so the runners' bookkeeping, result checks and
bandwidth arithmetic run for real. Time is simulated: every operation advances its stream's
clock by bytes / bandwidth, and events read that clock.
"""

from __future__ import annotations

import ctypes
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_ids = itertools.count(1)


@dataclass
class FakeStream:
    device: int
    clock: float = 0.0  # seconds
    ident: int = field(default_factory=lambda: next(_ids))

    def __int__(self) -> int:
        return self.ident


@dataclass
class FakeEvent:
    time: float | None = None


class FakeCuda:
    """CudaApi over host memory. `rates` are GB/s per copy kind."""

    name = "fake-cuda"

    def __init__(self, bus_ids: list[str], rates: dict[str, float]) -> None:
        self.bus_ids = bus_ids
        self.rates = rates
        self.current = 0
        self.buffers: dict[int, Any] = {}
        self.pinned: dict[int, int] = {}
        self.streams: dict[int, FakeStream] = {}
        self.peer_enabled: set[tuple[int, int]] = set()
        self.freed: list[int] = []

    def versions(self) -> dict[str, str]:
        return {"fake-cuda": "1"}

    def device_count(self) -> int:
        return len(self.bus_ids)

    def bus_id(self, dev: int) -> str:
        return self.bus_ids[dev].upper()  # CUDA prints upper-case hex digits

    def device_name(self, dev: int) -> str:
        return "NVIDIA H200"

    def set_device(self, dev: int) -> None:
        self.current = dev

    def _alloc(self, size: int) -> int:
        buf = ctypes.create_string_buffer(size)
        address = ctypes.addressof(buf)
        self.buffers[address] = buf
        return address

    def malloc(self, size: int) -> int:
        return self._alloc(size)

    def free(self, ptr: int) -> None:
        self.freed.append(ptr)

    def host_alloc(self, size: int) -> int:
        ptr = self._alloc(size)
        self.pinned[ptr] = size
        return ptr

    def free_host(self, ptr: int) -> None:
        self.freed.append(ptr)
        self.pinned.pop(ptr)

    def stream(self) -> FakeStream:
        s = FakeStream(self.current)
        self.streams[s.ident] = s
        return s

    def event(self) -> FakeEvent:
        return FakeEvent()

    def record(self, event: FakeEvent, stream: FakeStream) -> None:
        event.time = stream.clock

    def elapsed_ms(self, start: FakeEvent, stop: FakeEvent) -> float:
        assert start.time is not None and stop.time is not None
        return (stop.time - start.time) * 1e3

    def _is_pinned(self, ptr: int) -> bool:
        return any(base <= ptr < base + size for base, size in self.pinned.items())

    def memcpy_async(self, dst: int, src: int, size: int, kind: int, stream: FakeStream) -> None:
        ctypes.memmove(dst, src, size)
        if kind == 3:
            rate = self.rates["d2d"] / 2  # a copy reads and writes
        else:
            host = src if kind == 1 else dst
            label = ("h2d" if kind == 1 else "d2h") + ("_pinned" if self._is_pinned(host)
                                                       else "_pageable")
            rate = self.rates[label]
        stream.clock += size / (rate * 1e9)

    def memcpy_peer_async(self, dst: int, dst_dev: int, src: int, src_dev: int, size: int,
                          stream: FakeStream) -> None:
        ctypes.memmove(dst, src, size)
        stream.clock += size / (self.rates["p2p"] * 1e9)

    def memset_async(self, ptr: int, value: int, size: int, stream: FakeStream) -> None:
        ctypes.memset(ptr, value, size)

    def can_access_peer(self, dev: int, peer: int) -> bool:
        return True

    def enable_peer_access(self, peer: int) -> None:
        self.peer_enabled.add((self.current, peer))

    def stream_synchronize(self, stream: FakeStream) -> None:
        pass


class FakeNccl:
    """ncclAllReduce (float32 sum) over FakeCuda memory; `busbw` in GB/s sets the time."""

    path = "fake-libnccl.so.2"

    def __init__(self, cuda: FakeCuda, busbw: float, corrupt: bool = False) -> None:
        self.cuda = cuda
        self.busbw = busbw
        self.corrupt = corrupt
        self.pending: list[tuple[int, int, int, int]] = []
        self.groups = 0

    def version(self) -> str:
        return "2.99.0"

    def comm_init_all(self, devices: list[int]) -> list[int]:
        return [100 + d for d in devices]

    def group_start(self) -> None:
        self.pending = []

    def all_reduce(self, send: int, recv: int, count: int, comm: int, stream: int) -> None:
        self.pending.append((send, recv, count, stream))

    def group_end(self) -> None:
        self.groups += 1
        n = len(self.pending)
        count = self.pending[0][2]
        total = np.zeros(count, dtype=np.float32)
        for send, _, _, _ in self.pending:
            total += np.ctypeslib.as_array((ctypes.c_float * count).from_address(send))
        if self.corrupt:
            total[-1] += 1
        algbw = self.busbw / (2 * (n - 1) / n)
        for _, recv, _, stream in self.pending:
            np.ctypeslib.as_array((ctypes.c_float * count).from_address(recv))[:] = total
            self.cuda.streams[stream].clock += count * 4 / (algbw * 1e9)

    def comm_destroy(self, comm: int) -> None:
        pass
