"""Benchmark outliers across nodes: median, MAD and robust z-scores per metric.

For one metric measured on n nodes of one profile, the robust z-score of a node is the
modified z-score of Iglewicz and Hoaglin, 0.6745 * (x - median) / MAD. A node is an outlier
when its z-score is worse than -k (k = 3.5 by default; "worse" is below for bandwidths,
above for latencies). The MAD used is never less than `mad_floor` times the median (1% by
default): nodes that measure almost the same value must not turn their run-to-run noise into
outliers. With the defaults a node has to be more than ~5.2% worse than the median.
"""

from __future__ import annotations

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


def analyse(values: Sequence[float], *, higher_is_better: bool = True, k: float = K_DEFAULT,
            mad_floor: float = MAD_FLOOR_DEFAULT) -> MetricStats:
    """Median, MAD and the nodes more than k robust standard deviations on the worse side."""
    count = len(values)
    median = statistics.median(values) if values else 0.0
    mad = statistics.median([abs(v - median) for v in values]) if values else 0.0
    mad_used = max(mad, mad_floor * abs(median))
    if count < MIN_NODES or mad_used <= 0:
        return MetricStats(count, median, mad, mad_used, None, ())
    sign = 1.0 if higher_is_better else -1.0
    threshold = median - sign * k * mad_used / _Z
    outliers = []
    for i, value in enumerate(values):
        z = _Z * (value - median) / mad_used
        if sign * z < -k:
            relative = (value - median) / median if median else 0.0
            outliers.append(Outlier(i, value, round(z, 2), round(relative, 4)))
    outliers.sort(key=lambda o: sign * o.z)
    return MetricStats(count, median, mad, mad_used, threshold, tuple(outliers))
