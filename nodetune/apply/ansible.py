"""Run a rendered Ansible project through ansible-runner: the only place nodetune calls Ansible.

`run(project, check=...)` runs `ansible-playbook` (check mode with diff for plans) and turns
the job events into `TaskOutcome`s: per host and task, whether it changed, failed, was skipped,
what it reported (diffs, the previous values nodetune_backup and nodetune_sysfs return) and
which values the kernel rejected. Success is decided from the runner's status and rc.

ansible-playbook never outlives nodetune: it is started through a stub that sets
PR_SET_PDEATHSIG (`nodetune.node.children`: SIGKILL when nodetune dies, even by SIGKILL), and
a run left by an exception (a signal before the first change) stops it (SIGTERM, then SIGKILL)
before its private temp directory is removed. SIGINT and SIGTERM during a real run (see `signals`)
start no new task: the task in flight finishes, then the run ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodetune.errors import ApplyError, NodetuneError, needs_extra
from nodetune.node.children import stub_script

if TYPE_CHECKING:
    from types import FrameType

log = logging.getLogger("nodetune.ansible")

TIMEOUT_S = 1800
STOP_WAIT_S = 600  # how long a stopped run waits for the task in flight
_TASK_EVENTS = {"runner_on_ok": "ok", "runner_on_failed": "failed",
                "runner_on_skipped": "skipped", "runner_on_unreachable": "unreachable"}


@dataclass
class TaskOutcome:
    """One task on one host (a looped task: one outcome per item)."""

    host: str
    task: str
    role: str
    action: str
    status: str  # ok, failed, skipped, unreachable
    changed: bool = False
    item: str = ""
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def rejected(self) -> str:
        """Why the kernel rejected a nodetune_sysfs value ("" when it did not)."""
        return str(self.result.get("msg") or "") if self.result.get("rejected") else ""

    @property
    def diffs(self) -> list[dict[str, Any]]:
        diff = self.result.get("diff")
        if isinstance(diff, dict):
            return [diff]
        return [d for d in diff or [] if isinstance(d, dict)]


@dataclass
class RunResult:
    status: str
    rc: int
    check: bool
    outcomes: list[TaskOutcome]
    stats: dict[str, Any]
    stdout: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    @property
    def changed(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.changed and o.status == "ok"]

    @property
    def would_run(self) -> list[TaskOutcome]:
        """Commands check mode skipped that a real run would run (modprobe, setpci)."""
        return [o for o in self.outcomes if "would have run if not in check mode" in o.message]

    @property
    def pending(self) -> list[TaskOutcome]:
        """What a real run would change: changed tasks, plus skipped commands in check mode."""
        return self.changed + self.would_run if self.check else self.changed

    @property
    def failed(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.status in ("failed", "unreachable")]

    @property
    def rejected(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.rejected]

    def by_action(self, action: str) -> Iterator[TaskOutcome]:
        return (o for o in self.outcomes if o.action.rsplit(".", 1)[-1] == action)


def ansible_playbook() -> str:
    """Path of ansible-playbook: on PATH, else beside this Python (a virtualenv)."""
    found = shutil.which("ansible-playbook")
    if found:
        return found
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file():
        return str(beside)
    raise ApplyError("Ansible is not installed: ansible-playbook was not found",
                     fix="pip install 'nodetune[apply]'")


def runner_env(private: str, binary: str) -> dict[str, str]:
    """Environment for an ansible-runner job in `private` (creates its temp directory): its
    own temp and collections directories, no retry files or colours, and `binary`'s directory
    first on PATH."""
    tmp = os.path.join(private, "tmp")
    os.makedirs(tmp, exist_ok=True)
    return {
        "ANSIBLE_LOCAL_TEMP": tmp,
        # AnsiballZ unpacks each module into tempfile's directory: a task killed by a signal
        # leaves its payload there, which then goes with `private`
        "TMPDIR": tmp,
        # one per run: a fixed shared path in /tmp breaks for the next user (and invites races)
        "ANSIBLE_REMOTE_TEMP": os.path.join(private, "remote-tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(private, "collections"),
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(private, "callback_plugins"),
        # a stopped run waits for the tasks in flight (0.1 s a poll) instead of killing them
        "ANSIBLE_WORKER_SHUTDOWN_POLL_COUNT": str(STOP_WAIT_S * 10),
        "PATH": os.pathsep.join((os.path.join(private, "bin"), str(Path(binary).parent),
                                 os.environ.get("PATH", ""))),
    }


def _runner() -> Any:
    # optional: the [apply] extra; `apply --render-only` writes the project without it
    return needs_extra("apply", "ansible_runner")


def run(project: Path, playbook: Path, inventory: Path, *, check: bool,
        limit: str | None = None, timeout: int = TIMEOUT_S) -> RunResult:
    """Run `playbook` of `project` against `inventory`; check mode with diff when `check`."""
    runner = _runner()
    binary = ansible_playbook()
    cmdline = "--diff --check" if check else "--diff"
    with tempfile.TemporaryDirectory(prefix="nodetune-runner-") as private:
        _prepare(private, binary)
        # the project's own copy of the collection nodetune.node (its ansible.cfg says so too)
        envvars = {**runner_env(private, binary),
                   "ANSIBLE_COLLECTIONS_PATH": str(project / "collections")}
        try:
            result = runner.run(
                private_data_dir=private, project_dir=str(project), playbook=str(playbook),
                inventory=str(inventory), limit=limit, cmdline=cmdline,
                envvars=envvars, quiet=True, timeout=timeout,
                event_handler=_log_event, cancel_callback=_poll,
                settings={"pexpect_timeout": 0.2})
        except BaseException:
            stop_children()
            raise
        finally:
            SIGNALS.pid = 0
        outcomes = list(_outcomes(result.events))
        stdout = _read(result.stdout)
        return RunResult(status=str(result.status), rc=int(result.rc or 0), check=check,
                         outcomes=outcomes, stats=dict(result.stats or {}), stdout=stdout)


# The callback plugin ansible-playbook loads from the job's private directory: on SIGUSR1 it
# tells the task queue manager to terminate, so that no new task starts; the tasks in flight
# finish first (ANSIBLE_WORKER_SHUTDOWN_POLL_COUNT, runner_env).
STOP_CALLBACK = '''\
"""Start no new task once nodetune asks the run to stop (SIGUSR1)."""

from __future__ import annotations

import signal
import sys

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: nodetune_stop
type: aggregate
short_description: Start no new task once nodetune asks the run to stop
description:
  - On SIGUSR1 the task queue manager terminates the play; tasks in flight finish first.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "nodetune_stop"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tqm = None
        frame = sys._getframe(1)
        while frame is not None and self._tqm is None:
            owner = frame.f_locals.get("self")
            if hasattr(owner, "terminate") and hasattr(owner, "_terminated"):
                self._tqm = owner
            frame = frame.f_back
        signal.signal(signal.SIGUSR1, self._stop)

    def _stop(self, signum, frame):
        if self._tqm is not None:
            self._tqm.terminate()
'''

# -- signals -------------------------------------------------------------------------------

class Cancelled(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived before the first change: nothing was changed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived between changes (see `interruptible`): something was changed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Interrupted(NodetuneError):
    """nodetune stopped on SIGINT or SIGTERM: exit 128 + the signal number (130, 143)."""

    def __init__(self, signum: int, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} {message}", fix=fix)
        self.exit_code = 128 + signum


class _Signals:
    """What SIGINT and SIGTERM do during one apply or rollback.

    Before the first change a signal cancels at once (Cancelled, raised where the program is);
    while changing, it is recorded and ansible-playbook is asked (SIGUSR1, to the stop callback
    below) to start no new task: the task in flight finishes, then the run ends. Between two
    changes, where no task is in flight (`interruptible`: tune's benchmark after the apply), it
    stops at once (Stopped)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.installed = False
        self.changing = False
        self.settled = False  # changed, and nothing in flight: a signal stops at once
        self.cancelled = False
        self.signum = 0
        self.pid = 0  # the ansible-playbook of the real run, once known
        self.sent = False

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.cancelled:
            return  # cancelling already: let the clean-up finish
        if not self.changing:
            self.cancelled = True
            self.signum = signum  # for `changing`, should this exception be lost (below)
            raise Cancelled(signum)
        self.signum = self.signum or signum
        if self.settled:
            self.cancelled = True
            raise Stopped(self.signum)
        self.forward()

    def forward(self) -> None:
        if self.signum and self.pid and not self.sent:
            self.sent = True
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGUSR1)


SIGNALS = _Signals()


def _prepare(private: str, binary: str) -> None:
    """The wrapper ansible-runner starts as ansible-playbook, and the stop callback."""
    bindir = Path(private, "bin")
    bindir.mkdir()
    wrapper = bindir / "ansible-playbook"
    wrapper.write_text(stub_script(binary), encoding="utf-8")
    wrapper.chmod(0o700)
    plugins = Path(private, "callback_plugins")
    plugins.mkdir()
    (plugins / "nodetune_stop.py").write_text(STOP_CALLBACK, encoding="utf-8")


def _poll() -> bool:
    """ansible-runner's cancel callback (a few times a second): find the real run's
    ansible-playbook and pass it a stop request; never cancels (which would kill the task
    in flight)."""
    if SIGNALS.changing and not SIGNALS.pid:
        SIGNALS.pid = next(iter(children()), 0)
    SIGNALS.forward()
    return False


def children() -> list[int]:
    """This process's ansible-playbook children (the wrapper execs into it)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat_fields[1]) != me:
                continue
            if b"ansible-playbook" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def stop_children(grace_s: float = 10.0) -> None:
    """Stop the ansible-playbook this process started: SIGTERM (it stops its workers), then
    SIGKILL to its process group when it has not ended within `grace_s`."""
    pids = children()
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.05)
        else:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)


@contextmanager
def signals() -> Iterator[None]:
    """SIGINT and SIGTERM for one apply or rollback (see `_Signals`); the previous handlers
    come back afterwards."""
    previous = {s: signal.signal(s, SIGNALS.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    SIGNALS.installed = True
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        SIGNALS.reset()


@contextmanager
def changing() -> Iterator[_Signals]:
    """From here on a signal stops the run after the task in flight instead of cancelling;
    `.signum` of what this yields says whether one came. (Under `signals` this lasts to its
    end: once something changed, a signal never claims that nothing was.)"""
    if SIGNALS.installed and SIGNALS.cancelled and not SIGNALS.changing:
        # Python drops an exception raised by a signal handler while the main thread runs an
        # at-fork hook (logging's _releaseLock after each subprocess fork): "Exception ignored
        # in". The signal still cancels, at the last point where nothing has changed.
        raise Cancelled(SIGNALS.signum)
    SIGNALS.changing = True
    try:
        yield SIGNALS
    finally:
        if not SIGNALS.installed:
            SIGNALS.changing = False


@contextmanager
def interruptible() -> Iterator[None]:
    """After a change, where nothing is in flight: a signal (also one that came since the
    change) raises Stopped at once instead of waiting for a task."""
    if SIGNALS.installed and SIGNALS.signum:
        SIGNALS.cancelled = True
        raise Stopped(SIGNALS.signum)
    SIGNALS.settled = True
    try:
        yield
    finally:
        SIGNALS.settled = False


def _read(stream: Any) -> str:
    try:
        return str(stream.read())
    except (AttributeError, OSError, ValueError):
        return ""


def _log_event(event: Mapping[str, Any]) -> bool:
    if event.get("stdout"):
        log.debug("%s", event["stdout"])
    return True


def _outcomes(events: Any) -> Iterator[TaskOutcome]:
    for event in events:
        status = _TASK_EVENTS.get(event.get("event", ""))
        if status is None:
            continue
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        base = {"host": str(data.get("host", "")), "task": str(data.get("task", "")),
                "role": str(data.get("role", "")), "action": str(data.get("task_action", ""))}
        results = res.get("results") if isinstance(res, dict) else None
        if isinstance(results, list) and results:
            for item in results:
                if not isinstance(item, dict):
                    continue
                yield TaskOutcome(**base, status=_item_status(item, status),
                                  changed=bool(item.get("changed")),
                                  item=str(item.get("_ansible_item_label", item.get("item", ""))),
                                  message=str(item.get("msg") or ""), result=item)
            continue
        yield TaskOutcome(**base, status=status, changed=bool(res.get("changed")),
                          message=str(res.get("msg") or ""), result=res)


def _item_status(item: Mapping[str, Any], task_status: str) -> str:
    if item.get("skipped"):
        return "skipped"
    if item.get("failed") or item.get("unreachable"):
        return "unreachable" if item.get("unreachable") else "failed"
    return "ok" if task_status in ("ok", "failed") else task_status
