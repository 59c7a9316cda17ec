"""Reading a directory of node reports: fleet reports and the agent's /report documents.

Each file is parsed on its own and reduced at once to what the fleet view needs (a
`NodeReport`), so ten thousand files never sit in memory together. Files that are not JSON,
not a node report, or not readable are listed with the reason, never fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nodetune import exitcodes
from nodetune.fleet import drift, summary
from nodetune.fleet.nodereport import NodeReport, Unreadable, shared_layout

try:
    import msgspec

    HAVE_MSGSPEC = True
except ImportError:  # the standard library's json reads the reports (3-4x slower)
    HAVE_MSGSPEC = False
from nodetune.schemas import (
    AGENT_REPORT_SCHEMA,
    FLEET_COLLECT_SCHEMA,
    FLEET_REPORT_SCHEMA,
    epoch_of,
    utc_timestamp,
)

FAILED_FILE = "_failed.json"
# agent-report/1 (epoch-number times) is still read: reports saved before /2 stay comparable
AGENT_REPORT_V1 = "nodetune.agent-report/1"
NODE_SCHEMAS = (FLEET_REPORT_SCHEMA, AGENT_REPORT_SCHEMA, AGENT_REPORT_V1)
_KINDS = {FLEET_REPORT_SCHEMA: "fleet-report", AGENT_REPORT_SCHEMA: "agent-report",
          AGENT_REPORT_V1: "agent-report"}


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


def _read_bytes(path: Path) -> bytes:
    """The file's bytes (Path.read_bytes without its buffered file object: 2/3 of the time)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) <= size:
            return data
        chunks = [data]  # it grew while read
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read(path: Path) -> NodeReport | Unreadable:
    try:
        data = _read_bytes(path)
    except OSError as exc:
        return Unreadable(path.name, f"cannot read: {exc.strerror}")
    if _DECODER is not None:
        node = _read_typed(path.stem, data)
        if node is not None:
            return node
    try:
        doc = json.loads(data)
    except ValueError as exc:
        return Unreadable(path.name, f"not JSON: {exc}")
    return from_document(path.name, doc)


def from_document(name: str, doc: Any) -> NodeReport | Unreadable:
    """The NodeReport of a decoded document (its `fleet_summary` not read) named NAME.json,
    or why it is not one."""
    if not isinstance(doc, dict):
        return Unreadable(name, "not a JSON object")
    schema = doc.get("schema")
    if schema not in NODE_SCHEMAS:
        return Unreadable(name, f"not a node report (schema {schema!r}; expected "
                                f"{' or '.join(NODE_SCHEMAS)})")
    try:
        return _node(name.removesuffix(".json"), _KINDS[schema], doc)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        return Unreadable(name, f"malformed {schema} document ({type(exc).__name__}: {exc})")


def report_text(doc: dict[str, Any]) -> bytes:
    """A node report's file: its compact JSON text, with the fleet summary of that very text
    as the last member (`nodetune.fleet.summary`); values JSON has no type for as text."""
    text = json.dumps(doc, separators=(",", ":"), default=str).encode()
    node = from_document("node.json", json.loads(text))
    if not isinstance(node, NodeReport) or not text.endswith(b"}"):
        return text + b"\n"
    return summary.with_footer(text[:-1], node)


def _findings(audit: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(f.get("id"), f.get("status"), f.get("area"), f.get("severity"), f.get("actual"))
            for f in audit.get("findings") or []]


def _node(host: str, kind: str, doc: dict[str, Any]) -> NodeReport:
    audit: dict[str, Any] = doc["audit"] if isinstance(doc.get("audit"), dict) else {}
    return _summary(host, kind, audit=bool(audit), profile=audit.get("profile"),
                    summary=audit.get("summary"), counts=audit.get("settings"),
                    findings=_findings(audit), collected_at=doc.get("collected_at"),
                    finished_at=doc.get("finished_at"), errors=doc.get("errors"),
                    facts=doc.get("facts"), metrics=_metrics(doc.get("bench")),
                    check=doc.get("check"))


def _summary(host: str, kind: str, *, audit: bool, profile: Any, summary: Any, counts: Any,
             findings: list[tuple[Any, ...]], collected_at: Any, finished_at: Any,
             errors: Any, facts: Any, metrics: list[tuple[Any, float, Any, Any, Any]],
             check: Any) -> NodeReport:
    """The NodeReport of a document's parts, however they were decoded."""
    summary = summary or {}
    node = NodeReport(
        host=host, kind=kind, profile=str((profile or {}).get("name") or "(no audit)"),
        collected_at=_collected_at(kind, collected_at, finished_at),
        failed={s: int((summary.get("failed") or {}).get(s) or 0)
                for s in ("critical", "warning", "info")},
        compliance=summary.get("compliance_score"),
        errors=[str(e) for e in errors or []],
        settings=_settings(counts, findings),
        drift=drift.digest(facts),
        metric_layout=shared_layout(tuple((key, name, unit, better)
                                          for key, _, name, unit, better in metrics)),
        metric_values=[m[1] for m in metrics],
    )
    if isinstance(check, dict) and "healthy" in check:
        # exit 3: nodetune could not check (a collector failed); no verdict, not unhealthy
        node.healthy = None if check.get("exit_code") == exitcodes.ERROR \
            else bool(check["healthy"])
        node.health_faults = len(check.get("faults") or [])
        node.health_summary = str(check.get("summary") or "") or None
    if not audit:
        node.errors.append("no audit in this report")
    return node


_RANK = {"fail": 3, "unknown": 2, "pass": 1, "skipped": 0}  # the worst status wins
FAIL = 3


def settings(audit: dict[str, Any]) -> dict[str, list[Any]]:
    """Per setting id: [area, severity, worst status rank (fail 3, unknown 2, pass 1,
    skipped 0), failing subjects, first failing value], from a lean audit's `settings` counts
    or from a whole audit's findings."""
    return _settings(audit.get("settings"), _findings(audit))


def _settings(counts: Any, findings: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """settings() of the `settings` counts and the findings as (id, status, area, severity,
    actual) tuples."""
    out: dict[str, list[Any]] = {}
    if isinstance(counts, dict):
        for rule, c in counts.items():
            fail = c.get("fail")
            rank = FAIL if fail else 2 if c.get("unknown") else 1 if c.get("pass") else 0
            out[rule] = [c.get("area"), c.get("severity"), rank, int(fail or 0), None]
    else:
        for rule, status, area, severity, _ in findings:
            if not rule:
                continue
            rank = _RANK.get(status, 0)
            entry = out.get(rule)
            if entry is None:
                entry = out[rule] = [area, severity, rank, 0, None]
            elif rank > entry[2]:
                entry[2] = rank
            if rank == FAIL:
                entry[3] += 1
    for rule, status, _, _, actual in findings:
        if status == "fail":
            entry = out.get(rule)
            if entry is not None and entry[4] is None:
                entry[4] = actual
    return out


def _collected_at(kind: str, collected_at: Any, finished_at: Any) -> str | None:
    if kind == "fleet-report":
        return collected_at  # type: ignore[no-any-return]
    if isinstance(finished_at, str):  # agent-report/2: ISO 8601 UTC already
        return finished_at if epoch_of(finished_at) is not None else None
    if isinstance(finished_at, (int, float)):  # agent-report/1: epoch seconds
        return utc_timestamp(finished_at)
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


# -- the typed decoder ----------------------------------------------------------------------
# msgspec decodes only the fields read above, into structs, and skips the rest: 3-4x faster
# than json. A document whose values the types do not admit, or JSON that msgspec refuses and
# json takes (NaN, UTF-16), goes the json way, which gives the same NodeReport or the reason.

def _decoder() -> Any:
    if not HAVE_MSGSPEC:
        return None
    unset, struct = msgspec.UNSET, msgspec.defstruct
    metric = struct("Metric", [("key", Any, unset), ("value", Any, unset), ("name", Any, None),
                               ("unit", Any, None), ("higher_is_better", Any, None)])
    suite = struct("Suite", [("metrics", list[metric] | None, None)])  # type: ignore[valid-type]
    bench = struct("Bench", [("suites", list[suite] | None, None)])  # type: ignore[valid-type]
    finding = struct("Finding", [(k, Any, None) for k in ("id", "status", "area", "severity",
                                                          "actual")])
    audit = struct("Audit", [("profile", Any, None), ("summary", Any, None),
                             ("settings", Any, None),
                             ("findings", list[finding] | None, None)])  # type: ignore[valid-type]
    facts = struct("Facts", [(k, Any, None) for k in drift.SECTIONS])
    report = struct("Report", [
        ("schema", Any, None), ("collected_at", Any, None), ("finished_at", Any, None),
        ("errors", Any, None), ("check", Any, None), ("facts", facts | None, None),
        ("audit", audit | None, None), ("bench", bench | None, None)])
    return summary.Reader(), msgspec.json.Decoder(report)


def _typed_metrics(bench: Any) -> list[tuple[Any, float, Any, Any, Any]]:
    out = []
    unset = msgspec.UNSET
    for s in (bench.suites or ()) if bench is not None else ():
        for m in s.metrics or ():
            key, value = m.key, m.value
            if key is unset or value is unset:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            out.append((key, value, m.name, m.unit, m.higher_is_better))
    return out


def _read_typed(host: str, data: bytes) -> NodeReport | None:
    """The node report decoded by msgspec (from its summary where that is of this version),
    or None: json is to read it."""
    footers, whole = _DECODER
    node: NodeReport | None
    node, layout = footers.node(host, data)
    if node is not None:
        return node
    node = _read_whole_typed(host, data, whole)
    if node is not None and layout is not None:
        footers.learn(layout, node)
    return node


def _read_whole_typed(host: str, data: bytes, whole: Any) -> NodeReport | None:
    try:
        doc = whole.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if doc.schema not in NODE_SCHEMAS:
        return None
    audit, facts = doc.audit, doc.facts
    parts = (None, None, None, None) if audit is None else \
        (audit.profile, audit.summary, audit.settings, audit.findings)
    if audit is not None and parts == (None, None, None, None):
        return None  # `{}` (no audit) or only other keys (an audit): json tells them apart
    profile, summary, counts, findings = parts
    try:
        return _summary(
            host, _KINDS[doc.schema], audit=audit is not None, profile=profile,
            summary=summary, counts=counts,
            findings=[(f.id, f.status, f.area, f.severity, f.actual) for f in findings or ()],
            collected_at=doc.collected_at, finished_at=doc.finished_at, errors=doc.errors,
            facts=None if facts is None else {k: v for k in drift.SECTIONS
                                              if (v := getattr(facts, k)) is not None},
            metrics=_typed_metrics(doc.bench), check=doc.check)
    except (TypeError, AttributeError, KeyError, ValueError):
        return None


_DECODER = _decoder()
