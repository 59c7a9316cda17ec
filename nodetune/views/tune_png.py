"""The before/after card of `nodetune tune` as a PNG chart: one bar per metric, after as a
percentage of before, coloured by verdict, titled with the node, its fingerprint, the decision
and the card id. Needs matplotlib."""

from __future__ import annotations

from typing import Any

from nodetune.errors import needs_extra

COLORS = {"improved": "tab:green", "regressed": "tab:red", "incomparable": "tab:orange",
          "no significant change": "tab:gray"}


def plot(path: str, card: dict[str, Any]) -> None:
    matplotlib = needs_extra("plot", "matplotlib")  # optional: only `tune --plot` needs it
    matplotlib.use("Agg")
    # deferred: optional extra [plot]
    import matplotlib.pyplot as plt

    metrics = card["metrics"]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.35 * max(1, len(metrics))))
    names = [m["name"] for m in metrics]
    values = [100.0 * m["after"] / m["before"] if m["before"] else 100.0 for m in metrics]
    ax.barh(names, values, color=[COLORS.get(m["verdict"], "tab:gray") for m in metrics])
    ax.axvline(100.0, color="black", linewidth=0.8)
    for i, m in enumerate(metrics):
        ax.text(values[i], i, f" {m['before']:.4g} -> {m['after']:.4g} {m['unit']}",
                va="center", fontsize=7)
    ax.set_xlim(0, max([*values, 100.0]) * 1.4)
    ax.invert_yaxis()
    ax.set_xlabel("after, % of before")
    node = card["node"]
    ax.set_title(f"{node.get('hostname')} ({node.get('fingerprint')}): {card['decision']} -> "
                 f"{card['action']}\nprofile {card['profile']}, card {card['card_id']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
