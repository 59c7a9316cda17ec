"""`--compare FILE`: each metric of this run against the same metric (same key) of a saved run.

A pair measured differently (sizes, samples, binding, GPU set, tool versions, run options:
`nodetune.bench.comparable`) is "incomparable" and names the differences; it is never counted
as improved or regressed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nodetune.bench import comparable, stats
from nodetune.bench.results import Metric, SuiteResult, suites_from_json
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
    mismatches: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return "incomparable" if self.mismatches else self.change.verdict

    def to_json(self) -> dict[str, Any]:
        c = self.change
        return {"key": self.key, "name": self.name, "unit": self.unit,
                "before": round(c.before, 4), "after": round(c.after, 4),
                "before_samples": list(self.before.samples),
                "after_samples": list(self.after.samples),
                "change_percent": None if c.relative is None else round(c.relative * 100, 2),
                "noise_percent": round(c.noise * 100, 2),
                "significant": c.significant and not self.mismatches,
                "verdict": self.verdict, "mismatches": list(self.mismatches)}


def load_baseline(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror}",
                         fix="give a file written by nodetune bench --save") from exc
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}:{exc.lineno}: this is not JSON ({exc.msg})",
                         fix="give a file written by nodetune bench --save") from exc
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path} is not UTF-8 text (byte {exc.start})",
                         fix="give a file written by nodetune bench --save") from exc
    except RecursionError:
        raise BenchError(f"{path}: JSON nested too deeply",
                         fix="give a file written by nodetune bench --save") from None
    except ValueError:  # an integer of over 4300 digits
        raise BenchError(f"{path}: an integer of over 4300 digits",
                         fix="give a file written by nodetune bench --save"
                         ) from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("nodetune.bench/"):
        raise BenchError(f"{path} is not a nodetune bench result (schema {doc.get('schema')!r})"
                         if isinstance(doc, dict) else f"{path} is not a nodetune bench result",
                         fix="give a file written by nodetune bench --save")
    if doc["schema"] != BENCH_SCHEMA:
        raise BenchError(f"{path} has schema {doc['schema']}, this nodetune reads {BENCH_SCHEMA}",
                         fix="rerun the baseline with this version of nodetune")
    suites_from_json(doc, path)  # every field of the right type, or one line naming it
    return doc


def baseline_suites(doc: dict[str, Any]) -> list[SuiteResult]:
    return [SuiteResult.from_json(s) for s in doc.get("suites") or []]


def compare(before: list[SuiteResult], after: list[SuiteResult], *,
            before_options: Any = None, after_options: Any = None) -> dict[str, Any]:
    """Per-metric changes, plus the keys only one side has.

    `before_options` / `after_options` are the documents' "options" (run options); options
    that differ make every metric incomparable."""
    run_level = comparable.option_mismatches(before_options, after_options)
    old = {m.key: (s, m) for s in before for m in s.metrics}
    new = {m.key: (s, m) for s in after for m in s.metrics}
    changes = []
    for key, (suite, m) in new.items():
        if key not in old:
            continue
        old_suite, old_metric = old[key]
        mismatches = (*run_level, *comparable.suite_mismatches(old_suite, suite),
                      *comparable.metric_mismatches(old_metric, m))
        changes.append(MetricChange(key, m.name, m.unit, old_metric, m,
                                    stats.compare(old_metric.samples, m.samples,
                                                  higher_is_better=m.higher_is_better),
                                    tuple(dict.fromkeys(mismatches))))
    counts = {"improved": 0, "regressed": 0, "no significant change": 0, "incomparable": 0}
    for c in changes:
        counts[c.verdict] += 1
    return {
        "changes": changes,
        "summary": {"improved": counts["improved"], "regressed": counts["regressed"],
                    "unchanged": counts["no significant change"],
                    "incomparable": counts["incomparable"]},
        "only_in_baseline": sorted(set(old) - set(new)),
        "only_in_this_run": sorted(set(new) - set(old)),
        "run_mismatches": run_level,
    }


def mismatch_summary(comparison: dict[str, Any]) -> str | None:
    """One line naming what made metrics incomparable, or None when all were comparable."""
    metrics = comparison.get("metrics") or []
    bad = [m for m in metrics if m.get("verdict") == "incomparable"]
    run_level = comparison.get("run_mismatches") or []
    if not bad:
        if run_level:
            return f"the runs differ: {'; '.join(run_level)}"
        return None
    reasons: dict[str, None] = {}
    for m in bad:
        reasons.update(dict.fromkeys(m.get("mismatches") or []))
    shown = list(reasons)[:6]
    more = f" and {len(reasons) - len(shown)} more" if len(reasons) > len(shown) else ""
    return (f"{len(bad)} of {len(metrics)} metrics cannot be compared with the baseline: "
            f"{'; '.join(shown)}{more}")


def to_json(result: dict[str, Any], baseline_path: str, baseline: dict[str, Any],
            fingerprint: str) -> dict[str, Any]:
    before_fp = (baseline.get("node") or {}).get("fingerprint")
    return {"baseline": baseline_path, "baseline_created": baseline.get("created"),
            "same_node": before_fp == fingerprint if before_fp else None,
            "summary": result["summary"],
            "metrics": [c.to_json() for c in result["changes"]],
            "only_in_baseline": result["only_in_baseline"],
            "only_in_this_run": result["only_in_this_run"],
            "run_mismatches": list(result.get("run_mismatches") or [])}
