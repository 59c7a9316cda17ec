"""`fleet report --html FILE`: one self-contained page (inline CSS, plots as base64 PNG).

Plots: failing nodes per setting (bars coloured by severity), and for every benchmark metric
family of every profile ("memcpy.h2d_pinned", "allreduce.busbw") the distribution of each
metric over the nodes, as a percentage of its median, outliers in red and named, the outlier
threshold dashed. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import base64
import io
import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodetune.errors import NodetuneError, needs_extra
from nodetune.fleet.aggregate import Fleet
from nodetune.fleet.report import natural
from nodetune.views.fleet_text import hosts_text, num
from nodetune.views.templating import render

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEVERITY_COLORS = {"critical": "#c62828", "warning": "#ef8f00", "info": "#1e88e5"}
POINTS_PER_METRIC = 300  # nodes drawn per metric besides its outliers (a random sample)
HOSTS_NAMED = 8  # outlier nodes named per plot, worst first
MAX_COLUMNS = 64  # metrics per distribution plot


def family(key: str) -> str:
    """"memcpy.h2d_pinned.GPU0.node0.64MiB" -> "memcpy.h2d_pinned"."""
    return ".".join(key.split(".")[:2])


def _png(fig: Figure, tight: bool = True) -> str:
    # deferred: optional extra [plot]
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def compliance_chart(doc: dict[str, Any], top: int) -> str | None:
    """Horizontal bars: nodes failing each setting, most severe first (log scale when the
    counts span more than 20x, so one failing node still shows next to thousands)."""
    failing = [s for s in doc["settings"] if s["nodes_failed"]][:top]
    if not failing:
        return None
    # deferred: optional extra [plot]
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.3 * len(failing)))
    rows = failing[::-1]
    counts = [s["nodes_failed"] for s in rows]
    ax.barh([s["id"] for s in rows], counts,
            color=[SEVERITY_COLORS.get(s["severity"], "#777777") for s in rows])
    if max(counts) > 20 * min(counts):
        ax.set_xscale("log")
    for y, s in enumerate(rows):
        ax.text(s["nodes_failed"], y, f"  {s['nodes_failed']} of {s['nodes_checked']}",
                va="center", fontsize=8)
    ax.set_xlim(right=max(counts) * (4 if ax.get_xscale() == "log" else 1.25))
    ax.set_xlabel("nodes failing the setting" +
                  (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.tick_params(axis="y", labelsize=8)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in SEVERITY_COLORS.values()]
    ax.legend(handles, list(SEVERITY_COLORS), loc="lower right", bbox_to_anchor=(1.0, 1.0),
              ncol=3, fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def distribution_charts(doc: dict[str, Any], fleet: Fleet) -> list[dict[str, str]]:
    """One strip plot per profile and metric family."""
    stats = {(m["profile"], m["key"]): m for m in doc["outliers"]["metrics"]}
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for profile, key in sorted(fleet.metrics, key=lambda slot: (slot[0], natural(slot[1]))):
        if stats.get((profile, key), {}).get("threshold") is not None:
            groups[(profile, family(key))].append((profile, key))
    charts = []
    for (profile, fam), slots in sorted(groups.items()):
        for start in range(0, len(slots), MAX_COLUMNS):
            part = slots[start:start + MAX_COLUMNS]
            title = f"{profile}: {fam}" + (f" ({start // MAX_COLUMNS + 1})"
                                            if len(slots) > MAX_COLUMNS else "")
            charts.append({"title": title,
                           "png": _strip_plot(part, stats, fleet)})
    return charts


def _strip_plot(slots: list[tuple[str, str]], stats: dict[Any, Any], fleet: Fleet) -> str:
    # deferred: optional extra [plot]
    import matplotlib.pyplot as plt

    rng = random.Random(0)  # the same sample of nodes on every run
    rotate = len(slots) > 10
    width = min(22.0, max(6.0, (0.42 if rotate else 0.8) * len(slots) + 1.5))
    fig, ax = plt.subplots(figsize=(width, 5.6 if rotate else 4.6))
    fig.subplots_adjust(left=0.9 / width, right=1 - 0.3 / width, top=0.93,
                        bottom=0.3 if rotate else 0.14)
    ticks = []
    normal_xy: tuple[list[float], list[float]] = ([], [])
    outlier_xy: tuple[list[float], list[float]] = ([], [])
    limits: tuple[list[float], list[float], list[float]] = ([], [], [])
    worst: dict[str, tuple[float, int, float]] = {}  # host -> (z, column, y) of its worst point
    for x, slot in enumerate(slots):
        m, values = stats[slot], fleet.metrics[slot]
        median = m["median"] or 1.0
        outlier_nodes = {o["host"] for o in m["outliers"]}
        normal = [v for v, i in zip(values.values, values.nodes, strict=True)
                  if fleet.nodes[i].host not in outlier_nodes]
        if len(normal) > POINTS_PER_METRIC:
            normal = rng.sample(normal, POINTS_PER_METRIC)
        normal_xy[0].extend(x + rng.uniform(-0.28, 0.28) for _ in normal)
        normal_xy[1].extend(100.0 * v / median for v in normal)
        for o in m["outliers"]:
            y = 100.0 * o["value"] / median
            outlier_xy[0].append(x + rng.uniform(-0.12, 0.12))
            outlier_xy[1].append(y)
            if o["host"] not in worst or abs(o["z"]) > abs(worst[o["host"]][0]):
                worst[o["host"]] = (o["z"], x, y)
        if m["threshold"] is not None:
            limits[0].append(100.0 * m["threshold"] / median)
            limits[1].append(x - 0.4)
            limits[2].append(x + 0.4)
        label = m["key"].split(".", 2)[2] if m["key"].count(".") >= 2 else m["key"]
        ticks.append(f"{label}\n{num(m['median'])} {m['unit']}")
    ax.scatter(*normal_xy, s=6, color="#7f8c99", alpha=0.45, linewidths=0)
    ax.scatter(*outlier_xy, s=22, color="#d32f2f", zorder=3)
    ax.hlines(*limits, color="#d32f2f", linestyle="--", linewidth=0.8)
    named = sorted(worst.items(), key=lambda kv: -abs(kv[1][0]))[:HOSTS_NAMED]
    for n, (host, (_, x, y)) in enumerate(named):
        ax.annotate(host, (x, y), xytext=(6, 9 * (n % 3) - 9), textcoords="offset points",
                    fontsize=7, color="#b71c1c",
                    arrowprops={"arrowstyle": "-", "color": "#e57373", "linewidth": 0.5})
    if len(worst) > len(named):
        ax.text(1.0, 1.02, f"{len(worst)} outlier nodes; the {len(named)} worst named",
                transform=ax.transAxes, ha="right", fontsize=7, color="#b71c1c")
    ax.axhline(100.0, color="#444444", linewidth=0.6)
    ax.set_xlim(-0.6, len(slots) - 0.4)
    ax.set_xticks(range(len(slots)), ticks, rotation=90 if rotate else 0, fontsize=7)
    ax.set_ylabel("% of the metric's median")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig, tight=False)


def render_html(doc: dict[str, Any], fleet: Fleet, top: int = 20) -> str:
    matplotlib = needs_extra("plot", "matplotlib")  # optional: `fleet report` text runs without it
    matplotlib.use("Agg", force=True)

    failing = [s for s in doc["settings"] if s["nodes_failed"]]
    outlier_rows = sorted(((m, o) for m in doc["outliers"]["metrics"] for o in m["outliers"]),
                          key=lambda r: -abs(r[1]["z"]))
    return render("fleet/report.html.j2", doc=doc, top=top, failing=failing[:top],
                  failing_more=max(0, len(failing) - top), nodes=doc["nodes"][:top],
                  outlier_rows=outlier_rows[:top],
                  outlier_more=max(0, len(outlier_rows) - top),
                  compliance_png=compliance_chart(doc, top),
                  charts=distribution_charts(doc, fleet), hosts_text=hosts_text, num=num,
                  severity_colors=SEVERITY_COLORS)


def write_html(path: Path, doc: dict[str, Any], fleet: Fleet, top: int = 20) -> None:
    text = render_html(doc, fleet, top)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NodetuneError(f"cannot write {path}: {exc.strerror}",
                            fix="give a writable path to --html") from exc
