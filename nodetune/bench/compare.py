"""`--compare FILE`: each metric of this run against the same metric (same key) of a saved run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nodetune.bench import stats
from nodetune.bench.results import Metric, SuiteResult
from nodetune.errors import BenchError
from nodetune.schemas import BENCH_SCHEMA


@dataclass(frozen=True)
class MetricChange:
    key: str
    name: str
    unit: str
    before: Metric
    after: Metric
    change: stats.Change

    def to_json(self) -> dict[str, Any]:
        c = self.change
        return {"key": self.key, "name": self.name, "unit": self.unit,
                "before": round(c.before, 4), "after": round(c.after, 4),
                "before_samples": list(self.before.samples),
                "after_samples": list(self.after.samples),
                "change_percent": None if c.relative is None else round(c.relative * 100, 2),
                "noise_percent": round(c.noise * 100, 2), "significant": c.significant,
                "verdict": c.verdict}


def load_baseline(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror}",
                         fix="give a file written by nodetune bench --save") from exc
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})",
                         fix="give a file written by nodetune bench --save") from exc
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("nodetune.bench/"):
        raise BenchError(f"{path} is not a nodetune bench result (schema {doc.get('schema')!r})"
                         if isinstance(doc, dict) else f"{path} is not a nodetune bench result",
                         fix="give a file written by nodetune bench --save")
    if doc["schema"] != BENCH_SCHEMA:
        raise BenchError(f"{path} has schema {doc['schema']}, this nodetune reads {BENCH_SCHEMA}",
                         fix="rerun the baseline with this version of nodetune")
    return doc


def baseline_suites(doc: dict[str, Any]) -> list[SuiteResult]:
    return [SuiteResult.from_json(s) for s in doc.get("suites") or []]


def compare(before: list[SuiteResult], after: list[SuiteResult]) -> dict[str, Any]:
    """Per-metric changes, plus the keys only one side has."""
    old = {m.key: m for s in before for m in s.metrics}
    new = {m.key: m for s in after for m in s.metrics}
    changes = [MetricChange(key, m.name, m.unit, old[key], m,
                            stats.compare(old[key].samples, m.samples,
                                          higher_is_better=m.higher_is_better))
               for key, m in new.items() if key in old]
    counts = {"improved": 0, "regressed": 0, "no significant change": 0}
    for c in changes:
        counts[c.change.verdict] += 1
    return {
        "changes": changes,
        "summary": {"improved": counts["improved"], "regressed": counts["regressed"],
                    "unchanged": counts["no significant change"]},
        "only_in_baseline": sorted(set(old) - set(new)),
        "only_in_this_run": sorted(set(new) - set(old)),
    }


def to_json(result: dict[str, Any], baseline_path: str, baseline: dict[str, Any],
            fingerprint: str) -> dict[str, Any]:
    before_fp = (baseline.get("node") or {}).get("fingerprint")
    return {"baseline": baseline_path, "baseline_created": baseline.get("created"),
            "same_node": before_fp == fingerprint if before_fp else None,
            "summary": result["summary"],
            "metrics": [c.to_json() for c in result["changes"]],
            "only_in_baseline": result["only_in_baseline"],
            "only_in_this_run": result["only_in_this_run"]}
