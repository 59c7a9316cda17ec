"""`nodetune fleet collect`: nodetune's JSON reports from every inventory host, through Ansible.

The shipped playbook `playbooks/fleet-collect.yml` runs `nodetune facts --json`,
`nodetune audit --json`, `nodetune check --json` (and with --bench `nodetune bench ... --quick
--json`) on each host with the command module, each host at its own pace (strategy free);
ansible-runner hands each command's output back as a job event, which is parsed and reduced
(`nodetune.fleet.lean`) as it arrives and not kept on disk, and the progress moves on with it.
A host is collected when its facts and audit came back as JSON (a check that gave no answer is
a warning of the host); everything else (unreachable, nodetune missing, exit 3, timeout) puts
it on the failed list with the reason, never stops the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nodetune import __version__, exitcodes
from nodetune.apply.ansible import ansible_playbook, runner_env
from nodetune.errors import ApplyError, NodetuneError, needs_extra
from nodetune.fleet import lean, load
from nodetune.node.resources import data_dir
from nodetune.schemas import (
    AUDIT_SCHEMA,
    BENCH_SCHEMA,
    CHECK_SCHEMA,
    FACTS_SCHEMA,
    FLEET_COLLECT_SCHEMA,
    FLEET_REPORT_SCHEMA,
    utc_timestamp,
)

PLAYBOOK = "fleet-collect.yml"
FAILED_FILE = "_failed.json"
FORKS_DEFAULT = 25
TIMEOUT_DEFAULT = 300
# playbook task name -> (stage, schema of the JSON it prints)
TASKS = {"Nodetune facts": ("facts", FACTS_SCHEMA), "Nodetune audit": ("audit", AUDIT_SCHEMA),
         "Nodetune check": ("check", CHECK_SCHEMA), "Nodetune bench": ("bench", BENCH_SCHEMA)}
_REDUCE = {"facts": lean.facts, "audit": lean.audit, "check": lean.check, "bench": lean.bench}
_HOST_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_unreachable")
# ansible-runner drops a task result larger than MAX_EVENT_RES bytes (700 kB by default); a
# large node's facts JSON, printed twice (stdout and stdout_lines), comes close to that.
MAX_EVENT_RES = 256 << 20


class Progress(Protocol):
    """What `run` reports as results arrive: each command's answer, then each host's end."""

    def step(self, host: str, stage: str) -> None: ...

    def host_done(self, host: str, collected: bool) -> None: ...


@dataclass(frozen=True)
class Request:
    inventory: Path
    out: Path
    limit: str | None = None
    forks: int = FORKS_DEFAULT
    bench: bool = False
    timeout: int = TIMEOUT_DEFAULT
    full: bool = False


@dataclass
class HostResult:
    host: str
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> (lean) document
    problems: dict[str, str] = field(default_factory=dict)  # stage -> why it gave no document

    @property
    def collected(self) -> bool:
        return "facts" in self.docs and "audit" in self.docs

    def failure(self) -> dict[str, str]:
        for stage in ("connect", "facts", "audit"):
            if stage in self.problems:
                return {"host": self.host, "stage": stage, "reason": self.problems[stage]}
        return {"host": self.host, "stage": "ansible", "reason": "no result from Ansible"}


@dataclass
class Collection:
    request: Request
    hosts: list[str]
    results: dict[str, HostResult]
    seconds: float
    ansible: dict[str, Any]

    @property
    def collected(self) -> list[str]:
        return [h for h in self.hosts if self.results[h].collected]

    @property
    def failed(self) -> list[dict[str, str]]:
        return [self.results[h].failure() for h in self.hosts if not self.results[h].collected]

    @property
    def exit_code(self) -> int:
        return exitcodes.FAILED if self.failed else exitcodes.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": FLEET_COLLECT_SCHEMA, "nodetune_version": __version__,
            "inventory": str(self.request.inventory), "limit": self.request.limit,
            "out": str(self.request.out), "bench": self.request.bench,
            "seconds": round(self.seconds, 2), "hosts": len(self.hosts),
            "collected": self.collected, "failed": self.failed,
            "warnings": {h: r.problems for h, r in self.results.items()
                         if r.collected and r.problems},
            "ansible": self.ansible, "exit_code": self.exit_code,
        }


def _ansible_tool(name: str) -> str:
    """An Ansible command: the one installed beside this Python (nodetune's own dependency,
    matching its ansible-runner) first, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    path = Path(ansible_playbook()).with_name(name)
    if not path.is_file():
        raise ApplyError(f"Ansible is incomplete: {path} was not found",
                         fix="pip install 'nodetune[apply]'")
    return str(path)


def list_hosts(inventory: Path, limit: str | None) -> list[str]:
    """The inventory's host names that `limit` selects, in inventory order."""
    if not inventory.is_file():
        raise NodetuneError(f"inventory {inventory} does not exist or is not a file",
                            fix="give an Ansible inventory file (INI or YAML) to --inventory")
    argv = [_ansible_tool("ansible-inventory"), "-i", str(inventory), "--list"]
    if limit:
        argv += ["--limit", limit]
    env = {**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise NodetuneError(f"inventory {inventory} could not be parsed: "
                            f"{_inventory_error(proc.stderr)}",
                            fix="check it with `ansible-inventory -i FILE --list`")
    try:
        doc = json.loads(proc.stdout)
    except ValueError as exc:
        raise NodetuneError(f"ansible-inventory printed no JSON for {inventory} ({exc})",
                            fix="check it with `ansible-inventory -i FILE --list`") from exc
    hosts: dict[str, None] = {}
    for name, group in doc.items():
        if name != "_meta" and isinstance(group, dict):
            hosts.update(dict.fromkeys(group.get("hosts") or []))
    if not hosts:
        where = f" matching --limit {limit}" if limit else ""
        raise NodetuneError(f"inventory {inventory} has no hosts{where}",
                            fix="list hosts in the inventory, or widen --limit")
    return list(hosts)


def _inventory_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    causes = [ln for ln in lines if "Origin:" not in ln and not ln.startswith(("[", "<<<"))
              and "Failed to parse" not in ln]
    errors = [ln.removeprefix("[ERROR]:").strip() for ln in lines if ln.startswith("[ERROR]")]
    parts = causes[:1] + errors[-1:]
    return "; ".join(parts) or (lines[-1] if lines else "ansible-inventory failed")


def _first_line(msg: Any) -> str:
    """Ansible's message without its "Task failed: " prefix, first line only."""
    lines = str(msg or "").strip().splitlines()
    return lines[0].removeprefix("Task failed: ").strip() if lines else ""


def _reason(res: Mapping[str, Any], stage: str) -> str:
    """Why a command printed no report, in one line."""
    if not res:
        return (f"Ansible dropped the output of nodetune {stage} (larger than MAX_EVENT_RES "
                f"= {MAX_EVENT_RES} bytes)")
    stderr = str(res.get("stderr") or "")
    for line in reversed(stderr.splitlines()):
        if line.startswith("nodetune: "):
            return f"{line.removeprefix('nodetune: ')} (exit {res.get('rc')})"
    msg = str(res.get("msg") or "").strip().splitlines()
    if not stderr.strip() and not str(res.get("stdout") or "").strip():
        # the command could not start ("No such file or directory", "Error executing command.")
        return (f"could not run `{res.get('cmd') or 'nodetune'}`: "
                f"{msg[0] if msg else 'no output'} (rc {res.get('rc')}); is nodetune installed "
                f"there? set nodetune_bin for this host")
    last = stderr.strip().splitlines()[-1:] or [str(res.get("stdout") or "")[:200]]
    return f"nodetune {stage} exited {res.get('rc')} without a report: {last[0]}"


def stages(bench: bool) -> tuple[str, ...]:
    """The commands each host runs, in the playbook's order."""
    return ("facts", "audit", "check", "bench") if bench else ("facts", "audit", "check")


class _Events:
    """ansible-runner event handler: reduce each command's JSON as it arrives."""

    def __init__(self, full: bool, progress: Progress | None, bench: bool) -> None:
        self.results: dict[str, HostResult] = {}
        self.full = full
        self.progress = progress
        self.last = stages(bench)[-1]

    def __call__(self, event: Mapping[str, Any]) -> bool:
        name = event.get("event")
        if name not in _HOST_EVENTS:
            return True
        data = event.get("event_data") or {}
        host = str(data.get("host") or "")
        task = TASKS.get(str(data.get("task") or ""))
        result = self.results.setdefault(host, HostResult(host))
        res = data.get("res") or {}
        if name == "runner_on_unreachable":
            result.problems["connect"] = f"unreachable: {_first_line(res.get('msg'))}"
            self._done(result)
            return True
        if task is None:
            return True
        stage, schema = task
        self._command(result, stage, schema, name, res)
        if self.progress is not None:
            self.progress.step(host, stage)
        if stage == self.last or name == "runner_on_failed":
            self._done(result)
        return False  # the output is kept here, not written to the artifacts directory again

    def _command(self, result: HostResult, stage: str, schema: str, event: str,
                 res: Mapping[str, Any]) -> None:
        if event == "runner_on_failed":  # the task timed out or its module could not run
            msg = _first_line(res.get("msg")) or "failed"
            detail = str(res.get("module_stderr") or "").strip().splitlines()[:1]
            result.problems[stage] = f"{msg} ({detail[0]})" if detail else msg
            return
        try:
            doc = json.loads(str(res.get("stdout") or ""))
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("schema") == schema:
            result.docs[stage] = doc if self.full else _REDUCE[stage](doc)
        else:
            result.problems[stage] = _reason(res, stage)

    def _done(self, result: HostResult) -> None:
        if self.progress is not None:
            self.progress.host_done(result.host, result.collected)


def run(request: Request, progress: Progress | None = None,
        hosts: list[str] | None = None) -> Collection:
    """Collect every host of the inventory (that --limit selects) into request.out."""
    binary = _ansible_tool("ansible-playbook")
    # optional: the [apply] extra; `fleet report` reads collected files without it
    ansible_runner = needs_extra("apply", "ansible_runner")
    hosts = hosts if hosts is not None else list_hosts(request.inventory, request.limit)
    _prepare_out(request.out)
    events = _Events(request.full, progress, request.bench)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nodetune-fleet-") as private:
        envvars = {
            **runner_env(private, binary),
            "ANSIBLE_TIMEOUT": str(min(request.timeout, 30)),  # connecting, not the commands
            "MAX_EVENT_RES": str(MAX_EVENT_RES),
        }
        if "ANSIBLE_CONFIG" not in os.environ and Path("ansible.cfg").is_file():
            envvars["ANSIBLE_CONFIG"] = str(Path("ansible.cfg").resolve())
        result = ansible_runner.run(
            private_data_dir=private, project_dir=str(data_dir("playbooks")), playbook=PLAYBOOK,
            inventory=str(request.inventory.resolve()), limit=request.limit,
            forks=request.forks, envvars=envvars, quiet=True, event_handler=events,
            extravars={"nodetune_timeout": request.timeout, "nodetune_bench": request.bench})
        ansible = {"status": str(result.status), "rc": int(result.rc or 0)}
        if not events.results and ansible["status"] != "successful":
            tail = _read_tail(result.stdout)
            raise ApplyError(f"ansible-playbook failed before reaching any host "
                             f"(status {ansible['status']}, rc {ansible['rc']}): {tail}",
                             fix="run the command with -v, or check the inventory and "
                                 "ansible.cfg")
    results = {h: events.results.get(h) or HostResult(h) for h in hosts}
    collection = Collection(request, hosts, results, time.monotonic() - start, ansible)
    _write(collection)
    return collection


def _read_tail(stream: Any) -> str:
    try:
        lines = [ln for ln in str(stream.read()).splitlines() if ln.strip()]
    except (AttributeError, OSError, ValueError):
        return ""
    return " ".join(lines[-3:])[:400]


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NodetuneError(f"cannot create {out}: {exc.strerror}",
                            fix="give a writable directory to --out") from exc
    if not os.access(out, os.W_OK):
        raise NodetuneError(f"{out} is not writable", fix="give a writable directory to --out")


def report_name(host: str) -> str:
    """DIR/<inventory name>.json; names the loader would skip or that leave DIR are escaped."""
    name = host.replace(os.sep, "_").replace("\0", "_")
    if name.startswith((".", "_")):
        name = "host" + name
    return f"{name}.json"


def _write(collection: Collection) -> None:
    now = utc_timestamp(time.time())
    out = collection.request.out
    for host in collection.collected:
        result = collection.results[host]
        doc = {
            "schema": FLEET_REPORT_SCHEMA, "host": host, "collected_at": now,
            "nodetune_version": __version__, "lean": not collection.request.full,
            "facts": result.docs["facts"], "audit": result.docs["audit"],
            "check": result.docs.get("check"), "bench": result.docs.get("bench"),
            "errors": [f"{stage}: {why}" for stage, why in result.problems.items()],
        }
        _write_file(out / report_name(host), load.report_text(doc))
    summary = collection.to_json()
    summary["collected_at"] = now
    summary["failed"] = _merge_failed(out, collection)
    _write_json(out / FAILED_FILE, summary)


def _merge_failed(out: Path, collection: Collection) -> list[dict[str, Any]]:
    """This run's failures plus earlier ones of hosts this run did not try (--limit)."""
    tried = set(collection.hosts)
    earlier = []
    try:
        doc = json.loads((out / FAILED_FILE).read_bytes())
        if isinstance(doc, dict) and doc.get("schema") == FLEET_COLLECT_SCHEMA:
            earlier = [h for h in doc.get("failed") or []
                       if isinstance(h, dict) and h.get("host") not in tried]
    except (OSError, ValueError):
        pass
    return [*earlier, *collection.failed]


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    _write_file(path, json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n")


def _write_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        raise NodetuneError(f"cannot write {path}: {exc.strerror}",
                            fix="give a writable directory to --out") from exc
