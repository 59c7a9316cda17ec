"""Running the asked suites and assembling the `nodetune.bench/1` document."""

from __future__ import annotations

import time
from typing import Any

from nodetune import __version__, exitcodes
from nodetune.bench import identity, runner
from nodetune.bench.base import RunContext
from nodetune.bench.results import SuiteResult
from nodetune.errors import BenchError
from nodetune.facts.model import to_jsonable
from nodetune.schemas import BENCH_SCHEMA, utc_timestamp


def run_suites(names: list[str], ctx: RunContext) -> list[SuiteResult]:
    """Run each suite that can run here; the others come back "skipped" with the reason.

    Raises BenchError (exit 3) when none of the asked suites can run.
    """
    runners, results = [], []
    for name in names:
        r = runner(name)
        reason = r.check_enabled(ctx)
        if reason is None:
            runners.append(r)
        else:
            results.append(SuiteResult(suite=name, status="skipped", note=reason))
    if not runners:
        reasons = [str(r.note) for r in results]
        if all("no NVIDIA GPU" in reason for reason in reasons):
            need = "needs" if len(names) == 1 else "need"
            raise BenchError(f"no NVIDIA GPU on this node: {', '.join(names)} {need} one",
                             fix="run GPU suites on a GPU node, or ask for cpu-mem / fio")
        raise BenchError("; ".join(reasons).replace("; fix:", ", fix:"))
    for skipped in results:
        ctx.progress.suite_done(skipped)
    for r in runners:
        start = time.monotonic()
        ctx.progress.suite_started(r.name)
        try:
            result = r.run(ctx)
        except BenchError as exc:
            result = SuiteResult(suite=r.name, status="failed", note=exc.one_line(),
                                 seconds=round(time.monotonic() - start, 2))
        except OSError as exc:  # the host refused something (a device, a syscall, memory)
            result = SuiteResult(suite=r.name, status="failed", note=f"{r.name}: {exc}",
                                 seconds=round(time.monotonic() - start, 2))
        results.append(result)
        ctx.progress.suite_done(result)
    order = {name: i for i, name in enumerate(names)}
    return sorted(results, key=lambda s: order.get(s.suite, len(order)))


def document(suites: list[SuiteResult], facts: dict[str, Any], options: Any,
             comparison: dict[str, Any] | None = None, kind: str = "run") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": BENCH_SCHEMA,
        "kind": kind,
        "nodetune_version": __version__,
        "created": utc_timestamp(time.time()),
        "node": identity.node_json(facts),
        "options": to_jsonable(options),
        "suites": [s.to_json() for s in suites],
    }
    if comparison is not None:
        doc["comparison"] = comparison
    return doc


def exit_code(suites: list[SuiteResult], comparison: dict[str, Any] | None) -> int:
    """3 when --compare met runs measured differently (incomparable metrics or run options);
    1 when a suite failed, a metric is below its expected minimum, a subject is flagged slow,
    or --compare found a regression beyond noise; 0 otherwise."""
    if comparison and (comparison["summary"].get("incomparable")
                       or comparison.get("run_mismatches")):
        return exitcodes.ERROR
    if any(s.status == "failed" for s in suites):
        return exitcodes.WARNINGS
    if any(m.status == "low" for s in suites for m in s.metrics):
        return exitcodes.WARNINGS
    if any(s.flags for s in suites):  # a GPU below its peers
        return exitcodes.WARNINGS
    if comparison and comparison["summary"]["regressed"]:
        return exitcodes.WARNINGS
    return exitcodes.OK
