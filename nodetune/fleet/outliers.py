"""Benchmark outliers across nodes: median, MAD and robust z-scores per metric.

For one metric measured on n nodes of one profile, the robust z-score of a node is the
modified z-score of Iglewicz and Hoaglin, 0.6745 * (x - median) / MAD. A node is an outlier
when its z-score is worse than -k (k = 3.5 by default; "worse" is below for bandwidths,
above for latencies). The MAD used is never less than `mad_floor` times the median (1% by
default): nodes that measure almost the same value must not turn their run-to-run noise into
outliers. With the defaults a node has to be more than ~5.2% worse than the median.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

K_DEFAULT = 3.5
MAD_FLOOR_DEFAULT = 0.01
MIN_NODES = 3  # fewer nodes have no meaningful median absolute deviation
_Z = 0.6745  # 0.6745 * MAD estimates the standard deviation of normal data


@dataclass(frozen=True)
class Outlier:
    index: int  # position in the values given
    value: float
    z: float
    relative: float  # (value - median) / median


@dataclass(frozen=True)
class MetricStats:
    count: int
    median: float
    mad: float
    mad_used: float  # max(mad, mad_floor * |median|)
    threshold: float | None  # the value beyond which a node is an outlier
    outliers: tuple[Outlier, ...]


def _median(ordered: Sequence[float]) -> float:
    """statistics.median of values already sorted."""
    n = len(ordered)
    if n % 2 == 1:
        return ordered[n // 2]
    i = n // 2
    return (ordered[i - 1] + ordered[i]) / 2


def analyse(values: Sequence[float], *, higher_is_better: bool = True, k: float = K_DEFAULT,
            mad_floor: float = MAD_FLOOR_DEFAULT) -> MetricStats:
    """Median, MAD and the nodes more than k robust standard deviations on the worse side."""
    count = len(values)
    if not count:
        return MetricStats(0, 0.0, 0.0, 0.0, None, ())
    ordered = sorted(values)
    unordered = math.isnan(sum(ordered))
    if unordered:  # NaN (or inf - inf) does not sort: statistics' own order
        median = statistics.median(values)
        mad = statistics.median([abs(v - median) for v in values])
    else:
        median = _median(ordered)
        # from sorted values the deviations form two sorted runs: sorting them is linear
        mad = _median(sorted([abs(v - median) for v in ordered]))
    mad_used = max(mad, mad_floor * abs(median))
    if count < MIN_NODES or mad_used <= 0:
        return MetricStats(count, median, mad, mad_used, None, ())
    sign = 1.0 if higher_is_better else -1.0
    reach = k * mad_used / _Z
    threshold = median - sign * k * mad_used / _Z
    # only values past half the reach can be outliers; the exact test decides for those
    worst = ordered[0] if higher_is_better else ordered[-1]
    if not unordered and not sign * (worst - median) < -reach / 2:
        return MetricStats(count, median, mad, mad_used, threshold, ())
    outliers = []
    for i, value in enumerate(values):
        if not sign * (value - median) < -reach / 2:
            continue
        z = _Z * (value - median) / mad_used
        if sign * z < -k:
            relative = (value - median) / median if median else 0.0
            outliers.append(Outlier(i, value, round(z, 2), round(relative, 4)))
    outliers.sort(key=lambda o: sign * o.z)
    return MetricStats(count, median, mad, mad_used, threshold, tuple(outliers))
