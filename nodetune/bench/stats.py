"""Statistics of repeated measurements: median, spread, and whether two runs differ beyond noise.

A metric measured N times (`--repeat N`) is summarised by its median and its spread (min..max).
Two runs differ significantly only when the change of the medians exceeds the noise: the larger
relative half-spread of the two runs, and never less than a floor (2% with 3+ samples on each
side; 5% when either side has fewer, because the noise is then unknown) — and, with 2+ samples
on both sides, only when their min..max ranges do not overlap.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

NOISE_FLOOR = 0.02  # relative change below which repeated runs on a quiet node are not told apart
NOISE_FLOOR_FEW_SAMPLES = 0.05  # the same when a side has fewer than MIN_SAMPLES samples
MIN_SAMPLES = 3


@dataclass(frozen=True)
class Spread:
    low: float
    high: float
    relative: float  # (high - low) / 2 / median: the +- around the median, as a fraction


def median(samples: Sequence[float]) -> float:
    if not samples:
        raise ValueError("no samples")
    return float(statistics.median(samples))


def spread(samples: Sequence[float]) -> Spread:
    low, high = float(min(samples)), float(max(samples))
    mid = median(samples)
    relative = (high - low) / 2 / abs(mid) if mid else 0.0
    return Spread(low, high, relative)


@dataclass(frozen=True)
class Change:
    before: float
    after: float
    relative: float | None  # (after - before) / before; None when before is 0
    noise: float  # relative change that is still within noise
    significant: bool
    verdict: str  # "improved", "regressed", "no significant change"


def compare(before: Sequence[float], after: Sequence[float], *,
            higher_is_better: bool = True) -> Change:
    """Compare two sets of samples of one metric."""
    b, a = median(before), median(after)
    few = min(len(before), len(after)) < MIN_SAMPLES
    floor = NOISE_FLOOR_FEW_SAMPLES if few else NOISE_FLOOR
    noise = max(spread(before).relative, spread(after).relative, floor)
    if b == 0:
        if a == 0:
            return Change(b, a, 0.0, noise, False, "no significant change")
        return Change(b, a, None, noise, True,
                      "improved" if (a > 0) == higher_is_better else "regressed")
    relative = (a - b) / abs(b)
    significant = abs(relative) > noise
    if significant and len(before) >= 2 and len(after) >= 2:
        significant = max(before) < min(after) or max(after) < min(before)
    if not significant:
        verdict = "no significant change"
    elif (relative > 0) == higher_is_better:
        verdict = "improved"
    else:
        verdict = "regressed"
    return Change(b, a, relative, noise, significant, verdict)
