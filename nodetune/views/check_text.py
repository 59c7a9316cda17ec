"""`nodetune check` as text: the summary line (a ready-made Slurm drain reason), then one line
per fault, warning, timeout and error. Plain strings: no rich, since this runs before every job."""

from __future__ import annotations

from typing import Any

from nodetune.views.ascii import ascii_only, to_ascii


def render_text(doc: dict[str, Any], verbose: bool = False) -> str:
    """The summary line, then one line per fault, warning, timeout and error."""
    lines = [doc["summary"]]
    for kind, items in (("FAIL", doc["faults"]), ("WARN", doc["warnings"])):
        for item in items:
            subject = f"{item['subject']}: " if item.get("subject") else ""
            lines.append(f"  {kind} {item['fault_code']} {item['id']}: {subject}"
                         f"{_detail(item)}")
    lines += [f"  ERROR {e}" for e in doc.get("errors") or []]
    if verbose:
        for c in doc["checks"]:
            note = f" ({c['note']})" if c.get("note") else ""
            lines.append(f"  {c['status']:<8} {c['fault_code']} {c['id']}{note}")
    if doc.get("from_agent"):
        lines.append(f"  (the agent's answer, {doc.get('agent_age_s')} s old)")
    elif doc.get("cached"):
        lines.append(f"  (cached result, {doc.get('cache_age_s')} s old)")
    text = "\n".join(lines) + "\n"
    return to_ascii(text) if ascii_only() else text


def _detail(item: dict[str, Any]) -> str:
    if item.get("timed_out"):
        return str(item["message"])
    return f"{item['message']} [actual {item.get('actual')}, expected {item.get('expected')}]"
