"""Profiles: shipped ones conform, merging is right, malformed ones fail with file:line."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nodetune.apply.render.roles import roles_dir
from nodetune.cli import cli
from nodetune.errors import ProfileError
from nodetune.facts import paths as factpaths
from nodetune.profiles.catalog import REMEDIATION_ROLES, Library, merge, merge_section
from nodetune.rules.operators import OPERATORS
from tests.audit_helpers import facts_getter

# Source keys of profiles/SOURCES.md ("K1 kubernetes docs ..."): every `why` cites at least one.
SOURCE_KEYS = set(re.findall(r"^([A-Z][0-9]+) ", (Path(__file__).parents[1] / "profiles" /
                                                  "SOURCES.md").read_text(), re.MULTILINE))
SHIPPED = ["b200", "b300", "base", "cloud-vm", "dgx-h100", "gb200", "gb300", "generic-x86-gpu",
           "gpu-common", "h200", "hgx-h100"]


@pytest.fixture(scope="module")
def facts_of(host_tree, synthetic_host):
    return facts_getter(host_tree, synthetic_host)


@pytest.fixture(scope="module")
def shipped() -> dict:
    library = Library()
    return {name: library.load(name) for name in library.names()}


# -- conformance --------------------------------------------------------------------------

def test_every_shipped_profile_loads(shipped: dict) -> None:
    assert sorted(shipped) == SHIPPED
    assert shipped["dgx-h100"].chain == ("base", "gpu-common", "hgx-h100", "dgx-h100")
    assert shipped["base"].rules and all(p.rules for p in shipped.values())


def _paths_of(rule) -> list[str]:
    paths = [rule.fact, *(c.fact for c in rule.when), *(c.fact for c in rule.alternatives)]
    if rule.persisted:
        paths.append(rule.persisted.fact)
    for value in rule.expect.values():
        if isinstance(value, dict) and "fact" in value:
            paths.append(value["fact"])
    texts = [rule.fix, rule.message, str(rule.remediation)]
    paths += [m for t in texts for m in re.findall(r"\$\{fact:([^}]+)\}", t)]
    return paths


def test_every_setting_reads_a_fact_of_the_contract(shipped: dict) -> None:
    for prof in shipped.values():
        for rule in prof.rules:
            for path in _paths_of(rule):
                assert factpaths.is_known(path), f"{prof.name} {rule.id}: {path}"


def test_every_why_cites_a_source_and_respects_its_confidence(shipped: dict) -> None:
    for prof in shipped.values():
        for rule in prof.rules:
            keys = set(re.findall(r"\b([A-Z]\d)\b", rule.why))
            assert keys & SOURCE_KEYS or "UNVERIFIED" in rule.why, f"{rule.id}: {rule.why}"
            assert rule.fix, f"{prof.name} {rule.id} has no fix"
            if "UNVERIFIED" in rule.why and not keys:
                assert rule.severity.value == "info", f"{prof.name} {rule.id}"
            if "(2ND)" in rule.why:
                assert rule.severity.value != "critical", f"{prof.name} {rule.id}"


def _role_defaults(role: str) -> dict:
    path = roles_dir() / role / "defaults" / "main.yml"
    return yaml.safe_load(path.read_text()) or {}


def test_remediation_vars_exist_in_the_apply_roles(shipped: dict) -> None:
    for prof in shipped.values():
        for rule in prof.rules:
            if rule.remediation is None:
                continue
            role = rule.remediation["role"]
            assert role in REMEDIATION_ROLES
            defaults = _role_defaults(role)
            for var in rule.remediation.get("vars") or {}:
                assert var in defaults, f"{prof.name} {rule.id}: {role} has no variable {var}"


def test_settings_resolve_on_real_and_synthetic_facts(shipped: dict, facts_of) -> None:
    """Each setting's fact exists in what the collectors really report: some node gives it a
    value or a reason, so no setting reads a path that is always silently empty."""
    from nodetune.facts.derived import derive
    from nodetune.rules.resolve import resolve

    docs = []
    for name in ("synthetic-dgx-h100", "synthetic-gb200-tray", "h200x2-vm-gather"):
        facts = facts_of(name)
        docs.append({**facts, "derived": derive(facts)})
    for prof in shipped.values():
        for rule in prof.rules:
            seen = [i for d in docs for i in resolve(d, rule.fact)]
            assert any(i.value is not None or i.reason for i in seen), f"{rule.id}: {rule.fact}"


def test_recommend_rules_end_with_a_catch_all() -> None:
    rules = Library().recommend_rules()
    assert rules[-1][2] == {"profile": "base", "why": "no NVIDIA GPU found"}
    assert rules[0][2]["profile"] == "cloud-vm"


# -- merging ------------------------------------------------------------------------------

def test_merge_last_wins_and_operators_replace_the_expectation() -> None:
    parent = {"summary": "p", "variables": {"a": 1, "b": 2},
              "cpu": {"governor": {"fact": "cpu.governor", "equals": "performance",
                                   "severity": "info", "why": "w"},
                      "boost": {"fact": "cpu.boost", "equals": True}}}
    child = {"summary": "c", "extends": "p", "variables": {"b": 3},
             "cpu": {"governor": {"severity": "warning"},
                     "boost": {"one_of": [True, 1]}}}
    out = merge(parent, child)
    assert out["summary"] == "c" and out["variables"] == {"a": 1, "b": 3}
    assert out["cpu"]["governor"] == {"fact": "cpu.governor", "equals": "performance",
                                      "severity": "warning", "why": "w"}
    assert out["cpu"]["boost"] == {"fact": "cpu.boost", "one_of": [True, 1]}
    assert "extends" not in out
    assert parent["cpu"]["governor"]["severity"] == "info"  # inputs untouched


def test_merge_replace_and_disable() -> None:
    parent = {"variables": {"a": 1},
              "cpu": {"governor": {"fact": "cpu.governor", "equals": "performance",
                                   "when": [{"fact": "cpu.boost", "present": True}]},
                      "boost": {"fact": "cpu.boost", "equals": True}},
              "memory": {"thp": {"fact": "memory.thp.enabled", "equals": "never"}}}
    out = merge(parent, {"cpu": {"governor": {"replace": True, "fact": "cpu.governor",
                                              "equals": "schedutil"},
                                 "boost": {"disable": True}}})
    assert out["cpu"] == {"governor": {"fact": "cpu.governor", "equals": "schedutil"}}
    assert merge_section(parent["cpu"], {"replace": True}) == {}
    whole = merge(parent, {"replace": True, "memory": {"swappiness": {"fact": "memory.swappiness",
                                                                      "max": 10}}})
    assert whole == {"memory": {"swappiness": {"fact": "memory.swappiness", "max": 10}}}
    assert merge(parent, {"cpu": {"governor": {"when": []}}})["cpu"]["governor"]["when"] == []


def test_inheritance_resolves_through_the_chain(shipped: dict) -> None:
    rules = {r.id: r for r in shipped["hgx-h100"].rules}
    assert rules["pcie.gpu_nic_path"].expect == {"equals": "PIX"}
    assert rules["pcie.gpu_nic_path"].severity.value == "critical"
    assert rules["cpu.governor"].severity.value == "warning"  # raised by gpu-common
    assert rules["gpu.fabric_manager"].when == ()  # hgx-h100 requires it unconditionally
    base_rules = {r.id: r for r in shipped["base"].rules}
    assert base_rules["cpu.governor"].severity.value == "info"
    assert "gpu.fabric_manager" not in {r.id for r in shipped["gb200"].rules}
    assert "pcie.acs" not in {r.id for r in shipped["cloud-vm"].rules}
    assert shipped["h200"].variables == {"gpu_count": 8, "gpu_model": "H200"}


# -- malformed profiles -------------------------------------------------------------------

def _write(d: Path, name: str, text: str) -> Path:
    path = d / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD_SETTING = """\
cpu:
  governor:
    fact: cpu.governor
    equals: performance
    why: "[T1] x"
    fix: y
"""


@pytest.mark.parametrize(("text", "line", "expected"), [
    ("summary: s\nextends: base\ncpus:\n  a: {}\n", 3,
     "cpus: unknown key 'cpus'"),
    ("summary: s\ncpu:\n  governor:\n    fact: cpu.governor\n    equals: performance\n"
     "    severty: info\n", 6, "cpu.governor.severty: unknown key 'severty'"),
    ("summary: s\ncpu:\n  governor:\n    fact: cpu.gouvernor\n    equals: performance\n", 4,
     "cpu.governor.fact: unknown fact path 'cpu.gouvernor'"),
    ("summary: s\ncpu:\n  sockets:\n    fact: cpu.sockets\n    min: two\n", 5,
     "cpu.sockets.min: min needs a number, not text 'two'"),
    ("summary: s\ncpu:\n  governor:\n    fact: cpu.governor\n    min: 2\n", 5,
     "cpu.governor.min: min compares numbers but the fact is a str"),
    ("summary: s\ncpu:\n  governor:\n    fact: cpu.governor\n    equals: performance\n"
     "    when:\n      - {fact: cpu.boost, eq: true}\n", 7,
     "cpu.governor.when.0.eq: unknown key 'eq' in a condition"),
    ("summary: s\ncpu:\n  governor:\n    fact: cpu.governor\n    equals: performance\n"
     "    severity: urgent\n", 6, "cpu.governor.severity: severity must be one of"),
    ("summary: s\ncpu:\n  governor:\n    fact: cpu.governor\n    equals: ${gov}\n", 5,
     "cpu.governor: undefined variable ${gov}"),
    ("summary: s\ncpu:\n  governor:\n    fact: cpu.governor\n    equals: performance\n"
     "    remediation: {role: tuned, vars: {}}\n", 6,
     "cpu.governor.remediation.role: unknown role 'tuned'"),
    ("summary: s\ncpu:\n  governor:\n    fact: cpu.governor\n", 3,
     "cpu.governor: no expectation"),
    ("summary: s\ncpu:\n  governor:\n    fact: cpu.governor\n    regex: '('\n", 5,
     "cpu.governor.regex: bad regex"),
    ("summary: s\nextends: nosuch\n", 2, "extends: unknown profile 'nosuch'"),
    ("summary: s\nsummary: t\n", 2, "summary: duplicate key"),
    ("summary: s\ncpu:\n  governor: [performance\n", 4, "bad YAML"),
    ("", 1, "profile: the file is empty"),
    ("summary: s\nvariables: [a]\n", 2, "variables: variables must be a mapping"),
])
def test_malformed_profile_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int,
                                                         expected: str) -> None:
    path = _write(tmp_path, "bad", text)
    with pytest.raises(ProfileError) as err:
        Library([tmp_path]).load("bad")
    assert err.value.message.startswith(f"{path}:{line}: "), err.value.message
    assert expected in err.value.message
    assert "\n" not in err.value.one_line()


def test_extends_cycle_is_reported_where_it_closes(tmp_path: Path) -> None:
    _write(tmp_path, "a", "summary: a\nextends: b\n")
    b = _write(tmp_path, "b", "summary: b\nextends: [base, c]\n")
    _write(tmp_path, "c", "summary: c\nextends: a\n")
    with pytest.raises(ProfileError) as err:
        Library([tmp_path]).load("b")
    assert "extends: cycle b -> c -> a -> b" in err.value.message
    assert err.value.message.startswith(str(tmp_path / "a.yaml") + ":2:")
    with pytest.raises(ProfileError, match=f"{b}:2: extends: cycle"):
        _write(tmp_path, "b", "summary: b\nextends: b\n")
        Library([tmp_path]).load("b")


def test_an_inherited_error_points_at_the_file_that_made_it(tmp_path: Path) -> None:
    child = _write(tmp_path, "child", "summary: c\nextends: base\nmemory:\n  swappiness:\n"
                                      "    min: 5\n")
    prof = Library([tmp_path]).load("child")
    assert {r.id: r for r in prof.rules}["memory.swappiness"].expect == {"min": 5}
    _write(tmp_path, "child", "summary: c\nextends: base\ncpu:\n  governor:\n    min: 5\n")
    with pytest.raises(ProfileError, match=re.escape(f"{child}:5: cpu.governor.min: min "
                                                     "compares numbers")):
        Library([tmp_path]).load("child")


def test_cli_bad_profile_is_one_line_and_exit_3(tmp_path: Path) -> None:
    _write(tmp_path, "bad", "summary: s\ncpu:\n  governor:\n    fact: cpu.gouvernor\n"
                            "    equals: performance\n")
    result = CliRunner().invoke(cli, ["profiles", "show", "bad", "--profiles-dir",
                                      str(tmp_path)], standalone_mode=False)
    assert isinstance(result.exception, ProfileError)
    from nodetune.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["profiles", "show", "bad", "--profiles-dir", str(tmp_path)])
    assert exit_info.value.code == 3


def test_cli_main_prints_the_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nodetune.cli import main

    _write(tmp_path, "bad", "summary: s\ncpu:\n  governor:\n    fact: cpu.governor\n"
                            "    equals: performance\n    severty: info\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "--root", str(tmp_path), "--profile", "bad", "--profiles-dir",
              str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 3
    assert len(err) == 1 and err[0].startswith(f"nodetune: error: {tmp_path}/bad.yaml:6: ")
    assert "; fix: " in err[0]


# -- user directories and overrides ---------------------------------------------------------

def test_user_profile_extends_and_shadows_shipped(tmp_path: Path) -> None:
    _write(tmp_path, "site", "summary: site\nextends: hgx-h100\nmemory:\n  swappiness:\n"
                             "    max: 1\n    severity: warning\n")
    _write(tmp_path, "generic-x86-gpu", "summary: mine\nextends: base\n" + GOOD_SETTING)
    library = Library([tmp_path])
    site = library.load("site")
    assert site.user and site.chain == ("base", "gpu-common", "hgx-h100", "site")
    rules = {r.id: r for r in site.rules}
    assert rules["memory.swappiness"].expect == {"max": 1}
    assert rules["memory.swappiness"].source == f"{tmp_path / 'site.yaml'}:4"
    mine = library.load("generic-x86-gpu")
    assert mine.user and "gpu.persistence" not in {r.id for r in mine.rules}


def test_shadowed_parent_missing_a_setting_its_children_change(tmp_path: Path) -> None:
    _write(tmp_path, "base", "summary: my base\n" + GOOD_SETTING)
    with pytest.raises(ProfileError) as err:
        Library([tmp_path]).load("gpu-common")
    assert "gpu-common.yaml:" in err.value.message
    assert ("cpu.energy_perf_bias: changes severity of a setting that no profile it extends "
            "defines") in err.value.message


def test_overrides_change_single_settings(tmp_path: Path) -> None:
    over = tmp_path / "site.yaml"
    over.write_text("variables: {gpu_count: 7}\nsettings:\n"
                    "  memory.swappiness: {severity: warning, max: 1}\n"
                    "  cpu.governor: {disable: true}\n")
    prof = Library().load("hgx-h100", over)
    rules = {r.id: r for r in prof.rules}
    assert "cpu.governor" not in rules
    assert rules["memory.swappiness"].severity.value == "warning"
    assert rules["memory.swappiness"].expect == {"max": 1}
    assert rules["memory.swappiness"].source == f"{over}:3"
    assert prof.variables["gpu_count"] == 7


@pytest.mark.parametrize(("text", "expected"), [
    ("settings:\n  memory.swapiness: {severity: info}\n", ":2: settings.memory.swapiness: no such"),
    ("settings:\n  memory.swappiness: {why: x}\n", ":2: settings.memory.swappiness.why: cannot "
                                                   "override 'why'"),
    ("settings:\n  memory.swappiness: {max: x}\n", ":2: memory.swappiness.max: max needs a number"),
    ("profile: x\n", ":1: overrides:"),
])
def test_bad_overrides(tmp_path: Path, text: str, expected: str) -> None:
    over = tmp_path / "o.yaml"
    over.write_text(text)
    with pytest.raises(ProfileError) as err:
        Library().load("base", over)
    assert err.value.message.startswith(str(over)), err.value.message
    assert expected in err.value.message


# -- selection ----------------------------------------------------------------------------

def test_match_explains_itself(facts_of) -> None:
    library = Library()
    dgx = library.match(facts_of("synthetic-dgx-h100"))
    assert (dgx.profile, dgx.automatic) == ("hgx-h100", True)
    assert dgx.reason == ("8 H100 GPUs on an NVSwitch baseboard (PCIe cards, H100 NVL included, "
                          "are generic) (derived.gpu_model = H100; derived.gpu_count = 8; "
                          "derived.nvswitch_count = 4)")
    pcie_cards = facts_of("synthetic-dgx-h100")
    pcie_cards = {**pcie_cards, "pci": {**pcie_cards["pci"], "devices": [
        d for d in pcie_cards["pci"]["devices"] if d.get("device") != "0x22a3"]}}
    assert library.match(pcie_cards).profile == "generic-x86-gpu"  # no NVSwitch: not HGX
    assert library.match(facts_of("synthetic-gb200-tray")).profile == "gb200"
    assert library.match(facts_of("8em64t-2s2ca2c")).profile == "base"


def test_profiles_list_and_show_json() -> None:
    import json

    runner = CliRunner()
    listed = runner.invoke(cli, ["profiles", "list", "--json"])
    assert listed.exit_code == 0
    doc = json.loads(listed.output)
    assert next(iter(doc)) == "schema" and doc["schema"] == "nodetune.profile/1"
    assert [p["name"] for p in doc["profiles"]] == SHIPPED
    shown = json.loads(runner.invoke(cli, ["profiles", "show", "gb200", "--json"]).output)
    settings = {s["id"]: s for s in shown["profiles"][0]["settings"]}
    assert settings["memory.page_size"]["expectation"] == {"equals": 65536}
    assert set(settings["gpu.imex"]) >= {"fact", "severity", "why", "fix", "remediation",
                                         "disruption", "persisted", "when", "source"}
    assert all(set(s["expectation"]) <= set(OPERATORS) for s in settings.values())
    human = runner.invoke(cli, ["profiles", "show", "dgx-h100"], env={"COLUMNS": "200"})
    assert human.exit_code == 0 and "pcie.gpu_nic_pairing" in human.output
