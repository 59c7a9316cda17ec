"""The before/after card of `nodetune tune` as plain text (for a change ticket) and on the
terminal."""

from __future__ import annotations

from typing import Any

from nodetune.views.output import console


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"


def card_text(card: dict[str, Any]) -> str:
    node = card["node"]
    lines = [f"nodetune tune card {card['card_id']}",
             f"node:      {node.get('hostname')} (fingerprint {node.get('fingerprint')})",
             f"created:   {card['created']}",
             f"profile:   {card['profile']}",
             f"suites:    {', '.join(card['suites'])}",
             "changes:"]
    lines += [f"  {c['setting']}: {c['from']} -> {c['to']} ({c['status']})"
              for c in card["changes"]] or ["  none"]
    if card["metrics"]:
        width = max(len(m["name"]) for m in card["metrics"])
        lines.append("metrics:")
        lines.append(f"  {'metric':<{width}}  {'before':>10}  {'after':>10}  {'change':>8}  "
                     f"{'noise':>7}  verdict")
        for m in card["metrics"]:
            change = "-" if m["change_percent"] is None else f"{m['change_percent']:+.1f}%"
            verdict = "within noise" if m["verdict"] == "no significant change" else m["verdict"]
            lines.append(f"  {m['name']:<{width}}  {_num(m['before']):>10}  {_num(m['after']):>10}"
                         f"  {change:>8}  ±{m['noise_percent']:>5.1f}%  {verdict}")
    lines.append(f"decision:  {card['decision'] or '-'} -> {card['action']}")
    lines += [f"  {r}" for r in card["reasons"]]
    if card["state_file"]:
        lines.append(f"state file: {card['state_file']}")
    lines += [f"note: {n}" for n in card["notes"]]
    return "\n".join(lines) + "\n"


def show(card: dict[str, Any]) -> None:
    style = {"improved": "green", "unchanged": "dim", "regressed": "bold red",
             "incomparable": "bold yellow"}.get(card["decision"] or "", "")
    out = console()
    text = card_text(card)
    for line in text.splitlines():
        if line.startswith("decision:") and style:
            out.print(f"[{style}]{line}[/]", highlight=False)
        else:
            out.print(line, highlight=False, markup=False)


class LineProgress:
    """Progress for a pipe: one line per finished step, on stderr."""

    def __init__(self) -> None:
        self.description = ""
        self.total = 0
        self.done = 0

    def start(self, description: str, total: int) -> None:
        self.description, self.total, self.done = description, max(1, total), 0

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        console(stderr=True).print(f"{self.description}: {self.done}/{self.total}",
                                   highlight=False, markup=False)
