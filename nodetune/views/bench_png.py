"""`--plot FILE.png`: bandwidth-vs-size curves and a before/after (or measured/expected) chart.

Left: every size sweep of the run (all-reduce busbw; memcpy copies when measured at several
sizes), one line per kind of measurement (the median over GPUs, NUMA nodes or GPU pairs), the
baseline's dashed. Right: one bar per kind of measurement — the worst of its results — as a
percentage of the baseline (or, without a baseline, of the expected value), labelled with the
absolute values and coloured by verdict (improved / regressed / within noise) or status
(ok / low / no minimum).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from nodetune.bench import stats
from nodetune.bench.results import Metric, SuiteResult, size_label
from nodetune.errors import needs_extra

if TYPE_CHECKING:
    from matplotlib.axes import Axes

SEVERITY = {"regressed": 0, "low": 0, "no significant change": 1, None: 1, "ok": 2,
            "improved": 2}  # which result of a kind gets the bar: the worst verdict first
COLORS = {"ok": "tab:green", "improved": "tab:green", "low": "tab:red", "regressed": "tab:red",
          None: "tab:gray", "no significant change": "tab:gray"}


def _kind(m: Metric) -> str:
    """"memcpy.h2d_pinned.GPU0.node0.256MiB" -> "memcpy.h2d_pinned"."""
    return ".".join(m.key.split(".")[:2])


def _curves(suites: list[SuiteResult]) -> dict[str, list[tuple[int, float]]]:
    """Kind -> [(size, median over subjects)] for kinds measured at 3 or more sizes."""
    points: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for suite in suites:
        for m in suite.metrics:
            if m.size_bytes and m.unit == "GB/s":
                points[_kind(m)][m.size_bytes].append(m.value)
    return {kind: sorted((size, stats.median(v)) for size, v in by_size.items())
            for kind, by_size in points.items() if len(by_size) >= 3}


def _largest_sizes(metrics: list[Metric]) -> list[Metric]:
    """Each kind's metrics at the largest size it was measured at."""
    largest: dict[str, int] = {}
    for m in metrics:
        largest[_kind(m)] = max(largest.get(_kind(m), 0), m.size_bytes or 0)
    return [m for m in metrics if (m.size_bytes or 0) == largest[_kind(m)]]


Bar = tuple[str, float, str, "str | None"]  # label, percent, note, verdict


def bars(suites: list[SuiteResult], old: dict[str, Metric] | None) -> list[Bar]:
    """(label, percent, note, verdict) per kind: its worst result against the reference."""
    worst: dict[str, tuple[tuple[int, float], Metric, float, str | None]] = {}
    counts: dict[str, int] = defaultdict(int)
    metrics = [m for s in suites for m in s.metrics]
    # against a baseline every size counts (a regression at one size is worth a bar);
    # against expectations the largest size (small messages never reach link bandwidth)
    for m in metrics if old is not None else _largest_sizes(metrics):
        if old is not None:
            if m.key not in old:
                continue
            reference = old[m.key].value
            verdict: str | None = stats.compare(old[m.key].samples, m.samples,
                                                higher_is_better=m.higher_is_better).verdict
        elif m.expected is not None:
            reference, verdict = m.expected.value, m.status
        else:
            continue
        if not reference:
            continue
        percent = 100 * m.value / reference
        better = percent if m.higher_is_better else 100 * reference / m.value if m.value else 0
        score = (SEVERITY.get(verdict, 1), better)
        counts[_kind(m)] += 1
        if _kind(m) not in worst or score < worst[_kind(m)][0]:
            worst[_kind(m)] = (score, m, reference, verdict)
    out = []
    for kind, (_, m, reference, verdict) in worst.items():
        n = counts[kind]
        label = m.name if n == 1 else f"{m.name} (worst of {n})"
        note = (f"{_short(reference)} → {_short(m.value)} {m.unit}" if old is not None
                else f"{_short(m.value)} of {_short(reference)} {m.unit}")
        out.append((label, 100 * m.value / reference, note, verdict))
    return out


def plot(path: str, suites: list[SuiteResult], baseline: list[SuiteResult] | None = None) -> None:
    matplotlib = needs_extra("plot", "matplotlib")  # optional: only `bench --plot` needs it
    matplotlib.use("Agg")
    # deferred: optional extra [plot]
    import matplotlib.pyplot as plt

    curves = _curves(suites)
    before_curves = _curves(baseline or [])
    old = {m.key: m for s in baseline for m in s.metrics} if baseline else None
    rows = bars(suites, old)
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, max(5.0, 0.5 * len(rows) + 2.5)),
                                      gridspec_kw={"width_ratios": [1, 1.15]})
    _curve_chart(left, curves, before_curves)
    _bar_chart(right, rows, baseline is not None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve_chart(ax: Axes, curves: dict[str, list[tuple[int, float]]],
                 before: dict[str, list[tuple[int, float]]]) -> None:
    if not curves:
        ax.axis("off")
        ax.text(0.5, 0.5, "no size sweep in this run", ha="center", va="center")
        return
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
              "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    for i, (kind, points) in enumerate(sorted(curves.items())):
        color = colors[i % len(colors)]
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", color=color,
                label=kind)
        if kind in before:
            pts = before[kind]
            ax.plot([s for s, _ in pts], [v for _, v in pts], linestyle="--", color=color,
                    alpha=0.6, label=f"{kind} (baseline)")
    ax.set_xscale("log", base=2)
    values = [v for pts in curves.values() for _, v in pts if v > 0]
    if values and max(values) / min(values) > 20:
        # deferred: optional extra [plot]
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ticks = sorted({s for pts in curves.values() for s, _ in pts})
    ax.set_xticks(ticks, [size_label(t) for t in ticks], rotation=45, ha="right")
    ax.set_xlabel("message / buffer size")
    ax.set_ylabel("GB/s (median over GPUs / pairs / nodes)")
    ax.set_title("bandwidth vs size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _bar_chart(ax: Axes, rows: list[Bar], against_baseline: bool) -> None:
    if not rows:
        ax.axis("off")
        ax.text(0.5, 0.5, "nothing to compare with", ha="center", va="center")
        return
    slots = max(len(rows), 6)  # a few bars stay thin and at the top
    y = [slots - 1 - i for i in range(len(rows))]
    percents = [p for _, p, _, _ in rows]
    ax.barh(y, percents, height=0.6, color=[COLORS.get(v, "tab:gray") for *_, v in rows],
            alpha=0.8)
    ax.set_ylim(-0.6, slots - 0.4)
    ax.axvline(100, color="black", linewidth=1)
    ax.set_yticks(y, [label for label, *_ in rows], fontsize=8)
    for yy, (_, percent, note, _) in zip(y, rows, strict=True):
        ax.text(percent + 1, yy, note, va="center", fontsize=8)
    ax.set_xlim(0, max(max(percents) * 1.5, 150))
    if against_baseline:
        ax.set_xlabel("% of baseline (green: improved, red: regressed, grey: within noise)")
        ax.set_title("after vs before")
    else:
        ax.set_xlabel("% of expected (green: ok, red: below minimum, grey: no minimum)")
        ax.set_title("measured vs expected")
    ax.grid(True, axis="x", alpha=0.3)


def _short(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
