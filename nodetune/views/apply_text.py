"""Show an apply / rollback report: a JSON document (nodetune.apply/1, nodetune.rollback/1) or
rich tables. Rejected kernel values are printed loudly: they are the failures people miss."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from nodetune.audit import tuned
from nodetune.schemas import APPLY_SCHEMA, ROLLBACK_SCHEMA
from nodetune.views.output import console, emit_json, print_table, view

if TYPE_CHECKING:
    from nodetune.apply.ansible import TaskOutcome
    from nodetune.apply.remediate import Plan, Report

_STYLE = {"fixed": "green", "would-change": "yellow", "rendered": "cyan", "applied": "green",
          "pending-reboot": "magenta", "refused": "red", "failed": "bold red", "unknown": "red"}


def to_json(report: Report, prepared: Plan | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"mode": report.mode, "profile": report.profile}
    if prepared is not None:
        doc["root"] = prepared.request.host_root
        doc["profile_note"] = prepared.audit.note
    doc["hosts"] = report.hosts
    doc["settings"] = [{
        "id": s.change.id, "subject": s.change.subject, "area": s.change.area,
        "severity": s.change.severity, "current": s.change.current, "wanted": s.change.wanted,
        "disruption": s.change.disruption.value, "roles": s.change.roles, "status": s.status,
        "after": s.after or None, "message": s.message or None,
    } for s in report.settings]
    doc["manual"] = [{"id": f.id, "subject": f.subject, "current": f.actual,
                      "wanted": f.expected, "fix": f.fix} for f in report.manual]
    doc["changed"] = report.changed
    doc["changes"] = [_task_json(t) for t in report.tasks]
    doc["rejected"] = [{"host": t.host, "task": t.task, "item": t.item, "message": t.rejected}
                       for t in report.rejected]
    doc["state_file"] = str(report.state_file) if report.state_file else None
    doc["render_dir"] = str(report.render_dir) if report.render_dir else None
    if prepared is not None:
        doc["tuned_overrides"] = [{"setting": f.subject, "status": f.status.value,
                                   "tuned": f.actual, "nodetune": f.expected or None,
                                   "message": f.message} for f in _tuned(report, prepared)]
    return doc


def _tuned(report: Report, prepared: Plan) -> list[Any]:
    """The audit's TuneD findings about the settings this report changes."""
    return tuned.for_changes(prepared.audit.findings, (s.change.id for s in report.settings))


def _task_json(task: TaskOutcome) -> dict[str, Any]:
    return {"host": task.host, "role": task.role, "task": task.task, "item": task.item,
            "diff": [{"path": _diff_path(d), "before": d.get("before", ""),
                      "after": d.get("after", "")} for d in task.diffs]}


def _diff_path(diff: dict[str, Any]) -> str:
    """The file an Ansible diff is about (the file module puts it inside before/after)."""
    for side in (diff.get("after"), diff.get("before")):
        if isinstance(side, dict) and side.get("path"):
            return str(side["path"])
    return str(diff.get("before_header") or diff.get("after_header") or "")


def show(report: Report, prepared: Plan | None = None, *, as_json: bool) -> None:
    if as_json:
        emit_json(to_json(report, prepared),
                  ROLLBACK_SCHEMA if report.mode == "rollback" else APPLY_SCHEMA)
        return

    v = view()
    out = console(v=v)
    if prepared is not None and prepared.audit.note:
        out.print(f"profile [bold]{report.profile}[/]: {prepared.audit.note}")
    if report.settings:
        # too wide for the terminal: one record per setting, no value split
        print_table(out, _settings_table(report), v, prose=("status",), stack=2)
    elif report.mode not in ("rollback", "rollback-plan"):
        out.print(f"nothing to apply: every setting of profile {report.profile} that nodetune "
                  "can fix is already right")
    for finding in (_tuned(report, prepared) if prepared is not None else ()):
        tail = ": TuneD puts its value back each time it starts" if finding.subject else ""
        out.print(f"warning: {finding.message}{tail}", markup=False, soft_wrap=True)
    for finding in report.manual:
        subject = escape(f" [{finding.subject}]") if finding.subject else ""
        out.print(f"[dim]manual fix[/] {finding.id}{subject}: {escape(finding.fix)}")
    _print_tasks(out, report)
    for task in report.rejected:
        out.print(f"[bold red]KERNEL REJECTED[/] on {task.host}: {task.rejected}")
    _print_footer(out, report)


def _settings_table(report: Report) -> Any:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    table = Table(title=f"nodetune {report.mode}: profile {report.profile}", title_justify="left")
    for column in ("setting", "subject", "current -> wanted", "disruption", "status"):
        table.add_column(column)
    for s in report.settings:
        after = f" (now {s.after})" if s.after and s.status != "fixed" else ""
        status = f"[{_STYLE.get(s.status, '')}]{s.status}[/]"
        if s.message:
            status += f"\n[dim]{s.message}[/]"
        table.add_row(s.change.id, s.change.subject or "-",
                      f"{s.change.current} -> {s.change.wanted}{after}",
                      s.change.disruption.value, status)
    return table


def _print_tasks(out: Any, report: Report) -> None:
    """Every change Ansible made or would make, as a whole unified diff: through a pager on a
    terminal when it does not fit, printed whole when piped."""
    if not report.tasks:
        return
    verb = "would change" if report.mode in ("dry-run", "rollback-plan") else "changed"
    text = f"Ansible {verb} {report.changed} item(s):\n" + diff_text(report.tasks)
    if out.is_terminal and text.count("\n") > out.height - 2:
        click.echo_via_pager(text)
    else:
        out.print(text, markup=False, highlight=False, end="", soft_wrap=True)


def diff_text(tasks: list[TaskOutcome]) -> str:
    """The tasks' changes as one unified diff, each preceded by `# host: task (item)`."""
    parts = []
    for task in tasks:
        label = f" ({task.item})" if task.item else ""
        parts.append(f"# {task.host}: {task.task}{label}\n")
        parts.extend(diff_lines(d) for d in task.diffs)
    return "".join(parts)


def diff_lines(diff: dict[str, Any]) -> str:
    """One Ansible diff as unified diff text (file state changes as `path: key old -> new`)."""
    path = _diff_path(diff)
    before, after = diff.get("before", ""), diff.get("after", "")
    if isinstance(before, dict) or isinstance(after, dict):  # file module: state changes
        old = before if isinstance(before, dict) else {}
        new = after if isinstance(after, dict) else {}
        return "".join(f"{path}: {k} {old.get(k)} -> {new.get(k)}\n"
                       for k in new if k != "path" and old.get(k) != new.get(k))
    lines = difflib.unified_diff(_lines(before), _lines(after), fromfile=f"a{path}",
                                 tofile=f"b{path}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _lines(text: Any) -> list[str]:
    return str(text or "").splitlines(keepends=True)


def _print_footer(out: Any, report: Report) -> None:
    if report.mode == "dry-run":
        pending = sum(1 for s in report.settings if s.status in ("would-change", "refused"))
        out.print(f"dry run: nothing was changed; {pending} of {len(report.settings)} "
                  "setting(s) would change.", markup=False)
        if pending and report.next_command:
            out.print(f"To apply: {report.next_command}", markup=False, soft_wrap=True)
    elif report.mode == "render-only":
        if report.render_inventory is None:
            out.print("nothing to render: no setting that nodetune can fix is failing")
        else:
            out.print(f"wrote an Ansible project to {report.render_dir} (run: cd "
                      f"{report.render_dir} && ansible-playbook site.yml --check --diff)",
                      markup=False, soft_wrap=True)
    elif report.mode == "apply" and report.state_file is None:
        out.print("nothing changed: the host already holds every value this apply would set")
    elif report.mode == "apply":
        counts = {k: sum(1 for s in report.settings if s.status == k)
                  for k in ("fixed", "applied", "pending-reboot", "failed", "unknown")}
        done = ", ".join(f"{n} {k.replace('-', ' ')}" for k, n in counts.items()
                         if n or k in ("fixed", "failed"))
        out.print(f"{len(report.settings)} setting(s): {done}. Previous values: "
                  f"{report.state_file} (undo: nodetune rollback --state-file "
                  f"{report.state_file})", markup=False, soft_wrap=True)
    elif report.mode == "rollback":
        out.print(f"rolled back {report.changed} change(s) recorded in {report.state_file}")
