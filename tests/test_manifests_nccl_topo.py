"""manifests --target nccl-topo: an NCCL_TOPO_FILE whose virtual switches hold each GPU and the
rails the sysfs tree really puts under that GPU's PCIe switch, in NCCL's own XML format."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from click.testing import CliRunner

from nodetune.cli import cli
from tests import placement_trees as trees


def render(request, name: str) -> tuple[ET.Element, dict]:
    root, nvml = trees.tree(request, name)
    result = CliRunner().invoke(cli, ["manifests", *trees.cli_args(root, nvml), "--target",
                                      "nccl-topo", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    text = doc["targets"]["nccl-topo"]["files"]["nccl-topo.xml"]
    return ET.fromstring(text), trees.facts(root, nvml)


def mask_cpus(mask: str) -> list[int]:
    value = int(mask.replace(",", ""), 16)
    return [b for b in range(value.bit_length()) if value >> b & 1]


def check_pairs(system: ET.Element, facts: dict, rails: int) -> None:
    switch_of = {d["address"]: d.get("switch") for d in facts["pci"]["devices"]}
    kind_of = {d["address"]: d.get("kind") for d in facts["pci"]["devices"]}
    nodes = {n["id"]: n["cpus"] for n in facts["numa"]["nodes"]}
    gpus_seen = []
    for cpu in system.findall("cpu"):
        assert mask_cpus(cpu.get("affinity")) == nodes[int(cpu.get("numaid"))]
        for switch in cpu.findall("pci"):
            assert switch.get("class") == "0x060400" and switch.get("busid").startswith("ffff:")
            members = [p.get("busid") for p in switch.findall("pci")]
            gpus = [a for a in members if kind_of[a] == "gpu"]
            nics = [a for a in members if a not in gpus]
            assert len(gpus) == 1 and len(nics) == rails
            # the GPU and its rails really share a PCIe switch on this node
            assert {switch_of[a] for a in members} == {switch_of[gpus[0]]} != {None}
            gpu_dev = next(p for p in switch.findall("pci") if p.get("busid") == gpus[0])
            assert gpu_dev.get("link_speed") == "32.0 GT/s PCIe"
            assert gpu_dev.get("link_width") == "16"
            gpus_seen += gpus
    assert sorted(gpus_seen) == sorted(g["pci_address"] for g in facts["gpus"])


def test_dgx_h100_pairs_each_gpu_with_its_switch_nic(request) -> None:
    system, facts = render(request, "dgx-h100")
    assert system.tag == "system" and system.get("version") == "1"
    check_pairs(system, facts, rails=1)


def test_multi_rail_hgx_puts_both_rails_in_the_gpu_switch(request) -> None:
    system, facts = render(request, "hgx-multirail")
    check_pairs(system, facts, rails=2)


def test_a_vm_without_rdma_nics_lists_each_gpu_alone(request) -> None:
    root = request.getfixturevalue("host_tree")("h200x2-vm-gather")
    result = CliRunner().invoke(cli, ["manifests", "--root", str(root), "--nvml",
                                      str(trees.H200_NVML), "--target", "nccl-topo", "--json"])
    assert result.exit_code == 0, result.output
    target = json.loads(result.output)["targets"]["nccl-topo"]
    system = ET.fromstring(target["files"]["nccl-topo.xml"])
    switches = system.findall("cpu/pci")
    assert [len(s.findall("pci")) for s in switches] == [1, 1]
    assert any("no RDMA NIC under its switch" in n for n in target["notes"])


def test_bare_metal_keeps_rails_of_other_root_complexes_out(request) -> None:
    """GB200 tray: each GPU's NIC sits on another root complex (not PIX/PXB), so no switch
    claims it; the file only groups what the tree really groups."""
    system, _ = render(request, "gb200")
    assert [len(s.findall("pci")) for s in system.findall("cpu/pci")] == [1, 1, 1, 1]


def test_nccl_loaded_the_file_written_for_a_real_h200_node() -> None:
    """On the lent H200 node, NCCL 2.28.9 loaded the file `manifests --target nccl-topo` wrote
    there (NCCL_TOPO_FILE) and ran an all-reduce; its own dump (NCCL_TOPO_DUMP_FILE) keeps the
    GPU under nodetune's virtual switch. The replay of that node's snapshot writes the same file."""
    from pathlib import Path

    bench = Path(__file__).parent / "fixtures" / "bench"
    snapshot = Path(__file__).parent / "fixtures" / "snapshots" / "h200x1-fc-vm-2026-12-03.tar.gz"
    result = CliRunner().invoke(cli, ["manifests", "--from", str(snapshot), "--target",
                                      "nccl-topo", "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)["targets"]["nccl-topo"]["files"]["nccl-topo.xml"]
    assert written == (bench / "h200x1-nccl-topo-file.xml").read_text()
    run = (bench / "h200x1-nccl-topo-run.txt").read_text()
    assert "Loading topology file" in run and "allreduce ok" in run and "rc=0" in run
    dump = ET.fromstring((bench / "h200x1-nccl-topo-dump.xml").read_text())
    switch = dump.find("cpu/pci")
    assert switch is not None and switch.get("busid") == "ffff:01:00.0"
    gpu = switch.find("pci")
    assert gpu is not None and gpu.get("busid") == "0000:00:06.0"
    assert gpu.find("gpu") is not None and gpu.find("gpu").get("gdr") == "1"
