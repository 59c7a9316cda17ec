"""How long each collector may take, and running one within that time.

A collector declares `timeout_s` (DEFAULT_S when it does not); `--collector-timeout S` (any
command that reads a node) or env NODETUNE_COLLECTOR_TIMEOUT sets one limit for every collector
instead. A collector still running at its limit is abandoned: `call_within` raises TimedOut,
its facts are missing with that reason, and its thread is left behind. The thread cannot be
stopped: a read blocked in the kernel (a hung sysfs attribute or NFS mount) or an NVML call
blocked in the driver does not return to Python. It is a daemon thread, so it never holds the
process at exit, and `left_running()` tells the exit paths to end the process with os._exit
without closing NVML under it (nvmlShutdown would wait for the call in flight).

A thread rather than a subprocess per collector: a collector reads through the node's HostRoot
(an unpacked snapshot, a recording) and its open NVML handle, which a child process would have
to rebuild, and a process start costs more than every collector of a node together. A
collector that is still running from an earlier gather (the agent's next cycle) is not started
again: it times out at once, so a hung read costs one thread, not one per cycle.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from nodetune.errors import NodetuneError

DEFAULT_S = 10.0
ENV = "NODETUNE_COLLECTOR_TIMEOUT"

T = TypeVar("T")

_override: float | None = None
_running: dict[str, threading.Thread] = {}  # abandoned collectors, by name


class TimedOut(NodetuneError):
    """A collector did not finish within its limit."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"collector {name} timed out after {seconds:g} s")
        self.name = name


def set_override(seconds: float | None) -> None:
    """One limit for every collector (`--collector-timeout`); None: each collector's own."""
    global _override
    _override = seconds


def limit(collector: Any) -> float:
    """Seconds `collector` (a registered class or its instance) may take."""
    if _override is not None:
        return _override
    text = os.environ.get(ENV, "").strip()
    if text:
        return parse_seconds(text, ENV)
    return float(getattr(collector, "timeout_s", DEFAULT_S))


def parse_seconds(text: str, where: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise NodetuneError(f"{where}={text!r} is not a number of seconds above 0",
                            fix=f"set {where} to the seconds each collector may take, e.g. 10")
    return seconds


def call_within(name: str, fn: Callable[[], T], seconds: float) -> T:
    """fn() in a daemon thread: its value, its exception, or TimedOut after `seconds`."""
    stuck = _running.get(name)
    if stuck is not None:
        if stuck.is_alive():
            raise TimedOut(name, seconds)
        del _running[name]
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name=f"nodetune-collector-{name}", daemon=True)
    thread.start()
    if not done.wait(seconds):
        _running[name] = thread
        raise TimedOut(name, seconds)
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def left_running() -> list[str]:
    """Collectors abandoned while still running (the process must not wait for them)."""
    return [name for name, thread in _running.items() if thread.is_alive()]
