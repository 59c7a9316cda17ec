"""`nodetune profiles list|show` as tables."""

from __future__ import annotations

from typing import Any

from nodetune.audit.operation import AREA_TITLES
from nodetune.facts.model import Severity
from nodetune.rules.operators import OPERATORS, describe
from nodetune.views.audit_text import SEVERITY_STYLE
from nodetune.views.output import console


def print_profile_list(rows: list[dict[str, Any]]) -> None:
    """One row per profile: name, what it extends, how many settings, its summary."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    table = Table(title="Profiles", title_justify="left")
    for col in ("name", "extends", "settings", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"] + (" (user)" if r["user"] else ""), " > ".join(r["extends"]),
                      str(r["settings"]), r["summary"])
    console().print(table)


def print_profile(doc: dict[str, Any]) -> None:
    """One profile, inheritance resolved: its variables and a row per setting."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table
    from rich.text import Text

    out = console()
    out.print(Text.assemble(("Profile ", "bold"), (doc["name"], "bold magenta"),
                            f": {doc['summary']}"))
    out.print(f"inherits: {' > '.join(doc['chain'])}   file: {doc['path']}")
    if doc["variables"]:
        out.print("variables: " + ", ".join(f"{k}={v}" for k, v in doc["variables"].items()))
    table = Table(expand=True, show_lines=False)
    for col, ratio in (("setting", 3), ("severity", 1), ("fact", 4), ("want", 3),
                       ("applies when", 3), ("fix by", 2)):
        table.add_column(col, ratio=ratio, overflow="fold")
    areas = list(AREA_TITLES)
    for s in sorted(doc["settings"], key=lambda s: (areas.index(s["area"]), s["id"])):
        when = "; ".join(f"{c['fact']} {_cond_text(c)}" for c in s["when"]) or "always"
        role = (s["remediation"] or {}).get("role")
        fix_by = f"apply: {role}" if role else "by hand"
        if s["disruption"] != "none":
            fix_by += f" ({s['disruption']})"
        table.add_row(s["id"], Text(s["severity"], style=SEVERITY_STYLE[Severity(s["severity"])]),
                      s["fact"], s["expected"], when, fix_by)
    out.print(table)


def _cond_text(cond: dict[str, Any]) -> str:
    return describe({k: v for k, v in cond.items() if k in OPERATORS})
