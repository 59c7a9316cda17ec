"""The decision of a tuning cycle, from the comparison of the runs before and after the change.

- incomparable: the two runs were not measured alike (`nodetune.bench.comparable`); nothing is
  proven either way, nothing is rolled back;
- regressed: a metric regressed beyond noise, or a suite that ran before failed after;
- improved: at least one metric improved beyond noise and none regressed;
- unchanged: every metric within noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodetune.bench.results import SuiteResult

INCOMPARABLE = "incomparable"
REGRESSED = "regressed"
IMPROVED = "improved"
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Decision:
    verdict: str
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons)}


def failed_after(before: list[SuiteResult], after: list[SuiteResult]) -> list[str]:
    ok_before = {s.suite for s in before if s.status == "ok"}
    return [f"suite {s.suite} failed after the change: {s.note}" for s in after
            if s.status == "failed" and s.suite in ok_before]


def decide(comparison: dict[str, Any], before: list[SuiteResult],
           after: list[SuiteResult]) -> Decision:
    """`comparison` is `nodetune.bench.compare.to_json` of (before, after)."""
    metrics = comparison.get("metrics") or []
    incomparable = [m for m in metrics if m["verdict"] == "incomparable"]
    if comparison.get("run_mismatches") or incomparable:
        reasons = list(comparison.get("run_mismatches") or [])
        reasons += [f"{m['name']}: {'; '.join(m.get('mismatches') or [])}" for m in incomparable]
        return Decision(INCOMPARABLE, tuple(reasons))
    broken = failed_after(before, after)
    regressed = [m for m in metrics if m["verdict"] == "regressed"]
    if broken or regressed:
        return Decision(REGRESSED, tuple(broken + [_line(m) for m in regressed]))
    improved = [m for m in metrics if m["verdict"] == "improved"]
    if improved:
        return Decision(IMPROVED, tuple(_line(m) for m in improved))
    if not metrics:
        return Decision(INCOMPARABLE, ("no metric was measured both before and after",))
    return Decision(UNCHANGED, (f"{len(metrics)} metrics within noise",))


def _line(m: dict[str, Any]) -> str:
    change = "" if m["change_percent"] is None else f" {m['change_percent']:+.1f}%"
    return (f"{m['name']} {m['before']:g} -> {m['after']:g} {m['unit']}{change} "
            f"(noise ±{m['noise_percent']:.1f}%)")
