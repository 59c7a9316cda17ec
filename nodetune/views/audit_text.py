"""The human view of an audit.

By default one line per failing or unknown setting, worst first (severity, setting, subjects,
what the profile wants, what is in effect now), then a one-line summary. `-v` adds, for each
finding, why it matters and how to fix it, and a legend of the sources cited: as one boxed
table per area on a terminal at least 100 columns wide, else each finding's explanation
indented under its line.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nodetune.audit.operation import AREA_TITLES, AuditResult, sort_key
from nodetune.facts.model import Finding, Severity, Status
from nodetune.views.output import (
    PIPED_WIDTH,
    UNLIMITED,
    View,
    cited,
    grid_lines,
    grid_rows,
    legend_lines,
    print_line,
    print_table,
)

if TYPE_CHECKING:
    from rich.console import Console

SEVERITY_STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow",
                  Severity.INFO: "cyan"}
TABLE_MIN_WIDTH = 100  # narrower terminals get the explanations under each finding
PROSE_WIDTH = 100  # explanations under a finding wrap here when the width has no limit
LONG_VALUE = 40  # a longer value shows as the finding's own message in the one-line view
MANY = 4  # more subjects show as "first ... last (count)" in the one-line view
COLUMNS = ("severity", "setting", "subject", "want", "now")


def render(result: AuditResult, out: Console, v: View, verbose: bool = False) -> None:
    """The profile line and notes, the findings (compact, or explained with `verbose`), the
    sources legend (with `verbose`) and the summary line."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.text import Text

    prof = result.profile
    how = "matched" if result.match.automatic else "chosen"
    # plain output keeps these on one line each, for grep; a terminal wraps them at words
    out.print(Text.assemble(("Profile ", "bold"), (prof.name, "bold magenta"),
                            f" ({' > '.join(prof.chain)}), {how}: {result.match.reason}"),
              soft_wrap=v.plain)
    for note in result.notes:
        out.print(Text(f"Note: {note}", style="bold" if "no NVIDIA GPU" in note else "dim"),
                  soft_wrap=v.plain)
    shown = [f for f in result.findings if f.status in (Status.FAIL, Status.UNKNOWN)]
    if not verbose:
        _compact(shown, out, v)
    elif v.plain or out.width < TABLE_MIN_WIDTH:
        _explained(shown, out, v)
    else:
        _tables(shown, out, v)
    legend = legend_lines(cited(f.why for f in shown), out.width) if verbose else []
    if legend:
        out.print("")
    for line in legend:
        print_line(out, line)
    out.print(summary_line(result), markup=False, soft_wrap=v.plain)


# -- the one-line view --------------------------------------------------------------------------

def _by_setting(shown: list[Finding]) -> list[list[Finding]]:
    """The findings of each setting, settings worst first (findings come sorted)."""
    settings: dict[str, list[Finding]] = {}
    for f in sorted(shown, key=sort_key):
        settings.setdefault(f.id, []).append(f)
    return list(settings.values())


def compact_row(findings: list[Finding], sep: str = "; ", short: bool = True) -> list[str]:
    """severity, setting, subjects, want, now: one setting on one line (values that differ
    by subject joined by `sep`). With `short` (the default view; -v shows everything): more
    than MANY subjects as `first ... last (count)`, values that differ across more than two
    subjects as the first and a count, a long value of one finding as its message."""
    worst = findings[0]
    severity = max((f.severity for f in findings), key=lambda s: s.rank).value
    if all(f.status is Status.UNKNOWN for f in findings):
        severity = f"? {severity}"
    subjects = [f.subject for f in findings if f.subject]
    subject = ", ".join(subjects)
    want = _per_subject(findings, lambda f: f.expected, sep)
    now = _per_subject(findings, _now, sep)
    if short:
        if len(subjects) > MANY:
            subject = f"{subjects[0]} ... {subjects[-1]} ({len(subjects)})"
        if len(findings) > 2 and len({_now(f) for f in findings}) > 1:
            now = f"{worst.subject}: {_now(worst)}{sep}+{len(findings) - 1} more (-v)"
        if len(now) > LONG_VALUE and len(findings) == 1 and _custom(worst):
            now = worst.message
    return [severity, worst.id, subject, want, now]


def _drop_empty_subjects(rows: list[list[str]]) -> tuple[list[list[str]], tuple[str, ...]]:
    """Without the subject column when no finding has a subject."""
    if any(row[2] for row in rows):
        return rows, COLUMNS
    return [row[:2] + row[3:] for row in rows], COLUMNS[:2] + COLUMNS[3:]


def _now(f: Finding) -> str:
    if f.status is Status.UNKNOWN:
        return "unknown"
    now = f.actual
    if f.persisted is not None and f.persisted != f.actual:
        now += f" (persisted: {f.persisted})"
    if f.needs_reboot:
        now += " (needs reboot)"
    return now


def _compact(shown: list[Finding], out: Console, v: View) -> None:
    if not shown:
        return
    rows = [compact_row(group) for group in _by_setting(shown)]
    if v.plain:
        rows, headers = _drop_empty_subjects(rows)
        for line in grid_lines(rows, headers, out.width if v.width else None):
            print_line(out, line)
        return
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=False, header_style="bold")
    table.add_column("severity", no_wrap=True)
    table.add_column("setting", ratio=2)  # the id, its subjects under it
    table.add_column("want", ratio=2)
    table.add_column("now", ratio=3)
    for row in (compact_row(group, "\n") for group in _by_setting(shown)):
        sev = row[0].removeprefix("? ")
        setting = Text(row[1], style="bold")
        if row[2]:
            setting.append("\n" + row[2], style="dim")
        table.add_row(Text(row[0], style="dim" if row[0].startswith("?")
                           else SEVERITY_STYLE[Severity(sev)]), setting, *row[3:])
    print_table(out, table, v)


# -- the explained views --------------------------------------------------------------------

def _by_area(shown: list[Finding]) -> list[tuple[str, list[Finding]]]:
    by_area: dict[str, list[Finding]] = {}
    for f in shown:
        by_area.setdefault(f.area, []).append(f)
    return [(a, by_area[a]) for a in sorted(by_area, key=lambda a: sort_key(by_area[a][0]))]


def _explained(shown: list[Finding], out: Console, v: View) -> None:
    """Per area: each finding's line, then its message, reason, why and fix indented."""
    room = out.width if out.width < UNLIMITED else PIPED_WIDTH
    prose_width = min(room, PROSE_WIDTH) - 4
    areas = [(area, _groups(rows)) for area, rows in _by_area(shown)]
    groups = [g for _, gs in areas for g in gs]
    if not groups:
        return
    rows, headers = _drop_empty_subjects([compact_row(g, "\n", short=False) for g in groups])
    header, *lines = grid_rows(rows, headers, room)
    for line in header:
        print_line(out, line)
    at = 0
    for area, area_groups in areas:
        out.print("")
        out.print(f"{AREA_TITLES.get(area, area)}:", markup=False, style="bold")
        for group in area_groups:
            for line in lines[at]:
                print_line(out, line)
            at += 1
            for text in _explanation(group):
                for part in textwrap.wrap(text, prose_width, break_on_hyphens=False,
                                          subsequent_indent="  ") or [""]:
                    print_line(out, "    " + part)


def _explanation(group: list[Finding]) -> list[str]:
    f = group[0]
    texts = []
    custom = [g for g in group if _custom(g)]
    if custom and f.status is Status.FAIL:
        texts += _per_subject(custom, lambda g: g.message, "\n").split("\n")
    if f.status is Status.UNKNOWN:
        texts.append("could not check" + ("" if not f.actual.startswith("unknown") else
                                          ": " + _reason(f)))
    if f.why:
        texts.append(f.why)
    if f.fix and f.status is Status.FAIL:
        varies = len({g.fix for g in group}) > 1
        fix = "fix: " + ("e.g. " if varies else "") + f.fix
        if f.disruption.value != "none":
            fix += f" ({f.disruption.value})"
        texts.append(fix)
    return texts


def _reason(f: Finding) -> str:
    reason = f.actual.removeprefix("unknown").strip()
    return reason[1:-1] if reason.startswith("(") and reason.endswith(")") else (
        reason or f.message)


def _tables(shown: list[Finding], out: Console, v: View) -> None:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    for area, rows in _by_area(shown):
        three_state = any(f.persisted is not None for f in rows)
        table = Table(title=AREA_TITLES.get(area, area), title_justify="left", expand=True,
                      show_lines=True, title_style="bold")
        table.add_column("severity", no_wrap=True)
        table.add_column("setting")
        table.add_column("want", ratio=2)
        if three_state:
            table.add_column("persisted", ratio=2)
        table.add_column("now", ratio=2)
        table.add_column("impact / fix", ratio=5)
        for group in _groups(rows):
            table.add_row(*_row(group, three_state))
        print_table(out, table, v, prose=("impact / fix",))


def _groups(rows: list[Finding]) -> list[list[Finding]]:
    """Findings that differ only in their subject share one row (ten NVMe drives, one line)."""
    groups: dict[tuple[Any, ...], list[Finding]] = {}
    for f in rows:
        key = (f.id, f.status, f.expected, f.persisted, f.needs_reboot)
        groups.setdefault(key, []).append(f)
    return list(groups.values())


def _row(group: list[Finding], three_state: bool) -> list[Any]:
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
    for i, text in enumerate(_explanation(group)):
        if text.startswith("fix: "):
            details.append("\nfix: ", style="bold")
            details.append(text.removeprefix("fix: "))
        else:
            details.append(("\n" if i else "") + text,
                           style="dim" if text.startswith("could not check") else "")
    cells: list[Any] = [sev, setting, f.expected]
    if three_state:
        persisted = Text(f.persisted or "")
        if f.needs_reboot:
            persisted.append("\nneeds reboot", style="bold yellow")
        cells.append(persisted)
    cells += [now, details]
    return cells


def _per_subject(group: list[Finding], text: Callable[[Finding], str], sep: str = "\n") -> str:
    """One text when the group agrees, else one `subject: text` per subject."""
    values = [text(g) for g in group]
    if len(set(values)) == 1:
        return values[0]
    return sep.join(f"{g.subject}: {v}" for g, v in zip(group, values, strict=True))


def _custom(f: Finding) -> bool:
    """A message of the setting's own, not the generic `fact is X, expected Y`."""
    return bool(f.message) and not f.message.startswith(f"{_tail(f)} is")


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
