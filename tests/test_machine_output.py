"""One format for times and one scale for scores in every JSON document: ISO 8601 UTC times
("2026-12-03T16:20:49.123456Z") and `compliance_score` in percent (0..100) in audit, check,
the agent's report and fleet reports alike; /metrics keeps Prometheus's ratio, named _ratio."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from nodetune.agent.cycle import CycleOptions, run_cycle
from nodetune.check.cache import load_result
from nodetune.cli import main
from nodetune.schemas import AGENT_REPORT_SCHEMA, CHECK_SCHEMA, epoch_of, utc_timestamp
from tests.agent_scrape import scrape
from tests.agent_scrape import series as scraped_series

SNAPSHOT = Path(__file__).parent / "fixtures" / "snapshots" / "h100x4-fc-vm.tar.gz"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return int(exited.value.code or 0), json.loads(capsys.readouterr().out)


def test_the_timestamp_format_round_trips() -> None:
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert utc_timestamp(951782400.25) == "2000-02-29T00:00:00.250000Z"  # a leap day
    assert utc_timestamp(1795826111.8329999) == "2026-11-28T00:35:11.833000Z"
    now = time.time()
    assert abs(epoch_of(utc_timestamp(now)) - now) < 1e-5  # type: ignore[operator]
    assert epoch_of("2026-12-03T16:20:49Z") == 1796314849.0  # seconds only, as elsewhere
    for bad in (1795826111.8, None, "", "2026-12-03 16:20:49Z", "2026-13-03T16:20:49Z",
                "2026-12-03T16:20:49+00:00"):
        assert epoch_of(bad) is None, bad


def test_check_json_times_are_iso_and_the_cache_still_answers(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cache = str(tmp_path / "check.json")
    args = ("check", "--from", str(SNAPSHOT), "--json", "--cache-file", cache)
    code, doc = run(capsys, *args)
    assert doc["schema"] == CHECK_SCHEMA == "nodetune.check/2"
    assert ISO.fullmatch(doc["started_at"]) and ISO.fullmatch(doc["finished_at"])
    started, finished = epoch_of(doc["started_at"]), epoch_of(doc["finished_at"])
    assert started is not None and finished is not None
    assert 0 <= finished - started == pytest.approx(doc["seconds"], abs=1e-4)  # rounded
    assert abs(time.time() - finished) < 120
    again_code, again = run(capsys, *args, "--max-age", "600")
    assert (again_code, again["cached"], again["finished_at"]) == (code, True, doc["finished_at"])
    assert 0 <= again["cache_age_s"] < 600


def test_a_cached_answer_with_an_epoch_time_is_not_reused(tmp_path: Path) -> None:
    """check/1 wrote `finished_at` as a number: such an answer is run again, not trusted."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"cache_key": "k", "finished_at": time.time()}), encoding="utf-8")
    assert load_result(str(path), "k", 600) is None
    path.write_text(json.dumps({"cache_key": "k", "finished_at": utc_timestamp(time.time())}),
                    encoding="utf-8")
    assert load_result(str(path), "k", 600)["cached"] is True  # type: ignore[index]


def test_the_agent_report_agrees_with_audit_and_metrics_use_a_ratio(
        capsys: pytest.CaptureFixture[str]) -> None:
    report = run_cycle(CycleOptions(snapshot=str(SNAPSHOT), profile="hgx-h100"))
    assert report["schema"] == AGENT_REPORT_SCHEMA == "nodetune.agent-report/2"
    assert ISO.fullmatch(report["started_at"]) and ISO.fullmatch(report["finished_at"])
    assert report["check"]["schema"] == CHECK_SCHEMA
    _, audit = run(capsys, "audit", "--from", str(SNAPSHOT), "--profile", "hgx-h100", "--json")
    score = audit["summary"]["compliance_score"]
    assert 1 < score < 100  # this VM fails some of the HGX H100 settings: a percentage
    assert report["summary"]["compliance_score"] == score
    assert report["audit"]["summary"]["compliance_score"] == score

    metrics, served = scrape(report, 0.5)
    series = scraped_series(metrics, "nodetune_")
    assert series["nodetune_node_compliance_ratio"] == pytest.approx(score / 100)
    assert "nodetune_node_compliance_score" not in series
    assert series["nodetune_last_run_timestamp_seconds"] == pytest.approx(time.time(), abs=60)
    assert ISO.fullmatch(served["agent"]["started_at"])
    assert ISO.fullmatch(served["agent"]["last_success_at"])
    assert served["finished_at"] == report["finished_at"]
