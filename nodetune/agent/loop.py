"""The agent's schedule: one cycle every interval (with jitter), never stopped by a failure."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from nodetune.agent.state import AgentState

log = logging.getLogger("nodetune.agent")


def next_delay(interval: float, jitter: float, failures: int, rng: random.Random) -> float:
    """Seconds until the next cycle: the interval +- jitter, sooner with backoff after failures."""
    if interval <= 0:
        return 0.0
    base = interval
    if failures:
        base = min(interval, 5.0 * 2 ** (failures - 1))
    spread = base * max(0.0, min(jitter, 1.0))
    return max(0.0, base + rng.uniform(-spread, spread))


class Agent:
    def __init__(
        self,
        cycle: Callable[[], dict[str, Any]],
        state: AgentState,
        *,
        interval: float,
        jitter: float = 0.1,
        publish: Callable[[dict[str, Any]], None] | None = None,
        max_cycles: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.cycle = cycle
        self.state = state
        self.interval = interval
        self.jitter = jitter
        self.publish = publish
        self.max_cycles = max_cycles
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        failures = 0
        count = 0
        try:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    report = self.cycle()
                except Exception as exc:  # a failing cycle must never stop the loop
                    failures += 1
                    self.state.fail(f"{type(exc).__name__}: {exc}")
                    log.warning("cycle failed: %s: %s", type(exc).__name__, exc)
                else:
                    failures = 0
                    self.state.publish(report, time.perf_counter() - start)
                    if self.publish is not None:
                        try:
                            self.publish(report)
                        except Exception as exc:  # an unreachable API server must not either
                            self.state.kube_errors += 1
                            log.warning("publishing to Kubernetes failed: %s", exc)
                count += 1
                if self.max_cycles is not None and count >= self.max_cycles:
                    break
                self.stop.wait(next_delay(self.interval, self.jitter, failures, self.rng))
        finally:
            self.done.set()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="nodetune-agent-loop", daemon=True)
        thread.start()
        return thread
