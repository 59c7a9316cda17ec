"""The human view of an audit: one table per area, worst first, and a one-line summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nodetune.audit.operation import AREA_TITLES, AuditResult, sort_key
from nodetune.facts.model import Finding, Severity, Status

if TYPE_CHECKING:
    from rich.console import Console

SEVERITY_STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow",
                  Severity.INFO: "cyan"}


def render(result: AuditResult, out: Console) -> None:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table
    from rich.text import Text

    prof = result.profile
    how = "matched" if result.match.automatic else "chosen"
    out.print(Text.assemble(("Profile ", "bold"), (prof.name, "bold magenta"),
                            f" ({' > '.join(prof.chain)}), {how}: {result.match.reason}"))
    for note in result.notes:
        out.print(Text(f"Note: {note}", style="bold" if "no NVIDIA GPU" in note else "dim"))
    shown = [f for f in result.findings if f.status in (Status.FAIL, Status.UNKNOWN)]
    by_area: dict[str, list[Finding]] = {}
    for f in shown:
        by_area.setdefault(f.area, []).append(f)
    for area in sorted(by_area, key=lambda a: sort_key(by_area[a][0])):
        rows = by_area[area]
        three_state = any(f.persisted is not None for f in rows)
        # below ~110 columns the persisted value goes under "now", so ids keep their width
        persisted_column = three_state and out.width >= 110
        table = Table(title=AREA_TITLES.get(area, area), title_justify="left", expand=True,
                      show_lines=True, title_style="bold")
        table.add_column("severity", no_wrap=True)
        # ids never break; the subjects below them wrap at ", "
        id_width = max(len(f.id) for f in rows)
        table.add_column("setting", min_width=id_width, max_width=max(id_width, 28),
                         overflow="fold")
        table.add_column("want", ratio=2, overflow="fold")
        if persisted_column:
            table.add_column("persisted", ratio=2, overflow="fold")
        table.add_column("now", ratio=2, overflow="fold")
        table.add_column("impact / fix", ratio=5)
        for group in _groups(rows):
            table.add_row(*_row(group, three_state, persisted_column))
        out.print(table)
    out.print(summary_line(result))


def _groups(rows: list[Finding]) -> list[list[Finding]]:
    """Findings that differ only in their subject share one row (ten NVMe drives, one line)."""
    groups: dict[tuple[Any, ...], list[Finding]] = {}
    for f in rows:
        key = (f.id, f.status, f.expected, f.persisted, f.needs_reboot)
        groups.setdefault(key, []).append(f)
    return list(groups.values())


def _row(group: list[Finding], three_state: bool, persisted_column: bool) -> list[Any]:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.text import Text

    f = group[0]
    if f.status is Status.UNKNOWN:
        sev = Text(f"? {f.severity.value}", style="dim")
    else:
        sev = Text(f.severity.value, style=SEVERITY_STYLE[f.severity])
    setting = Text(f.id, style="bold")
    subjects = [g.subject for g in group if g.subject]
    if subjects:
        setting.append("\n" + ", ".join(subjects), style="dim")
    now = Text(_per_subject(group, lambda g: g.actual),
               style="dim" if f.status is Status.UNKNOWN else "")
    details = Text()
    custom = [g for g in group if g.message and not g.message.startswith(f"{_tail(g)} is")]
    if custom and f.status is Status.FAIL:
        details.append(_per_subject(custom, lambda g: g.message) + "\n")
    if f.status is Status.UNKNOWN:
        details.append("could not check" + ("" if f.actual.startswith("unknown") else
                                            ": " + f.message) + "\n", style="dim")
    details.append(f.why)
    if f.fix and f.status is Status.FAIL:
        details.append("\nfix: ", style="bold")
        varies = len({g.fix for g in group}) > 1
        details.append(("e.g. " if varies else "") + f.fix)
        if f.disruption.value != "none":
            details.append(f" ({f.disruption.value})", style="dim")
    cells: list[Any] = [sev, setting, f.expected]
    if three_state:
        persisted = Text(f.persisted or "")
        if f.needs_reboot:
            persisted.append("\nneeds reboot", style="bold yellow")
        if persisted_column:
            cells.append(persisted)
        elif f.persisted is not None or f.needs_reboot:
            now.append("\npersisted:\n", style="dim")
            now.append(persisted)
    cells += [now, details]
    return cells


def _per_subject(group: list[Finding], text: Callable[[Finding], str]) -> str:
    """One text when the group agrees, else one line per subject."""
    values = [text(g) for g in group]
    if len(set(values)) == 1:
        return values[0]
    return "\n".join(f"{g.subject}: {v}" for g, v in zip(group, values, strict=True))


def _tail(f: Finding) -> str:
    return f.fact.rsplit("]", 1)[-1].lstrip(".") or f.fact


def summary_line(result: AuditResult) -> str:
    s = result.summary()
    failed = s["failed"]
    parts = [f"{result.profile.name}: {result.verdict}",
             f"{failed['critical']} critical, {failed['warning']} warning, "
             f"{failed['info']} info failed",
             f"{s['pass']} passed, {s['unknown']} unknown, {s['skipped']} skipped"]
    if s["needs_reboot"]:
        parts.append(f"{s['needs_reboot']} need a reboot")
    parts.append(f"compliance {s['compliance_score']:.1f}%")
    return " | ".join(parts)
