"""User strings that land in slurm.conf, gres.conf, YAML and shell are refused outside their
grammar: one line, exit 3, no file written; valid ones pass through unchanged."""

from __future__ import annotations

import pytest
import yaml

from nodetune.cli import main
from nodetune.manifests import values

BAD = [
    (["--node-name", "gpu01\nNodeName=evil Gres=gpu:99"], "node name"),
    (["--node-name", "gpu01 Gres=gpu:h100:99"], "node name"),
    (["--node-name", "gpu01.example.com"], "node name"),
    (["--image", "reg/nodetune:1\nhostNetwork: true"], "--image"),
    (["--image", "Reg/Upper:1"], "--image"),
    (["--workload-image", "img; rm -rf /"], "--workload-image"),
    (["--namespace", "Node Tune"], "namespace"),
    (["--rdma-resource", "rdma/x\n  privileged: true"], "extended resource"),
]


@pytest.mark.parametrize(("args", "what"), BAD, ids=[a[0] + str(i) for i, (a, _) in enumerate(BAD)])
def test_a_value_outside_its_grammar_is_one_line_exit_3_and_writes_nothing(
        host_tree, tmp_path, capsys, args, what):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["manifests", "--root", str(host_tree("h200x2-vm-gather")), "--nvml", "off",
              "-o", str(out), *args])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and what in err[0] and "fix:" in err[0], err
    assert not out.exists()


def test_valid_values_land_unchanged_in_slurm_and_yaml(host_tree, tmp_path):
    out = tmp_path / "out"
    image = "registry.example.com:5000/team/nodetune:0.9.1@sha256:" + "a" * 64
    with pytest.raises(SystemExit) as exit_info:
        main(["manifests", "--root", str(host_tree("h200x2-vm-gather")), "--nvml", "off",
              "-o", str(out), "--node-name", "GPU-node-07", "--image", image,
              "--namespace", "gpu-ops"])
    assert exit_info.value.code in (0, None)
    hints = (out / "slurm-hints.conf").read_text()
    assert [ln for ln in hints.splitlines() if ln.startswith("NodeName=")] \
        == [ln for ln in hints.splitlines() if ln.startswith("NodeName=GPU-node-07 ")]
    agent = [d for d in yaml.safe_load_all((out / "nodetune-agent.yaml").read_text()) if d]
    ds = next(d for d in agent if d["kind"] == "DaemonSet")
    assert ds["metadata"]["namespace"] == "gpu-ops"
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == image


def test_grammar_edges_of_node_names_and_image_references():
    with pytest.raises(values.BadValue, match="node name"):
        values.node_name("a" * 64)
    assert values.node_name("dgx-01") == "dgx-01"
    assert values.image("nvcr.io/nvidia/pytorch:24.12-py3", "--image")
    assert values.image("[::1]:5000/x", "--image")
