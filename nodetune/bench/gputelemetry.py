"""Clocks, power and temperature of a GPU sampled while a benchmark runs, so throttling shows.

`NvmlSampler` reads NVML (nvidia-ml-py) every `interval` seconds in a thread: SM and memory
clocks, power draw, temperature and the clocks-event (throttle) reasons. `summarize()` turns the
samples into min / median / max per quantity plus every reason seen; it is pure and tested on
recorded samples.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nodetune.node.nvml import clock_event_reason_names

# reasons that mean the GPU ran below its clocks for a cause other than being idle
THROTTLE_REASONS = frozenset({"sw_power_cap", "hw_slowdown", "hw_thermal_slowdown",
                              "hw_power_brake_slowdown", "sw_thermal_slowdown"})


@dataclass(frozen=True)
class Sample:
    t: float
    sm_mhz: float | None
    mem_mhz: float | None
    power_w: float | None
    temp_c: float | None
    reasons: int | None


class Sampler(Protocol):
    def start(self, ordinal: int, bus_id: str) -> None: ...

    def stop(self) -> dict[str, Any]: ...


class NullSampler:
    """No NVML: no telemetry."""

    def start(self, ordinal: int, bus_id: str) -> None:
        pass

    def stop(self) -> dict[str, Any]:
        return {}


def _stat(values: Sequence[float | None]) -> dict[str, float] | None:
    seen = [v for v in values if v is not None]
    if not seen:
        return None
    return {"min": round(min(seen), 1), "median": round(statistics.median(seen), 1),
            "max": round(max(seen), 1)}


def summarize(samples: Sequence[Sample], max_sm_mhz: float | None = None,
              power_limit_w: float | None = None) -> dict[str, Any]:
    """min/median/max of each quantity, the reasons seen, and whether the GPU throttled."""
    mask = 0
    for s in samples:
        mask |= s.reasons or 0
    reasons = clock_event_reason_names(mask)
    sm = _stat([s.sm_mhz for s in samples])
    return {
        "samples": len(samples),
        "sm_clock_mhz": sm,
        "mem_clock_mhz": _stat([s.mem_mhz for s in samples]),
        "power_w": _stat([s.power_w for s in samples]),
        "temperature_c": _stat([s.temp_c for s in samples]),
        "max_sm_clock_mhz": max_sm_mhz,
        "power_limit_w": power_limit_w,
        "clock_event_reasons": reasons,
        "throttled": sorted(THROTTLE_REASONS & set(reasons)),
    }


class NvmlSampler:
    """Samples one GPU at a time through pynvml."""

    def __init__(self, nvml: Any, interval: float = 0.1) -> None:
        self.nvml = nvml
        self.interval = interval
        self._samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None

    @classmethod
    def open(cls) -> Sampler:
        """A sampler over live NVML, or a NullSampler when NVML cannot start."""
        try:
            import pynvml  # optional: nvidia-ml-py, imported only when a GPU suite runs

            pynvml.nvmlInit()
        except Exception:  # any NVML failure means no telemetry, never a failed run
            return NullSampler()
        return cls(pynvml)

    def _q(self, func: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, func)(*args)
        except Exception:  # a query this GPU does not support leaves a gap
            return None

    def _read(self) -> Sample:
        h = self._handle
        power = self._q("nvmlDeviceGetPowerUsage", h)
        reasons = self._q("nvmlDeviceGetCurrentClocksEventReasons", h)
        if reasons is None:
            reasons = self._q("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        temp = self._q("nvmlDeviceGetTemperature", h, 0)  # NVML_TEMPERATURE_GPU
        return Sample(t=time.monotonic(), sm_mhz=self._q("nvmlDeviceGetClockInfo", h, 1),
                      mem_mhz=self._q("nvmlDeviceGetClockInfo", h, 2),
                      power_w=None if power is None else power / 1000.0,
                      temp_c=temp, reasons=reasons)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._samples.append(self._read())
            self._stop.wait(self.interval)

    def start(self, ordinal: int, bus_id: str) -> None:
        self._handle = self._q("nvmlDeviceGetHandleByPciBusId", bus_id)
        if self._handle is None:
            self._handle = self._q("nvmlDeviceGetHandleByIndex", ordinal)
        self._samples = []
        self._stop.clear()
        if self._handle is None:
            return
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._handle is None:
            return {}
        max_sm = self._q("nvmlDeviceGetMaxClockInfo", self._handle, 1)
        limit = self._q("nvmlDeviceGetEnforcedPowerLimit", self._handle)
        return summarize(self._samples, max_sm, None if limit is None else limit / 1000.0)
