"""Stand-ins for the `pynvml` module, for testing nodetune.node.nvml.PynvmlBackend without a GPU.

Each fake is a module object with the real library's constants, ctypes structures and
NVMLError classes (nvidia-ml-py imports without libnvidia-ml.so), and `nvml*` functions that
answer from captured data the way the real bindings do: bytes in ctypes structures, ctypes
arrays for CPU masks, lists/tuples for paired values, NVMLError_* subclasses for failures.

- `from_raw(raw, ...)`: the raw return values of pynvml calls captured on a real machine
  (tests/fixtures/nvml/*-pynvml-raw.json), including the errors NVML gave there.
- `from_recording(doc)`: a nodetune.nvml/1 recording played back through the API; a null
  field raises NVMLError_NotSupported, as nvidia-smi's "N/A" usually means.
"""

from __future__ import annotations

import ctypes
import types
from collections.abc import Callable
from typing import Any

import pynvml as real

NOT_SUPPORTED = real.NVML_ERROR_NOT_SUPPORTED
NVLINK5_NAMES = {real.NVML_FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS: "symbol_errors",
                 real.NVML_FI_DEV_NVLINK_COUNT_EFFECTIVE_ERRORS: "effective_errors",
                 real.NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_SUCCESSFUL_EVENTS:
                 "recovery_successful",
                 real.NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_FAILED_EVENTS: "recovery_failed",
                 real.NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_EVENTS: "recovery_events"}
NVLINK5_FEC_IDS = tuple(range(real.NVML_FI_DEV_NVLINK_COUNT_FEC_HISTORY_0,
                              real.NVML_FI_DEV_NVLINK_COUNT_FEC_HISTORY_15 + 1))


def error(name_or_code: str | int) -> real.NVMLError:
    """An NVMLError instance of the right subclass, from "NVMLError_X[:text]" or a code."""
    if isinstance(name_or_code, int):
        return real.NVMLError(name_or_code)
    cls = getattr(real, name_or_code.split(":", 1)[0])
    return cls()


def base_module() -> types.ModuleType:
    """A module with pynvml's constants, structures and errors but no functions."""
    module = types.ModuleType("pynvml")
    for name, value in vars(real).items():
        if name.startswith(("NVML_", "NVMLError", "c_nvml", "nvmlPciInfo", "nvmlClocks",
                            "nvmlGpuFabricInfo")):
            setattr(module, name, value)
    module.calls = []  # names of the nvml* functions called, in order
    return module


def _install(module: types.ModuleType, name: str, fn: Callable[..., Any]) -> None:
    def logged(*args: Any) -> Any:
        module.calls.append(name)
        return fn(*args)

    setattr(module, name, logged)


def pci_info(bus_id: str) -> real.nvmlPciInfo_t:
    domain, bus, rest = bus_id.split(":")
    device = rest.split(".")[0]
    legacy = f"{int(domain, 16) & 0xFFFF:04X}:{bus}:{rest}"
    return real.nvmlPciInfo_t(busIdLegacy=legacy.encode(), domain=int(domain, 16),
                              bus=int(bus, 16), device=int(device, 16),
                              busId=bus_id.encode())


def cpu_mask(cpus: list[int], words: int) -> Any:
    """What nvmlDeviceGetCpuAffinity returns: a ctypes c_ulong array (64-bit words here)."""
    array = (ctypes.c_ulong * words)()
    for cpu in cpus:
        array[cpu // 64] |= 1 << (cpu % 64)
    return array


def fill_fabric(ref: Any, state: int, status: int, clique: int, cluster: bytes,
                health_mask: int = 0) -> int:
    info = ref._obj  # the structure behind ctypes.byref()
    if hasattr(info, "healthMask"):
        info.healthMask = health_mask
    info.state = state
    info.status = status
    info.cliqueId = clique
    for i, b in enumerate(cluster):
        info.clusterUuid[i] = b
    return real.NVML_SUCCESS


class _Device:
    def __init__(self, index: int) -> None:
        self.index = index


def _common(module: types.ModuleType, driver: str, cuda: int, count: int) -> None:
    handles = [_Device(i) for i in range(count)]
    _install(module, "nvmlInit", lambda: None)
    _install(module, "nvmlShutdown", lambda: None)
    _install(module, "nvmlSystemGetDriverVersion", lambda: driver)
    _install(module, "nvmlSystemGetCudaDriverVersion", lambda: cuda)
    _install(module, "nvmlDeviceGetCount", lambda: count)

    def handle(i: int) -> _Device:
        if not 0 <= i < count:
            raise error(real.NVML_ERROR_INVALID_ARGUMENT)
        return handles[i]

    _install(module, "nvmlDeviceGetHandleByIndex", handle)


def from_raw(raw: dict[str, Any], *, cpu_affinity: list[int], fabric: tuple[int, int, int],
             performance_state: int, nvlink_peer_ok: bool) -> types.ModuleType:
    """A pynvml that answers from a raw capture.

    The capture lacks a few answers, which come from the same machine's `nvidia-smi` output
    taken at the same moment: `cpu_affinity` (topo -m "CPU Affinity"), `fabric` (state, status,
    clique id of -q "Fabric"), `performance_state` (-q "Performance State") and whether the
    GPUs reach each other over NVLink (topo -m "NV18"). NVLink links beyond those captured
    answer NVMLError_InvalidArgument, as NVML does for a link index the GPU does not have.
    """
    module = base_module()
    devices = raw["devices"]
    _common(module, raw["driver"], raw["cuda"], raw["count"])

    def value(key: str) -> Callable[..., Any]:
        def get(h: _Device, *_: Any) -> Any:
            v = devices[h.index][key]
            if isinstance(v, dict) and "error" in v:
                raise error(v["error"])
            return v
        return get

    for name in ("nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetPersistenceMode",
                 "nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkGeneration",
                 "nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth",
                 "nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit",
                 "nvmlDeviceGetCurrentClocksEventReasons",
                 "nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetNumaNodeId",
                 "nvmlDeviceGetRetiredPagesPendingStatus", "nvmlDeviceGetSerial"):
        _install(module, name, value(name))
    for name in ("nvmlDeviceGetEccMode", "nvmlDeviceGetMigMode"):
        _install(module, name, lambda h, name=name: list(devices[h.index][name]))
    _install(module, "nvmlDeviceGetRemappedRows",
             lambda h: tuple(devices[h.index]["nvmlDeviceGetRemappedRows"]))
    _install(module, "nvmlDeviceGetPciInfo_v3",
             lambda h: pci_info(devices[h.index]["nvmlDeviceGetPciInfo"]["busId"]))
    _install(module, "nvmlDeviceGetMemoryInfo", lambda h: real.c_nvmlMemory_t(
        **devices[h.index]["nvmlDeviceGetMemoryInfo"]))
    _install(module, "nvmlDeviceGetTemperature", lambda h, sensor: devices[h.index]["temp"])
    clocks = {(real.NVML_CLOCK_SM, False): "clock_sm", (real.NVML_CLOCK_MEM, False): "clock_mem",
              (real.NVML_CLOCK_SM, True): "maxclock_sm",
              (real.NVML_CLOCK_MEM, True): "maxclock_mem"}
    _install(module, "nvmlDeviceGetClockInfo",
             lambda h, t: devices[h.index][clocks[(t, False)]])
    _install(module, "nvmlDeviceGetMaxClockInfo",
             lambda h, t: devices[h.index][clocks[(t, True)]])
    ecc = {(0, 0): "ecc_corr_vol", (0, 1): "ecc_corr_agg", (1, 0): "ecc_uncorr_vol",
           (1, 1): "ecc_uncorr_agg"}
    _install(module, "nvmlDeviceGetTotalEccErrors",
             lambda h, kind, counter: devices[h.index][ecc[(kind, counter)]])

    def retired(h: _Device, cause: int) -> list[int]:
        v = devices[h.index]["retired_sbe"]
        if isinstance(v, dict):
            raise error(v["error"])
        return v

    _install(module, "nvmlDeviceGetRetiredPages", retired)
    _install(module, "nvmlDeviceGetCpuAffinity", lambda h, words: cpu_mask(cpu_affinity, words))
    _install(module, "nvmlDeviceGetPerformanceState", lambda h: performance_state)

    def link(h: _Device, n: int) -> dict[str, Any]:
        links = devices[h.index]["nvlink"]
        if n >= len(links):
            raise error(real.NVML_ERROR_INVALID_ARGUMENT)
        return links[n]

    _install(module, "nvmlDeviceGetNvLinkState", lambda h, n: link(h, n)["state"])
    _install(module, "nvmlDeviceGetNvLinkRemotePciInfo",
             lambda h, n: pci_info(link(h, n)["remote"]["busId"]))
    _install(module, "nvmlDeviceGetNvLinkRemoteDeviceType", lambda h, n: link(h, n)["remote_type"])
    _install(module, "nvmlDeviceGetP2PStatus", lambda a, b, index: (
        real.NVML_P2P_STATUS_OK if nvlink_peer_ok else real.NVML_P2P_STATUS_NOT_SUPPORTED))
    state, status, clique = fabric
    _install(module, "nvmlDeviceGetGpuFabricInfoV",
             lambda h, ref: fill_fabric(ref, state, status, clique, bytes(16)))
    return module


def from_recording(doc: dict[str, Any]) -> types.ModuleType:
    """A pynvml that answers from a nodetune.nvml/1 recording (null fields: NotSupported)."""
    module = base_module()
    devices = doc["devices"]
    _common(module, doc["driver_version"], doc["cuda_driver_version"], len(devices))

    def field(*path: str, convert: Callable[[Any], Any] = lambda v: v) -> Callable[..., Any]:
        def get(h: _Device, *_: Any) -> Any:
            v: Any = devices[h.index]
            for key in path:
                v = v.get(key) if isinstance(v, dict) else None
            if v is None:
                raise error(NOT_SUPPORTED)
            return convert(v)
        return get

    def pair(name: str) -> Callable[..., Any]:
        def get(h: _Device) -> list[int]:
            v = devices[h.index][name]
            if v["current"] is None:
                raise error(NOT_SUPPORTED)
            return [int(v["current"]), int(v["pending"])]
        return get

    milli = lambda w: round(w * 1000)  # noqa: E731
    _install(module, "nvmlDeviceGetPciInfo_v3", field("pci_bus_id", convert=pci_info))
    _install(module, "nvmlDeviceGetName", field("name"))
    _install(module, "nvmlDeviceGetUUID", field("uuid"))
    _install(module, "nvmlDeviceGetVbiosVersion", field("vbios_version"))
    _install(module, "nvmlDeviceGetMemoryInfo", lambda h: real.c_nvmlMemory_t(
        total=field("memory_total_bytes")(h),
        used=devices[h.index].get("memory_used_bytes") or 0))
    _install(module, "nvmlDeviceGetComputeRunningProcesses",
             field("compute_processes", convert=lambda n: [object()] * n))
    _install(module, "nvmlDeviceGetPersistenceMode", field("persistence_mode", convert=int))
    _install(module, "nvmlDeviceGetEccMode", pair("ecc"))
    _install(module, "nvmlDeviceGetMigMode", pair("mig"))
    counters = {0: "volatile", 1: "aggregate"}
    kinds = {0: "corrected", 1: "uncorrected"}
    _install(module, "nvmlDeviceGetTotalEccErrors",
             lambda h, kind, counter: field("ecc", counters[counter], kinds[kind])(h))

    def retired(h: _Device, cause: int) -> list[int]:
        pages = devices[h.index]["retired_pages"]
        if pages is None:
            raise error(NOT_SUPPORTED)
        return [0x1000 * i for i in range(pages["single_bit" if cause == 0 else "double_bit"])]

    _install(module, "nvmlDeviceGetRetiredPages", retired)
    _install(module, "nvmlDeviceGetRetiredPagesPendingStatus",
             field("retired_pages", "pending", convert=int))
    _install(module, "nvmlDeviceGetRemappedRows", field("remapped_rows", convert=lambda r: (
        r["correctable"], r["uncorrectable"], int(r["pending"]), int(r["failure"]))))
    clocks = {real.NVML_CLOCK_SM: "sm", real.NVML_CLOCK_MEM: "mem"}
    _install(module, "nvmlDeviceGetClockInfo",
             lambda h, t: field("clocks", f"{clocks[t]}_mhz")(h))
    _install(module, "nvmlDeviceGetMaxClockInfo",
             lambda h, t: field("clocks", f"{clocks[t]}_max_mhz")(h))
    _install(module, "nvmlDeviceGetApplicationsClock",
             lambda h, t: field("clocks", f"{clocks[t]}_app_mhz")(h))
    _install(module, "nvmlDeviceGetDefaultApplicationsClock",
             lambda h, t: field("clocks", f"{clocks[t]}_default_app_mhz")(h))
    _install(module, "nvmlDeviceGetCurrentClocksEventReasons", field("clock_event_reasons_mask"))
    _install(module, "nvmlDeviceGetPerformanceState", field("performance_state"))
    _install(module, "nvmlDeviceGetPowerUsage", field("power_draw_w", convert=milli))
    _install(module, "nvmlDeviceGetEnforcedPowerLimit", field("power_limit_w", convert=milli))
    _install(module, "nvmlDeviceGetTemperature", field("temperature_c"))
    for name, key in (("CurrPcieLinkGeneration", "current_gen"),
                      ("MaxPcieLinkGeneration", "max_gen"),
                      ("CurrPcieLinkWidth", "current_width"), ("MaxPcieLinkWidth", "max_width")):
        _install(module, f"nvmlDeviceGet{name}", field("pcie", key))
    _install(module, "nvmlDeviceGetNumaNodeId", field("numa_node"))
    _install(module, "nvmlDeviceGetCpuAffinity", lambda h, words: cpu_mask(
        field("cpu_affinity")(h), words))

    def link(h: _Device, n: int) -> dict[str, Any]:
        links = devices[h.index]["nvlink"]
        if not links:
            raise error(NOT_SUPPORTED)
        if n >= len(links):
            raise error(real.NVML_ERROR_INVALID_ARGUMENT)
        return links[n]

    kinds_by_name = {"gpu": 0, "cpu": 1, "switch": 2, None: 0xFF}
    _install(module, "nvmlDeviceGetNvLinkState", lambda h, n: int(link(h, n)["active"]))
    _install(module, "nvmlDeviceGetNvLinkRemotePciInfo", lambda h, n: pci_info(
        link(h, n)["remote_pci_bus_id"] or "FFFFFFFF:FF:FF.0"))
    _install(module, "nvmlDeviceGetNvLinkRemoteDeviceType",
             lambda h, n: kinds_by_name[link(h, n)["remote_kind"]])

    def p2p(a: _Device, b: _Device, index: int) -> int:
        peers = devices[a.index]["nvlink_peers"]
        ok = devices[b.index]["pci_bus_id"] in peers
        return real.NVML_P2P_STATUS_OK if ok else real.NVML_P2P_STATUS_NOT_SUPPORTED

    _install(module, "nvmlDeviceGetP2PStatus", p2p)
    states = {"not_started": 1, "in_progress": 2, "completed": 3}

    def fabric(h: _Device, ref: Any) -> int:
        data = devices[h.index]["fabric"]
        if data is None:
            raise error(NOT_SUPPORTED)
        cluster = bytes.fromhex(data["cluster_uuid"].replace("-", ""))
        return fill_fabric(ref, states[data["state"]], 0 if data["status"] == "success" else 999,
                           data["clique_id"], cluster, health_mask(data.get("health")))

    _install(module, "nvmlDeviceGetGpuFabricInfoV", fabric)

    def nvlink5_counter(h: _Device, fid: int, scope: int) -> int | None:
        """A link's NVLink5 counter from its recorded `counters` (scopeId = link)."""
        links = devices[h.index]["nvlink"]
        counters = (links[scope].get("counters") if scope < len(links) else None) or {}
        if fid in NVLINK5_FEC_IDS:
            history = counters.get("fec_history")
            return None if history is None else history[fid - NVLINK5_FEC_IDS[0]]
        return counters.get(NVLINK5_NAMES.get(fid, ""))

    def field_values(h: _Device, ids: list[Any]) -> list[Any]:
        out = []
        for item in ids:
            fid, scope = item if isinstance(item, tuple) else (item, 0)
            value = real.c_nvmlFieldValue_t()
            value.fieldId, value.scopeId = fid, scope
            action = devices[h.index].get("recovery_action")
            counter = nvlink5_counter(h, fid, scope)
            if fid == real.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION and action is not None:
                value.nvmlReturn = real.NVML_SUCCESS
                value.valueType = real.NVML_VALUE_TYPE_UNSIGNED_INT
                value.value.uiVal = RECOVERY_CODES[action]
            elif counter is not None:
                value.nvmlReturn = real.NVML_SUCCESS
                value.valueType = real.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                value.value.ullVal = counter
            else:
                value.nvmlReturn = NOT_SUPPORTED
            out.append(value)
        return out

    _install(module, "nvmlDeviceGetFieldValues", field_values)
    counter_names = {0: "replay", 1: "recovery", 2: "crc_flit", 3: "crc_data"}

    def link_errors(h: _Device, n: int, counter: int) -> int:
        errors = link(h, n).get("errors")
        value = errors.get(counter_names.get(counter, "")) if isinstance(errors, dict) else None
        if value is None:
            raise error(NOT_SUPPORTED)
        return int(value)

    _install(module, "nvmlDeviceGetNvLinkErrorCounter", link_errors)
    return module


RECOVERY_CODES = {"none": 0, "gpu_reset": 1, "node_reboot": 2, "drain_p2p": 3,
                  "drain_and_reset": 4}
FLAG_SHIFTS = {"degraded_bandwidth": 0, "route_recovery": 2, "route_unhealthy": 4,
               "access_timeout_recovery": 6}
CONFIG_CODES = {"none": 1, "incorrect_sysguid": 2, "incorrect_chassis_sn": 3, "no_partition": 4,
                "insufficient_nvlinks": 5}


def health_mask(health: dict[str, Any] | None) -> int:
    """The NVML fabric health mask that decodes to `health` (a recording's fabric.health)."""
    mask = 0
    for name, shift in FLAG_SHIFTS.items():
        value = (health or {}).get(name)
        mask |= (0 if value is None else 1 if value else 2) << shift
    config = (health or {}).get("configuration")
    return mask | (CONFIG_CODES[config] << 8 if config is not None else 0)


def failing_init(error_name: str) -> types.ModuleType:
    """A pynvml whose nvmlInit fails the way it does on a machine without a working driver."""
    module = base_module()

    def init() -> None:
        raise error(error_name)

    _install(module, "nvmlInit", init)
    return module


class _CLibrary:
    """libnvidia-ml's C functions, as nodetune.node.nvml_ctypes calls them, answered by a fake
    pynvml module: inputs arrive as ctypes values and device pointers, results go into the
    caller's out-parameters and buffers, failures come back as nvmlReturn_t codes. A symbol
    the module cannot answer is missing, as in an older libnvidia-ml."""

    def __init__(self, module: types.ModuleType) -> None:
        from nodetune.node import nvml_ctypes

        self.module = module
        self.devices: dict[int, Any] = {}  # address of the handle's structure -> fake device
        self.structs: list[Any] = []
        self.outputs = {symbol: (name, len(outputs))
                        for name, (symbol, outputs) in nvml_ctypes._OUT_VALUES.items()}
        self.strings = dict.fromkeys(nvml_ctypes._STRINGS)
        self.handle_type = nvml_ctypes.DeviceHandle

    def _python(self, symbol: str) -> Callable[..., Any]:
        """The pynvml-level function behind a C symbol (nvmlX_v2 is pynvml's nvmlX)."""
        names = [self.outputs.get(symbol, (symbol, 0))[0], symbol.rsplit("_v", 1)[0]]
        if symbol == "nvmlInitWithFlags":
            names = ["nvmlInit"]
        fn = next((getattr(self.module, n) for n in names if hasattr(self.module, n)), None)
        if fn is None:
            raise AttributeError(symbol)
        return fn

    def _value(self, arg: Any) -> Any:
        if isinstance(arg, self.handle_type):
            return self.devices[ctypes.addressof(arg.contents)]
        return arg.value if isinstance(arg, ctypes._SimpleCData) else arg

    def _answer(self, fn: Callable[..., Any], *args: Any) -> tuple[int, Any]:
        try:
            return real.NVML_SUCCESS, fn(*(self._value(a) for a in args))
        except real.NVMLError as exc:
            return exc.value, None

    def __getattr__(self, symbol: str) -> Callable[..., int]:
        fn = self._python(symbol)
        if symbol in self.outputs:
            count = self.outputs[symbol][1]

            def values(*args: Any) -> int:
                ret, value = self._answer(fn, *args[:-count])
                if ret == 0:
                    for ref, v in zip(args[-count:], [value] if count == 1 else value,
                                      strict=True):
                        ref._obj.value = int(v)
                return ret
            return values
        if symbol in self.strings:
            def string(*args: Any) -> int:
                ret, value = self._answer(fn, *args[:-2])
                if ret == 0:
                    args[-2].value = value.encode() if isinstance(value, str) else value
                return ret
            return string
        special = getattr(self, f"_c_{symbol}", None)
        if special is not None:
            return lambda *args: special(fn, *args)
        return self._struct(fn)

    def _struct(self, fn: Callable[..., Any]) -> Callable[..., int]:
        def fill(*args: Any) -> int:
            ret, value = self._answer(fn, *args[:-1])
            if ret == 0:
                target = args[-1]._obj  # same layout as pynvml's structure
                ctypes.memmove(ctypes.addressof(target), ctypes.addressof(value),
                               ctypes.sizeof(target))
            return ret
        return fill

    def _c_nvmlInitWithFlags(self, fn: Callable[..., Any], flags: int) -> int:
        return self._answer(fn)[0]

    def _c_nvmlShutdown(self, fn: Callable[..., Any]) -> int:
        return self._answer(fn)[0]

    def _c_nvmlDeviceGetHandleByIndex_v2(self, fn: Callable[..., Any], index: Any,
                                         ref: Any) -> int:
        ret, device = self._answer(fn, index)
        if ret == 0:
            struct = self.handle_type._type_()
            self.structs.append(struct)
            self.devices[ctypes.addressof(struct)] = device
            ref._obj.contents = struct
        return ret

    def _counted(self, items: list[Any] | None, ret: int, count: Any, array: Any,
                 fill: Callable[[Any, Any], None]) -> int:
        if ret != 0:
            return ret
        assert items is not None
        needed = len(items)
        if array is None or count._obj.value < needed:
            count._obj.value = needed
            return real.NVML_ERROR_INSUFFICIENT_SIZE if needed else real.NVML_SUCCESS
        for i, item in enumerate(items):
            fill(array, (i, item))
        count._obj.value = needed
        return real.NVML_SUCCESS

    def _c_nvmlDeviceGetComputeRunningProcesses_v3(self, fn: Callable[..., Any], handle: Any,
                                                   count: Any, array: Any) -> int:
        ret, procs = self._answer(fn, handle)
        return self._counted(procs, ret, count, array, lambda a, item: None)

    def _c_nvmlDeviceGetRetiredPages(self, fn: Callable[..., Any], handle: Any, cause: Any,
                                     count: Any, array: Any) -> int:
        ret, pages = self._answer(fn, handle, cause)

        def put(a: Any, item: tuple[int, int]) -> None:
            a[item[0]] = item[1]
        return self._counted(pages, ret, count, array, put)

    def _c_nvmlDeviceGetCpuAffinity(self, fn: Callable[..., Any], handle: Any, words: int,
                                    ref: Any) -> int:
        ret, mask = self._answer(fn, handle, words)
        if ret == 0:
            for i in range(words):
                ref._obj[i] = int(mask[i])
        return ret

    def _c_nvmlDeviceGetFieldValues(self, fn: Callable[..., Any], handle: Any, count: Any,
                                    ref: Any) -> int:
        ret, values = self._answer(fn, handle, [(ref._obj[i].fieldId, ref._obj[i].scopeId)
                                                for i in range(count.value)])
        if ret == 0:
            for i, value in enumerate(values):
                ref._obj[i].nvmlReturn = value.nvmlReturn
                ref._obj[i].valueType = value.valueType
                ref._obj[i].value.ullVal = value.value.ullVal
        return ret

    def _fabric(self, fn: Callable[..., Any], handle: Any, ref: Any) -> int:
        return self._answer(fn, handle, ref)[0]

    _c_nvmlDeviceGetGpuFabricInfoV = _fabric
    _c_nvmlDeviceGetGpuFabricInfo = _fabric


def c_library(module: types.ModuleType) -> Any:
    """A libnvidia-ml stand-in for nodetune.node.nvml_ctypes.CtypesNvml, answered by `module`
    (from_recording, from_raw or failing_init)."""
    return _CLibrary(module)
