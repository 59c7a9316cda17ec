"""NVML behind one interface: the live library (nvidia-ml-py's `pynvml`) or a recording of it.

Both backends give the same `dump()`: a `nodetune.nvml/1` document holding everything nodetune
reads from NVML. A recording is that document saved as JSON (`nodetune snapshot` stores one as
`nvml.json`), so the GPU collector runs the same on a laptop as on the GPU node.

The live backend never raises: a query the GPU or driver does not support leaves its field
null and names the NVML error under the device's `errors` (field -> "NVMLError_NotSupported").
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Callable
from typing import Any, Final, Protocol

from nodetune.errors import SourceError
from nodetune.facts.pcie import normalize_address
from nodetune.node import nvmlcheck
from nodetune.schemas import NVML_SCHEMA

# nvmlClocksEventReason* bits (nvml.h), in the order nvidia-smi prints them.
CLOCK_EVENT_REASONS: Final = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x100, "display_clock_setting"),
)

FABRIC_STATES: Final = {0: "not_supported", 1: "not_started", 2: "in_progress", 3: "completed"}
# nvmlNvLinkDeviceType_t; an IBM NPU is the CPU end of an NVLink (POWER9).
NVLINK_REMOTE_KINDS: Final = {0: "gpu", 1: "cpu", 2: "switch"}
# nvmlDeviceGpuRecoveryAction_t (nvml.h, R570 and later): what the driver asks an operator to
# do after a fault, read as the field value NVML_FI_DEV_GET_GPU_RECOVERY_ACTION.
FIELD_GPU_RECOVERY_ACTION: Final = 230
GPU_RECOVERY_ACTIONS: Final = {0: "none", 1: "gpu_reset", 2: "node_reboot", 3: "drain_p2p",
                               4: "drain_and_reset", 5: "recover_imex_domain", 6: "bus_reset",
                               7: "system_reboot"}
# nvmlNvLinkErrorCounter_t: data-link layer counters of one link since the driver loaded.
NVLINK_ERROR_COUNTERS: Final = (("replay", 0), ("recovery", 1), ("crc_flit", 2), ("crc_data", 3))
# NVLink5 (Blackwell: B200, GB200, B300) per-link counters since the driver loaded, read as
# field values with scopeId = link (nvml.h NVML_FI_DEV_NVLINK_COUNT_*, ids as in nvidia-ml-py
# 13.x). NVLink4 and older GPUs, and drivers before these fields, answer NOT_SUPPORTED (or
# INVALID_ARGUMENT for an id they do not know) per value; DCGM documents the same fields as
# "NVLink5+ only" (DCGM_FI_DEV_NVLINK_COUNT_*).
NVLINK5_COUNTERS: Final = (("symbol_errors", 221), ("effective_errors", 219),
                           ("recovery_successful", 213), ("recovery_failed", 214),
                           ("recovery_events", 215))
NVLINK5_FEC_HISTORY: Final = tuple(range(235, 251))  # NVML_FI_DEV_NVLINK_COUNT_FEC_HISTORY_0..15
# healthMask of nvmlGpuFabricInfo_v2_t (nvml.h): two-bit fields, 0 not supported, 1 true,
# 2 false; the configuration field is four bits wide and names what is wrong.
FABRIC_HEALTH_FLAGS: Final = (("degraded_bandwidth", 0), ("route_recovery", 2),
                              ("route_unhealthy", 4), ("access_timeout_recovery", 6))
FABRIC_CONFIGURATION: Final = {1: "none", 2: "incorrect_sysguid", 3: "incorrect_chassis_sn",
                               4: "no_partition", 5: "insufficient_nvlinks",
                               6: "incompatible_gpu_fw", 7: "invalid_location",
                               8: "gpu_state_invalid"}
MAX_RECORDING_BYTES: Final = 64 << 20
RECORDING_FIX: Final = "pass a nodetune.nvml/1 JSON file (a snapshot's nvml.json), or --nvml off"


class NvmlBackend(Protocol):
    """Where GPU facts beyond sysfs come from."""

    def dump(self) -> dict[str, Any]:
        """The whole `nodetune.nvml/1` document: driver versions and every device."""
        ...

    def close(self) -> None: ...


def clock_event_reason_names(mask: int) -> list[str]:
    """Names of the set bits of a clocks-event (throttle) reasons mask; unknown bits by value."""
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    known = sum(bit for bit, _ in CLOCK_EVENT_REASONS)
    rest = mask & ~known
    names += [f"reason_{1 << i:#x}" for i in range(rest.bit_length()) if rest >> i & 1]
    return names


def fabric_health(mask: int) -> dict[str, Any] | None:
    """The fabric health mask of NVML's fabric info, decoded: each flag None where not
    supported, and None for a mask that supports none."""
    health: dict[str, Any] = {}
    for name, shift in FABRIC_HEALTH_FLAGS:
        value = mask >> shift & 0x3
        health[name] = None if value == 0 else value == 1
    config = mask >> 8 & 0xF
    health["configuration"] = FABRIC_CONFIGURATION.get(config, None if config == 0
                                                       else f"code_{config}")
    return health if any(v is not None for v in health.values()) else None


def normalize_bus_id(bus_id: str | bytes | None) -> str | None:
    """NVML's "00000000:18:00.0" to sysfs's "0000:18:00.0"; None for NVML's "FFFFFFFF:FF:FF.0"."""
    return normalize_address(bus_id)


def cuda_version_text(version: int | None) -> str | None:
    """NVML's CUDA driver version integer (13000) as nvidia-smi prints it ("13.0")."""
    if version is None:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


# -- recordings -------------------------------------------------------------------------------

class RecordedNvml:
    """NVML replayed from a `nodetune.nvml/1` document."""

    def __init__(self, doc: dict[str, Any], origin: str = "recording") -> None:
        _validate(doc, origin)
        self.doc = doc
        self.origin = origin

    @classmethod
    def from_file(cls, path: str) -> RecordedNvml:
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_RECORDING_BYTES + 1)
            if len(data) > MAX_RECORDING_BYTES:
                raise SourceError(f"NVML recording {path} is larger than "
                                  f"{MAX_RECORDING_BYTES >> 20} MiB", fix=RECORDING_FIX)
            doc = nvmlcheck.loads(data)
        except FileNotFoundError:
            raise SourceError(f"NVML recording {path} does not exist", fix=RECORDING_FIX) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"cannot read NVML recording {path}: {exc}",
                              fix=RECORDING_FIX) from None
        except json.JSONDecodeError as exc:
            raise SourceError(f"NVML recording {path} is not JSON ({exc.msg} at line {exc.lineno})",
                              fix=RECORDING_FIX) from None
        except (ValueError, RecursionError) as exc:
            raise SourceError(f"NVML recording {path} is not JSON ({exc})",
                              fix=RECORDING_FIX) from None
        return cls(doc, origin=path)

    @classmethod
    def from_text(cls, data: bytes, origin: str) -> RecordedNvml:
        """A recording held in memory (a snapshot's nvml.json)."""
        try:
            doc = nvmlcheck.loads(data)
        except (ValueError, RecursionError) as exc:
            raise SourceError(f"NVML recording {origin} is not JSON ({exc})",
                              fix=RECORDING_FIX) from None
        return cls(doc, origin=origin)

    def dump(self) -> dict[str, Any]:
        return copy.deepcopy(self.doc)

    def close(self) -> None:
        return None


def _validate(doc: Any, origin: str) -> None:
    def bad(why: str) -> SourceError:
        return SourceError(f"{origin} is not an NVML recording: {why}", fix=RECORDING_FIX)

    if not isinstance(doc, dict):
        raise bad(f"it holds a JSON {type(doc).__name__}, not an object")
    if doc.get("schema") != NVML_SCHEMA:
        raise bad(f"schema is {doc.get('schema')!r}, expected {NVML_SCHEMA!r}")
    devices = doc.get("devices")
    if not isinstance(devices, list):
        raise bad("it has no 'devices' list")
    for i, dev in enumerate(devices):
        if not isinstance(dev, dict) or not isinstance(dev.get("pci_bus_id"), str):
            raise bad(f"devices[{i}] has no 'pci_bus_id'")
    problem = nvmlcheck.problems(doc)
    if problem:
        raise bad(problem)


# -- the live library -------------------------------------------------------------------------

def driver_loaded() -> bool:
    """Whether the NVIDIA kernel driver is loaded here (in a container too: the runtime mounts
    /dev/nvidiactl, and /proc/driver/nvidia is the host's)."""
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


_early: dict[bool, Any] = {}  # thin -> the thread starting NVML ahead, and its result


def start_early(thin: bool = False) -> None:
    """Begin `live_backend(thin)` in a thread, for a command that will open the live NVML:
    nvmlInit spends tens of milliseconds in the driver without the GIL, so it overlaps the
    command's imports. The next `live_backend(thin)` takes its result."""
    if thin in _early or not driver_loaded():
        return
    import threading  # deferred: only for a live GPU node

    result: list[tuple[PynvmlBackend | None, str | None]] = []
    thread = threading.Thread(target=lambda: result.append(_live_backend(thin)),
                              name="nodetune-nvml-init", daemon=True)
    _early[thin] = (thread, result)
    thread.start()


def live_backend(thin: bool = False) -> tuple[PynvmlBackend | None, str | None]:
    """Initialise NVML on this machine: (backend, None), or (None, why NVML is not usable).

    thin: through `nodetune.node.nvml_ctypes` (the calls the reader makes, on ctypes) instead of
    nvidia-ml-py: the same document, without pynvml's import (`nodetune check`)."""
    early = _early.pop(thin, None)
    if early is not None:
        thread, result = early
        thread.join()
        if result:
            return result[0]  # type: ignore[no-any-return]
    return _live_backend(thin)


def _live_backend(thin: bool) -> tuple[PynvmlBackend | None, str | None]:
    if not driver_loaded():
        # Without the kernel driver NVML cannot start; skip importing pynvml (60+ ms).
        return None, ("NVML unavailable: the NVIDIA kernel driver is not loaded "
                      "(no /proc/driver/nvidia or /dev/nvidiactl)")
    if thin:
        from nodetune.node import nvml_ctypes  # deferred: ctypes, only for live NVML

        try:
            binding = nvml_ctypes.CtypesNvml.load()
        except nvml_ctypes.NVMLError as exc:
            return None, _init_failure(type(exc).__name__, str(exc))
        return init_backend(binding)
    try:
        # deferred: pynvml costs 22-90 ms at start-up; only live NVML needs it
        import pynvml
    except ImportError:
        return None, "NVML unavailable: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    return init_backend(pynvml)


def init_backend(pynvml: Any) -> tuple[PynvmlBackend | None, str | None]:
    """nvmlInit() through the given pynvml module; a note instead of an exception."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return None, _init_failure(type(exc).__name__, str(exc))
    except OSError as exc:  # a broken libnvidia-ml.so.1 that ctypes cannot load
        return None, f"NVML unavailable: cannot load libnvidia-ml.so.1 ({exc})"
    return PynvmlBackend(pynvml), None


def _init_failure(name: str, text: str) -> str:
    reasons = {
        "NVMLError_LibraryNotFound": "libnvidia-ml.so.1 not found (no NVIDIA driver installed, "
                                     "or the container lacks the driver libraries)",
        "NVMLError_DriverNotLoaded": "the NVIDIA kernel driver is not loaded (modprobe nvidia)",
        "NVMLError_NoPermission": "no permission to open /dev/nvidia* (run as root or join the "
                                  "video group)",
        "NVMLError_LibRmVersionMismatch": "libnvidia-ml.so.1 and the loaded kernel driver differ "
                                          "in version (reboot or reload the driver)",
    }
    return f"NVML unavailable: {reasons.get(name, f'{name} ({text})')}"


class PynvmlBackend:
    """The live NVML library through pynvml (imported by `live_backend`)."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the library is going away anyway
            self.nvml.nvmlShutdown()

    def dump(self) -> dict[str, Any]:
        errors: dict[str, str] = {}
        call = _Caller(self.nvml, errors)
        doc: dict[str, Any] = {
            "schema": NVML_SCHEMA,
            "driver_version": _text(call("driver_version", "nvmlSystemGetDriverVersion")),
            "cuda_driver_version": call("cuda_driver_version", "nvmlSystemGetCudaDriverVersion"),
            "devices": [],
        }
        count = call("device_count", "nvmlDeviceGetCount") or 0
        handles: list[Any] = []
        for index in range(count):
            handle = call(f"devices.{index}", "nvmlDeviceGetHandleByIndex", index)
            if handle is None:
                continue
            handles.append(handle)
            doc["devices"].append(_DeviceReader(self.nvml, handle, index).read())
        _add_nvlink_peers(self.nvml, doc["devices"], handles)
        if errors:
            doc["errors"] = errors
        return doc


class _Caller:
    """Call a pynvml function; on failure record the error's class name and give None."""

    def __init__(self, nvml: Any, errors: dict[str, str]) -> None:
        self.nvml = nvml
        self.errors = errors

    def __call__(self, field: str, func: str, *args: Any) -> Any:
        return self.first(field, [(func, args)])

    def first(self, field: str, attempts: list[tuple[str, tuple[Any, ...]]]) -> Any:
        """The first attempt that works; fall through only when a function is missing."""
        error = "NVMLError_FunctionNotFound"
        for func, args in attempts:
            fn: Callable[..., Any] | None = getattr(self.nvml, func, None)
            if fn is None:
                continue
            try:
                value = fn(*args)
            except self.nvml.NVMLError as exc:
                error = type(exc).__name__
                if error == "NVMLError_FunctionNotFound":
                    continue
                break
            except Exception as exc:  # ctypes or binding mismatch: record it, keep going
                error = f"{type(exc).__name__}: {exc}"
                break
            self.errors.pop(field, None)
            return value
        self.errors[field] = error
        return None


class _DeviceReader:
    """Everything nodetune reads about one device, each query on its own."""

    def __init__(self, nvml: Any, handle: Any, index: int) -> None:
        self.nvml = nvml
        self.handle = handle
        self.index = index
        self.errors: dict[str, str] = {}
        self.call = _Caller(nvml, self.errors)

    def q(self, field: str, func: str, *args: Any) -> Any:
        return self.call(field, func, self.handle, *args)

    def read(self) -> dict[str, Any]:
        n = self.nvml
        pci = self.call.first("pci_bus_id", [("nvmlDeviceGetPciInfo_v3", (self.handle,)),
                                             ("nvmlDeviceGetPciInfo", (self.handle,))])
        memory = self.q("memory_total_bytes", "nvmlDeviceGetMemoryInfo")
        persistence = self.q("persistence_mode", "nvmlDeviceGetPersistenceMode")
        power_draw = self.q("power_draw_w", "nvmlDeviceGetPowerUsage")
        power_limit = self.call.first("power_limit_w", [
            ("nvmlDeviceGetEnforcedPowerLimit", (self.handle,)),
            ("nvmlDeviceGetPowerManagementLimit", (self.handle,))])
        reasons = self.call.first("clock_event_reasons_mask", [
            ("nvmlDeviceGetCurrentClocksEventReasons", (self.handle,)),
            ("nvmlDeviceGetCurrentClocksThrottleReasons", (self.handle,))])
        temperature = self.call.first("temperature_c", [
            ("nvmlDeviceGetTemperature", (self.handle, n.NVML_TEMPERATURE_GPU)),
            ("nvmlDeviceGetTemperatureV", (self.handle, n.NVML_TEMPERATURE_GPU))])
        device = {
            "index": self.index,
            "pci_bus_id": _text(getattr(pci, "busId", None)) or "",
            "name": _text(self.q("name", "nvmlDeviceGetName")),
            "uuid": _text(self.q("uuid", "nvmlDeviceGetUUID")),
            "vbios_version": _text(self.q("vbios_version", "nvmlDeviceGetVbiosVersion")),
            "minor_number": self.q("minor_number", "nvmlDeviceGetMinorNumber"),
            "memory_total_bytes": getattr(memory, "total", None),
            "memory_used_bytes": getattr(memory, "used", None),
            "compute_processes": self._compute_processes(),
            "persistence_mode": _enabled(persistence),
            "ecc": self._ecc(),
            "retired_pages": self._retired_pages(),
            "remapped_rows": self._remapped_rows(),
            "clocks": {
                "sm_mhz": self.q("clocks.sm_mhz", "nvmlDeviceGetClockInfo", n.NVML_CLOCK_SM),
                "mem_mhz": self.q("clocks.mem_mhz", "nvmlDeviceGetClockInfo", n.NVML_CLOCK_MEM),
                "sm_max_mhz": self.q("clocks.sm_max_mhz", "nvmlDeviceGetMaxClockInfo",
                                     n.NVML_CLOCK_SM),
                "mem_max_mhz": self.q("clocks.mem_max_mhz", "nvmlDeviceGetMaxClockInfo",
                                      n.NVML_CLOCK_MEM),
                "sm_app_mhz": self.q("clocks.sm_app_mhz", "nvmlDeviceGetApplicationsClock",
                                     n.NVML_CLOCK_SM),
                "mem_app_mhz": self.q("clocks.mem_app_mhz", "nvmlDeviceGetApplicationsClock",
                                      n.NVML_CLOCK_MEM),
                "sm_default_app_mhz": self.q("clocks.sm_default_app_mhz",
                                             "nvmlDeviceGetDefaultApplicationsClock",
                                             n.NVML_CLOCK_SM),
                "mem_default_app_mhz": self.q("clocks.mem_default_app_mhz",
                                              "nvmlDeviceGetDefaultApplicationsClock",
                                              n.NVML_CLOCK_MEM),
            },
            "clock_event_reasons_mask": reasons,
            "clock_event_reasons": None if reasons is None else clock_event_reason_names(reasons),
            "performance_state": self.q("performance_state", "nvmlDeviceGetPerformanceState"),
            "power_draw_w": None if power_draw is None else round(power_draw / 1000, 2),
            "power_limit_w": None if power_limit is None else round(power_limit / 1000, 2),
            "temperature_c": temperature,
            "mig": self._pair("mig", "nvmlDeviceGetMigMode"),
            "pcie": {
                "current_gen": self.q("pcie.current_gen", "nvmlDeviceGetCurrPcieLinkGeneration"),
                "max_gen": self.q("pcie.max_gen", "nvmlDeviceGetMaxPcieLinkGeneration"),
                "current_width": self.q("pcie.current_width", "nvmlDeviceGetCurrPcieLinkWidth"),
                "max_width": self.q("pcie.max_width", "nvmlDeviceGetMaxPcieLinkWidth"),
            },
            "numa_node": self.q("numa_node", "nvmlDeviceGetNumaNodeId"),
            "cpu_affinity": self._cpu_affinity(),
            "nvlink": self._nvlink(),
            "nvlink_peers": {},
            "fabric": self._fabric(),
            "recovery_action": self._recovery_action(),
        }
        device["errors"] = self.errors
        return device

    def _compute_processes(self) -> int | None:
        """How many compute processes hold the GPU (counted, never named)."""
        procs = self.call.first("compute_processes", [
            ("nvmlDeviceGetComputeRunningProcesses_v3", (self.handle,)),
            ("nvmlDeviceGetComputeRunningProcesses", (self.handle,))])
        return None if procs is None else len(procs)

    def _recovery_action(self) -> str | None:
        values = self.q("recovery_action", "nvmlDeviceGetFieldValues", [FIELD_GPU_RECOVERY_ACTION])
        if not values:
            return None
        value = values[0]
        code = int(getattr(value, "nvmlReturn", 0))
        if code != 0:
            self.errors["recovery_action"] = _error_name(self.nvml, code)
            return None
        action = int(value.value.uiVal)
        return GPU_RECOVERY_ACTIONS.get(action, f"action_{action}")

    def _nvlink_errors(self, link: int) -> dict[str, int | None] | None:
        probe: dict[str, str] = {}
        counters = {name: _Caller(self.nvml, probe)(name, "nvmlDeviceGetNvLinkErrorCounter",
                                                    self.handle, link, code)
                    for name, code in NVLINK_ERROR_COUNTERS}
        if all(v is None for v in counters.values()):
            return None
        return {k: None if v is None else int(v) for k, v in counters.items()}

    def _pair(self, field: str, func: str) -> dict[str, bool | None]:
        value = self.q(field, func)
        current, pending = value if value is not None else (None, None)
        return {"current": _enabled(current), "pending": _enabled(pending)}

    def _ecc(self) -> dict[str, Any]:
        n = self.nvml
        ecc: dict[str, Any] = self._pair("ecc", "nvmlDeviceGetEccMode")
        for counter, counter_type in (("volatile", n.NVML_VOLATILE_ECC),
                                      ("aggregate", n.NVML_AGGREGATE_ECC)):
            ecc[counter] = {
                kind: self.q(f"ecc.{counter}.{kind}", "nvmlDeviceGetTotalEccErrors", error_type,
                             counter_type)
                for kind, error_type in (("corrected", n.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                                         ("uncorrected", n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED))
            }
        return ecc

    def _retired_pages(self) -> dict[str, Any] | None:
        """Page retirement (up to Volta); Ampere and later remap rows instead."""
        n = self.nvml
        single = self.q("retired_pages", "nvmlDeviceGetRetiredPages",
                        n.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
        if single is None:
            return None
        double = self.q("retired_pages.double_bit", "nvmlDeviceGetRetiredPages",
                        n.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
        pending = self.q("retired_pages.pending", "nvmlDeviceGetRetiredPagesPendingStatus")
        return {"single_bit": len(single), "double_bit": None if double is None else len(double),
                "pending": _enabled(pending)}

    def _remapped_rows(self) -> dict[str, Any] | None:
        rows = self.q("remapped_rows", "nvmlDeviceGetRemappedRows")
        if rows is None:
            return None
        correctable, uncorrectable, pending, failure = rows
        return {"correctable": correctable, "uncorrectable": uncorrectable,
                "pending": bool(pending), "failure": bool(failure)}

    def _cpu_affinity(self) -> list[int] | None:
        words = max(16, -(-(os.cpu_count() or 1) // 64))
        mask = self.q("cpu_affinity", "nvmlDeviceGetCpuAffinity", words)
        if mask is None:
            return None
        word_bits = _word_bits(mask)
        return [i * word_bits + b for i, word in enumerate(mask)
                for b in range(word_bits) if int(word) >> b & 1]

    def _nvlink(self) -> list[dict[str, Any]]:
        n = self.nvml
        links: list[dict[str, Any]] = []
        first_error: str | None = None
        for link in range(getattr(n, "NVML_NVLINK_MAX_LINKS", 18)):
            probe: dict[str, str] = {}
            state = _Caller(n, probe)("state", "nvmlDeviceGetNvLinkState", self.handle, link)
            if state is None:
                first_error = first_error or probe.get("state")
                continue
            entry: dict[str, Any] = {"link": link, "active": bool(state),
                                     "remote_pci_bus_id": None, "remote_kind": None,
                                     "errors": None}
            if state:
                remote = _Caller(n, probe)("remote", "nvmlDeviceGetNvLinkRemotePciInfo",
                                           self.handle, link)
                kind = _Caller(n, probe)("kind", "nvmlDeviceGetNvLinkRemoteDeviceType",
                                         self.handle, link)
                bus_id = _text(getattr(remote, "busId", None))
                entry["remote_pci_bus_id"] = bus_id if normalize_bus_id(bus_id) else None
                entry["remote_kind"] = NVLINK_REMOTE_KINDS.get(kind) if kind is not None else None
                entry["errors"] = self._nvlink_errors(link)
            links.append(entry)
        if not links and first_error:
            self.errors["nvlink"] = first_error
        self._nvlink5_counters([entry for entry in links if entry["active"]])
        return links

    def _nvlink5_counters(self, links: list[dict[str, Any]]) -> None:
        """Each active link's NVLink5 counters (`counters`, None where the GPU has none), in
        one nvmlDeviceGetFieldValues call for every link."""
        ids = [fid for _, fid in NVLINK5_COUNTERS] + list(NVLINK5_FEC_HISTORY)
        for entry in links:
            entry["counters"] = None
        if not links:
            return
        pairs = [(fid, entry["link"]) for entry in links for fid in ids]
        values = self.q("nvlink_counters", "nvmlDeviceGetFieldValues", pairs)
        if not values:
            return
        for pos, entry in enumerate(links):
            read = [_field_counter(v) for v in values[pos * len(ids):(pos + 1) * len(ids)]]
            if all(v is None for v in read):
                continue
            counters: dict[str, Any] = {name: read[i]
                                        for i, (name, _) in enumerate(NVLINK5_COUNTERS)}
            history = read[len(NVLINK5_COUNTERS):]
            counters["fec_history"] = None if all(v is None for v in history) else history
            entry["counters"] = counters

    def _fabric(self) -> dict[str, Any] | None:
        """GPU fabric (NVSwitch / multi-node NVLink) registration, Hopper and later."""
        import ctypes  # 1.7 ms of every `check` start otherwise; only NVML structs need it

        n = self.nvml
        info = None
        for struct, func in (("c_nvmlGpuFabricInfoV_t", "nvmlDeviceGetGpuFabricInfoV"),
                             ("c_nvmlGpuFabricInfo_t", "nvmlDeviceGetGpuFabricInfo")):
            cls = getattr(n, struct, None)
            if cls is None or not hasattr(n, func):
                continue
            candidate = cls()
            if self.q("fabric", func, ctypes.byref(candidate)) is not None:
                info = candidate
                break
            if self.errors.get("fabric") != "NVMLError_FunctionNotFound":
                break
        if info is None:
            self.errors.setdefault("fabric", "NVMLError_FunctionNotFound")
            return None
        state = FABRIC_STATES.get(int(info.state), f"state_{int(info.state)}")
        if state == "not_supported":
            self.errors["fabric"] = "fabric state: not supported"
            return None
        mask = getattr(info, "healthMask", None)  # v2 and later of the structure
        return {"state": state, "status": self._status_text(int(info.status)),
                "cluster_uuid": _uuid(bytes(info.clusterUuid)), "clique_id": int(info.cliqueId),
                "health": None if mask is None else fabric_health(int(mask))}

    def _status_text(self, code: int) -> str:
        if code == 0:
            return "success"
        try:
            return str(self.nvml.NVMLError(code)).lower()
        except Exception:
            return f"nvml error {code}"


def _field_counter(value: Any) -> int | None:
    """An nvmlFieldValue_t's counter, None when NVML answered an error for it."""
    if int(getattr(value, "nvmlReturn", 0)) != 0:
        return None
    return int(value.value.ullVal)


def _add_nvlink_peers(nvml: Any, devices: list[dict[str, Any]], handles: list[Any]) -> None:
    """How many NVLinks join each pair of GPUs (the NV# of `nvidia-smi topo -m`).

    Direct links name the peer's PCI address. Links to NVSwitches do not: two GPUs on the same
    switch fabric with NVLink P2P between them count the links both can use (DGX H100: NV18).
    """
    by_bus = {normalize_bus_id(d["pci_bus_id"]): d for d in devices}
    for dev, handle in zip(devices, handles, strict=True):
        for link in dev["nvlink"]:
            peer = by_bus.get(normalize_bus_id(link["remote_pci_bus_id"]))
            if link["active"] and peer is not None and peer is not dev:
                peers = dev["nvlink_peers"]
                peers[peer["pci_bus_id"]] = peers.get(peer["pci_bus_id"], 0) + 1
        switch_links = sum(1 for link in dev["nvlink"]
                           if link["active"] and link["remote_kind"] == "switch")
        if not switch_links:
            continue
        for other, other_handle in zip(devices, handles, strict=True):
            other_links = sum(1 for link in other["nvlink"]
                              if link["active"] and link["remote_kind"] == "switch")
            if other is dev or not other_links or other["pci_bus_id"] in dev["nvlink_peers"]:
                continue
            status = _Caller(nvml, dev["errors"])(
                "nvlink_peers", "nvmlDeviceGetP2PStatus", handle, other_handle,
                nvml.NVML_P2P_CAPS_INDEX_NVLINK)
            if status == nvml.NVML_P2P_STATUS_OK:
                dev["nvlink_peers"][other["pci_bus_id"]] = min(switch_links, other_links)


def _error_name(nvml: Any, code: int) -> str:
    try:
        return type(nvml.NVMLError(code)).__name__
    except Exception:
        return f"NVMLError code {code}"


def _word_bits(mask: Any) -> int:
    """Bits per element of a ctypes array (c_ulong is 64 bits on Linux x86_64 and arm64)."""
    import ctypes  # 1.7 ms of every `check` start otherwise; only NVML structs need it

    element = getattr(mask, "_type_", None)
    return 8 * ctypes.sizeof(element) if element is not None else 64


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _enabled(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
