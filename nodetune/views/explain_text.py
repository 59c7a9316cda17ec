"""`nodetune explain ID` as text: one block per entry of the nodetune.explain/1 document, each
line a label and its value, long values wrapped under the value's column."""

from __future__ import annotations

import shutil
import textwrap
from typing import Any

from nodetune.rules.operators import format_value

LABEL = 12  # width of the label column
MAX_WIDTH = 100


def render(doc: dict[str, Any], width: int | None = None) -> str:
    width = width or min(MAX_WIDTH, shutil.get_terminal_size((MAX_WIDTH, 24)).columns)
    return "\n".join(_entry(e, width) for e in doc["entries"])


def render_list(rows: list[tuple[str, str]]) -> str:
    """`explain --list`: every id and what it is."""
    size = max((len(i) for i, _ in rows), default=0)
    return "".join(f"{i.ljust(size)}  {kind}\n" for i, kind in rows)


def _entry(e: dict[str, Any], width: int) -> str:
    lines: list[str] = []

    def row(label: str, text: str, hang: int = 0) -> None:
        """label, text; wrapped lines start under the text, `hang` columns further in."""
        wrapped = textwrap.wrap(text, width=max(20, width - LABEL - 2),
                                subsequent_indent=" " * hang, break_on_hyphens=False,
                                break_long_words=False) or [""]
        lines.append(f"  {label.ljust(LABEL)}{wrapped[0]}".rstrip())
        lines.extend(f"  {'':{LABEL}}{more}" for more in wrapped[1:])

    if e["kind"] == "check":
        lines.append(f"{e['fault_code']} {e['id']}: health check, {e['area']}, {e['severity']},"
                     f" {e['action']}")
    else:
        lines.append(f"{e['id']}: profile setting, {e['area']}, {e['severity']}")
    row("checks", f"{e['fact']}, wants {e['expected']}" if e["expected"] else e["fact"])
    for cond in e["when"]:
        reason = f" (otherwise skipped: {cond['reason']})" if cond.get("reason") else ""
        row("only when", f"{cond['fact']} {cond['expected']}{reason}")
    if e.get("message"):
        row("message", e["message"])
    row("why", e["why"] or "-")
    for source in e["sources"]:
        row("source", f"[{source['key']}] {source['title'] or '(not in profiles/SOURCES.md)'}")
    row("fix", e["fix"] or "-")
    if e["tunable"]:
        row("tunable", e["tunable"])
    if e["remediation"]:
        rem = e["remediation"]
        variables = "; ".join(f"{k}: {format_value(v)}" for k, v in (rem.get("vars") or {}).items())
        row("apply", f"role {rem.get('role')}, task {rem.get('task')}"
                     + (f" ({variables})" if variables else ""))
    if e["disruption"] != "none":
        row("disruption", e["disruption"])
    if e["persisted"]:
        row("persisted", e["persisted"])
    if e["tiers"]:
        row("tiers", ", ".join(e["tiers"]))
    row("defined in", e["defined_in"])
    if e["kind"] == "check":
        if not e["variables"]:
            row("profiles", "every profile (the expectation uses no profile variable)")
        elif not e["profiles"]:
            row("profiles", f"none sets {', '.join(e['variables'])}: the check is skipped "
                            "unless the command line sets it")
    size = max((len(u["name"]) for u in e["profiles"]), default=0)
    for i, use in enumerate(e["profiles"]):
        severity = f"{use['severity']:<9}" if use["severity"] else ""
        row("profiles" if i == 0 else "", f"{use['name'].ljust(size)}  {severity}{use['expected']}")
        if use.get("why"):
            row("", f"  why: {use['why']}", hang=7)
        if use.get("fix"):
            row("", f"  fix: {use['fix']}", hang=7)
    return "\n".join(lines) + "\n"
