"""`nodetune profiles list|show` as tables."""

from __future__ import annotations

import textwrap
from typing import Any

from nodetune.audit.operation import AREA_TITLES
from nodetune.facts.model import Severity
from nodetune.rules.operators import OPERATORS, describe
from nodetune.views.audit_text import SEVERITY_STYLE
from nodetune.views.output import (
    View,
    cited,
    console,
    fit_table,
    grid_rows,
    legend_lines,
    print_line,
    print_table,
    view,
)


def print_profile_list(rows: list[dict[str, Any]], v: View | None = None) -> None:
    """One row per profile: name, what it extends, how many settings, its summary."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    v = v or view()
    table = Table(title="Profiles", title_justify="left")
    for col in ("name", "extends", "settings", "summary"):
        table.add_column(col, no_wrap=col in ("name", "settings"))
    for r in rows:
        table.add_row(r["name"] + (" (user)" if r["user"] else ""), " > ".join(r["extends"]),
                      str(r["settings"]), r["summary"])
    print_table(console(v=v), table, v, prose=("summary",))


def print_profile(doc: dict[str, Any], v: View | None = None) -> None:
    """One profile, inheritance resolved: its variables, a row per setting (with the keys of
    the sources its `why` cites) and a legend of those sources."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table
    from rich.text import Text

    v = v or view()
    out = console(v=v)
    out.print(Text.assemble(("Profile ", "bold"), (doc["name"], "bold magenta"),
                            f": {doc['summary']}"))
    out.print(f"inherits: {' > '.join(doc['chain'])}   file: {doc['path']}", markup=False)
    if doc["variables"]:
        out.print("variables: " + ", ".join(f"{k}={v}" for k, v in doc["variables"].items()),
                  markup=False)
    headers = ("setting", "severity", "fact", "want", "applies when", "fix by", "sources")
    rows = []
    areas = list(AREA_TITLES)
    for s in sorted(doc["settings"], key=lambda s: (areas.index(s["area"]), s["id"])):
        when = "; ".join(f"{c['fact']} {_cond_text(c)}" for c in s["when"]) or "always"
        role = (s["remediation"] or {}).get("role")
        fix_by = f"apply: {role}" if role else "by hand"
        if s["disruption"] != "none":
            fix_by += f" ({s['disruption']})"
        rows.append([s["id"], s["severity"], s["fact"], s["expected"], when, fix_by,
                     ", ".join(cited([s.get("why") or ""]))])
    table = Table(expand=True, show_lines=False)
    for col, ratio in zip(headers, (3, 1, 4, 3, 3, 2, 1), strict=True):
        table.add_column(col, ratio=ratio, no_wrap=col in ("setting", "severity"))
    for row in rows:
        table.add_row(row[0], Text(row[1], style=SEVERITY_STYLE[Severity(row[1])]),
                      *(Text(cell) for cell in row[2:]))
    if fit_table(out, table, v) <= out.width:
        out.print(table)
    else:  # too narrow for every column: fact, condition and fix go under each setting
        short = [[r[0], r[1], r[3], r[6]] for r in rows]
        header, *lines = grid_rows(short, ("setting", "severity", "want", "sources"), out.width)
        for line in header:
            print_line(out, line)
        for row, row_lines in zip(rows, lines, strict=True):
            for line in row_lines:
                print_line(out, line)
            under = f"fact: {row[2]} | applies when: {row[4]} | fix by: {row[5]}"
            for part in textwrap.wrap(under, max(out.width - 6, 20), break_long_words=False,
                                      break_on_hyphens=False, subsequent_indent="  "):
                print_line(out, "    " + part)
    for line in legend_lines(cited(s.get("why") or "" for s in doc["settings"]), out.width):
        print_line(out, line)


def _cond_text(cond: dict[str, Any]) -> str:
    return describe({k: v for k, v in cond.items() if k in OPERATORS})
