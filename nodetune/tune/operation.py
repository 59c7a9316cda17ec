"""One tuning cycle: audit, baseline, apply, rerun with identical parameters, decide, and roll
back a change that made things worse.

Signals (the command installs apply's handlers, `nodetune.apply.ansible.signals`): before the
apply SIGINT or SIGTERM cancels with nothing changed; during the apply or the rollback the task
in flight finishes and the state file is kept for `nodetune rollback`; between them (the second
benchmark run, the decision) the run stops at once, its benchmark killed, and the change stays
applied with its state file.

Benchmarks always measure the machine nodetune runs on; with --root the change goes to the tree
while the benchmarks run on this host (useful only to rehearse the cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nodetune.apply import ansible, remediate
from nodetune.bench import compare
from nodetune.bench.results import SuiteResult
from nodetune.errors import BenchError, Refused
from nodetune.tune.decide import REGRESSED, Decision, decide

BenchFn = Callable[[str], list[SuiteResult]]  # phase ("baseline", "after") -> results
ConfirmFn = Callable[[remediate.Plan, remediate.Report], bool]


class ApplySteps(Protocol):
    """The apply and rollback entry points of nodetune.apply.remediate."""

    def prepare(self, request: remediate.Request, workdir: Path) -> remediate.Plan: ...

    def plan(self, prepared: remediate.Plan) -> remediate.Report: ...

    def execute(self, prepared: remediate.Plan) -> remediate.Report: ...

    def rollback(self, state_file: Path, root: str | None, workdir: Path) -> remediate.Report: ...


class RemediateSteps:
    """Apply and roll back through nodetune.apply.remediate (Ansible)."""

    def prepare(self, request: remediate.Request, workdir: Path) -> remediate.Plan:
        prepared = remediate.prepare(request, workdir, run_check=False)
        if prepared.changes:
            remediate.refuse_if_gated(prepared)
        return prepared

    def plan(self, prepared: remediate.Plan) -> remediate.Report:
        remediate.check_plan(prepared)
        return remediate.dry_run_report(prepared)

    def execute(self, prepared: remediate.Plan) -> remediate.Report:
        return remediate.execute(prepared)

    def rollback(self, state_file: Path, root: str | None, workdir: Path) -> remediate.Report:
        plan = remediate.prepare_rollback(state_file, root, workdir)
        return remediate.execute_rollback(plan)


@dataclass
class TuneResult:
    request: remediate.Request
    suites: list[str]
    profile: str = ""
    plan: remediate.Report | None = None
    prepared: remediate.Plan | None = None
    applied: remediate.Report | None = None
    baseline: list[SuiteResult] = field(default_factory=list)
    after: list[SuiteResult] = field(default_factory=list)
    comparison: dict[str, Any] | None = None
    decision: Decision | None = None
    kept: bool = False  # --keep: a regression was left in place
    rollback: remediate.Report | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def state_file(self) -> Path | None:
        return self.applied.state_file if self.applied else None


def prove(request: remediate.Request, suites: list[str], bench: BenchFn, *, keep: bool,
          confirm: ConfirmFn, workdir: Path, steps: ApplySteps | None = None,
          fingerprint: str = "", bench_options: Any = None) -> TuneResult:
    """Run the cycle; the result says what was measured, decided and done.

    Raises Refused when a change needs a flag not given, or `confirm` says no (nothing changed).
    """
    steps = steps or RemediateSteps()
    result = TuneResult(request=request, suites=suites)
    prepared = steps.prepare(request, workdir / "apply")
    result.prepared = prepared
    result.profile = prepared.audit.profile
    if not prepared.changes:
        result.notes.append("the audit finds nothing to apply: nothing to prove")
        return result
    result.plan = steps.plan(prepared)
    if not result.plan.tasks:
        result.notes.append("every change is already made and waits for a reboot: "
                            "benchmarks cannot see it yet")
        return result
    if not confirm(prepared, result.plan):
        raise Refused("not confirmed; nothing was changed")
    result.baseline = bench("baseline")
    broken = [s for s in result.baseline if s.status != "ok"]
    if broken:
        raise BenchError("the baseline cannot prove anything: " + "; ".join(
            f"{s.suite} {s.status}" + (f" ({s.note})" if s.note else "") for s in broken)
            + "; nothing was changed", fix="run only suites that work here (nodetune bench "
            "SUITE shows why one does not)")
    result.applied = steps.execute(prepared)
    pending = [s for s in result.applied.settings if s.status == "pending-reboot"]
    if pending:
        result.notes.append(f"{len(pending)} change(s) take effect at the next boot and are "
                            "not in the second run: " + ", ".join(s.change.key for s in pending))
    try:
        with ansible.interruptible():
            result.after = bench("after")
            comparison = compare.compare(result.baseline, result.after,
                                         before_options=bench_options,
                                         after_options=bench_options)
            result.comparison = compare.to_json(comparison, "baseline (this cycle)",
                                                {"node": {"fingerprint": fingerprint}},
                                                fingerprint)
            result.decision = decide(result.comparison, result.baseline, result.after)
    except ansible.Stopped as exc:
        state = result.state_file
        raise ansible.Interrupted(
            exc.signum, f"after the apply, before the change was proven: the change stays "
            f"applied; the previous values are recorded in {state}",
            fix=f"nodetune rollback --state-file {state}") from None
    if result.decision.verdict == REGRESSED and result.state_file is not None:
        if keep:
            result.kept = True
            result.notes.append(f"regressed, kept as asked (--keep); undo with "
                                f"nodetune rollback --state-file {result.state_file}")
        else:
            result.rollback = steps.rollback(result.state_file, request.root,
                                             workdir / "rollback")
            result.notes.append(f"regressed beyond noise: rolled back from {result.state_file}")
    return result
