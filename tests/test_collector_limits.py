"""Every collector runs within a time limit: one whose read blocks (a hung sysfs attribute, an
NVML call stuck in the driver) is abandoned, its facts are unknown with "collector X timed out
after N s", the command still answers in bounded time and the process does not wait for the
stuck thread at exit.

The blocking reads are the real readers made to sleep (`tests/hanging.py`): `HostRoot`'s file
read for /proc/meminfo, the NVML recording's `dump` and `close`, over the real 2x H200 VM tree
and its recorded NVML.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nodetune.collectors import gather, limits
from nodetune.errors import NodetuneError
from nodetune.node import hostroot
from nodetune.node.hostroot import HostRoot
from nodetune.node.model import Node
from nodetune.node.nvml import RecordedNvml
from tests.hanging import HANGING

REPO = Path(__file__).resolve().parents[1]
H200_NVML = REPO / "tests" / "fixtures" / "nvml" / "h200x2-vm.json"


@pytest.fixture
def released() -> Iterator[threading.Event]:
    """An event the blocked reads of a test wait on, set when it ends: no thread outlives it
    (an in-process command would otherwise end the test process with os._exit)."""
    event = threading.Event()
    yield event
    event.set()
    deadline = time.monotonic() + 5
    while limits.left_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert limits.left_running() == []
    limits.set_override(None)


@pytest.fixture
def meminfo_blocks(released: threading.Event, monkeypatch: pytest.MonkeyPatch
                   ) -> threading.Event:
    """HostRoot's reads of /proc/meminfo block until the event is set."""
    read = hostroot._read_fd

    def blocking(fd: int, hostpath: str, *args: Any) -> Any:
        if hostpath == "/proc/meminfo":
            released.wait()
        return read(fd, hostpath, *args)

    monkeypatch.setattr(hostroot, "_read_fd", blocking)
    return released


def hanging(*args: str, env: dict[str, str] | None = None,
            ) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", HANGING, *args], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    return proc, time.monotonic() - start


# -- the runner ---------------------------------------------------------------------------

def test_call_within_gives_the_value_the_error_or_times_out(released: threading.Event) -> None:
    assert limits.call_within("quick", lambda: 42, 5) == 42
    with pytest.raises(ZeroDivisionError):
        limits.call_within("broken", lambda: 1 // 0, 5)
    start = time.monotonic()
    with pytest.raises(limits.TimedOut, match=r"^collector stuck timed out after 0.2 s$"):
        limits.call_within("stuck", released.wait, 0.2)
    assert time.monotonic() - start < 2
    assert limits.left_running() == ["stuck"]
    # still stuck: not started again (one thread per hung collector, not one per call)
    threads = threading.active_count()
    with pytest.raises(limits.TimedOut):
        limits.call_within("stuck", released.wait, 0.2)
    assert threading.active_count() == threads


def test_a_blocking_read_makes_only_its_collector_unknown(
        host_tree: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch,
        meminfo_blocks: threading.Event) -> None:
    monkeypatch.setenv(limits.ENV, "0.3")
    node = Node(root=HostRoot(str(host_tree("h200x2-vm-gather"))))
    start = time.monotonic()
    facts = gather(node.context())
    assert time.monotonic() - start < 5
    memory = facts.status["memory"]
    assert (memory.ok, memory.timed_out, memory.error) == (
        False, True, "collector memory timed out after 0.3 s")
    assert "memory" not in facts.sections
    assert facts.to_json()["collectors"]["memory"]["timed_out"] is True
    assert "timed_out" not in facts.to_json()["collectors"]["cpu"]  # only when it did
    assert facts.status["cpu"].ok and facts.sections["cpu"]["cores"] > 0


def test_an_nvml_call_blocked_in_the_driver_times_out_the_gpu_collector(
        host_tree: Callable[[str], Path], released: threading.Event) -> None:
    class StuckNvml(RecordedNvml):
        def dump(self) -> dict[str, Any]:
            released.wait()
            return super().dump()

    limits.set_override(0.3)
    nvml = StuckNvml.from_file(str(H200_NVML))
    node = Node(root=HostRoot(str(host_tree("h200x2-vm-gather"))), nvml=nvml)
    facts = gather(node.context(), ("gpu", "cpu"))
    assert facts.status["gpu"].error == "collector gpu timed out after 0.3 s"
    assert facts.status["cpu"].ok


def test_each_collector_declares_its_limit() -> None:
    from nodetune.commands.collectors import describe

    rows = {r["name"]: r["timeout_s"] for r in describe()}
    assert rows["gpu"] == 30.0  # NVML start-up without persistence mode
    assert rows["memory"] == limits.DEFAULT_S == 10.0
    limits.set_override(2.5)
    try:
        assert set({r["name"]: r["timeout_s"] for r in describe()}.values()) == {2.5}
    finally:
        limits.set_override(None)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_limit_in_the_environment_is_refused(text: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(limits.ENV, text)
    with pytest.raises(NodetuneError, match=r"NODETUNE_COLLECTOR_TIMEOUT=.* is not a number"):
        limits.limit(object())


# -- the commands -------------------------------------------------------------------------

def test_facts_answers_with_the_collector_unknown(host_tree: Callable[[str], Path]) -> None:
    root = host_tree("h200x2-vm-gather")
    proc, seconds = hanging("facts", "--json", "--root", str(root), "--collector-timeout", "1")
    assert seconds < 30
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["collectors"]["memory"] == {
        "ok": False, "seconds": doc["collectors"]["memory"]["seconds"],
        "error": "collector memory timed out after 1 s", "no_data": False, "timed_out": True}
    assert "memory" not in doc and doc["cpu"]["cores"] > 0


def test_audit_makes_the_settings_of_a_timed_out_collector_unknown(
        host_tree: Callable[[str], Path]) -> None:
    root = host_tree("h200x2-vm-gather")
    proc, seconds = hanging("audit", "--json", "--root", str(root), "--profile", "cloud-vm",
                            env={limits.ENV: "1"})
    assert seconds < 30
    doc = json.loads(proc.stdout)
    assert proc.returncode == doc["summary"]["exit_code"] == 0, proc.stderr
    memory = {f["id"]: f for f in doc["findings"] if f["id"].startswith("memory.")}
    assert memory["memory.swappiness"]["status"] == "unknown"
    assert memory["memory.swappiness"]["message"].endswith(
        "(memory collector: collector memory timed out after 1 s)")
    assert not [f for f in memory.values() if f["status"] == "pass"]
    assert "memory collector failed: collector memory timed out after 1 s" in doc["notes"]


def test_check_times_out_the_checks_reading_it(host_tree: Callable[[str], Path]) -> None:
    root = host_tree("h200x2-vm-gather")
    proc, seconds = hanging("check", "--json", "--root", str(root), "--nvml", str(H200_NVML),
                            env={limits.ENV: "1", "NODETUNE_CACHE_DIR": str(root / "no")})
    assert seconds < 5  # the collector's 1 s, not the check's 5 s
    doc = json.loads(proc.stdout)
    assert proc.returncode == doc["exit_code"] == 1
    status = {c["id"]: c for c in doc["checks"]}
    assert status["memory.available"]["status"] == "timeout"
    assert status["memory.available"]["note"].endswith(
        "(collector memory timed out after 1 s)")
    assert doc["collectors"]["memory"]["timed_out"] is True
    assert not doc["healthy"]


def test_a_stuck_nvml_call_neither_blocks_the_answer_nor_the_exit(
        host_tree: Callable[[str], Path]) -> None:
    root = host_tree("h200x2-vm-gather")
    proc, seconds = hanging("facts", "--json", "--root", str(root), "--nvml", str(H200_NVML),
                            "--only", "gpu,cpu", "--hang-nvml", env={limits.ENV: "1"})
    assert seconds < 30  # NVML's close (blocked as well) was not waited for
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["collectors"]["gpu"]["error"] == "collector gpu timed out after 1 s"
    assert doc["collectors"]["cpu"]["ok"] is True


def test_facts_of_a_cycle_with_a_timed_out_collector_time_out_its_checks(
        host_tree: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch,
        meminfo_blocks: threading.Event, tmp_path: Path) -> None:
    """The agent's cycle gathers once and hands the facts to the check: a collector that timed
    out there times out the checks that read it, never a pass."""
    from nodetune.check.operation import CheckRequest, run

    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path))
    limits.set_override(0.3)
    root = str(host_tree("h200x2-vm-gather"))
    facts = gather(Node(root=HostRoot(root)).context())
    meminfo_blocks.set()
    result = run(CheckRequest(root=root, nvml=str(H200_NVML)), facts, cache=False)
    status = {c["id"]: c for c in result.doc["checks"]}
    assert status["memory.available"]["status"] == "timeout"
    assert status["memory.available"]["note"] == (
        "check memory.available timed out after 5 s (collector memory timed out after 0.3 s)")
    assert result.exit_code == 1
