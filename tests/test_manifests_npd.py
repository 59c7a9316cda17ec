"""`nodetune manifests --target npd` and `nodetune check --npd`: the Node Problem Detector
custom plugin config holds what NPD's own validation asks (kubernetes/node-problem-detector,
pkg/custompluginmonitor/types/config.go: plugin "custom", durations that parse, a rule timeout
within the global one, a default condition for every permanent rule's condition), the
ConfigMap validates against the Kubernetes API schema and carries the same config and the
plugin, and the plugin's command line answers NPD's protocol (exit 0 OK, 1 NonOK, 2 Unknown;
one line of stdout) on a healthy, an unhealthy and a broken node."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nodetune.check import npd
from nodetune.cli import cli
from nodetune.manifests import npd as npd_target

REPO = Path(__file__).resolve().parents[1]
NVML = REPO / "tests" / "fixtures" / "nvml" / "h200x2-vm.json"
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$")  # time.ParseDuration


@pytest.fixture(scope="module")
def files(host_tree, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("npd")
    result = CliRunner().invoke(cli, ["manifests", "--root", str(host_tree("h200x2-vm-gather")),
                                      "--nvml", str(NVML), "--target", "npd", "--interval", "120",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    return {p.name: p.read_text() for p in out.iterdir()}


def test_the_plugin_config_passes_npd_s_validation(files: dict[str, str]) -> None:
    doc = json.loads(files["nodetune-npd.json"])
    assert doc["plugin"] == "custom" and doc["source"]
    glob = doc["pluginConfig"]
    assert glob["invoke_interval"] == "120s"  # --interval
    assert all(GO_DURATION.match(glob[k]) for k in ("invoke_interval", "timeout"))
    assert isinstance(glob["max_output_length"], int) and glob["max_output_length"] >= 80
    assert isinstance(glob["concurrency"], int) and glob["concurrency"] >= 1
    seconds = {r["timeout"] for r in doc["rules"]} | {glob["timeout"]}
    assert all(GO_DURATION.match(s) for s in seconds)
    assert max(int(s[:-1]) for s in seconds) <= int(glob["timeout"][:-1])
    assert sorted(r["type"] for r in doc["rules"]) == ["permanent", "temporary"]
    defaults = {c["type"] for c in doc["conditions"]}
    assert defaults == {"NodetuneProblem"}
    assert all(c["reason"] and c["message"] for c in doc["conditions"])
    for rule in doc["rules"]:
        assert rule["reason"] and rule["path"] == f"{npd_target.MOUNT}/{npd_target.PLUGIN_FILE}"
        if rule["type"] == "permanent":
            assert rule["condition"] in defaults
    # nodetune gives up before NPD kills the plugin
    assert int(glob["timeout"][:-1]) > npd_target.CHECK_TIMEOUT_S


def test_the_config_map_validates_and_carries_the_config_and_the_plugin(
        files: dict[str, str]) -> None:
    import kubernetes_validate

    (config_map,) = [d for d in yaml.safe_load_all(files["nodetune-npd.yaml"]) if d]
    kubernetes_validate.validate(config_map, "1.33.0", strict=True)
    data = config_map["data"]
    assert json.loads(data["nodetune-npd.json"]) == json.loads(files["nodetune-npd.json"])
    assert data["nodetune-npd.sh"].startswith("#!/bin/sh\n")
    assert "--config.custom-plugin-monitor=/config/nodetune/nodetune-npd.json" in \
        files["nodetune-npd.yaml"]


def plugin(files: dict[str, str], *extra: str, root: Path, nvml: Path) -> tuple[int, str]:
    """The ConfigMap's plugin command line, run against a tree instead of /host."""
    (config_map,) = [d for d in yaml.safe_load_all(files["nodetune-npd.yaml"]) if d]
    line = config_map["data"]["nodetune-npd.sh"].splitlines()[-1]
    argv = shlex.split(line.removeprefix("exec "))
    assert argv[:3] == ["nodetune", "check", "--npd"]
    argv[argv.index("--root") + 1] = str(root)
    argv[argv.index("--nvml") + 1] = str(nvml)
    proc = subprocess.run([sys.executable, "-m", "nodetune", *argv[1:], "--max-age", "0",
                           *extra], capture_output=True, text=True, timeout=120, check=False,
                          cwd=REPO)
    return proc.returncode, proc.stdout


def test_the_plugin_answers_npd_s_protocol(files, host_tree, tmp_path) -> None:
    root = host_tree("h200x2-vm-gather")
    code, out = plugin(files, root=root, nvml=NVML)
    assert (code, out.count("\n")) == (0, 1) and out.startswith("nodetune: healthy (quick: ")
    code, out = plugin(files, "--expect-gpus", "4", root=root, nvml=NVML)
    assert (code, out) == (1, "nodetune: GPU count 2 (expected 4)\n")
    bad = tmp_path / "nvml.json"
    bad.write_text(NVML.read_text().replace('"devices": [', '"devices": {"x": [', 1) + "}")
    code, out = plugin(files, root=root, nvml=bad)
    assert code == 2 and out.count("\n") == 1 and out.startswith("nodetune: error: ")
    code, out = plugin(files, root=tmp_path / "missing", nvml=NVML)
    assert code == 2 and out.startswith("nodetune: error: --root ")
    assert all(len(o) <= npd_target.MAX_OUTPUT for o in out.splitlines())


def test_the_click_path_answers_the_same(host_tree) -> None:
    """--help and command lines the fast parser leaves to click run the same command."""
    root = str(host_tree("h200x2-vm-gather"))
    result = CliRunner().invoke(cli, ["check", "--root", root, "--nvml", str(NVML), "--npd",
                                      "--expect-gpus", "4", "--max-age", "0"],
                                standalone_mode=False)
    assert (result.return_value, result.output) == (1, "nodetune: GPU count 2 (expected 4)\n")
    result = CliRunner().invoke(cli, ["check", "--root", root, "--nvml", str(NVML), "--npd",
                                      "--profile", "nope"], standalone_mode=False)
    assert result.return_value == 2 and "nodetune: error: unknown profile 'nope'" in result.output


@pytest.mark.parametrize(("doc", "status"), [
    ({"exit_code": 0, "healthy": True, "counts": {"pass": 12, "unknown": 2}}, npd.OK),
    ({"exit_code": 1, "healthy": False, "counts": {"fail": 1, "pass": 3}}, npd.NON_OK),
    ({"exit_code": 0, "healthy": True, "counts": {"pass": 0, "unknown": 5, "skipped": 9}},
     npd.UNKNOWN),
    ({"exit_code": 0, "healthy": False, "counts": {"pass": 4}}, npd.UNKNOWN),  # not checked
    ({"exit_code": 3, "healthy": False, "counts": {"pass": 4, "error": 1}}, npd.UNKNOWN),
])
def test_status(doc: dict, status: int) -> None:
    assert npd.status(doc) == status
