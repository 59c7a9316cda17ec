"""nodetune tune holds the root's lock and handles SIGINT and SIGTERM as apply does.

A real cycle (`tune cpu-mem --quick` on this host, the apply through ansible-playbook on a copy
of the 2x H200 VM tree) is signalled at each boundary: during the baseline benchmark (nothing
changed), during the apply (the task in flight finishes, the state file rolls back), during
the second benchmark (the benchmark is killed, the change stays applied with its state file),
and killed outright (no benchmark or ansible-playbook outlives it).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from nodetune.apply import statefile
from tests.apply_runs import (
    Run,
    faulty_tree,
    lock_held_by,
    nodetune,
    one_line,
    snapshot,
    state_files,
)

pytestmark = pytest.mark.slow

BENCH = b"nodetune.bench.stream"  # the cpu-mem suite's worker process


def tune(tmp_path: Path, root: Path, *options: str) -> Run:
    return Run(tmp_path, "tune", "cpu-mem", "--repeat", "2", "--root", str(root), "--yes",
               *(options or ("--quick",)))


def status(path: Path) -> str:
    try:
        return statefile.load(path).status
    except Exception:  # written at this moment
        return ""


def rolls_back(root: Path, before: dict) -> None:
    rolled = nodetune("rollback", "--root", str(root), "--yes")
    assert rolled.returncode == 0, rolled.stderr
    assert snapshot(root, with_state=False) == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_the_baseline_cancels_with_nothing_changed(host_tree, tmp_path, signum):
    root = faulty_tree(host_tree, tmp_path)
    before = snapshot(root, with_state=False)
    run = tune(tmp_path, root)
    run.wait_until(lambda: bool(run.children(BENCH)))
    assert lock_held_by(root, run.proc.pid) and not state_files(root)
    # the lock: an apply of the same root is refused at once, naming the tune
    other = nodetune("apply", "--root", str(root), "--yes")
    assert other.returncode == 4
    assert f"another nodetune tune (pid {run.proc.pid}) holds" in one_line(other)
    run.proc.send_signal(signum)
    code, err = run.finish()
    assert code == 128 + signum, err
    assert err.strip().splitlines()[-1] == (
        f"nodetune: error: interrupted by {signal.Signals(signum).name} before the first change; "
        "nothing was changed")
    assert snapshot(root, with_state=False) == before
    assert not state_files(root)
    run.left_nothing(BENCH)


def test_signal_during_the_apply_finishes_the_task_and_rolls_back(host_tree, tmp_path):
    root = faulty_tree(host_tree, tmp_path)
    before = snapshot(root, with_state=False)
    run = tune(tmp_path, root)
    run.wait_until(lambda: bool(state_files(root)))
    run.proc.send_signal(signal.SIGINT)
    code, err = run.finish()
    assert code == 130, err
    line = err.strip().splitlines()[-1]
    [path] = state_files(root)
    assert line == ("nodetune: error: interrupted by SIGINT during the apply: stopped after the "
                    f"task in flight; the previous values are recorded in {path}; fix: nodetune "
                    f"rollback --state-file {path}")
    assert statefile.load(path).status == "interrupted"
    run.left_nothing(BENCH)
    rolls_back(root, before)


def test_signal_after_the_apply_stops_the_benchmark_and_keeps_the_state(host_tree, tmp_path):
    root = faulty_tree(host_tree, tmp_path)
    before = snapshot(root, with_state=False)
    run = tune(tmp_path, root)
    run.wait_until(lambda: bool(state_files(root)) and status(state_files(root)[0]) == "applied")
    run.wait_until(lambda: bool(run.children(BENCH)))  # the second run
    run.proc.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert code == 143, err
    line = err.strip().splitlines()[-1]
    [path] = state_files(root)
    assert line == ("nodetune: error: interrupted by SIGTERM after the apply, before the change "
                    "was proven: the change stays applied; the previous values are recorded in "
                    f"{path}; fix: nodetune rollback --state-file {path}")
    assert (root / "proc/sys/vm/swappiness").read_text() == "10\n"
    assert statefile.load(path).status == "applied"
    run.left_nothing(BENCH)
    rolls_back(root, before)


def test_a_killed_tune_leaves_no_benchmark_running(host_tree, tmp_path):
    root = faulty_tree(host_tree, tmp_path)
    run = tune(tmp_path, root, "--sizes", "1GiB")  # a triad worker runs for seconds
    run.wait_until(lambda: bool(run.children(BENCH)))
    workers = run.children(BENCH)
    run.proc.kill()
    run.finish()
    deadline = time.monotonic() + 1  # much less than the worker would run on its own
    while run.children(BENCH) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.children(BENCH) == [], workers
    assert not state_files(root)  # killed during the baseline: nothing was changed
