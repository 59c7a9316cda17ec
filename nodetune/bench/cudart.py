"""The few CUDA runtime calls the memcpy and all-reduce runners need, behind one small interface.

Two implementations: NVIDIA's `cuda-bindings` (`cuda.bindings.runtime`, preferred) and CuPy's
`cupy.cuda.runtime`. Both give plain integer device/host pointers; streams and events are opaque
handles; `int(stream)` is the `cudaStream_t` value NCCL takes. Errors become BenchError.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from nodetune.bench.base import module_available
from nodetune.errors import BenchError

H2D, D2H, D2D = 1, 2, 3  # cudaMemcpyKind values


class CudaApi(Protocol):
    name: str

    def versions(self) -> dict[str, str]: ...
    def device_count(self) -> int: ...
    def bus_id(self, dev: int) -> str: ...
    def device_name(self, dev: int) -> str: ...
    def set_device(self, dev: int) -> None: ...
    def malloc(self, size: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def host_alloc(self, size: int) -> int: ...
    def free_host(self, ptr: int) -> None: ...
    def stream(self) -> Any: ...
    def event(self) -> Any: ...
    def record(self, event: Any, stream: Any) -> None: ...
    def elapsed_ms(self, start: Any, stop: Any) -> float: ...
    def memcpy_async(self, dst: int, src: int, size: int, kind: int, stream: Any) -> None: ...
    def memcpy_peer_async(self, dst: int, dst_dev: int, src: int, src_dev: int, size: int,
                          stream: Any) -> None: ...
    def memset_async(self, ptr: int, value: int, size: int, stream: Any) -> None: ...
    def can_access_peer(self, dev: int, peer: int) -> bool: ...
    def enable_peer_access(self, peer: int) -> None: ...
    def stream_synchronize(self, stream: Any) -> None: ...


class BindingsApi:
    """cuda.bindings.runtime: every call returns (cudaError_t, *values)."""

    name = "cuda-bindings"

    def __init__(self) -> None:
        # deferred: optional extra [gpu]
        from cuda.bindings import runtime

        self.rt = runtime
        self._ok = runtime.cudaError_t.cudaSuccess

    def _call(self, func: str, *args: Any) -> Any:
        result = getattr(self.rt, func)(*args)
        err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self._ok:
            text = self.rt.cudaGetErrorString(err)[1]
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise BenchError(f"CUDA {func} failed: {text}",
                             fix="check the GPU with nvidia-smi and that no other job holds it")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def versions(self) -> dict[str, str]:
        # deferred: optional extra [gpu]
        import cuda.bindings

        return {"cuda-bindings": cuda.bindings.__version__,
                "cuda_runtime": str(self._call("cudaRuntimeGetVersion")),
                "cuda_driver": str(self._call("cudaDriverGetVersion"))}

    def device_count(self) -> int:
        return int(self._call("cudaGetDeviceCount"))

    def bus_id(self, dev: int) -> str:
        raw = self._call("cudaDeviceGetPCIBusId", 32, dev)
        return (raw.decode() if isinstance(raw, bytes) else str(raw)).strip("\x00 ").lower()

    def device_name(self, dev: int) -> str:
        name = self._call("cudaGetDeviceProperties", dev).name
        return (name.decode() if isinstance(name, bytes) else str(name)).strip("\x00 ")

    def set_device(self, dev: int) -> None:
        self._call("cudaSetDevice", dev)

    def malloc(self, size: int) -> int:
        return int(self._call("cudaMalloc", size))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", ptr)

    def host_alloc(self, size: int) -> int:
        return int(self._call("cudaHostAlloc", size, self.rt.cudaHostAllocDefault))

    def free_host(self, ptr: int) -> None:
        self._call("cudaFreeHost", ptr)

    def stream(self) -> Any:
        return self._call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking)

    def event(self) -> Any:
        return self._call("cudaEventCreate")

    def record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", event, stream)

    def elapsed_ms(self, start: Any, stop: Any) -> float:
        self._call("cudaEventSynchronize", stop)
        return float(self._call("cudaEventElapsedTime", start, stop))

    def memcpy_async(self, dst: int, src: int, size: int, kind: int, stream: Any) -> None:
        self._call("cudaMemcpyAsync", dst, src, size, self.rt.cudaMemcpyKind(kind), stream)

    def memcpy_peer_async(self, dst: int, dst_dev: int, src: int, src_dev: int, size: int,
                          stream: Any) -> None:
        self._call("cudaMemcpyPeerAsync", dst, dst_dev, src, src_dev, size, stream)

    def memset_async(self, ptr: int, value: int, size: int, stream: Any) -> None:
        self._call("cudaMemsetAsync", ptr, value, size, stream)

    def can_access_peer(self, dev: int, peer: int) -> bool:
        return bool(self._call("cudaDeviceCanAccessPeer", dev, peer))

    def enable_peer_access(self, peer: int) -> None:
        err = self.rt.cudaDeviceEnablePeerAccess(peer, 0)
        err = err[0] if isinstance(err, tuple) else err
        if err not in (self._ok, self.rt.cudaError_t.cudaErrorPeerAccessAlreadyEnabled):
            raise BenchError(f"CUDA cudaDeviceEnablePeerAccess({peer}) failed: {err}")
        self.rt.cudaGetLastError()  # clear the sticky "already enabled" state

    def stream_synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)


class CupyApi:
    """cupy.cuda.runtime: values are returned, errors raised as CUDARuntimeError."""

    name = "cupy"

    def __init__(self) -> None:
        # deferred: optional: CuPy where the node has it
        import cupy
        from cupy.cuda import runtime

        self.cupy = cupy
        self.rt = runtime

    def _call(self, func: str, *args: Any) -> Any:
        try:
            return getattr(self.rt, func)(*args)
        except self.rt.CUDARuntimeError as exc:
            raise BenchError(f"CUDA {func} failed: {exc}",
                             fix="check the GPU with nvidia-smi and that no other job holds it"
                             ) from exc

    def versions(self) -> dict[str, str]:
        return {"cupy": self.cupy.__version__,
                "cuda_runtime": str(self._call("runtimeGetVersion")),
                "cuda_driver": str(self._call("driverGetVersion"))}

    def device_count(self) -> int:
        return int(self._call("getDeviceCount"))

    def bus_id(self, dev: int) -> str:
        return str(self.cupy.cuda.Device(dev).pci_bus_id).lower()

    def device_name(self, dev: int) -> str:
        name = self._call("getDeviceProperties", dev)["name"]
        return (name.decode() if isinstance(name, bytes) else str(name)).strip("\x00 ")

    def set_device(self, dev: int) -> None:
        self._call("setDevice", dev)

    def malloc(self, size: int) -> int:
        return int(self._call("malloc", size))

    def free(self, ptr: int) -> None:
        self._call("free", ptr)

    def host_alloc(self, size: int) -> int:
        return int(self._call("hostAlloc", size, 0))

    def free_host(self, ptr: int) -> None:
        self._call("freeHost", ptr)

    def stream(self) -> Any:
        return self._call("streamCreateWithFlags", 1)  # cudaStreamNonBlocking

    def event(self) -> Any:
        return self._call("eventCreate")

    def record(self, event: Any, stream: Any) -> None:
        self._call("eventRecord", event, stream)

    def elapsed_ms(self, start: Any, stop: Any) -> float:
        self._call("eventSynchronize", stop)
        return float(self._call("eventElapsedTime", start, stop))

    def memcpy_async(self, dst: int, src: int, size: int, kind: int, stream: Any) -> None:
        self._call("memcpyAsync", dst, src, size, kind, stream)

    def memcpy_peer_async(self, dst: int, dst_dev: int, src: int, src_dev: int, size: int,
                          stream: Any) -> None:
        self._call("memcpyPeerAsync", dst, dst_dev, src, src_dev, size, stream)

    def memset_async(self, ptr: int, value: int, size: int, stream: Any) -> None:
        self._call("memsetAsync", ptr, value, size, stream)

    def can_access_peer(self, dev: int, peer: int) -> bool:
        return bool(self._call("deviceCanAccessPeer", dev, peer))

    def enable_peer_access(self, peer: int) -> None:
        try:
            self.rt.deviceEnablePeerAccess(peer)
        except self.rt.CUDARuntimeError as exc:
            if "AlreadyEnabled" not in str(exc):
                raise BenchError(f"CUDA deviceEnablePeerAccess({peer}) failed: {exc}") from exc

    def stream_synchronize(self, stream: Any) -> None:
        self._call("streamSynchronize", stream)


def available() -> str | None:
    """Which implementation can be loaded ("cuda-bindings", "cupy"), without loading it."""
    if module_available("cuda.bindings"):
        return "cuda-bindings"
    if module_available("cupy"):
        return "cupy"
    return None


def load() -> CudaApi:
    """The CUDA runtime through cuda-bindings, else CuPy. GPUs are numbered in PCI bus order
    (CUDA_DEVICE_ORDER=PCI_BUS_ID unless the user set it) so GPU<n> means nvidia-smi's GPU n."""
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    errors = []
    for cls in (BindingsApi, CupyApi):
        try:
            api: CudaApi = cls()
            return api
        except ImportError as exc:
            errors.append(f"{cls.name}: {exc}")
    raise BenchError("no CUDA runtime bindings (" + "; ".join(errors) + ")",
                     fix="pip install 'nodetune[gpu]' (or cupy)")
