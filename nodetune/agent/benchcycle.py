"""The agent's optional benchmarks (--bench-interval): the quick suites of `nodetune bench`
that can run on this node, reduced to the values /metrics exports."""

from __future__ import annotations

import time
from typing import Any

QUICK_SUITES = ("memcpy", "allreduce", "cpu-mem")


def run_quick_bench(opts: Any) -> dict[str, Any]:
    """Run each quick suite that can run here; a suite that cannot is listed with its reason."""
    from nodetune.bench import runner
    from nodetune.bench.base import RunContext, RunOptions
    from nodetune.check.bench import QUICK_OPTIONS
    from nodetune.node.source import open_node

    with open_node(root=opts.root, snapshot=opts.snapshot, nvml=opts.nvml) as node:
        facts = node.facts().to_json()
        live = node.root.is_live
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
    return {"started_at": round(started, 3), "seconds": round(time.time() - started, 3),
            "suites": suites, "metrics": metrics}
