"""manifests --kubernetes-version: the kubelet policy options that version has are written where
they help this node, and the file says for each why it is or is not."""

from __future__ import annotations

import subprocess
import sys

import yaml
from click.testing import CliRunner

from nodetune.cli import cli
from tests import placement_trees as trees


def kubelet(request, name: str, *extra: str) -> tuple[dict, str]:
    root, nvml = trees.tree(request, name)
    result = CliRunner().invoke(cli, ["manifests", *trees.cli_args(root, nvml), "--target",
                                      "kubelet", *extra])
    assert result.exit_code == 0, result.output
    comments = " ".join(line.lstrip("# ").strip() for line in result.output.splitlines()
                        if line.startswith("#"))
    return yaml.safe_load(result.output), comments


def test_without_a_version_only_options_every_kubelet_has(request) -> None:
    config, text = kubelet(request, "dgx-h100")
    assert config["cpuManagerPolicyOptions"] == {"full-pcpus-only": "true"}
    assert "distribute-cpus-across-numa" in text and "needs kubelet 1.33+" in text


def test_kubelet_1_33_gets_distribute_and_strict_reservation(request) -> None:
    """The DGX's 8-GPU pods span its two NUMA nodes; CPUs are reserved."""
    config, text = kubelet(request, "dgx-h100", "--kubernetes-version", "1.33")
    assert config["cpuManagerPolicyOptions"] == {
        "full-pcpus-only": "true", "distribute-cpus-across-numa": "true",
        "strict-cpu-reservation": "true"}
    assert "topologyManagerPolicyOptions" not in config, "two NUMA nodes: closest is moot"
    assert "no effect with two CPU NUMA nodes" in text


def test_older_kubelet_gets_none_of_them(request) -> None:
    config, _ = kubelet(request, "dgx-h100", "--kubernetes-version", "v1.31.4")
    assert config["cpuManagerPolicyOptions"] == {"full-pcpus-only": "true"}


def test_gb200_keeps_max_allowable_numa_nodes_beside_the_new_options(request) -> None:
    config, _ = kubelet(request, "gb200", "--kubernetes-version", "1.35")
    assert config["topologyManagerPolicyOptions"] == {"max-allowable-numa-nodes": "34"}


def test_four_cpu_numa_nodes_prefer_the_closest(host_tree) -> None:
    """hwloc's 128-core Arm tree: 2 packages of 2 NUMA nodes each."""
    root = host_tree("128arm-2pa2n8cluster4co")
    out = subprocess.run([sys.executable, "-m", "nodetune", "manifests", "--root", str(root),
                          "--target", "kubelet", "--kubernetes-version", "1.32"],
                         capture_output=True, text=True, check=True).stdout
    config = yaml.safe_load(out)
    assert config["topologyManagerPolicyOptions"] == {"prefer-closest-numa-nodes": "true"}


def test_a_bad_version_is_one_line_and_exit_3(request) -> None:
    root, nvml = trees.tree(request, "dgx-h100")
    proc = subprocess.run([sys.executable, "-m", "nodetune", "manifests",
                           *trees.cli_args(root, nvml), "--target", "kubelet",
                           "--kubernetes-version", "2.0"], capture_output=True, text=True)
    assert proc.returncode == 3 and "not a Kubernetes version" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
