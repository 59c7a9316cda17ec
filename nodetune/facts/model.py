"""Shared value types: facts envelopes, severities, findings."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import field
from typing import Annotated, Any

from nodetune.facts.record import record


class Severity(str, enum.Enum):
    """How much a finding costs; ordered critical > warning > info."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"critical": 3, "warning": 2, "info": 1}[self.value]


class Disruption(str, enum.Enum):
    """What applying a fix disturbs."""

    NONE = "none"
    SERVICE_RESTART = "service-restart"
    REBOOT = "reboot"
    KUBELET_STATE_RESET = "kubelet-state-reset"


# -- markers the facts contract reads from the types (nodetune.facts.shapes) ---------------

@record(frozen=True)
class Keyed:
    """On a `dict[str, X]`: its keys are names (sysctl names, units, modules) and every entry is
    part of the contract, as `<name>` in a path. A dict without it is free-form."""

    name: str


@record(frozen=True)
class JsonKey:
    """On a field: the key it has in the JSON document, when that differs from the attribute."""

    name: str


@record(frozen=True)
class FactKind:
    """On a field: its contract type, when the Python type does not say it ("numstr")."""

    name: str


NumStr = Annotated[str, FactKind("numstr")]  # a string holding a number (sysctl values)


@record(frozen=True, kw_only=True)
class FactSet:
    """Base of every collector's result.

    `sources` maps a fact name (a dotted path inside the section, e.g. "governor" or
    "nodes.0.memory_total_bytes") to the file or API call it came from; `unknown` maps a fact
    name to why it could not be read ("missing /sys/.../scaling_governor: no cpufreq driver").
    """

    sources: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, sets and tuples to plain JSON types (dict order kept)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(to_jsonable(v) for v in value)
    return value


class Status(str, enum.Enum):
    """Outcome of one setting or check on one subject."""

    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"  # the fact could not be read
    SKIPPED = "skipped"  # does not apply to this node (condition false, --skip)


@record(frozen=True, kw_only=True)
class Finding:
    """The result of evaluating one profile setting or health check on one subject.

    A profile setting (audit) and a health check (check) both evaluate to Findings through the
    same rule engine (`nodetune.rules`).
    """

    id: str  # stable setting/check id, e.g. "memory.thp.enabled", "gpu.pcie.width"
    area: str  # cpu, numa-memory, gpu, pcie-topology, nic-rdma, storage, kernel
    severity: Severity
    status: Status
    subject: str | None = None  # "GPU3", "NUMA1", "mlx5_0", "nvme0n1", None for node-wide
    fact: str = ""  # the fact path read, e.g. "memory.thp.enabled"
    expected: str = ""  # human form of the expectation: "never", ">= 16", "one of [none]"
    actual: str = ""  # human form of the actual value, "unknown (why)" when unknown
    message: str = ""  # one line: what is wrong
    why: str = ""  # why it matters, with its source key (profiles/SOURCES.md)
    fix: str = ""  # how to fix by hand
    persisted: str | None = None  # value persisted in sysctl.d/modprobe.d/cmdline, when known
    needs_reboot: bool = False  # in effect != persisted and only a reboot closes the gap
    disruption: Disruption = Disruption.NONE
    remediation: dict[str, object] | None = None  # {"role": ..., "vars": {...}} for apply
    fault_code: str | None = None  # health checks only (NHC-style code)
    action: str | None = None  # health checks only: "drain" or "warn"
