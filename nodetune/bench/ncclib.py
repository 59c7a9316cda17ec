"""NCCL's own library through ctypes: find libnccl.so.2 and call the handful of functions the
built-in all-reduce runner needs (ncclCommInitAll, ncclAllReduce, group calls)."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
from collections.abc import Mapping

from nodetune.errors import BenchError

NCCL_FLOAT32 = 7  # ncclDataType_t ncclFloat32
NCCL_SUM = 0  # ncclRedOp_t ncclSum
LIBRARY_ENV = "NODETUNE_NCCL_LIBRARY"


def find_library(env: Mapping[str, str] | None = None) -> str | None:
    """libnccl.so.2: $NODETUNE_NCCL_LIBRARY, the nvidia-nccl-cu* wheel, else the loader path."""
    env = os.environ if env is None else env
    if env.get(LIBRARY_ENV):
        return env[LIBRARY_ENV]
    try:
        spec = importlib.util.find_spec("nvidia.nccl")
    except (ImportError, ValueError):
        spec = None
    for base in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(base, "lib", "libnccl.so.2")
        if os.path.exists(path):
            return path
    found = ctypes.util.find_library("nccl")
    if found:
        return found
    try:
        ctypes.CDLL("libnccl.so.2")
    except OSError:
        return None
    return "libnccl.so.2"


def version_string(code: int) -> str:
    """NCCL_VERSION_CODE to "2.26.2" (codes below 10000 use the pre-2.9 layout)."""
    if code >= 10000:
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return f"{code // 1000}.{code // 100 % 10}.{code % 100}"


class Nccl:
    def __init__(self, path: str) -> None:
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as exc:
            raise BenchError(f"cannot load NCCL from {path}: {exc}",
                             fix="pip install nvidia-nccl-cu12 (or -cu13) or set "
                                 f"{LIBRARY_ENV}=/path/libnccl.so.2") from exc
        self.path = path
        lib = self.lib
        lib.ncclGetErrorString.restype = ctypes.c_char_p
        lib.ncclGetErrorString.argtypes = [ctypes.c_int]
        lib.ncclGetVersion.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.ncclCommInitAll.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_int)]
        lib.ncclAllReduce.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                      ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        lib.ncclGroupStart.argtypes = []
        lib.ncclGroupEnd.argtypes = []
        lib.ncclCommDestroy.argtypes = [ctypes.c_void_p]

    def _check(self, func: str, rc: int) -> None:
        if rc != 0:
            text = self.lib.ncclGetErrorString(rc).decode(errors="replace")
            raise BenchError(f"NCCL {func} failed: {text}",
                             fix="rerun with NCCL_DEBUG=INFO to see why")

    def version(self) -> str:
        code = ctypes.c_int()
        self._check("ncclGetVersion", self.lib.ncclGetVersion(ctypes.byref(code)))
        return version_string(code.value)

    def comm_init_all(self, devices: list[int]) -> list[int]:
        comms = (ctypes.c_void_p * len(devices))()
        devs = (ctypes.c_int * len(devices))(*devices)
        self._check("ncclCommInitAll", self.lib.ncclCommInitAll(comms, len(devices), devs))
        return [int(c or 0) for c in comms]

    def all_reduce(self, send: int, recv: int, count: int, comm: int, stream: int) -> None:
        self._check("ncclAllReduce", self.lib.ncclAllReduce(
            ctypes.c_void_p(send), ctypes.c_void_p(recv), ctypes.c_size_t(count), NCCL_FLOAT32,
            NCCL_SUM, ctypes.c_void_p(comm), ctypes.c_void_p(stream)))

    def group_start(self) -> None:
        self._check("ncclGroupStart", self.lib.ncclGroupStart())

    def group_end(self) -> None:
        self._check("ncclGroupEnd", self.lib.ncclGroupEnd())

    def comm_destroy(self, comm: int) -> None:
        self.lib.ncclCommDestroy(ctypes.c_void_p(comm))
