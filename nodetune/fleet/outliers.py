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
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress

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


def _kth_of_two(a: Callable[[int], float], len_a: int, b: Callable[[int], float], len_b: int,
                k: int) -> float:
    """The k-th smallest (from 0) of two ascending sequences given as accessors, by
    bisection over how many come from the first."""
    lo, hi = max(0, k + 1 - len_b), min(k + 1, len_a)
    while lo < hi:
        i = (lo + hi) // 2
        if a(i) < b(k - i):
            lo = i + 1
        else:
            hi = i
    j = k + 1 - lo
    return max(a(lo - 1) if lo else -math.inf, b(j - 1) if j else -math.inf)


def _mad(ordered: Sequence[float], median: float) -> float:
    """The median of |x - median| over sorted values, without sorting the deviations: below
    the median they ascend leftwards, above it rightwards (m - x equals |x - m| exactly)."""
    n, split = len(ordered), bisect_left(ordered, median)

    def below(i: int) -> float:
        return median - ordered[split - 1 - i]

    def above(i: int) -> float:
        return ordered[split + i] - median

    def kth(k: int) -> float:
        return _kth_of_two(below, split, above, n - split, k)

    return kth(n // 2) if n % 2 else (kth(n // 2 - 1) + kth(n // 2)) / 2


def analyse(values: Sequence[float], *, higher_is_better: bool = True, k: float = K_DEFAULT,
            mad_floor: float = MAD_FLOOR_DEFAULT,
            runs: Sequence[float] | None = None) -> MetricStats:
    """Median, MAD and the nodes more than k robust standard deviations on the worse side.
    RUNS: the same values in ascending runs, which sort faster."""
    count = len(values)
    if not count:
        return MetricStats(0, 0.0, 0.0, 0.0, None, ())
    ordered = sorted(runs if runs is not None and len(runs) == count else values)
    unordered = math.isnan(sum(ordered))
    if unordered:  # NaN (or inf - inf) does not sort: statistics' own order
        median = statistics.median(values)
        mad = statistics.median([abs(v - median) for v in values])
    else:
        median = _median(ordered)
        # an infinite median makes inf - inf: NaN deviations, which only sorting orders
        mad = _mad(ordered, median) if math.isfinite(median) else \
            _median(sorted([abs(v - median) for v in ordered]))
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
    # a cut a little short of half the reach picks the candidates at C speed: never fewer
    # than the exact test below keeps, whatever the rounding
    margin = reach / 100 + abs(median) * 1e-9
    if higher_is_better:
        candidates = map((median - reach / 2 + margin).__gt__, values)
    else:
        candidates = map((median + reach / 2 - margin).__lt__, values)
    for i in compress(range(count), candidates):
        value = values[i]
        if not sign * (value - median) < -reach / 2:
            continue
        z = _Z * (value - median) / mad_used
        if sign * z < -k:
            relative = (value - median) / median if median else 0.0
            outliers.append(Outlier(i, value, round(z, 2), round(relative, 4)))
    outliers.sort(key=lambda o: sign * o.z)
    return MetricStats(count, median, mad, mad_used, threshold, tuple(outliers))
