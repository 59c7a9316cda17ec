"""Subjects (GPUs, node pairs) that fall below their expectation or below their peers."""

from __future__ import annotations

import statistics
from typing import Any

from nodetune.bench import stats
from nodetune.bench.results import Metric

PEER_NOISE = 0.05  # subjects of one kind on healthy hardware agree within a few percent
MIN_PEERS = 3  # a median of fewer says nothing about which one is slow


def flags(metrics: list[Metric], noise: float = PEER_NOISE) -> list[dict[str, Any]]:
    """Per metric kind (the key's second part): subjects whose metric is "low" against its
    expectation, or below the median of the kind by more than the noise (`noise`, or the
    samples' own spread when larger)."""
    out: list[dict[str, Any]] = []
    by_kind: dict[str, list[Metric]] = {}
    for m in metrics:
        by_kind.setdefault(m.key.split(".")[1], []).append(m)
    for kind, group in by_kind.items():
        median = statistics.median(m.value for m in group) if len(group) >= MIN_PEERS else None
        for m in group:
            if m.status == "low" and m.expected is not None:
                out.append({"subject": m.subject, "metric": kind, "value": round(m.value, 1),
                            "reference": round(m.expected.value * (m.expected.min_ratio or 1), 1),
                            "why": f"{m.name} {m.value:.1f} {m.unit} is {m.ratio:.0%} of "
                                   f"{m.expected.value:g} {m.unit} (below "
                                   f"{m.expected.min_ratio:.0%})"})
                continue
            if median is None:
                continue
            bound = max(noise, stats.spread(m.samples).relative)
            if m.value < median * (1 - bound):
                out.append({"subject": m.subject, "metric": kind, "value": round(m.value, 1),
                            "reference": round(median, 1),
                            "why": f"{m.name} {m.value:.1f} {m.unit} is "
                                   f"{m.value / median - 1:+.0%} against the median of "
                                   f"{len(group)} ({median:.1f}, noise ±{bound:.0%})"})
    return out
