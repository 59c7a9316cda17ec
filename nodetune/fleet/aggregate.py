"""Accumulating node reports into fleet-wide counts, one node at a time.

`Fleet.add(node)` folds a node's findings into per-setting counts, keeps its benchmark values
with the other nodes of the same metric layout, and keeps a small summary of the node; the
node's report can then be dropped. `Fleet.finish()` turns the values kept per layout into
per-metric arrays (8 bytes a value), in node order. Memory grows with the number of nodes
times the number of benchmark metrics, not with the size of the reports.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nodetune.fleet.load import FAIL
from nodetune.fleet.nodereport import LAYOUTS_KEPT, Layout, NodeReport, Unreadable

SEVERITY_RANK = {"critical": 3, "warning": 2, "info": 1}


@dataclass(slots=True)  # one per node: 50,000 in a large fleet
class NodeSummary:
    host: str
    kind: str
    profile: str
    collected_at: str | None
    failed: dict[str, int]
    compliance: float | None
    healthy: bool | None
    health_faults: int
    health_summary: str | None
    errors: list[str]
    drift: tuple[str | None, ...]


@dataclass
class Setting:
    """One profile setting across the fleet: how many nodes pass, fail, cannot tell."""

    id: str
    area: str
    severity: str
    passed: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    failed_subjects: int = 0
    failed_hosts: list[str] = field(default_factory=list)
    actual: Counter[str] = field(default_factory=Counter)  # failing values, by node
    profiles: set[str] = field(default_factory=set)

    def merge(self, other: Setting) -> None:
        if SEVERITY_RANK.get(other.severity, 0) > SEVERITY_RANK.get(self.severity, 0):
            self.severity = other.severity
        self.area = self.area or other.area
        self.passed += other.passed
        self.failed += other.failed
        self.unknown += other.unknown
        self.skipped += other.skipped
        self.failed_subjects += other.failed_subjects
        self.failed_hosts += other.failed_hosts
        self.actual.update(other.actual)
        self.profiles |= other.profiles


@dataclass
class MetricValues:
    """One benchmark metric of one profile: a value per node."""

    key: str
    name: str
    unit: str
    higher_is_better: bool
    values: array[float] = field(default_factory=lambda: array("d"))
    # index into Fleet.nodes; the metrics of one layout share one array: never changed in place
    nodes: array[int] = field(default_factory=lambda: array("l"))
    # the values again, in ascending runs (one per reading process): sorting them is a merge
    ordered: array[float] = field(default_factory=lambda: array("d"))
    # (nodes, values) not yet in the arrays: Fleet.finish() joins them
    parts: list[tuple[array[int], array[float]]] = field(default_factory=list, repr=False,
                                                          compare=False)

    def add(self, node: int, value: float) -> None:
        self.parts.append((array("l", (node,)), array("d", (value,))))

    def join(self) -> None:
        if not self.parts:
            return
        if len(self.parts) == 1 and not self.values:
            self.nodes, self.values = self.parts[0]
        else:
            pairs = list(zip(self.nodes, self.values, strict=True))
            for nodes, values in self.parts:
                pairs += zip(nodes, values, strict=True)
            pairs.sort(key=lambda p: p[0])  # stable: a node's repeated key keeps its order
            self.nodes = array("l", (p[0] for p in pairs))
            self.values = array("d", (p[1] for p in pairs))
        self.parts = []


@dataclass
class Fleet:
    nodes: list[NodeSummary] = field(default_factory=list)
    settings: dict[str, Setting] = field(default_factory=dict)
    metrics: dict[tuple[str, str], MetricValues] = field(default_factory=dict)
    unreadable: list[Unreadable] = field(default_factory=list)
    # profile -> metric key -> the entry of `metrics`
    _by_profile: dict[str, dict[Any, MetricValues]] = field(default_factory=dict, repr=False,
                                                             compare=False)
    # (profile, id of a settings table) -> (the table, its nodes' hosts), until finish()
    _held: dict[tuple[str, int], tuple[dict[str, list[Any]], list[str]]] = field(
        default_factory=dict, repr=False, compare=False)
    # (profile, id of a shared layout) -> its nodes' values, until finish()
    _pending: dict[tuple[str, int], _LayoutRows] = field(default_factory=dict, repr=False,
                                                         compare=False)

    def add(self, item: NodeReport | Unreadable) -> None:
        if isinstance(item, Unreadable):
            self.unreadable.append(item)
            return
        index = len(self.nodes)
        self.nodes.append(NodeSummary(
            host=item.host, kind=item.kind, profile=item.profile,
            collected_at=item.collected_at, failed=item.failed, compliance=item.compliance,
            healthy=item.healthy, health_faults=item.health_faults,
            health_summary=item.health_summary, errors=item.errors,
            drift=item.drift))
        self._add_settings(item)
        self._add_metrics(index, item)

    def merge(self, other: Fleet) -> None:
        """Append another Fleet's nodes (read from other files) after these."""
        offset = len(self.nodes)
        self.nodes += other.nodes
        for rule, setting in other.settings.items():
            if rule in self.settings:
                self.settings[rule].merge(setting)
            else:
                self.settings[rule] = setting
        # node lists are shared by the metrics of a layout: each is shifted and joined once;
        # the memos hold the arrays their keys name, so no id is reused meanwhile
        shifted: dict[int, tuple[array[int], array[int]]] = {}
        joined: dict[tuple[int, int], tuple[array[int], array[int], array[int]]] = {}
        for slot, m in other.metrics.items():
            moved = shifted.get(id(m.nodes))
            if moved is None:
                moved = shifted[id(m.nodes)] = (m.nodes, array("l", (i + offset
                                                                     for i in m.nodes)))
            nodes = moved[1]
            mine = self.metrics.get(slot)
            if mine is None:
                m.nodes = nodes
                self.metrics[slot] = m
                self._by_profile.setdefault(slot[0], {})[slot[1]] = m
                continue
            both = joined.get((id(mine.nodes), id(nodes)))
            if both is None:
                both = joined[(id(mine.nodes), id(nodes))] = (mine.nodes, nodes,
                                                               mine.nodes + nodes)
            mine.nodes = both[2]
            mine.values += m.values
            mine.ordered += m.ordered
        self.unreadable += other.unreadable

    def _add_settings(self, node: NodeReport) -> None:
        """Nodes with one settings table (shared by the reader) are counted together."""
        key = (node.profile, id(node.settings))
        held = self._held.get(key)
        if held is None or held[0] is not node.settings:
            if len(self._held) >= LAYOUTS_KEPT:
                self._count_settings()
            # the table stays referenced here, so no other object takes its id meanwhile
            held = self._held[key] = (node.settings, [])
        held[1].append(node.host)

    def _count_settings(self) -> None:
        """Fold the held tables into the per-setting counts, in the order they were first
        seen: each failing value is first counted where a node-by-node count would."""
        settings = self.settings
        for (profile, _), (table, hosts) in self._held.items():
            n = len(hosts)
            for rule, (area, severity, rank, subjects, actual) in table.items():
                setting = settings.get(rule)
                if setting is None:
                    setting = settings[rule] = Setting(rule, str(area or ""),
                                                       str(severity or "info"))
                elif SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(setting.severity, 0):
                    setting.severity = str(severity)
                setting.profiles.add(profile)
                if rank == FAIL:
                    setting.failed += n
                    setting.failed_subjects += subjects * n
                    setting.failed_hosts += hosts
                    setting.actual[str(actual)] += n
                elif rank == 2:
                    setting.unknown += n
                elif rank == 1:
                    setting.passed += n
                else:
                    setting.skipped += n
        self._held.clear()

    def _add_metrics(self, index: int, node: NodeReport) -> None:
        layout = node.metric_layout
        rows = self._pending.get((node.profile, id(layout)))
        if rows is None or rows.layout is not layout:
            if len(self._pending) >= LAYOUTS_KEPT:  # a fleet of ever new layouts: one by one
                for metric, value in zip(layout, node.metric_values, strict=True):
                    self._slot(node.profile, *metric).add(index, value)
                return
            # the layout stays referenced here, so no other object takes its id meanwhile
            rows = self._pending[(node.profile, id(layout))] = _LayoutRows(
                layout, [self._slot(node.profile, *metric) for metric in layout])
        rows.nodes.append(index)
        rows.values.append(node.metric_values)

    def finish(self) -> None:
        """Count the held settings tables; move the values kept per layout into the
        per-metric arrays, each metric's values in node order (a node that repeats a key: in
        its order)."""
        self._count_settings()
        for rows in self._pending.values():
            for slot, column in zip(rows.slots, zip(*rows.values, strict=True), strict=True):
                slot.parts.append((rows.nodes, array("d", column)))
        self._pending.clear()
        for m in self.metrics.values():
            m.join()
            m.ordered = array("d", sorted(m.values))

    def _slot(self, profile: str, key: Any, name: Any, unit: Any,
              higher_is_better: Any) -> MetricValues:
        slots = self._by_profile.get(profile)
        if slots is None:
            slots = self._by_profile[profile] = {}
        values = slots.get(key)
        if values is None:
            values = slots[key] = self.metrics[(profile, key)] = MetricValues(
                key=str(key), name=str(name or key), unit=str(unit or ""),
                higher_is_better=higher_is_better is not False)
        return values


@dataclass
class _LayoutRows:
    """The nodes of one metric layout (and profile) and their values, a row per node."""

    layout: Layout
    slots: list[MetricValues]
    nodes: array[int] = field(default_factory=lambda: array("l"))
    values: list[list[float]] = field(default_factory=list)
