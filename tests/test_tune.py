"""nodetune tune: the decision on recorded runs, the cycle's rollback on a regression (with
the apply steps replayed, and with the real Ansible apply on a copy of a host tree), the card."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from nodetune.apply import remediate
from nodetune.apply.ansible import TaskOutcome
from nodetune.bench import compare
from nodetune.bench.results import SuiteResult
from nodetune.errors import Refused
from nodetune.tune import card, decide, operation
from nodetune.views import tune_text
from tests.apply_runs import snapshot

BENCH = Path(__file__).parent / "fixtures" / "bench"
RUN = BENCH / "h100x2-fc-vm-bench.json"  # memcpy + allreduce, 3 samples each


def recorded(scale: dict[str, float] | None = None) -> list[SuiteResult]:
    """The recorded run; metrics whose key starts with a `scale` prefix multiplied."""
    suites = compare.baseline_suites(json.loads(RUN.read_text()))
    out = []
    for s in suites:
        metrics = []
        for m in s.metrics:
            factor = next((f for p, f in (scale or {}).items() if m.key.startswith(p)), 1.0)
            metrics.append(dataclasses.replace(m, samples=tuple(v * factor for v in m.samples)))
        out.append(dataclasses.replace(s, metrics=metrics))
    return out


def decision(after: list[SuiteResult], **options: Any) -> decide.Decision:
    before = recorded()
    result = compare.compare(before, after, before_options={"quick": False},
                             after_options={"quick": False, **options})
    return decide.decide(compare.to_json(result, "b", {}, "fp"), before, after)


def test_decision_on_recorded_runs() -> None:
    assert decision(recorded()).verdict == "unchanged"
    improved = decision(recorded({"memcpy.h2d_pinned.GPU0": 1.2}))
    assert improved.verdict == "improved"
    assert any("H2D pinned GPU0" in r for r in improved.reasons)
    regressed = decision(recorded({"memcpy.h2d_pinned.GPU0": 1.2, "allreduce.busbw.1GiB": 0.8}))
    assert regressed.verdict == "regressed"
    assert [r for r in regressed.reasons if "-20.0%" in r]
    assert decision(recorded(), quick=True).verdict == "incomparable"


def test_a_suite_failing_after_the_change_is_a_regression() -> None:
    after = recorded()
    after[1] = SuiteResult(suite="allreduce", status="failed", note="nccl timed out")
    result = decision(after)
    assert result.verdict == "regressed"
    assert result.reasons[0] == "suite allreduce failed after the change: nccl timed out"


class ReplaySteps:
    """The apply entry points, replayed: one change, a state file, a rollback that records."""

    def __init__(self, tmp: Path, change: Any) -> None:
        self.tmp = tmp
        self.change = change
        self.rolled_back: list[Path] = []

    def prepare(self, request: remediate.Request, workdir: Path) -> Any:
        audit = remediate.Audit(profile="h100-training", findings=[], facts={})
        plan = type("P", (), {"changes": [self.change], "manual": []})()
        return remediate.Plan(request=request, audit=audit, plan=plan, refused=[])

    def plan(self, prepared: Any) -> remediate.Report:
        report = remediate.Report(mode="dry-run", profile="h100-training")
        report.tasks = [TaskOutcome(host="localhost", task="THP", role="memory",
                                    action="nodetune_sysfs", status="ok", changed=True)]
        report.settings = [remediate.SettingOutcome(self.change, "would-change")]
        return report

    def execute(self, prepared: Any) -> remediate.Report:
        state = self.tmp / "state.json"
        state.write_text("{}")
        return remediate.Report(mode="apply", profile="h100-training", state_file=state,
                                settings=[remediate.SettingOutcome(self.change, "fixed")])

    def rollback(self, state_file: Path, root: str | None, workdir: Path) -> remediate.Report:
        self.rolled_back.append(state_file)
        return remediate.Report(mode="rollback", profile="h100-training", state_file=state_file)


@pytest.fixture
def change() -> Any:
    from nodetune.apply.render.plan import Change
    from nodetune.facts.model import Disruption

    return Change(id="memory.thp", subject=None, area="memory", severity="warning",
                  current="always", wanted="madvise", disruption=Disruption.NONE,
                  variables={"memory_thp": "madvise"})


def cycle(tmp_path: Path, change: Any, after: list[SuiteResult], *, keep: bool = False
          ) -> tuple[operation.TuneResult, ReplaySteps]:
    steps = ReplaySteps(tmp_path, change)
    runs = {"baseline": recorded(), "after": after}
    result = operation.prove(remediate.Request(root=str(tmp_path)), ["memcpy", "allreduce"],
                             runs.__getitem__, keep=keep, confirm=lambda p, r: True,
                             workdir=tmp_path, steps=steps, fingerprint="fp",
                             bench_options={"quick": False})
    return result, steps


def test_regression_rolls_back_and_says_so(tmp_path: Path, change: Any) -> None:
    result, steps = cycle(tmp_path, change, recorded({"allreduce.busbw.1GiB": 0.8}))
    assert result.decision is not None and result.decision.verdict == "regressed"
    assert steps.rolled_back == [tmp_path / "state.json"]
    assert result.rollback is not None
    assert card.exit_code(result) == 1
    the_card = card.build_card(result, {"hostname": "n1", "fingerprint": "fp"}, {},
                               created="2026-12-02T17:00:00+00:00")
    assert the_card["action"] == "rolled back"
    assert the_card["changes"] == [{"setting": "memory.thp", "from": "always", "to": "madvise",
                                    "status": "fixed"}]
    text = tune_text.card_text(the_card)
    assert "decision:  regressed -> rolled back" in text
    assert "n1 (fingerprint fp)" in text
    doc = card.report(result, {}, the_card["node"], {}, the_card)
    assert doc["schema"] == "nodetune.tune/1"
    assert doc["baseline"]["suites"] and doc["after"]["suites"]
    assert doc["state_file"] == str(tmp_path / "state.json")
    assert doc["rollback"]["mode"] == "rollback"


def test_regression_kept_with_keep(tmp_path: Path, change: Any) -> None:
    result, steps = cycle(tmp_path, change, recorded({"allreduce.busbw.1GiB": 0.8}), keep=True)
    assert steps.rolled_back == []
    assert result.kept
    assert card.exit_code(result) == 1
    assert "--keep" in card.build_card(result, {}, {})["action"]


def test_improvement_is_kept(tmp_path: Path, change: Any) -> None:
    result, steps = cycle(tmp_path, change, recorded({"memcpy.h2d_pinned": 1.15}))
    assert result.decision is not None and result.decision.verdict == "improved"
    assert steps.rolled_back == [] and result.rollback is None
    assert card.exit_code(result) == 0
    assert card.build_card(result, {}, {})["action"] == "kept"


def test_card_id_changes_when_the_card_is_edited(tmp_path: Path, change: Any) -> None:
    result, _ = cycle(tmp_path, change, recorded())
    the_card = card.build_card(result, {"hostname": "n1", "fingerprint": "fp"}, {},
                               created="2026-12-02T17:00:00+00:00")
    assert the_card["card_id"] == card.card_id(the_card)
    edited = {**the_card, "decision": "improved"}
    assert card.card_id(edited) != the_card["card_id"]


def test_refusal_runs_no_benchmark(tmp_path: Path, change: Any) -> None:
    ran: list[str] = []

    def bench(phase: str) -> list[SuiteResult]:
        ran.append(phase)
        return recorded()

    with pytest.raises(Refused):
        operation.prove(remediate.Request(), ["memcpy"], bench, keep=False,
                        confirm=lambda p, r: False, workdir=tmp_path,
                        steps=ReplaySteps(tmp_path, change))
    assert ran == []


def test_card_png(tmp_path: Path, change: Any) -> None:
    from nodetune.views import tune_png

    result, _ = cycle(tmp_path, change, recorded({"allreduce.busbw.1GiB": 0.8}))
    png = tmp_path / "card.png"
    tune_png.plot(str(png), card.build_card(result, {"hostname": "n1", "fingerprint": "fp"}, {}))
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_regression_rolls_back_a_root_tree_through_ansible(host_tree: Any,
                                                           tmp_path: Path) -> None:
    """The real apply and rollback (Ansible) on a copy of the 2x H200 VM's tree."""
    root = tmp_path / "node"
    shutil.copytree(host_tree("h200x2-vm-gather"), root, symlinks=True)
    thp = root / "sys/kernel/mm/transparent_hugepage/enabled"
    thp.write_text("[always] madvise never\n")
    original = snapshot(root, with_state=False)
    request = remediate.Request(root=str(root), only=("memory.thp",))
    runs = {"baseline": recorded(), "after": recorded({"allreduce.busbw.1GiB": 0.8})}
    seen: dict[str, str] = {}

    def bench(phase: str) -> list[SuiteResult]:
        seen[phase] = thp.read_text()
        return runs[phase]

    result = operation.prove(request, ["allreduce"], bench, keep=False,
                             confirm=lambda p, r: True, workdir=tmp_path / "work",
                             bench_options={"quick": False})
    assert seen == {"baseline": "[always] madvise never\n", "after": "always [madvise] never\n"}
    assert result.decision is not None and result.decision.verdict == "regressed"
    assert result.rollback is not None and result.state_file is not None
    assert snapshot(root, with_state=False) == original
    assert json.loads(result.state_file.read_text())["status"] == "rolled-back"


def test_recorded_cycle_on_the_h200_vm() -> None:
    """`nodetune tune memcpy --quick --yes` run for real on a disposable H200 VM."""
    doc = json.loads((BENCH / "h200-fc-vm-tune-memcpy.json").read_text())
    assert doc["schema"] == "nodetune.tune/1"
    assert doc["decision"]["verdict"] == "regressed" and doc["action"] == "rolled back"
    assert doc["rollback"]["mode"] == "rollback"
    assert doc["rollback"]["state_file"] == doc["state_file"] == doc["applied"]["state_file"]
    the_card = doc["card"]
    assert the_card["card_id"] == card.card_id(the_card)
    assert the_card["node"]["fingerprint"] == doc["node"]["fingerprint"]
    before = compare.baseline_suites(doc["baseline"])
    after = compare.baseline_suites(doc["after"])
    again = compare.compare(before, after, before_options=doc["baseline"]["options"],
                            after_options=doc["after"]["options"])
    assert decide.decide(compare.to_json(again, "b", {}, "fp"), before, after).verdict \
        == "regressed"
    assert (BENCH / "h200-fc-vm-tune-memcpy-card.txt").read_text().startswith(
        f"nodetune tune card {the_card['card_id']}\n")


def test_a_baseline_that_did_not_run_changes_nothing(tmp_path: Path, change: Any) -> None:
    from nodetune.errors import BenchError

    steps = ReplaySteps(tmp_path, change)
    skipped = [*recorded(), SuiteResult(suite="fio", status="skipped", note="fio: needs --dir")]
    with pytest.raises(BenchError, match=r"fio skipped \(fio: needs --dir\); nothing was"):
        operation.prove(remediate.Request(), ["memcpy", "fio"], lambda phase: skipped,
                        keep=False, confirm=lambda p, r: True, workdir=tmp_path, steps=steps)
    assert not (tmp_path / "state.json").exists()
