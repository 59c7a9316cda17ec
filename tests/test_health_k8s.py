"""checks/kubernetes/init-container.yaml: valid against the Kubernetes API schemas, documented
verbatim in docs/kubernetes.md, and its init-container command blocks the pod only when the node is
unhealthy (exit 1), letting the workload start when nodetune itself cannot run (exit 3)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "checks" / "kubernetes" / "init-container.yaml"
NVML = REPO / "tests" / "fixtures" / "nvml" / "h200x2-vm.json"
K8S_VERSIONS = ("1.30.0", "1.33.0")


def job() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return doc


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifest_validates_strictly(version: str) -> None:
    kubernetes_validate.validate(job(), version, strict=True)


def test_kubernetes_guide_shows_the_manifest() -> None:
    guide = (REPO / "docs" / "kubernetes.md").read_text()
    body = MANIFEST.read_text().split("apiVersion:", 1)[1]
    assert "apiVersion:" + body in guide


def test_init_container_sees_the_node() -> None:
    spec = job()["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    assert all(mounts[p]["readOnly"] for p in ("/host/proc", "/host/sys", "/host/var/log"))
    assert "nvidia.com/gpu" not in str(init.get("resources"))  # NVML sees every GPU instead
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in init["env"]
    assert spec["restartPolicy"] == "Never"
    rule = job()["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["onExitCodes"] == {"containerName": "nodetune-check", "operator": "In",
                                   "values": [1]}


@pytest.fixture
def trees(host_tree: Callable[[str], Path], tmp_path: Path) -> dict[str, str]:
    clean = tmp_path / "clean"
    shutil.copytree(host_tree("h200x2-vm-gather"), clean, symlinks=True)
    faulty = tmp_path / "faulty"
    shutil.copytree(clean, faulty, symlinks=True)
    (faulty / "sys/bus/pci/devices/0000:00:07.0/current_link_width").write_text("8\n")
    return {"clean": f"--root {clean} --nvml {NVML}", "faulty": f"--root {faulty} --nvml off",
            "broken": f"--root {tmp_path / 'missing'}"}


@pytest.mark.parametrize(("tree", "exit_code"), [("clean", 0), ("faulty", 1), ("broken", 0)])
def test_init_container_command(trees: dict[str, str], tmp_path: Path, tree: str,
                                exit_code: int) -> None:
    (init,) = job()["spec"]["template"]["spec"]["initContainers"]
    assert init["command"] == ["sh", "-c"]
    script = init["args"][0]
    assert "--root /host --nvml live" in script and "--profile dgx-h100" in script
    nodetune = str(Path(sys.executable).parent / "nodetune")
    script = script.replace("--root /host --nvml live", trees[tree]) \
        .replace("--profile dgx-h100", "").replace("nodetune check", f"{nodetune} check", 1)
    env = {"NODETUNE_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env=env, check=False)
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    if tree == "faulty":
        assert proc.stdout.splitlines()[0] == "nodetune: GPU1 PCIe x8 (expected x16)"


@pytest.mark.parametrize("cause", ["missing-root", "damaged-nvml", "internal-error"])
def test_init_container_never_taints_or_fails_on_exit_3(trees: dict[str, str], tmp_path: Path,
                                                        cause: str) -> None:
    """nodetune's exit 3 lets the workload start and touches no Node: a stand-in kubectl on
    PATH records every call, and there is none."""
    (init,) = job()["spec"]["template"]["spec"]["initContainers"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "kubectl-calls"
    (bin_dir / "kubectl").write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n")
    (bin_dir / "kubectl").chmod(0o755)
    nodetune = str(Path(sys.executable).parent / "nodetune")
    bad = tmp_path / "nvml.json"
    bad.write_text(NVML.read_text(encoding="utf-8").replace('"power_draw_w": 79.57',
                                                            '"power_draw_w": "hot"', 1))
    args = {"missing-root": trees["broken"],
            "damaged-nvml": trees["clean"].replace(str(NVML), str(bad)),
            "internal-error": ""}[cause]
    if cause == "internal-error":  # a stand-in nodetune failing the way a bug would
        nodetune = str(bin_dir / "nodetune")
        Path(nodetune).write_text("#!/bin/sh\necho 'nodetune: internal error: KeyError' >&2\n"
                                  "exit 3\n")
        Path(nodetune).chmod(0o755)
    script = init["args"][0].replace("--root /host --nvml live", args) \
        .replace("--profile dgx-h100", "").replace("nodetune check", f"{nodetune} check", 1)
    env = {"NODETUNE_CACHE_DIR": str(tmp_path / "cache"), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nodetune: " in proc.stderr and "Traceback" not in proc.stderr
    assert not calls.exists()
