"""`nodetune apply` and `nodetune rollback` as operations: plan, record, apply, verify, restore.

    plan = prepare(request, workdir)      audit, choose the changes, render, check-mode run
    report = execute(plan)                state file, real run, re-audit -> per-setting outcome
    back = prepare_rollback(state, root, workdir); execute_rollback(back)
                                          restore what a state file recorded

Printing and confirmation live in the commands; these functions only compute and run.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune.apply import ansible as ansible
from nodetune.apply import statefile
from nodetune.apply.render import plan as planning
from nodetune.apply.render import project as projects
from nodetune.apply.render import roles
from nodetune.audit.operation import run_audit
from nodetune.errors import ApplyError, Refused, SourceError
from nodetune.facts.model import Disruption, Finding, Status
from nodetune.node.source import open_node
from nodetune.profiles.catalog import Library

# disruption -> the flag that allows it
GATED = {Disruption.REBOOT: "--allow-reboot", Disruption.KUBELET_STATE_RESET: "--allow-disruptive"}


@dataclass
class Request:
    profile: str | None = None
    root: str | None = None
    only: tuple[str, ...] = ()
    inventory: Path | None = None
    limit: str | None = None
    allow_reboot: bool = False
    allow_disruptive: bool = False
    force: bool = False
    state_file: Path | None = None
    profiles_dirs: tuple[str, ...] = ()
    overrides: str | None = None
    nvml: str = "auto"

    @property
    def host_root(self) -> str:
        return os.path.abspath(self.root) if self.root else "/"

    @property
    def local(self) -> bool:
        return self.inventory is None

    def target(self, hosts: Sequence[str] = ()) -> str:
        """What an apply changes, in words: this host, a --root tree, or inventory hosts."""
        if not self.local:
            limit = f" (limit {self.limit})" if self.limit else ""
            names = f" {', '.join(hosts)}" if hosts else ""
            return f"host(s){names} of inventory {self.inventory}{limit}"
        if self.host_root != "/":
            return f"the host tree {self.host_root} (--root)"
        return "this host (localhost)"

    def allowed(self, disruption: Disruption) -> bool:
        if disruption is Disruption.REBOOT:
            return self.allow_reboot
        if disruption is Disruption.KUBELET_STATE_RESET:
            return self.allow_disruptive
        return True


@dataclass
class Audit:
    """One audit of the node: the profile used and its findings."""

    profile: str
    findings: list[Finding]
    facts: dict[str, Any]
    note: str = ""


@dataclass
class Plan:
    request: Request
    audit: Audit
    plan: planning.Plan
    refused: list[planning.Change]
    project: projects.Project | None = None
    check: ansible.RunResult | None = None
    workdir: Path | None = None

    @property
    def changes(self) -> list[planning.Change]:
        return self.plan.changes


@dataclass
class SettingOutcome:
    change: planning.Change
    status: str  # would-change, refused, fixed, pending-reboot, failed, unknown
    after: str = ""
    message: str = ""


@dataclass
class Report:
    mode: str  # dry-run, apply, render-only, rollback, rollback-plan
    profile: str
    settings: list[SettingOutcome] = field(default_factory=list)
    manual: list[Finding] = field(default_factory=list)
    changed: int = 0
    tasks: list[ansible.TaskOutcome] = field(default_factory=list)
    rejected: list[ansible.TaskOutcome] = field(default_factory=list)
    state_file: Path | None = None
    render_dir: Path | None = None
    render_inventory: Path | None = None
    hosts: list[str] = field(default_factory=list)
    next_command: str = ""  # the command that applies this plan (dry run)

    @property
    def failed(self) -> list[SettingOutcome]:
        return [s for s in self.settings if s.status == "failed"]


AuditFn = Callable[[Request], Audit]


def audit_node(request: Request) -> Audit:
    """Audit this node (or --root) with the requested profile, or the one it matches."""

    with open_node(root=request.root, nvml=request.nvml) as node:
        facts = node.facts().to_json()
    dirs = list(request.profiles_dirs)
    result = run_audit(facts, profile=request.profile, profiles_dirs=dirs,
                       overrides=request.overrides)
    note = result.match.reason
    if request.profile and not request.force:
        library = Library(dirs)
        check_match(library, library.match(facts), result.profile.name, result.profile.chain)
    return Audit(profile=result.profile.name, findings=result.findings, facts=facts, note=note)


def check_match(library: Any, match: Any, chosen: str, chain: Sequence[str]) -> None:
    """Refuse a --profile made for other hardware than this node's.

    The chosen profile fits when it is the profile the node matches or one it extends
    (a DGX H100 may take gpu-common; a CPU-only host may not take dgx-h100)."""
    matched_chain = library.load(match.profile).chain if match.profile != chosen else chain
    if chosen in matched_chain:
        return
    raise Refused(f"profile {chosen} does not match this node, which matches "
                  f"{match.profile} ({match.reason}); nothing was changed",
                  fix=f"use --profile {match.profile}, or pass --force to apply {chosen} anyway")


def select(findings: Sequence[Finding], only: Sequence[str]) -> list[Finding]:
    """The findings --only keeps: setting ids or globs ("memory.*"), or ID[subject]."""
    if not only:
        return list(findings)
    wanted = [o for item in only for o in item.split(",") if o]
    known = {f.id for f in findings}
    for pattern in wanted:
        if not any(fnmatch.fnmatchcase(i, pattern.split("[", 1)[0]) for i in known):
            raise SourceError(f"--only {pattern}: no such setting in this profile",
                              fix="see the ids `nodetune audit` prints")
    return [f for f in findings if any(_selected(f, p) for p in wanted)]


def _selected(finding: Finding, pattern: str) -> bool:
    if "[" in pattern:  # ID[subject], compared as written (brackets are not a glob here)
        return f"{finding.id}[{finding.subject}]" == pattern
    return fnmatch.fnmatchcase(finding.id, pattern)


def prepare(request: Request, workdir: Path, audit: AuditFn = audit_node,
            run_check: bool = True) -> Plan:
    """Audit, choose the changes, render the project into `workdir` and (when `run_check`)
    run it in check mode: the plan, with every previous value the roles will touch."""
    result = audit(request)
    chosen = select(result.findings, request.only)
    plan = planning.build(chosen, result.facts if request.local else None)
    refused = [c for c in plan.changes if not request.allowed(c.disruption)]
    prepared = Plan(request=request, audit=result, plan=plan, refused=refused, workdir=workdir)
    if not plan.changes:
        return prepared
    prepared.project = render(prepared, workdir)
    if run_check:
        check_plan(prepared)
    return prepared


def check_plan(prepared: Plan) -> None:
    """Run the rendered project in check mode with diff (no-op without changes), then refuse
    a plan that would write outside --root."""
    if prepared.project is not None and prepared.check is None:
        prepared.check = run_checked(prepared.project, prepared.request, check=True)
        refuse_escapes(prepared)


def touched(check: ansible.RunResult) -> list[tuple[str, bool]]:
    """(host path, written through its last link) for every file a real run may write or
    remove: the paths the state file records, and the files written in place."""
    paths: list[tuple[str, bool]] = []
    for outcome in check.outcomes:
        if outcome.status != "ok":
            continue
        action, result = outcome.action.rsplit(".", 1)[-1], outcome.result
        if action == "nodetune_backup":
            paths += [(p, False) for p in result.get("files") or {}]
            paths += [(d, False) for r in (result.get("files") or {}).values()
                      if isinstance(r, dict) for d in r.get("missing_dirs") or []]
        elif action in ("nodetune_lines", "nodetune_files"):
            paths += [(p, False) for p in result.get("previous") or {}]
        elif action == "nodetune_sysfs":
            paths += [(e["path"], True) for e in result.get("paths") or [] if e.get("changed")]
        elif action == "nodetune_cmdline" and result.get("file"):
            paths.append((str(result["file"]), True))
    return paths


def refuse_escapes(prepared: Plan) -> None:
    """Refuse (nothing changed) a --root plan that reaches a file outside the tree: every
    path is resolved, links included, the way the kernel will resolve it when written."""
    request = prepared.request
    if prepared.check is None or not request.local or request.host_root == "/":
        return
    root = request.host_root
    for hostpath, follow in touched(prepared.check):
        outside = statefile.escape(root, hostpath, follow_last=follow)
        if outside is not None:
            raise Refused(f"{hostpath} in {root} leads to {outside}, outside the tree (a link "
                          "leaves --root); nothing was changed",
                          fix="make the link point inside the tree (relative), or remove it")


def render(prepared: Plan, directory: Path, *, for_user: bool = False) -> projects.Project:
    request = prepared.request
    inventory = projects.Inventory(
        path=request.inventory, copy=for_user,
        python=projects.PLAYBOOK_PYTHON if for_user else sys.executable)
    become = for_user or not request.local  # local changes need root: the command checks
    # With an inventory, --root only names the node the plan came from; the hosts are live.
    root = "" if request.host_root == "/" or not request.local else request.host_root
    return projects.write_apply(
        directory, changes=prepared.changes, variables=prepared.plan.variables,
        profile=prepared.audit.profile, root=root, inventory=inventory, become=become)


def run_checked(project: projects.Project, request: Request, *, check: bool) -> ansible.RunResult:
    """Run the project; unreachable hosts and failures before any change are errors."""
    result = ansible.run(project.directory, project.playbook, project.inventory, check=check,
                         limit=request.limit)
    for outcome in result.outcomes:
        if outcome.status == "unreachable":
            raise ApplyError(f"host {outcome.host} is unreachable: {_first_line(outcome.message)}",
                             fix="check the inventory address and SSH access "
                                 "(ansible -i INVENTORY -m ping all)")
    if check and not result.ok:
        raise ApplyError(_failure_text(result, "the check-mode run"),
                         fix="nothing was changed; fix the cause and run again")
    return result


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def _failure_text(result: ansible.RunResult, what: str) -> str:
    if result.failed:
        first = result.failed[0]
        item = f" ({first.item})" if first.item else ""
        return (f"{what} failed on {first.host} at task '{first.task}'{item}: "
                f"{_first_line(first.message) or 'no message'}")
    return f"{what} ended {result.status} (rc {result.rc}): {_first_line(result.stdout[-300:])}"


def refuse_if_gated(prepared: Plan) -> None:
    if prepared.refused:
        flags = sorted({GATED[c.disruption] for c in prepared.refused})
        names = ", ".join(f"{c.key} ({c.disruption.value})" for c in prepared.refused)
        raise Refused(f"{len(prepared.refused)} change(s) need {' and '.join(flags)}: {names}; "
                      "nothing was changed",
                      fix=f"pass {' '.join(flags)}, or leave them out with --only")


def dry_run_report(prepared: Plan) -> Report:
    report = Report(mode="dry-run", profile=prepared.audit.profile,
                    manual=list(prepared.plan.manual))
    check = prepared.check
    tasks = check.pending if check else []
    refused = {c.key for c in prepared.refused}
    for change in prepared.changes:
        if change.key in refused:
            status, message = "refused", f"needs {GATED[change.disruption]}"
        elif check is not None and not tasks:
            status, message = "pending-reboot", "already persisted; takes effect at the next boot"
        else:
            status, message = "would-change", ""
        report.settings.append(SettingOutcome(change, status, message=message))
    report.tasks = tasks
    report.changed = len(tasks)
    report.rejected = check.rejected if check else []
    report.hosts = sorted({o.host for o in check.outcomes}) if check else []
    return report


def record_state(prepared: Plan) -> statefile.State:
    """The state file for this apply, filled from the check-mode run's previous values."""
    request = prepared.request
    assert prepared.check is not None
    target_root = request.host_root if request.local else "/"
    path = request.state_file or statefile.new_path(target_root)
    state = statefile.State(
        path=Path(path), created=statefile.utc_now(), profile=prepared.audit.profile,
        root=target_root, limit=request.limit,
        inventory=str(request.inventory) if request.inventory else None,
        changes=[{"id": c.id, "subject": c.subject, "current": c.current, "wanted": c.wanted,
                  "disruption": c.disruption.value, "variables": dict(c.variables)}
                 for c in prepared.changes])
    for outcome in prepared.check.outcomes:
        if outcome.status != "ok":
            continue
        host = state.hosts.setdefault(outcome.host, statefile.HostState())
        action = outcome.action.rsplit(".", 1)[-1]
        result = outcome.result
        if action == "nodetune_backup":
            _record(host.files, result.get("files"))
            _record(host.kmods, result.get("kmods"))
            _record(host.units, result.get("units"))
        elif action in ("nodetune_lines", "nodetune_files"):
            _record(host.files, result.get("previous"))
        elif action == "nodetune_sysfs":
            _record(host.runtime, {e["path"]: {"raw": e["raw"], "value": e["before"]}
                                   for e in result.get("paths") or []
                                   if e.get("changed") and "raw" in e})
    state.save()
    return state


def _record(into: dict[str, Any], found: Any) -> None:
    """Keep the first record of each path: the value before this apply touched it."""
    for key, value in (found or {}).items():
        into.setdefault(key, value)


def execute(prepared: Plan, audit: AuditFn = audit_node) -> Report:
    """Record the state, apply for real, re-audit; raise ApplyError when a task fails."""
    assert prepared.project is not None
    refuse_escapes(prepared)  # again: a link may have changed since the check-mode run
    with ansible.changing() as signals:
        state = record_state(prepared)
        result = None
        if not signals.signum:  # none came while the state file was written
            result = ansible.run(prepared.project.directory, prepared.project.playbook,
                                 prepared.project.inventory, check=False,
                                 limit=prepared.request.limit)
        if signals.signum:
            state.status = "interrupted"
            state.save()
            raise ansible.Interrupted(
                signals.signum, f"during the apply: stopped after the task in flight; the "
                f"previous values are recorded in {state.path}",
                fix=f"nodetune rollback --state-file {state.path}")
    assert result is not None
    state.status = "applied" if result.ok else "failed"
    state.save()
    if not result.ok:
        raise ApplyError(_failure_text(result, "apply") + f"; the previous values are recorded "
                         f"in {state.path}",
                         fix=f"nodetune rollback --state-file {state.path}")
    report = Report(mode="apply", profile=prepared.audit.profile, state_file=state.path,
                    manual=list(prepared.plan.manual), tasks=result.changed,
                    changed=len(result.changed), rejected=result.rejected,
                    hosts=sorted({o.host for o in result.outcomes}))
    report.settings = verify(prepared, result, audit)
    return report


def verify(prepared: Plan, result: ansible.RunResult, audit: AuditFn) -> list[SettingOutcome]:
    """Per change: fixed, pending reboot, or failed, from a fresh audit of this node."""
    if not prepared.request.local:
        return [SettingOutcome(c, "failed" if _rejected(c, result) else "applied",
                               message=_rejected(c, result)) for c in prepared.changes]
    after = audit(prepared.request)
    now = {(f.id, f.subject): f for f in after.findings}
    return [_outcome(c, now.get((c.id, c.subject)), _rejected(c, result),
                     prepared.request.host_root != "/") for c in prepared.changes]


def _rejected(change: planning.Change, result: ansible.RunResult) -> str:
    """What the kernel rejected in the roles this change ran ("" when nothing)."""
    return "; ".join(o.rejected for o in result.rejected if o.role in change.roles)


def _outcome(change: planning.Change, finding: Finding | None, rejected: str,
             copied_root: bool) -> SettingOutcome:
    if finding is None or finding.status in (Status.PASS, Status.SKIPPED):
        return SettingOutcome(change, "fixed", after=finding.actual if finding else "")
    if finding.status is Status.UNKNOWN:
        return SettingOutcome(change, "unknown", after=finding.actual, message=finding.message)
    boot_only = copied_root and set(change.variables) <= roles.LIVE_ONLY_RUNTIME
    if finding.needs_reboot or change.disruption is Disruption.REBOOT or boot_only:
        return SettingOutcome(change, "pending-reboot", after=finding.actual,
                              message="persisted; takes effect at the next boot")
    message = finding.message
    if rejected:
        message = f"kernel rejected the value: {rejected}"
    return SettingOutcome(change, "failed", after=finding.actual, message=message)


@contextmanager
def workspace(keep: Path | None = None) -> Iterator[Path]:
    """A scratch directory for the Ansible project (or `keep`, left in place)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="nodetune-apply-") as tmp:
        yield Path(tmp)


# -- rollback --------------------------------------------------------------------------

@dataclass
class RollbackPlan:
    state: statefile.State
    project: projects.Project
    check: ansible.RunResult
    notes: list[str] = field(default_factory=list)


def prepare_rollback(state_path: Path | None, root: str | None, workdir: Path) -> RollbackPlan:
    host_root = os.path.abspath(root) if root else "/"
    path = state_path or statefile.latest(host_root)
    state = statefile.load(Path(path))
    statefile.check_target(state, host_root)
    if state.status == "rolled-back":
        raise Refused(f"{path} was already rolled back at {state.rolled_back_at}",
                      fix="nothing to do; give another --state-file")
    if not state.hosts:
        raise SourceError(f"{path} records no host", fix="give the state file of an apply")
    inventory = Path(state.inventory) if state.inventory else None
    if inventory is not None and not inventory.exists():
        raise SourceError(f"the inventory {inventory} the apply used is gone",
                          fix="restore it at that path, then run nodetune rollback again")
    # the root given here, never the one the file names (check_target made them agree)
    root_var = "" if host_root == "/" or inventory is not None else host_root
    if inventory is None and root_var == "" and os.geteuid() != 0:
        raise ApplyError("restoring this host needs root; nothing was changed",
                         fix="run nodetune rollback with sudo")
    become = inventory is not None
    project = projects.write_rollback(
        workdir, per_host={h: s.rollback_vars() for h, s in state.hosts.items()},
        root=root_var, inventory=projects.Inventory(path=inventory, python=sys.executable),
        become=become, state_file=str(path), created=state.created)
    check = ansible.run(project.directory, project.playbook, project.inventory, check=True,
                        limit=state.limit)
    if not check.ok:
        raise ApplyError(_failure_text(check, "the rollback check-mode run"),
                         fix="nothing was changed; fix the cause and run again")
    notes = [f"{path} has no checksum and host identity (written by an older nodetune): "
             f"accepted because it names this root, {state.root}"] if state.legacy else []
    return RollbackPlan(state=state, project=project, check=check, notes=notes)


def execute_rollback(prepared: RollbackPlan) -> Report:
    state = prepared.state
    with ansible.changing() as signals:
        result = ansible.run(prepared.project.directory, prepared.project.playbook,
                             prepared.project.inventory, check=False, limit=state.limit)
    if signals.signum:
        raise ansible.Interrupted(signals.signum, f"during the rollback: stopped after the task "
                                  f"in flight; {state.path} is kept",
                                  fix="run nodetune rollback again (it is idempotent)")
    if not result.ok:
        raise ApplyError(_failure_text(result, "rollback") + f"; {state.path} is kept",
                         fix="fix the cause and run nodetune rollback again (it is idempotent)")
    state.status, state.rolled_back_at = "rolled-back", statefile.utc_now()
    state.save()
    return Report(mode="rollback", profile=state.profile, state_file=state.path,
                  tasks=result.changed, changed=len(result.changed), rejected=result.rejected,
                  hosts=sorted(state.hosts))
