"""A fact nodetune could not read gives unknown with the reason, never pass and never "nothing to
check": NVLink without NVML (a --root tree, an agent without the driver mounted), Xid and SXid
events without a readable kernel log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodetune.manifests import Options
from nodetune.manifests.daemonset import objects

NVML = Path(__file__).parent / "fixtures" / "nvml" / "h200x2-vm.json"


def nodetune(*args: str, cache: Path) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "nodetune", *args], capture_output=True,
                          text=True, env={**os.environ, "NODETUNE_CACHE_DIR": str(cache)})
    return proc.returncode, proc.stdout


@pytest.fixture(scope="module")
def tree(host_tree: Callable[[str], Path]) -> Path:
    return host_tree("h200x2-vm-gather")


def nvlink_check(doc: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in doc["checks"] if c["id"] == "nvlink.inactive")


def nvlink_findings(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["status"], f.get("message") or "") for f in doc["findings"]
            if f["id"] == "gpu.nvlink_inactive"]


def test_facts_leave_nvlink_null_without_nvml(tree: Path, tmp_path: Path) -> None:
    _, out = nodetune("facts", "--root", str(tree), "--json", cache=tmp_path)
    doc = json.loads(out)
    assert [g["nvlink"] for g in doc["gpus"]] == [None, None]
    assert "needs NVML" in doc["gpu"]["unknown"]["gpus.*.nvlink"]


def test_check_says_unknown_not_pass_without_nvml(tree: Path, tmp_path: Path) -> None:
    code, out = nodetune("check", "--root", str(tree), "--json", cache=tmp_path)
    check = nvlink_check(json.loads(out))
    assert check["status"] == "unknown"
    assert {f["status"] for f in check["findings"]} == {"unknown"}
    assert code == 0  # unknown is not a fault: the node is not drained for what nodetune lacks


def test_check_passes_on_the_recorded_nvml_of_the_same_node(tree: Path, tmp_path: Path) -> None:
    _, out = nodetune("check", "--root", str(tree), "--nvml", str(NVML), "--json", cache=tmp_path)
    check = nvlink_check(json.loads(out))
    assert check["status"] == "pass"
    assert [f["actual"] for f in check["findings"]] == ["0", "0"]


def test_audit_says_unknown_and_why_without_nvml(tree: Path, tmp_path: Path) -> None:
    _, out = nodetune("audit", "--root", str(tree), "--json", cache=tmp_path)
    findings = nvlink_findings(json.loads(out))
    assert [s for s, _ in findings] == ["unknown", "unknown"]
    assert all("needs NVML" in message for _, message in findings)
    _, out = nodetune("audit", "--root", str(tree), "--nvml", str(NVML), "--json", cache=tmp_path)
    assert [s for s, _ in nvlink_findings(json.loads(out))] == ["pass", "pass"]


def test_topo_notes_that_nvlink_is_unknown(tree: Path, tmp_path: Path) -> None:
    _, without = nodetune("topo", "--root", str(tree), cache=tmp_path)
    _, with_nvml = nodetune("topo", "--root", str(tree), "--nvml", str(NVML), cache=tmp_path)
    note = "NVLink unknown (it needs NVML)"
    assert note in without and note not in with_nvml


def xid_checks(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["id"]: (c["status"], c.get("note") or "") for c in doc["checks"]
            if c["id"] in ("gpu.xid.fatal", "gpu.xid.other", "fabric.sxid")}


def test_an_unread_kernel_log_is_not_a_clean_one(tree: Path, tmp_path: Path) -> None:
    """The gathered tree has no /dev/kmsg and no /var/log: Xids are unknown, with the reason."""
    code, out = nodetune("check", "--root", str(tree), "--nvml", str(NVML), "--json",
                         cache=tmp_path)
    checks = xid_checks(json.loads(out))
    assert {k: s for k, (s, _) in checks.items()} == {
        "gpu.xid.fatal": "unknown", "gpu.xid.other": "unknown",
        "fabric.sxid": "skipped"}  # no NVSwitch on this node
    assert "no kernel log" in checks["gpu.xid.fatal"][1]
    assert checks["fabric.sxid"][1] == "no NVSwitch on this node"
    assert code == 0


def test_a_readable_clean_kernel_log_passes(tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "node"
    shutil.copytree(tree, copy, symlinks=True)
    (copy / "var/log").mkdir(parents=True, exist_ok=True)
    (copy / "var/log/kern.log").write_text(
        "Dec  2 10:00:00 node kernel: [    0.000000] Linux version 6.8.0\n", encoding="utf-8")
    _, out = nodetune("check", "--root", str(copy), "--nvml", str(NVML), "--json",
                      cache=tmp_path / "cache")
    checks = xid_checks(json.loads(out))
    assert checks["gpu.xid.fatal"] == ("skipped", "nothing to check: no health.xids on this node")


def test_the_agent_daemonset_mounts_the_kernel_log() -> None:
    daemonset = next(o for o in objects(Options()) if o["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    volumes = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in pod["volumes"]
               if "hostPath" in v}
    assert volumes["/dev/kmsg"] == "CharDevice" and volumes["/var/log"] == "Directory"
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/host/dev/kmsg", "/host/var/log"} <= mounts
