"""Run a rendered Ansible project through ansible-runner: the only place nodetune calls Ansible.

`run(project, check=...)` runs `ansible-playbook` (check mode with diff for plans) and turns
the job events into `TaskOutcome`s: per host and task, whether it changed, failed, was skipped,
what it reported (diffs, the previous values nodetune_backup and nodetune_sysfs return) and
which values the kernel rejected. Success is decided from the runner's status and rc.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune.errors import ApplyError, needs_extra

log = logging.getLogger("nodetune.ansible")

TIMEOUT_S = 1800
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
    """Environment for an ansible-runner job in `private`: its own temp and collections
    directories, no retry files or colours, and `binary`'s directory first on PATH."""
    return {
        "ANSIBLE_LOCAL_TEMP": os.path.join(private, "tmp"),
        # one per run: a fixed shared path in /tmp breaks for the next user (and invites races)
        "ANSIBLE_REMOTE_TEMP": os.path.join(private, "remote-tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(private, "collections"),
        "PATH": f"{Path(binary).parent}{os.pathsep}{os.environ.get('PATH', '')}",
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
        # the project's own copy of the collection nodetune.node (its ansible.cfg says so too)
        envvars = {**runner_env(private, binary),
                   "ANSIBLE_COLLECTIONS_PATH": str(project / "collections")}
        result = runner.run(
            private_data_dir=private, project_dir=str(project), playbook=str(playbook),
            inventory=str(inventory), limit=limit, cmdline=cmdline,
            envvars=envvars, quiet=True, timeout=timeout,
            event_handler=_log_event)
        outcomes = list(_outcomes(result.events))
        stdout = _read(result.stdout)
        return RunResult(status=str(result.status), rc=int(result.rc or 0), check=check,
                         outcomes=outcomes, stats=dict(result.stats or {}), stdout=stdout)


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
