"""Run a health-check suite against a node: gather, evaluate, judge, summarise.

    report = run_checks(node, suite, variables, total_timeout=10)

Work happens in units run one after another in a worker thread: the collectors the suite's
checks read (`gather(ctx, only=(name,))`), the optional write probe, and benchmark runs (standard
tier). Each unit may take as long as the longest timeout of the checks that need it; a unit that
takes longer is abandoned (the thread is left behind, the process exits without waiting for
it), the remaining units go on in a new thread, and every check that needed it is reported as
timed out, by name. A check also times out when its data took longer than its own `timeout`.
`total_timeout` bounds the whole run; what has not finished by then is named as timed out.

Checks are evaluated one by one through the rule engine (`nodetune.rules`). A check keeps
every finding of every subject: a pass on one GPU never hides a failure on another, and a check
that fails is never overwritten by a later one. The node is unhealthy when any `drain` check fails
or times out; `warn` checks only report."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any

from nodetune import __version__, exitcodes
from nodetune.check.bench import bench_section, bench_unit
from nodetune.check.suite import CheckDef, Suite
from nodetune.collectors import CollectorStatus, NodeFacts, gather, limits, load_all
from nodetune.facts.health import health_view
from nodetune.facts.nethealth import History
from nodetune.facts.record import record
from nodetune.rules.evaluation import evaluate
from nodetune.rules.rule import Rule
from nodetune.rules.templating import variables_used
from nodetune.schemas import CHECK_SCHEMA, utc_timestamp

SUMMARY_LIMIT = 200  # characters of the one-line summary (a Slurm drain reason)
PREFIX = "nodetune:"
# A check that could not be evaluated because a collector it reads failed (nodetune's or the
# tree's fault, not the node's health): never healthy, never a drain, exit 3.
NOT_CHECKED_FAULT = "NT0001"
_STATUS_RANK = {"timeout": 5, "fail": 4, "error": 3, "unknown": 2, "pass": 1, "skipped": 0}


# -- units with timeouts ------------------------------------------------------------------

@record
class Unit:
    name: str
    run: Callable[[], Any]
    budget: float  # seconds it may take
    collector: bool = False  # a collector's gather, named so when it times out

    @property
    def timeout_note(self) -> str:
        if self.collector:
            return f"collector {self.name} timed out after {self.budget:g} s"
        return f"{self.name} did not answer within {self.budget:g} s"


@record
class UnitResult:
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    timed_out: bool = False
    note: str = ""  # why it timed out: its own budget, or the run's total timeout


class _Worker(threading.Thread):
    """Runs units in order; `current` is the unit under way and when it started."""

    def __init__(self, units: list[Unit], cond: threading.Condition,
                 results: dict[str, UnitResult]) -> None:
        super().__init__(daemon=True, name="nodetune-check")
        self.units = units
        self.cond = cond
        self.results = results
        self.current: tuple[Unit, float] = (units[0], time.monotonic())
        self.finished = False
        self.abandoned = False

    def run(self) -> None:
        for i, unit in enumerate(self.units):
            with self.cond:
                if self.abandoned:
                    return
                self.current = (unit, time.monotonic())
            start = self.current[1]
            try:
                result = UnitResult(value=unit.run())
            except Exception as exc:  # a failing unit must not cost the others
                result = UnitResult(error=f"{type(exc).__name__}: {exc}")
            result.seconds = time.monotonic() - start
            with self.cond:
                if self.abandoned:
                    return
                self.results[unit.name] = result
                if i + 1 < len(self.units):
                    self.current = (self.units[i + 1], time.monotonic())
                else:
                    self.finished = True
                self.cond.notify_all()


def run_units(units: list[Unit], deadline: float) -> tuple[dict[str, UnitResult], bool]:
    """Run units in order within their budgets and the deadline; (results, any abandoned)."""
    results: dict[str, UnitResult] = {}
    cond = threading.Condition()
    pending = list(units)
    abandoned = False
    while pending:
        worker = _Worker(pending, cond, results)
        worker.start()
        with cond:
            while not worker.finished:
                unit, started = worker.current
                now = time.monotonic()
                limit = min(started + unit.budget, deadline)
                if now < limit:
                    cond.wait(limit - now)
                    continue
                worker.abandoned = abandoned = True
                own = now >= started + unit.budget
                results[unit.name] = UnitResult(
                    timed_out=True, seconds=now - started,
                    note=unit.timeout_note if own else "the total --timeout ran out")
                pending = [u for u in pending if u.name not in results]
                if not own:
                    for u in pending:
                        results[u.name] = UnitResult(timed_out=True,
                                                     note="the total --timeout ran out first")
                    pending = []
                break
            else:
                pending = []
    return results, abandoned


# -- outcomes -----------------------------------------------------------------------------

@record
class CheckOutcome:
    check: CheckDef
    status: str  # pass fail unknown skipped timeout error
    seconds: float = 0.0
    findings: list[Any] = field(default_factory=list)  # nodetune.facts.model.Finding
    note: str = ""

    @property
    def fault_code(self) -> Any:
        return NOT_CHECKED_FAULT if self.status == "error" else self.check.rule.get("fault_code")

    def to_json(self) -> dict[str, Any]:
        rule = self.check.rule
        doc: dict[str, Any] = {
            "id": self.check.id, "fault_code": self.fault_code,
            "severity": rule.get("severity", "warning"), "action": self.check.action,
            "status": self.status, "seconds": round(self.seconds, 4),
        }
        if self.note:
            doc["note"] = self.note
        doc["findings"] = [{"subject": f.subject, "status": f.status.value, "actual": f.actual,
                            "expected": f.expected, "message": f.message}
                           for f in self.findings]
        return doc


def _fault(outcome: CheckOutcome, finding: Any | None) -> dict[str, Any]:
    rule = outcome.check.rule
    doc = {"id": outcome.check.id, "fault_code": rule.get("fault_code"),
           "severity": rule.get("severity", "warning"), "action": outcome.check.action}
    if finding is None:  # the check timed out
        doc.update({"subject": None, "message": outcome.note, "timed_out": True})
        return doc
    doc.update({"subject": finding.subject, "message": finding.message, "fact": finding.fact,
                "expected": finding.expected, "actual": finding.actual, "why": finding.why,
                "fix": finding.fix})
    return doc


def summary_line(faults: list[dict[str, Any]], warnings: list[dict[str, Any]],
                 counts: dict[str, int], tier: str, limit: int = SUMMARY_LIMIT,
                 unchecked: list[str] | None = None) -> str:
    """One line for people and for Slurm's drain reason (ASCII, at most `limit` characters).

    `unchecked`: why each drain check that could not be evaluated was not; the line then says
    "not checked" (never "healthy"), and how many checks were evaluated."""
    total = sum(counts.values())
    evaluated = f"{total - counts.get('error', 0) - counts.get('timeout', 0)}/{total}"
    if faults:
        return join_limited(PREFIX, [f["message"] for f in faults], limit)
    if unchecked:
        return join_limited(f"{PREFIX} not checked ({tier}: {evaluated} evaluated):",
                            unchecked, limit)
    text = f"{PREFIX} healthy ({tier}: {evaluated} evaluated; " + ", ".join(
        f"{n} {s}" for s, n in counts.items() if n and s in ("pass", "skipped", "unknown")) + ")"
    text = text.replace(" pass", " passed")
    if warnings:
        text = join_limited(text + "; warning:", [w["message"] for w in warnings], limit)
    return text


def join_limited(head: str, parts: list[str], limit: int) -> str:
    """`head part1; part2 (+N more)` within `limit` characters, duplicates dropped."""
    unique = list(dict.fromkeys(_ascii(p) for p in parts if p))
    text = head
    for i, part in enumerate(unique):
        sep = " " if i == 0 else "; "
        more = f" (+{len(unique) - i - 1} more)" if i < len(unique) - 1 else ""
        if len(text) + len(sep) + len(part) + len(more) <= limit:
            text += sep + part
            continue
        if i == 0:  # the first fault alone is too long: cut it
            room = limit - len(text) - len(sep) - len(more) - 3
            return text + sep + part[:max(room, 0)] + "..." + more
        return text + f" (+{len(unique) - i} more)"
    return text


def _ascii(text: str) -> str:
    return " ".join(text.encode("ascii", "replace").decode().replace('"', "'").split())


@record
class Report:
    tier: str
    origin: str
    node: str
    profile: str | None
    variables: dict[str, Any]
    outcomes: list[CheckOutcome]
    collectors: dict[str, Any]
    started_at: float
    seconds: float
    abandoned: bool  # a unit was left running in a thread (exit without waiting for it)
    health: dict[str, Any] = field(default_factory=dict)  # the health section the checks read

    @property
    def faults(self) -> list[dict[str, Any]]:
        return self._by_action("drain")

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return self._by_action("warn")

    def _by_action(self, action: str) -> list[dict[str, Any]]:
        out = []
        for o in self.outcomes:
            if o.check.action != action:
                continue
            if o.status == "timeout":
                out.append(_fault(o, None))
            out += [_fault(o, f) for f in o.findings if f.status.value == "fail"]
        return out

    @property
    def errors(self) -> list[str]:
        return [f"{o.check.id}: {o.note}" for o in self.outcomes if o.status == "error"]

    @property
    def unchecked(self) -> list[str]:
        """Why each drain check that could not be evaluated was not (collector failures)."""
        return [o.note.removeprefix("could not check: ") for o in self.outcomes
                if o.status == "error" and o.check.action == "drain"]

    @property
    def healthy(self) -> bool:
        return not self.faults and not self.unchecked

    @property
    def exit_code(self) -> int:
        if self.faults:
            return exitcodes.UNHEALTHY
        return exitcodes.ERROR if self.errors else exitcodes.OK

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(_STATUS_RANK, 0)
        for o in self.outcomes:
            counts[o.status] += 1
        return counts

    def summary(self) -> str:
        return summary_line(self.faults, self.warnings, self.counts(), self.tier,
                            unchecked=self.unchecked)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": CHECK_SCHEMA, "nodetune_version": __version__, "node": self.node,
            "origin": self.origin, "tier": self.tier, "profile": self.profile,
            "healthy": self.healthy, "exit_code": self.exit_code, "summary": self.summary(),
            "started_at": utc_timestamp(self.started_at),
            "finished_at": utc_timestamp(self.started_at + self.seconds),
            "seconds": round(self.seconds, 4), "cached": False, "cache_age_s": None,
            "counts": self.counts(), "faults": self.faults, "warnings": self.warnings,
            "errors": self.errors, "checks": [o.to_json() for o in self.outcomes],
            "collectors": self.collectors, "variables": self.variables,
        }


# -- the run ------------------------------------------------------------------------------

def _runner_unit(name: str) -> bool:
    """Units the runner itself provides, not collectors: the write probe and benchmarks."""
    return name == "write_probe" or name.startswith("bench:")


def _budgets(checks: list[CheckDef]) -> dict[str, float]:
    budget: dict[str, float] = {}
    for check in checks:
        for name in check.needs:
            budget[name] = max(budget.get(name, 0.0), check.timeout)
    return budget


def _collector_unit(ctx: Any, name: str, partial: dict[str, Any]) -> Callable[[], Any]:
    """gather() one collector; its sections also go to `partial` for later units (benchmarks)."""
    def run() -> Any:
        facts = gather(ctx, only=(name,), time_limits=False)  # the unit has its limit
        partial.update(facts.sections)
        return facts
    return run


def write_probe(root: Any, mountpoints: list[str]) -> list[dict[str, Any]]:
    """Create, write, fsync and remove a small temporary file in each mount point (live host)."""
    out = []
    for path in mountpoints:
        item: dict[str, Any] = {"subject": path, "writable": True, "error": ""}
        try:
            import tempfile  # only for the write probe

            fd, name = tempfile.mkstemp(prefix=".nodetune-probe-", dir=root.path(path))
            try:
                os.write(fd, b"nodetune write probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(name)
        except OSError as exc:
            item.update(writable=False, error=exc.strerror or str(exc))
        out.append(item)
    return out


def _variables_missing(check: CheckDef, variables: dict[str, Any]) -> list[str]:
    return sorted(n for n in variables_used(check.rule) if variables.get(n) is None)


# Collectors a profile match reads (recommend.yaml conditions on cpu, pci, gpu and derived).
MATCH_COLLECTORS = ("cpu", "numa", "kernel", "pci", "gpu", "nic", "rdma")


def run_checks(node: Any, suite: Suite, variables: dict[str, Any], *,
               total_timeout: float, write_probe_enabled: bool = False,
               nvml_requested: bool | None = None, profile: str | None = None,
               resolve_variables: Callable[[dict[str, Any]], tuple[dict[str, Any], str | None]]
               | None = None, facts: Any = None,
               hints: Mapping[str, str] | None = None,
               history: History | None = None) -> Report:
    """Gather what the suite's checks need, evaluate every check, return the Report.

    `resolve_variables(facts) -> (variables, profile name)` picks the variables from the
    gathered facts (`--profile auto`); it replaces `variables` before anything is evaluated.
    `facts` (NodeFacts) are facts already gathered: the collectors they hold are not run again.
    `hints` name the option that sets a variable, for checks skipped without it.
    `history`: earlier network counter readings (nodetune.check.readings).
    """

    started_at, start = time.time(), time.monotonic()
    deadline = start + total_timeout
    checks = list(suite.checks)
    budgets = _budgets(checks)
    if resolve_variables is not None:
        default = max((c.timeout for c in checks), default=5.0)
        for name in MATCH_COLLECTORS:
            budgets.setdefault(name, default)
    registry = load_all(tuple(n for n in budgets if not _runner_unit(n)))
    given: dict[str, Any] = {} if facts is None else dict(facts.status)
    ctx = node.context()
    partial: dict[str, Any] = {} if facts is None else dict(facts.sections)
    # a collector may take as long as the checks reading it allow, at most its own limit
    units = [Unit(n, _collector_unit(ctx, n, partial), min(budgets[n], limits.limit(registry[n])),
                  collector=True)
             for n in registry if n in budgets and n not in given]
    mounts = list(dict.fromkeys([*(variables.get("required_mounts") or []),
                                 *(variables.get("writable_paths") or [])]))
    probing = write_probe_enabled and node.root.is_live and "write_probe" in budgets
    if probing:
        units.append(Unit("write_probe", lambda: write_probe(node.root, mounts),
                          budgets["write_probe"]))
    for name in [n for n in budgets if n.startswith("bench:")]:
        units.append(Unit(name, bench_unit(name.partition(":")[2], partial, node.root.is_live),
                          budgets[name]))
    results, abandoned = run_units(units, deadline)

    doc: dict[str, Any] = {} if facts is None else dict(facts.sections)
    collectors: dict[str, Any] = {n: s.to_json() for n, s in given.items() if n in budgets}
    for name, res in results.items():
        if name in registry:
            if isinstance(res.value, NodeFacts):
                doc.update(res.value.sections)
                collectors.update({n: s.to_json() for n, s in res.value.status.items()})
            else:
                collectors[name] = CollectorStatus(
                    False, res.seconds, res.error or res.note or "did not run",
                    timed_out=res.timed_out).to_json()
    doc["collectors"] = collectors
    if resolve_variables is not None:
        variables, profile = resolve_variables(doc)
    health = health_view(doc, variables, nvml_requested=nvml_requested, history=history)
    probe = results.get("write_probe")
    health["write_probe"] = probe.value if probe and probe.value is not None else (
        [] if not probing else None)
    health["bench"] = _bench_section(results, variables)
    doc["health"] = health

    outcomes = [_evaluate(check, doc, variables, results, hints or {}) for check in checks]
    return Report(tier=suite.tier, origin=node.origin, node=_hostname(doc, node), profile=profile,
                  variables=variables, outcomes=outcomes, collectors=collectors,
                  started_at=started_at, seconds=time.monotonic() - start, abandoned=abandoned,
                  health=health)


def _bench_section(results: dict[str, UnitResult], variables: dict[str, Any]) -> dict[str, Any]:
    return bench_section({n.partition(":")[2]: r.value for n, r in results.items()
                          if n.startswith("bench:") and r.value is not None}, variables)


def _hostname(doc: dict[str, Any], node: Any) -> str:
    """The node's name from the kernel collector's `kernel.hostname` fact."""
    name = (doc.get("kernel") or {}).get("hostname")
    if name:
        return str(name)
    return os.uname().nodename if node.root.is_live else "?"  # socket.gethostname() reads it


def _failed_collectors(check: CheckDef, collectors: Mapping[str, Any]) -> list[str]:
    """"gpu collector failed: ValueError: ..." for each collector the check reads that failed
    (a subsystem that is absent, NoData, is not a failure: its checks see no items)."""
    out = []
    for name in check.needs:
        status = collectors.get(name)
        if isinstance(status, Mapping) and not status.get("ok", True) \
                and not status.get("no_data") and not status.get("timed_out"):
            out.append(f"{name} collector failed: {status.get('error') or 'no reason'}")
    return out


def _evaluate(check: CheckDef, doc: dict[str, Any], variables: dict[str, Any],
              results: dict[str, UnitResult], hints: Mapping[str, str]) -> CheckOutcome:
    for name in check.needs:
        res = results.get(name)
        if res is None:
            continue
        if res.timed_out or res.seconds > check.timeout:
            why = res.note if res.timed_out else \
                f"{name} answered only after {res.seconds:.1f} s"
            note = f"check {check.id} timed out after {check.timeout:g} s ({why})"
            return CheckOutcome(check, "timeout", res.seconds, note=note)
    for name in check.needs:  # in facts gathered before (the agent's cycle)
        status = (doc.get("collectors") or {}).get(name)
        if name not in results and isinstance(status, Mapping) and status.get("timed_out"):
            note = f"check {check.id} timed out after {check.timeout:g} s ({status.get('error')})"
            return CheckOutcome(check, "timeout", note=note)
    failed = _failed_collectors(check, doc.get("collectors") or {})
    if failed:
        return CheckOutcome(check, "error", note="could not check: " + "; ".join(failed))
    for name in check.needs:
        res = results.get(name)
        if name.startswith("bench:") and res is not None:
            if res.error:
                return CheckOutcome(check, "error", res.seconds, note=f"benchmark: {res.error}")
            if getattr(res.value, "status", "ok") == "skipped":
                return CheckOutcome(check, "skipped", res.seconds, note=str(res.value.note))
    missing = _variables_missing(check, variables)
    if missing:
        wanted = [hints.get(n, f"a profile that sets {n}") for n in missing]
        return CheckOutcome(check, "skipped",
                            note=f"no expected value: give {' or '.join(wanted)}")
    start = time.perf_counter()
    try:
        rule = Rule.from_dict(check.rule, source=check.source, checked=True)
        findings = evaluate([rule], doc, variables)
    except Exception as exc:  # one broken check must not cost the others
        return CheckOutcome(check, "error", time.perf_counter() - start,
                            note=f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    status = max((f.status.value for f in findings), key=_STATUS_RANK.__getitem__,
                 default="skipped")
    note = ""
    if status in ("skipped", "unknown"):
        note = next((f.message for f in findings if f.status.value == status), "")
    return CheckOutcome(check, status, seconds, findings=findings, note=note)
