"""The part of pynvml's API that nodetune's NVML reader calls, on libnvidia-ml.so.1 through ctypes.

`nodetune check` runs before every job; importing nvidia-ml-py's `pynvml` (7,000 lines, a ctypes
structure for every NVML type) costs it 22-90 ms. `CtypesNvml` offers the same functions, under
the same names, with the same results (ints, str, lists, ctypes structures with the same field
names, `NVMLError_*` exceptions of the same names), for the calls `nodetune.node.nvml`'s
`PynvmlBackend` makes, so the one reader gives the same `nodetune.nvml/1` document through either.
`library` is anything with libnvidia-ml's C functions: `ctypes.CDLL("libnvidia-ml.so.1")`, or a
stand-in answering from a recording (tests/fake_pynvml.py `c_library`). Signatures: nvml.h
(https://docs.nvidia.com/deploy/nvml-api/), as nvidia-ml-py 13 calls them.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, Union, byref, c_char, c_int, c_int64, c_uint, c_ulonglong
from typing import Any, ClassVar, Final

LIBRARY: Final = "libnvidia-ml.so.1"

# nvmlReturn_t codes (nvml.h) and pynvml's text for them (NVMLError._errcode_to_string)
_ERRORS: Final = {
    1: ("Uninitialized", "Uninitialized"), 2: ("InvalidArgument", "Invalid Argument"),
    3: ("NotSupported", "Not Supported"), 4: ("NoPermission", "Insufficient Permissions"),
    5: ("AlreadyInitialized", "Already Initialized"), 6: ("NotFound", "Not Found"),
    7: ("InsufficientSize", "Insufficient Size"),
    8: ("InsufficientPower", "Insufficient External Power"),
    9: ("DriverNotLoaded", "Driver Not Loaded"), 10: ("Timeout", "Timeout"),
    11: ("IrqIssue", "Interrupt Request Issue"),
    12: ("LibraryNotFound", "NVML Shared Library Not Found"),
    13: ("FunctionNotFound", "Function Not Found"), 14: ("CorruptedInforom", "Corrupted infoROM"),
    15: ("GpuIsLost", "GPU is lost"), 16: ("ResetRequired", "GPU requires restart"),
    17: ("OperatingSystem", "The operating system has blocked the request."),
    18: ("LibRmVersionMismatch", "RM has detected an NVML/RM version mismatch."),
    19: ("InUse", None), 20: ("Memory", "Insufficient Memory"), 21: ("NoData", None),
    22: ("VgpuEccNotSupported", None), 23: ("InsufficientResources", None),
    24: ("FreqNotSupported", None), 25: ("ArgumentVersionMismatch", None),
    26: ("Deprecated", None), 27: ("NotReady", None), 28: ("GpuNotFound", None),
    29: ("InvalidState", None), 30: ("ResetTypeNotSupported", None),
    999: ("Unknown", "Unknown Error"),
}
_INSUFFICIENT_SIZE: Final = 7
_FUNCTION_NOT_FOUND: Final = 13
_LIBRARY_NOT_FOUND: Final = 12


class NVMLError(Exception):
    """pynvml's NVMLError: `NVMLError(code)` is an instance of the code's `NVMLError_*` class."""

    value: int
    by_code: ClassVar[dict[int, type[NVMLError]]] = {}
    error_string: ClassVar[Any] = None  # the library's nvmlErrorString, once loaded

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError.by_code.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        text = _ERRORS.get(self.value, ("", None))[1]
        if text is None and NVMLError.error_string is not None:
            try:
                raw = NVMLError.error_string(self.value)
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
            except Exception:  # the library's own text is only a nicety
                text = None
        return text if text is not None else f"NVML Error with code {self.value}"


def _error_class(code: int, name: str) -> type[NVMLError]:
    def new(cls: type[NVMLError], *_: Any) -> NVMLError:
        obj = Exception.__new__(cls)
        obj.value = code
        return obj
    return type(f"NVMLError_{name}", (NVMLError,), {"__new__": new})


for _code, (_name, _) in _ERRORS.items():
    NVMLError.by_code[_code] = _error_class(_code, _name)


# -- the structures the reader reads (field names as in pynvml) ----------------------------

class PciInfo(Structure):
    _fields_: ClassVar = [("busIdLegacy", c_char * 16), ("domain", c_uint), ("bus", c_uint),
                          ("device", c_uint), ("pciDeviceId", c_uint), ("pciSubSystemId", c_uint),
                          ("busId", c_char * 32)]


class Memory(Structure):
    _fields_: ClassVar = [("total", c_ulonglong), ("free", c_ulonglong), ("used", c_ulonglong)]


class ProcessInfo(Structure):
    _fields_: ClassVar = [("pid", c_uint), ("usedGpuMemory", c_ulonglong),
                          ("gpuInstanceId", c_uint), ("computeInstanceId", c_uint)]


class Value(Union):
    _fields_: ClassVar = [("dVal", ctypes.c_double), ("uiVal", c_uint), ("ulVal", ctypes.c_ulong),
                          ("ullVal", c_ulonglong), ("sllVal", ctypes.c_longlong),
                          ("siVal", c_int), ("usVal", ctypes.c_ushort)]


class FieldValue(Structure):
    _fields_: ClassVar = [("fieldId", ctypes.c_uint32), ("scopeId", ctypes.c_uint32),
                          ("timestamp", c_int64), ("latencyUsec", c_int64),
                          ("valueType", c_uint), ("nvmlReturn", c_uint), ("value", Value)]


class GpuFabricInfo(Structure):
    _fields_: ClassVar = [("clusterUuid", ctypes.c_uint8 * 16), ("status", c_uint),
                          ("cliqueId", ctypes.c_uint32), ("state", c_uint)]


class GpuFabricInfoV2(Structure):
    _fields_: ClassVar = [("version", c_uint), ("clusterUuid", ctypes.c_uint8 * 16),
                          ("status", c_uint), ("cliqueId", ctypes.c_uint32), ("state", c_uint),
                          ("healthMask", ctypes.c_uint32)]

    def __init__(self) -> None:
        super().__init__(version=0x02000024)  # nvmlGpuFabricInfo_v2


class Device(Structure):  # opaque: NVML hands out pointers to it
    pass


DeviceHandle = POINTER(Device)

# Functions that fill unsigned or int out-parameters: pynvml name -> (C symbol, outputs);
# inputs are the handle and the caller's ints, as pynvml passes them.
_OUT_VALUES: Final[dict[str, tuple[str, tuple[Any, ...]]]] = {
    "nvmlSystemGetCudaDriverVersion": ("nvmlSystemGetCudaDriverVersion", (c_int,)),
    "nvmlDeviceGetCount": ("nvmlDeviceGetCount_v2", (c_uint,)),
    "nvmlDeviceGetPersistenceMode": ("nvmlDeviceGetPersistenceMode", (c_uint,)),
    "nvmlDeviceGetPowerUsage": ("nvmlDeviceGetPowerUsage", (c_uint,)),
    "nvmlDeviceGetEnforcedPowerLimit": ("nvmlDeviceGetEnforcedPowerLimit", (c_uint,)),
    "nvmlDeviceGetPowerManagementLimit": ("nvmlDeviceGetPowerManagementLimit", (c_uint,)),
    "nvmlDeviceGetCurrentClocksEventReasons": ("nvmlDeviceGetCurrentClocksEventReasons",
                                               (c_ulonglong,)),
    "nvmlDeviceGetCurrentClocksThrottleReasons": ("nvmlDeviceGetCurrentClocksThrottleReasons",
                                                  (c_ulonglong,)),
    "nvmlDeviceGetTemperature": ("nvmlDeviceGetTemperature", (c_uint,)),
    "nvmlDeviceGetMinorNumber": ("nvmlDeviceGetMinorNumber", (c_uint,)),
    "nvmlDeviceGetTotalEccErrors": ("nvmlDeviceGetTotalEccErrors", (c_ulonglong,)),
    "nvmlDeviceGetRetiredPagesPendingStatus": ("nvmlDeviceGetRetiredPagesPendingStatus",
                                               (c_uint,)),
    "nvmlDeviceGetClockInfo": ("nvmlDeviceGetClockInfo", (c_uint,)),
    "nvmlDeviceGetMaxClockInfo": ("nvmlDeviceGetMaxClockInfo", (c_uint,)),
    "nvmlDeviceGetApplicationsClock": ("nvmlDeviceGetApplicationsClock", (c_uint,)),
    "nvmlDeviceGetDefaultApplicationsClock": ("nvmlDeviceGetDefaultApplicationsClock",
                                              (c_uint,)),
    "nvmlDeviceGetPerformanceState": ("nvmlDeviceGetPerformanceState", (c_uint,)),
    "nvmlDeviceGetCurrPcieLinkGeneration": ("nvmlDeviceGetCurrPcieLinkGeneration", (c_uint,)),
    "nvmlDeviceGetMaxPcieLinkGeneration": ("nvmlDeviceGetMaxPcieLinkGeneration", (c_uint,)),
    "nvmlDeviceGetCurrPcieLinkWidth": ("nvmlDeviceGetCurrPcieLinkWidth", (c_uint,)),
    "nvmlDeviceGetMaxPcieLinkWidth": ("nvmlDeviceGetMaxPcieLinkWidth", (c_uint,)),
    "nvmlDeviceGetNumaNodeId": ("nvmlDeviceGetNumaNodeId", (c_int,)),
    "nvmlDeviceGetNvLinkState": ("nvmlDeviceGetNvLinkState", (c_uint,)),
    "nvmlDeviceGetNvLinkRemoteDeviceType": ("nvmlDeviceGetNvLinkRemoteDeviceType", (c_uint,)),
    "nvmlDeviceGetNvLinkErrorCounter": ("nvmlDeviceGetNvLinkErrorCounter", (c_ulonglong,)),
    "nvmlDeviceGetP2PStatus": ("nvmlDeviceGetP2PStatus", (c_uint,)),
    "nvmlDeviceGetEccMode": ("nvmlDeviceGetEccMode", (c_uint, c_uint)),
    "nvmlDeviceGetMigMode": ("nvmlDeviceGetMigMode", (c_uint, c_uint)),
    "nvmlDeviceGetRemappedRows": ("nvmlDeviceGetRemappedRows", (c_uint, c_uint, c_uint, c_uint)),
}
# pynvml gives pairs as lists and the remapped rows as a tuple
_TUPLES: Final = {"nvmlDeviceGetRemappedRows"}
# Functions that fill a string buffer: pynvml name -> buffer size (nvml.h *_BUFFER_SIZE)
_STRINGS: Final = {"nvmlSystemGetDriverVersion": 80, "nvmlDeviceGetName": 96,
                   "nvmlDeviceGetUUID": 96, "nvmlDeviceGetVbiosVersion": 32}
# Functions that fill one structure: pynvml name -> (C symbol, structure)
_STRUCTS: Final = {"nvmlDeviceGetPciInfo_v3": ("nvmlDeviceGetPciInfo_v3", PciInfo),
                   "nvmlDeviceGetPciInfo": ("nvmlDeviceGetPciInfo_v3", PciInfo),
                   "nvmlDeviceGetMemoryInfo": ("nvmlDeviceGetMemoryInfo", Memory),
                   "nvmlDeviceGetNvLinkRemotePciInfo": ("nvmlDeviceGetNvLinkRemotePciInfo_v2",
                                                        PciInfo)}


class CtypesNvml:
    """pynvml's functions, constants, structures and errors that the NVML reader uses."""

    NVMLError = NVMLError
    c_nvmlGpuFabricInfo_t = GpuFabricInfo
    c_nvmlGpuFabricInfoV_t = GpuFabricInfoV2
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_AGGREGATE_ECC = 1
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
    NVML_P2P_CAPS_INDEX_NVLINK = 2
    NVML_P2P_STATUS_OK = 0
    NVML_NVLINK_MAX_LINKS = 36

    def __init__(self, library: Any) -> None:
        self.library = library
        error_string = getattr(library, "nvmlErrorString", None)
        if error_string is not None and hasattr(error_string, "restype"):
            error_string.restype = ctypes.c_char_p
        NVMLError.error_string = error_string

    @classmethod
    def load(cls) -> CtypesNvml:
        """libnvidia-ml.so.1 of this machine; NVMLError_LibraryNotFound when it cannot load."""
        try:
            return cls(ctypes.CDLL(LIBRARY))
        except OSError:
            raise NVMLError(_LIBRARY_NOT_FOUND) from None

    def __getattr__(self, name: str) -> Any:
        """The out-parameter, string and structure functions, built from the tables above."""
        if name in _OUT_VALUES:
            symbol, outputs = _OUT_VALUES[name]
            fn = self._values(symbol, outputs, tuple if name in _TUPLES else list)
        elif name in _STRINGS:
            fn = self._string(name, _STRINGS[name])
        elif name in _STRUCTS:
            fn = self._struct(*_STRUCTS[name])
        else:
            raise AttributeError(name)
        setattr(self, name, fn)
        return fn

    def _symbol(self, symbol: str) -> Any:
        fn = getattr(self.library, symbol, None)
        if fn is None:
            raise NVMLError(_FUNCTION_NOT_FOUND)
        return fn

    def _check(self, ret: int) -> None:
        if ret != 0:
            raise NVMLError(ret)

    def _values(self, symbol: str, outputs: tuple[Any, ...], shape: type) -> Any:
        def call(*args: Any) -> Any:
            cells = [t() for t in outputs]
            self._check(self._symbol(symbol)(*args, *(byref(c) for c in cells)))
            if len(cells) == 1:
                return cells[0].value
            return shape(c.value for c in cells)
        return call

    def _string(self, symbol: str, size: int) -> Any:
        def call(*args: Any) -> str:
            buffer = ctypes.create_string_buffer(size)
            self._check(self._symbol(symbol)(*args, buffer, c_uint(size)))
            return buffer.value.decode()
        return call

    def _struct(self, symbol: str, struct: type[Structure]) -> Any:
        def call(*args: Any) -> Structure:
            info = struct()
            self._check(self._symbol(symbol)(*args, byref(info)))
            return info
        return call

    # -- the rest, one by one, as pynvml does them -------------------------------------

    def nvmlInit(self) -> None:
        self._check(self._symbol("nvmlInitWithFlags")(0))

    def nvmlShutdown(self) -> None:
        self._check(self._symbol("nvmlShutdown")())

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        handle = DeviceHandle()
        self._check(self._symbol("nvmlDeviceGetHandleByIndex_v2")(c_uint(index), byref(handle)))
        return handle

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any) -> list[Any]:
        return self._processes("nvmlDeviceGetComputeRunningProcesses_v3", handle)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return self._processes("nvmlDeviceGetComputeRunningProcesses_v3", handle)

    def _processes(self, symbol: str, handle: Any) -> list[Any]:
        fn = self._symbol(symbol)
        count = c_uint(0)
        ret = fn(handle, byref(count), None)
        if ret == 0:
            return []
        if ret != _INSUFFICIENT_SIZE:
            raise NVMLError(ret)
        count.value = count.value * 2 + 5  # room for processes started meanwhile
        procs = (ProcessInfo * count.value)()
        self._check(fn(handle, byref(count), procs))
        return list(procs[:count.value])

    def nvmlDeviceGetRetiredPages(self, handle: Any, cause: int) -> list[int]:
        fn = self._symbol("nvmlDeviceGetRetiredPages")
        count = c_uint(0)
        ret = fn(handle, c_uint(cause), byref(count), None)
        if ret not in (0, _INSUFFICIENT_SIZE):
            raise NVMLError(ret)
        count.value = count.value * 2 + 5  # room for pages retired meanwhile
        pages = (c_ulonglong * count.value)()
        self._check(fn(handle, c_uint(cause), byref(count), pages))
        return [int(p) for p in pages[:count.value]]

    def nvmlDeviceGetCpuAffinity(self, handle: Any, words: int) -> Any:
        mask = (c_ulonglong * words)()
        self._check(self._symbol("nvmlDeviceGetCpuAffinity")(handle, words, byref(mask)))
        return mask

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[Any]) -> Any:
        """Field ids, or (field id, scope id) pairs as pynvml takes them (NVLink: the link)."""
        values = (FieldValue * len(field_ids))()
        for i, field_id in enumerate(field_ids):
            values[i].fieldId, values[i].scopeId = (
                field_id if isinstance(field_id, tuple) else (field_id, 0))
        self._check(self._symbol("nvmlDeviceGetFieldValues")(
            handle, ctypes.c_int32(len(field_ids)), byref(values)))
        return values

    def nvmlDeviceGetGpuFabricInfoV(self, handle: Any, info: Any) -> int:
        self._check(self._symbol("nvmlDeviceGetGpuFabricInfoV")(handle, info))
        return 0

    def nvmlDeviceGetGpuFabricInfo(self, handle: Any, info: Any) -> int:
        self._check(self._symbol("nvmlDeviceGetGpuFabricInfo")(handle, info))
        return 0
