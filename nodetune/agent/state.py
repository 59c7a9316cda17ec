"""What the agent knows between cycles, shared by the loop and the HTTP server."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AgentState:
    """The last report and the loop's counters. Replaced wholesale each cycle, never grown."""

    started_at: float = field(default_factory=time.time)
    report: dict[str, Any] | None = None
    cycles: int = 0
    cycle_errors: int = 0
    last_error: str | None = None
    last_success_at: float | None = None
    last_cycle_seconds: float | None = None
    kube_errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ready(self) -> bool:
        return self.report is not None

    def publish(self, report: dict[str, Any], seconds: float) -> None:
        with self._lock:
            self.report = report
            self.cycles += 1
            self.last_success_at = time.time()
            self.last_cycle_seconds = seconds
            self.last_error = None

    def fail(self, error: str) -> None:
        with self._lock:
            self.cycles += 1
            self.cycle_errors += 1
            self.last_error = error

    def snapshot(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The last report and a copy of the counters, read consistently."""
        with self._lock:
            counters = {
                "cycles": self.cycles,
                "cycle_errors": self.cycle_errors,
                "last_error": self.last_error,
                "last_success_at": self.last_success_at,
                "last_cycle_seconds": self.last_cycle_seconds,
                "kube_errors": self.kube_errors,
                "started_at": self.started_at,
            }
            return self.report, counters
