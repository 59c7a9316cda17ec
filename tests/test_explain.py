"""`nodetune explain`: every setting of the shipped profiles and every check of the shipped
suites explains itself, with its sources from profiles/SOURCES.md, its fix, and the profiles
and tiers that use it; an unknown id is one line with the closest ids and exit 3."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nodetune import exitcodes
from nodetune.check.suite import TIERS, load_suite
from nodetune.cli import cli, main
from nodetune.explain.operation import UnknownId, close_matches, explain, load_catalog
from nodetune.profiles.catalog import Library, load_all
from nodetune.schemas import EXPLAIN_SCHEMA
from nodetune.views.explain_text import render

REPO = Path(__file__).resolve().parents[1]
CATALOG = load_catalog()


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI as a user runs it (nodetune.cli.main: its exit codes and error lines)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_a_setting_on_plain_rules_with_its_source_fix_and_profiles(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(capsys, "explain", "gpu.nvlink_inactive", "--json")
    assert (code, err) == (exitcodes.OK, "")
    doc = json.loads(out)
    assert doc["schema"] == EXPLAIN_SCHEMA == "nodetune.explain/1"
    (entry,) = doc["entries"]
    assert entry["kind"] == "setting" and entry["severity"] == "critical"
    assert entry["fact"] == "derived.gpus[*].nvlink_down" and entry["expected"] == "<= 0"
    nvlink_doc = "docs.nvidia.com/health-validation/reference/checks/nvlink"
    assert entry["sources"] == [{"key": "V2", "title": nvlink_doc}]
    assert entry["fix"].startswith("reset the GPU or reboot")
    assert entry["defined_in"] == "profiles/gpu-common.yaml:49"
    with_it = {p.name for p in load_all(Library()) if any(r.id == "gpu.nvlink_inactive"
                                                            for r in p.rules)}
    assert {u["name"] for u in entry["profiles"]} == with_it
    assert "base" not in with_it and {"gpu-common", "hgx-h100", "gb200"} <= with_it


def test_a_tunable_setting_shows_the_remediation_apply_runs() -> None:
    (entry,) = explain("memory.swappiness", CATALOG).entries
    assert entry.tunable == "sysctl vm.swappiness"
    assert entry.remediation == {"role": "kernel", "task": "sysctl",
                                 "vars": {"kernel_sysctl": {"vm.swappiness": "10"}}, "value": 10}
    assert entry.fix == "sysctl -w vm.swappiness=10 and persist it in /etc/sysctl.d/"
    assert entry.persisted == "kernel.persisted.sysctl.vm.swappiness.value"
    text = render(explain("gpu.fabric_manager", CATALOG).to_json(), width=100)
    assert "  tunable     service nvidia-fabricmanager\n" in text
    assert "  apply       role services, task enable (services_enabled: nvidia-fabricmanager)\n" \
        in text
    assert "  disruption  service-restart\n" in text
    assert "  only when   derived.nvswitch_count >= 1 (otherwise skipped: no NVSwitch on this " \
        "node)\n" in text


def test_a_fault_code_in_any_case_names_its_check_and_tiers() -> None:
    for query in ("NT3001", "nt3001", "nvlink.inactive"):
        (entry,) = explain(query, CATALOG).entries
        assert (entry.kind, entry.id, entry.fault_code) == ("check", "nvlink.inactive", "NT3001")
        assert entry.tiers == ["quick", "standard"] and entry.action == "drain"
        assert [s.key for s in entry.sources] == ["V2"]
    (bench,) = explain("NT6001", CATALOG).entries
    assert bench.tiers == ["standard"]


def test_profiles_vary_a_setting_and_each_says_how() -> None:
    (entry,) = explain("pcie.gpu_link_width", CATALOG).entries
    by_name = {u.name: u for u in entry.profiles}
    assert entry.defined_in.startswith("profiles/gpu-common.yaml:")
    assert by_name["gpu-common"].severity == "warning" and by_name["gpu-common"].why is None
    assert by_name["hgx-h100"].severity == "critical"
    assert by_name["hgx-h100"].why is not None and "H100 SXM5" in by_name["hgx-h100"].why
    assert {s.key for s in entry.sources} >= {"R2"}


def test_a_check_lists_the_profiles_that_set_its_expectation() -> None:
    setting, check = explain("gpu.count", CATALOG).entries
    assert (setting.kind, check.kind, check.fault_code) == ("setting", "check", "NT1001")
    assert check.variables == ["gpu_count"]
    values = {u.name: u.expected for u in check.profiles}
    for profile in load_all(Library()):
        if "gpu_count" in profile.variables:
            assert values.pop(profile.name) == str(profile.variables["gpu_count"])
    assert not values
    assert {u.name: u.expected for u in setting.profiles}["gb200"] == "4"


def test_every_shipped_setting_and_check_explains_itself() -> None:
    known_sources = set(CATALOG.sources)
    assert len(known_sources) >= 50
    ids = CATALOG.ids()
    suites = {c.id for t in TIERS for c in load_suite(t).checks}
    assert {i for i, k in ids if k == "check"} == suites
    for ident, _kind in ids:
        for entry in explain(ident, CATALOG).entries:
            assert entry.why and entry.fix, ident
            for source in entry.sources:
                assert source.key in known_sources, f"{ident} cites [{source.key}]"
            assert entry.profiles or entry.kind == "check", ident
            text = render(explain(ident, CATALOG).to_json(), width=80)
            # only a word that cannot be broken (a URL, a long fact path) runs past the width
            assert all(len(line) <= 80 or max(map(len, line.split())) > 40
                       for line in text.splitlines()), ident


def test_every_fault_code_of_the_suites_is_known() -> None:
    codes = [c["fault_code"] for suite in sorted((REPO / "checks").glob("*.yaml"))
             for c in yaml.safe_load(suite.read_text(encoding="utf-8"))["checks"]]
    for code in codes:
        (entry,) = explain(code, CATALOG).entries
        assert entry.fault_code == code


def test_an_unknown_id_is_one_line_with_the_closest_ids(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(capsys, "explain", "gpu.nvlink")
    assert (code, out) == (exitcodes.ERROR, "")
    assert err == ("nodetune: error: no setting, check or fault code 'gpu.nvlink'; fix: did you "
                   "mean gpu.nvml, gpu.nvlink_inactive? (`nodetune explain --list` prints every "
                   "id)\n")
    assert close_matches("NT301", CATALOG)[0].startswith("NT30")
    assert close_matches("swapiness", CATALOG) == ["memory.swappiness"]
    with pytest.raises(UnknownId):
        explain("no.such.thing", CATALOG)
    code, out, err = invoke(capsys, "explain", "zzzz", "--json")
    assert code == exitcodes.ERROR
    assert json.loads(out) == {"schema": "nodetune.error/1", "exit_code": 3, "error": (
        "no setting, check or fault code 'zzzz'; fix: `nodetune explain --list` prints every id")}


def test_no_id_is_a_usage_error_and_list_prints_every_id(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(capsys, "explain")
    assert code == exitcodes.ERROR and "missing ID|FAULT_CODE (or --list)" in err
    code, out, _ = invoke(capsys, "explain", "--list")
    assert code == exitcodes.OK
    rows = [re.split(r"\s{2,}", line) for line in out.splitlines()]
    assert ["gpu.nvlink_inactive", "setting"] in rows
    assert ["NT3001", "fault code"] in rows and ["nvlink.inactive", "check"] in rows
    code, out, _ = invoke(capsys, "explain", "--list", "--json")
    listed = json.loads(out)
    assert listed["schema"] == EXPLAIN_SCHEMA
    assert {"id": "NT3001", "kind": "fault code"} in listed["ids"]


def test_site_profiles_are_explained_too(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "site-h100.yaml").write_text(
        "summary: our nodes\nextends: hgx-h100\ngpu:\n  nvlink_inactive: {severity: warning}\n",
        encoding="utf-8")
    code, out, _ = invoke(capsys, "explain", "--profiles-dir", str(tmp_path), "gpu.nvlink_inactive",
                          "--json")
    assert code == exitcodes.OK
    (entry,) = json.loads(out)["entries"]
    site = next(u for u in entry["profiles"] if u["name"] == "site-h100")
    assert site["severity"] == "warning"
    assert site["defined_in"] == f"{tmp_path / 'site-h100.yaml'}:4"


def test_the_text_names_each_part(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = invoke(capsys, "explain", "NT3001")
    assert code == exitcodes.OK
    assert out.splitlines()[:3] == [
        "NT3001 nvlink.inactive: health check, gpu, critical, drain",
        "  checks      health.gpus[*].nvlink_down, wants <= 0",
        "  message     ${subject} NVLink ${actual}/${fact:health.gpus[*].nvlink_expected} links "
        "down"]
    assert "  source      [V2] docs.nvidia.com/health-validation/reference/checks/nvlink" in out
    assert "  tiers       quick, standard" in out


def test_ids_complete_in_the_shell() -> None:
    env = {"_NODETUNE_COMPLETE": "bash_complete", "COMP_WORDS": "nodetune explain nt30",
           "COMP_CWORD": "2", "NODETUNE_PROFILES_DIR": ""}
    result = CliRunner().invoke(cli, [], env=env, prog_name="nodetune")
    offered = [row.split(",", 1)[1] for row in result.output.splitlines() if row]
    assert offered and all(o.startswith("NT30") for o in offered) and "NT3001" in offered
    env["COMP_WORDS"] = "nodetune explain gpu.nvlink_"
    result = CliRunner().invoke(cli, [], env=env, prog_name="nodetune")
    assert result.output == "plain,gpu.nvlink_inactive\n"
