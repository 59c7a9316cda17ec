"""The agent's optional benchmarks (--bench-interval): the quick suites of `nodetune bench`
that can run on this node, reduced to the values /metrics exports."""

from __future__ import annotations

import time
from typing import Any

from nodetune.bench import runner
from nodetune.bench.base import RunContext, RunOptions
from nodetune.check.bench import QUICK_OPTIONS
from nodetune.schemas import utc_timestamp

QUICK_SUITES = ("memcpy", "allreduce", "cpu-mem")


class BenchSchedule:
    """Runs the quick benchmarks at most every `interval` seconds; keeps the last result."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last_run = 0.0
        self.last: dict[str, Any] | None = None

    def maybe_run(self, facts: dict[str, Any], live: bool) -> dict[str, Any] | None:
        """The last result, after running the suites on `facts` (the cycle's) when due."""
        now = time.monotonic()
        if self.last is None or now - self.last_run >= self.interval:
            self.last_run = now
            self.last = run_quick_bench(facts, live)
        return self.last


def run_quick_bench(facts: dict[str, Any], live: bool) -> dict[str, Any]:
    """Run each quick suite that can run here; a suite that cannot is listed with its reason."""
    started = time.time()
    suites: dict[str, dict[str, Any]] = {}
    metrics: list[dict[str, Any]] = []
    for name in QUICK_SUITES:
        if not live:
            suites[name] = {"status": "skipped", "note": "benchmarks run only on the live host"}
            continue
        bench = runner(name)
        ctx = RunContext(facts=dict(facts),
                         options=RunOptions(**QUICK_OPTIONS.get(name, {"quick": True})))
        why = bench.check_enabled(ctx)
        if why is not None:
            suites[name] = {"status": "skipped", "note": why}
            continue
        try:
            result = bench.run(ctx)
        except Exception as exc:  # one suite failing must not cost the others
            suites[name] = {"status": "failed", "note": f"{type(exc).__name__}: {exc}"}
            continue
        suites[name] = {"status": result.status, "note": result.note}
        metrics += [{"suite": name, "metric": m.key, "name": m.name, "unit": m.unit,
                     "value": round(m.value, 4)} for m in result.metrics]
    return {"started_at": utc_timestamp(started), "seconds": round(time.time() - started, 3),
            "suites": suites, "metrics": metrics}
