"""`nodetune facts --schema`: the facts contract and the profile files as JSON Schema."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from nodetune.cli import main
from nodetune.facts import paths
from nodetune.facts.contract import CONTRACT
from nodetune.facts.derived import derive
from nodetune.facts.health import health_view
from nodetune.facts.schema import fact_paths
from tests.audit_helpers import collect, tree_and_nvml

PROFILES = sorted(p for p in (Path(__file__).parents[1] / "profiles").glob("*.yaml")
                  if p.name != "recommend.yaml")  # recommend.yaml holds match rules, no settings


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def facts_schema() -> dict[str, Any]:
    return _schema([])


@pytest.fixture(scope="module")
def profile_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema(["profile"]))


def _schema(which: list[str]) -> dict[str, Any]:
    """What `nodetune facts --schema [which]` prints, checked to be a draft 2020-12 schema."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main(["facts", "--schema", *which])
    assert exc.value.code in (0, None)
    doc: dict[str, Any] = json.loads(out.getvalue())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def test_facts_schema_names_its_version(facts_schema) -> None:
    assert facts_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert facts_schema["$id"] == facts_schema["title"] == "nodetune.facts-contract/1"
    thp = facts_schema["properties"]["memory"]["properties"]["thp"]["properties"]
    assert thp["shmem_enabled"]["type"] == ["string", "null"]
    assert thp["shmem_enabled"]["description"] == "str, from memory"
    sysctl = facts_schema["properties"]["kernel"]["properties"]["sysctl"]
    assert sysctl["additionalProperties"]["description"] == "numstr, from kernel"


def test_a_real_facts_document_validates(facts_schema, host_tree, synthetic_host) -> None:
    doc = collect(*tree_and_nvml("h100x2-fc-vm-gather", host_tree, synthetic_host))
    doc["derived"] = derive(doc)
    doc["health"] = health_view(doc)
    validator = jsonschema.Draft202012Validator(facts_schema)
    assert [e.message for e in validator.iter_errors(doc)] == []
    wrong = copy.deepcopy(doc)
    wrong["gpus"][0]["pcie"]["current_width"] = "16"
    wrong["memory"]["no_such_fact"] = 1
    messages = sorted(e.message for e in validator.iter_errors(wrong))
    assert messages == ["'16' is not of type 'integer', 'null'",
                        "Additional properties are not allowed ('no_such_fact' was unexpected)"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_shipped_profile_validates(profile: Path, profile_validator) -> None:
    data = yaml.safe_load(profile.read_text())
    assert [f"{list(e.absolute_path)}: {e.message}"
            for e in profile_validator.iter_errors(data)] == []


def _setting(fact: str, **more: Any) -> dict[str, Any]:
    return {"memory": {"x": {"fact": fact, "equals": 1, **more}}}


@pytest.mark.parametrize("fact", [
    "memory.thp.shmem_enabled", "kernel.sysctl.vm.swappiness",
    "pci.devices[kind=nic|infiniband,vendor=0x15b3].max_read_request_bytes",
    "gpus[0].pcie.current_width", "rdma.devices[*].netdevs[0]", "cpu.governors.performance",
    "kernel.persisted.modprobe.nvidia.options", "derived.gpus[*].nic.path_class", "gpus",
])
def test_known_paths_are_accepted(fact: str, profile_validator) -> None:
    assert paths.is_known(fact)
    assert list(profile_validator.iter_errors(_setting(fact))) == []


@pytest.mark.parametrize("fact", ["memory.thp.enable", "gpus[*].pcie.width", "cpu.governor.x",
                                  "cpu.x"])
def test_unknown_paths_are_refused(fact: str, profile_validator) -> None:
    assert not paths.is_known(fact)
    errors = list(profile_validator.iter_errors(_setting(fact)))
    assert errors and all(list(e.absolute_path) == ["memory", "x", "fact"] for e in errors)


def test_profile_schema_refuses_bad_keys_and_values(profile_validator) -> None:
    bad = {"summary": "x", "colour": "red",
           "cpu": {"g": {"fact": "cpu.governor", "equals": "performance", "severity": "huge",
                         "whn": []}}}
    found = sorted((list(e.absolute_path), e.validator) for e in profile_validator.iter_errors(bad))
    assert found == [([], "additionalProperties"), (["cpu", "g"], "additionalProperties"),
                     (["cpu", "g", "severity"], "enum")]


def test_profile_schema_knows_the_tunable_kinds(profile_validator) -> None:
    good = {"memory": {"swap": {"tunable": {"sysctl": "vm.swappiness"}, "max": 5},
                       "opt": {"tunable": {"module": "nvidia", "option": "NVreg_X"},
                               "equals": 1, "write": 1}}}
    assert list(profile_validator.iter_errors(good)) == []
    bad = {"memory": {"swap": {"tunable": {"sysctrl": "vm.swappiness"}, "max": 5}}}
    found = sorted({tuple(e.absolute_path) for e in profile_validator.iter_errors(bad)})
    assert found == [("memory", "swap", "tunable")]


def test_completion_offers_every_contract_path() -> None:
    offered = set(fact_paths())
    assert set(CONTRACT) <= offered
    assert {"gpus", "gpus[*].pcie", "kernel.persisted.sysctl"} <= offered
    assert all(paths.is_known(p.replace("<", "").replace(">", "")) for p in offered)


def test_bad_schema_name_is_one_line_and_exit_3(capsys) -> None:
    rc, out, err = run(["facts", "--schema", "profiles"], capsys)
    assert rc == 3 and out == ""
    assert err.count("\n") == 1 and "'profiles' is not one of 'facts', 'profile'" in err
