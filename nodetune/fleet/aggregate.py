"""Accumulating node reports into fleet-wide counts, one node at a time.

`Fleet.add(node)` folds a node's findings into per-setting counts and its benchmark values
into per-metric arrays, and keeps a small summary of the node; the node's report can then be
dropped. Memory grows with the number of nodes times the number of benchmark metrics (8 bytes
a value), not with the size of the reports.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nodetune.fleet.load import FAIL, NodeReport, Unreadable

SEVERITY_RANK = {"critical": 3, "warning": 2, "info": 1}


@dataclass
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
    nodes: array[int] = field(default_factory=lambda: array("l"))  # index into Fleet.nodes


@dataclass
class Fleet:
    nodes: list[NodeSummary] = field(default_factory=list)
    settings: dict[str, Setting] = field(default_factory=dict)
    metrics: dict[tuple[str, str], MetricValues] = field(default_factory=dict)
    unreadable: list[Unreadable] = field(default_factory=list)
    # profile -> metric key -> the entry of `metrics`: one dict lookup a value
    _by_profile: dict[str, dict[Any, MetricValues]] = field(default_factory=dict, repr=False,
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
        for slot, m in other.metrics.items():
            nodes = array("l", (i + offset for i in m.nodes)) if offset else m.nodes
            mine = self.metrics.get(slot)
            if mine is None:
                m.nodes = nodes
                self.metrics[slot] = m
                self._by_profile.setdefault(slot[0], {})[slot[1]] = m
            else:
                mine.values += m.values
                mine.nodes += nodes
        self.unreadable += other.unreadable

    def _add_settings(self, node: NodeReport) -> None:
        settings = self.settings
        profile = node.profile
        for rule, (area, severity, rank, subjects, actual) in node.settings.items():
            setting = settings.get(rule)
            if setting is None:
                setting = settings[rule] = Setting(rule, str(area or ""),
                                                   str(severity or "info"))
            elif SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(setting.severity, 0):
                setting.severity = str(severity)
            setting.profiles.add(profile)
            if rank == FAIL:
                setting.failed += 1
                setting.failed_subjects += subjects
                setting.failed_hosts.append(node.host)
                setting.actual[str(actual)] += 1
            elif rank == 2:
                setting.unknown += 1
            elif rank == 1:
                setting.passed += 1
            else:
                setting.skipped += 1

    def _add_metrics(self, index: int, node: NodeReport) -> None:
        profile = node.profile
        slots = self._by_profile.get(profile)
        if slots is None:
            slots = self._by_profile[profile] = {}
        for key, value, name, unit, higher_is_better in node.metrics:
            values = slots.get(key)
            if values is None:
                values = slots[key] = self.metrics[(profile, key)] = MetricValues(
                    key=str(key), name=str(name or key), unit=str(unit or ""),
                    higher_is_better=higher_is_better is not False)
            values.values.append(value)
            values.nodes.append(index)
