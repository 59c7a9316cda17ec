"""One node as the fleet view sees it, however its report was read.

A node's benchmark metrics are a layout (each metric's key, name, unit and direction) and a
value per metric. Nodes that ran the same benchmarks share one layout object, so the fleet
view looks a layout's per-metric slots up once and then only appends values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# (key, name, unit, higher_is_better) as the document has them; None where missing
Layout = tuple[tuple[Any, Any, Any, Any], ...]
LAYOUTS_KEPT = 4096  # distinct layouts shared; a fleet has a few per profile


@dataclass
class NodeReport:
    host: str  # the file name without .json: the inventory name
    kind: str  # "fleet-report" or "agent-report"
    profile: str
    collected_at: str | None
    failed: dict[str, int]  # failing settings by severity
    compliance: float | None
    healthy: bool | None = None  # the quick health check; None: not run or no verdict
    health_faults: int = 0
    health_summary: str | None = None  # the check's summary line
    errors: list[str] = field(default_factory=list)
    # setting id -> [area, severity, worst status, failing subjects, first failing value]
    settings: dict[str, list[Any]] = field(default_factory=dict)
    drift: tuple[str | None, ...] = ()
    # the benchmark metrics with a numeric value, in document order; malformed ones left out
    metric_layout: Layout = ()
    metric_values: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Unreadable:
    file: str
    reason: str


_shared: dict[Layout, Layout] = {}


def shared_layout(layout: Layout) -> Layout:
    """The one layout object equal to this one (until LAYOUTS_KEPT are kept: then itself)."""
    kept = _shared.get(layout)
    if kept is not None:
        return kept
    if len(_shared) < LAYOUTS_KEPT:
        _shared[layout] = layout
    return layout
