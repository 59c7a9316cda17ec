"""The benchmark runs of a tuning cycle: the same suites with the same options, twice, on this
host's facts gathered once before the change (so both runs see the same expectations)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nodetune.bench.base import Progress, RunContext, RunOptions
from nodetune.bench.results import SuiteResult
from nodetune.bench.session import run_suites
from nodetune.node.source import open_node
from nodetune.tune.operation import BenchFn


def live_facts() -> dict[str, Any]:
    """This host's facts document; empty when a collector module is missing."""
    try:
        with open_node() as node:
            facts: dict[str, Any] = node.facts().to_json()
            return facts
    except ImportError:
        return {}


def bench_fn(names: list[str], options: RunOptions, facts: dict[str, Any],
             progress: Progress) -> BenchFn:
    def run(phase: str) -> list[SuiteResult]:
        ctx = RunContext(facts=facts, options=options, progress=_Phase(progress, phase))
        return run_suites(names, ctx)

    return run


class _Phase:
    """Prefixes each progress step with the phase (baseline / after)."""

    def __init__(self, inner: Progress, phase: str) -> None:
        self.inner = inner
        self.phase = phase

    def start(self, description: str, total: int) -> None:
        self.inner.start(f"{self.phase}: {description}", total)

    def advance(self, steps: int = 1, what: str = "") -> None:
        self.inner.advance(steps, what)

    def suite_started(self, name: str) -> None:
        self.inner.suite_started(f"{self.phase}: {name}")

    def suite_done(self, result: SuiteResult) -> None:
        self.inner.suite_done(replace(result, suite=f"{self.phase}: {result.suite}"))
