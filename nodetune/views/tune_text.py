"""The before/after card of `nodetune tune` as plain text (for a change ticket) and on the
terminal."""

from __future__ import annotations

from typing import Any

import click


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


def show_plan(plan: Any, suites: list[str]) -> None:
    """What the cycle will change, before the baseline runs (stderr: stdout holds the card)."""
    lines = [f"nodetune tune: profile {plan.profile}: benchmark {', '.join(suites)}, apply "
             f"{len(plan.settings)} change(s), benchmark again:"]
    lines += [f"  {s.change.key}: {s.change.current} -> {s.change.wanted} "
              f"({s.change.disruption.value}, {s.status})" for s in plan.settings]
    click.echo("\n".join(lines), err=True)


def show(card: dict[str, Any]) -> None:
    """The card on stdout, unwrapped (it goes into tickets), the decision line coloured."""
    color = {"improved": "green", "regressed": "red", "incomparable": "yellow"}.get(
        card["decision"] or "")
    for line in card_text(card).splitlines():
        if line.startswith("decision:") and color:
            click.secho(line, fg=color, bold=True)
        else:
            click.echo(line)
