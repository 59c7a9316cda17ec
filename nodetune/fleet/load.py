"""Reading a directory of node reports: fleet reports and the agent's /report documents.

Each file is parsed on its own and reduced at once to what the fleet view needs (a
`NodeReport`), so ten thousand files never sit in memory together. Files that are not JSON,
not a node report, or not readable are listed with the reason, never fatal.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune.fleet import drift
from nodetune.schemas import AGENT_REPORT_SCHEMA, FLEET_COLLECT_SCHEMA, FLEET_REPORT_SCHEMA

FAILED_FILE = "_failed.json"
NODE_SCHEMAS = (FLEET_REPORT_SCHEMA, AGENT_REPORT_SCHEMA)
_KINDS = {FLEET_REPORT_SCHEMA: "fleet-report", AGENT_REPORT_SCHEMA: "agent-report"}


@dataclass
class NodeReport:
    """One node as the fleet view sees it."""

    host: str  # the file name without .json: the inventory name
    kind: str  # "fleet-report" or "agent-report"
    profile: str
    collected_at: str | None
    failed: dict[str, int]  # failing settings by severity
    compliance: float | None
    healthy: bool | None = None  # agent reports: the quick health check
    health_faults: int = 0
    errors: list[str] = field(default_factory=list)
    # setting id -> [area, severity, worst status, failing subjects, first failing value]
    settings: dict[str, list[Any]] = field(default_factory=dict)
    drift: tuple[str | None, ...] = ()
    # the benchmark values: (key, value, name, unit, higher_is_better) as the document has
    # them (name, unit and higher_is_better None where missing); malformed ones left out
    metrics: list[tuple[Any, float, Any, Any, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Unreadable:
    file: str
    reason: str


def report_files(directory: Path) -> Iterator[Path]:
    """DIR/*.json in name order, without the collection's own `_*.json` files."""
    for path in sorted(directory.glob("*.json")):
        if not path.name.startswith("_") and path.is_file():
            yield path


def failed_hosts(directory: Path) -> list[dict[str, Any]]:
    """The hosts the last `fleet collect` into DIR could not collect (DIR/_failed.json)."""
    path = directory / FAILED_FILE
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict) or doc.get("schema") != FLEET_COLLECT_SCHEMA:
        return []
    return [h for h in doc.get("failed") or [] if isinstance(h, dict) and h.get("host")]


def read(path: Path) -> NodeReport | Unreadable:
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        return Unreadable(path.name, f"cannot read: {exc.strerror}")
    except ValueError as exc:
        return Unreadable(path.name, f"not JSON: {exc}")
    if not isinstance(doc, dict):
        return Unreadable(path.name, "not a JSON object")
    schema = doc.get("schema")
    if schema not in NODE_SCHEMAS:
        return Unreadable(path.name, f"not a node report (schema {schema!r}; expected "
                                     f"{' or '.join(NODE_SCHEMAS)})")
    try:
        return _node(path.stem, _KINDS[schema], doc)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        return Unreadable(path.name, f"malformed {schema} document ({type(exc).__name__}: "
                                     f"{exc})")


def _node(host: str, kind: str, doc: dict[str, Any]) -> NodeReport:
    audit: dict[str, Any] = doc["audit"] if isinstance(doc.get("audit"), dict) else {}
    summary = audit.get("summary") or {}
    profile = (audit.get("profile") or {}).get("name") or "(no audit)"
    node = NodeReport(
        host=host, kind=kind, profile=str(profile),
        collected_at=_collected_at(kind, doc),
        failed={s: int((summary.get("failed") or {}).get(s) or 0)
                for s in ("critical", "warning", "info")},
        compliance=summary.get("compliance_score"),
        errors=[str(e) for e in doc.get("errors") or []],
        settings=settings(audit),
        drift=drift.digest(doc.get("facts")),
        metrics=_metrics(doc.get("bench")),
    )
    if kind == "agent-report":
        check: dict[str, Any] = doc["check"] if isinstance(doc.get("check"), dict) else {}
        if "healthy" in check:
            node.healthy = bool(check["healthy"])
            node.health_faults = len(check.get("faults") or [])
    if not audit:
        node.errors.append("no audit in this report")
    return node


_RANK = {"fail": 3, "unknown": 2, "pass": 1, "skipped": 0}  # the worst status wins
FAIL = 3


def settings(audit: dict[str, Any]) -> dict[str, list[Any]]:
    """Per setting id: [area, severity, worst status rank (fail 3, unknown 2, pass 1,
    skipped 0), failing subjects, first failing value], from a lean audit's `settings` counts
    or from a whole audit's findings."""
    out: dict[str, list[Any]] = {}
    counts = audit.get("settings")
    findings = audit.get("findings") or []
    if isinstance(counts, dict):
        for rule, c in counts.items():
            fail = c.get("fail")
            rank = FAIL if fail else 2 if c.get("unknown") else 1 if c.get("pass") else 0
            out[rule] = [c.get("area"), c.get("severity"), rank, int(fail or 0), None]
    else:
        for f in findings:
            rule = f.get("id")
            if not rule:
                continue
            rank = _RANK.get(f.get("status"), 0)
            entry = out.get(rule)
            if entry is None:
                entry = out[rule] = [f.get("area"), f.get("severity"), rank, 0, None]
            elif rank > entry[2]:
                entry[2] = rank
            if rank == FAIL:
                entry[3] += 1
    for f in findings:
        if f.get("status") == "fail":
            entry = out.get(f.get("id"))
            if entry is not None and entry[4] is None:
                entry[4] = f.get("actual")
    return out


def _collected_at(kind: str, doc: dict[str, Any]) -> str | None:
    if kind == "fleet-report":
        return doc.get("collected_at")
    finished = doc.get("finished_at")
    if isinstance(finished, (int, float)):
        return datetime.datetime.fromtimestamp(finished, datetime.timezone.utc) \
            .isoformat(timespec="seconds")
    return None


def _metrics(bench: Any) -> list[tuple[Any, float, Any, Any, Any]]:
    """The bench document's measured metrics; one without a key or a numeric value (a
    malformed or unmeasured metric) is left out."""
    if not isinstance(bench, dict):
        return []
    out = []
    for s in bench.get("suites") or ():
        for m in s.get("metrics") or ():
            try:
                key, value = m["key"], float(m["value"])
            except (TypeError, KeyError, ValueError):
                continue
            out.append((key, value, m.get("name"), m.get("unit"), m.get("higher_is_better")))
    return out
