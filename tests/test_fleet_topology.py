"""`nodetune fleet topology`: NVLink domains from fleet reports of synthetic GB200 trays and the
real H200 VM, as Slurm topology.conf and topology.yaml (each loaded by a real slurmctld: the
host's 22.05 for topology/tree, Debian trixie's 24.11 for topology/block, sid's 26.05 for
topology.yaml, from the chroots tests/slurm_chroot.sh builds) and node labels.

Each tray's facts come from nodetune's collectors reading the synthetic GB200 tree; the fleet
places trays in three NVL domains by giving each report the cluster UUID and clique id the
fabric manager would, and plants one fault per unhealthy tray: domain C is whole (3 trays),
A and B are partly healthy (2 healthy trays each), so the blocks differ in size.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from nodetune.cli import main
from nodetune.fleet import domains
from tests import placement_trees, slurm_chroot
from tests.test_fleet_report import fleet_report_doc, node_docs, run

UUID_A = "1b6c7f3e-5d1a-4c9e-9f3b-2a7d8e4c6b10"
UUID_B = "7e0c2a91-3f4d-4b8e-a1c2-5d6e7f8a9b0c"
UUID_C = "0c5d9e2f-8a41-4f6b-b3d7-6e1a2c9f4b85"  # sorts first: the largest block comes first


def _tray(facts: dict, audit: dict, uuid: str, clique: int) -> tuple[dict, dict]:
    facts = copy.deepcopy(facts)
    for g in facts["gpus"]:
        g["fabric"] = {**g["fabric"], "cluster_uuid": uuid, "clique_id": clique}
    return facts, copy.deepcopy(audit)


@pytest.fixture(scope="module")
def fleet_dir(request, host_tree, tmp_path_factory) -> Path:
    root, nvml = placement_trees.tree(request, "gb200")
    facts, audit = node_docs(root, Path(nvml))
    assert all(g["fabric"]["cluster_uuid"] == UUID_A for g in facts["gpus"])  # synth tray
    out = tmp_path_factory.mktemp("nvl")
    trays = {f"gb-a{i}": _tray(facts, audit, UUID_A, 32766) for i in range(1, 5)}
    trays |= {f"gb-b{i}": _tray(facts, audit, UUID_B, 7) for i in range(1, 4)}
    trays |= {f"gb-c{i}": _tray(facts, audit, UUID_C, 1) for i in range(1, 4)}
    trays["gb-a2"][0]["gpus"].pop()  # a GPU fell off the bus
    trays["gb-a3"][0]["gpus"][1]["fabric"]["state"] = "in_progress"  # fabric not registered
    trays["gb-b3"][1]["summary"]["failed"]["critical"] = 2
    for host, (f, a) in trays.items():
        (out / f"{host}.json").write_text(json.dumps(fleet_report_doc(host, f, a)))
    vm_facts, vm_audit = node_docs(host_tree("h200x2-vm-gather"),
                                   placement_trees.H200_NVML)
    (out / "h200-vm.json").write_text(json.dumps(fleet_report_doc("h200-vm", vm_facts,
                                                                  vm_audit)))
    return out


def test_domains_group_trays_and_exclude_failing_ones(fleet_dir: Path) -> None:
    topo = domains.build(fleet_dir)
    assert [(d.cluster_uuid, d.clique_id) for d in topo.domains] == [
        (UUID_C, 1), (UUID_A, 32766), (UUID_B, 7)]
    c, a, b = topo.domains
    assert c.healthy_hosts == ["gb-c1", "gb-c2", "gb-c3"] and not c.partly_healthy
    assert a.healthy_hosts == ["gb-a1", "gb-a4"] and a.partly_healthy
    problems = {m.host: " ".join(m.problems) for m in a.excluded}
    assert "GPUs in the clique where other nodes have" in problems["gb-a2"]
    assert "fabric in_progress" in problems["gb-a3"]
    assert b.healthy_hosts == ["gb-b1", "gb-b2"]
    assert "2 critical audit findings" in b.excluded[0].problems
    assert topo.no_domain == ["h200-vm"]  # the real VM: all-zero cluster UUID
    assert topo.exit_code == 1


def test_cli_formats(fleet_dir: Path, capsys) -> None:
    code, out, _ = run(["fleet", "topology", str(fleet_dir)], capsys)
    assert code == 1
    assert "BlockName=nvl-1b6c7f3e-32766 Nodes=gb-a1,gb-a4\n" in out
    assert "#   excluded gb-a3: GPU 1 fabric in_progress/success" in out
    assert "BlockSizes=2,4,8\n" in out  # the base block: the smallest healthy domain
    assert "BlockName=nvl-0c5d9e2f-1 Nodes=gb-c1,gb-c2,gb-c3\n" in out
    code, out, _ = run(["fleet", "topology", str(fleet_dir), "--block-size", "3"], capsys)
    assert "BlockSizes=3\n" in out and "BlockName=nvl-0c5d9e2f-1 " in out
    assert "BlockName=nvl-1b6c7f3e" not in out and "BlockName=nvl-7e0c2a91" not in out
    assert out.count("#   left out: 2 healthy nodes, fewer than the base block size 3") == 2
    for fmt in ("slurm", "slurm-yaml"):
        code, out, _ = run(["fleet", "topology", str(fleet_dir), "--format", fmt,
                            "--block-size", "4"], capsys)
        assert "# no domain has enough healthy nodes for a block" in out
        assert "BlockName" not in out and "BlockSizes" not in out and "- topology:" not in out
    code, out, _ = run(["fleet", "topology", str(fleet_dir), "--format", "labels"], capsys)
    assert (f"kubectl label node --overwrite gb-b3 nvidia.com/gpu.clique={UUID_B}.7 "
            "nodetune.io/nvlink-domain=nvl-7e0c2a91-7 nodetune.io/nvlink-domain-healthy=false "
            "nodetune.io/nvlink-domain-member=excluded") in out
    code, out, _ = run(["fleet", "topology", str(fleet_dir / "gb-a1.json"), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "nodetune.fleet-topology/1"
    assert doc["domains"][0]["healthy_nodes"] == ["gb-a1"]
    code, _, err = run(["fleet", "topology", str(fleet_dir / "missing")], capsys)
    assert code == 3 and err.count("\n") == 1 and "neither a node report" in err


def test_files_left_out_are_named_in_the_topology_file(fleet_dir: Path, tmp_path: Path,
                                                      capsys) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(fleet_dir, fleet)
    (fleet / "gb-z9.json").write_text("{")  # a report cut short
    for fmt in ("slurm", "slurm-yaml"):
        code, out, _ = run(["fleet", "topology", str(fleet), "--format", fmt], capsys)
        assert code == 1
        assert "# left out, unreadable: gb-z9.json: " in out
        assert "gb-z9" not in out.replace("# left out, unreadable: gb-z9.json", "")


def test_topology_yaml_follows_slurm_s_documented_schema(fleet_dir: Path, capsys) -> None:
    """topology.yaml(5) of Slurm 25.05: a list of topologies, `topology` first, one of
    block/flat/tree; a block topology has `block_sizes` (ints, each a power-of-two multiple
    of the first) and `blocks` (`block`, `nodes`)."""
    code, out, _ = run(["fleet", "topology", str(fleet_dir), "--format", "slurm-yaml"], capsys)
    assert code == 1 and out.startswith("# topology.yaml for TopologyPlugin=topology/block")
    doc = yaml.safe_load(out)
    assert isinstance(doc, list) and len(doc) == 1
    (topology,) = doc
    assert next(iter(topology)) == "topology" and topology["cluster_default"] is True
    assert set(topology) == {"topology", "cluster_default", "block"}
    sizes = topology["block"]["block_sizes"]
    assert sizes == [2, 4, 8] and all(s // sizes[0] & (s // sizes[0] - 1) == 0 for s in sizes)
    assert topology["block"]["blocks"] == [
        {"block": "nvl-0c5d9e2f-1", "nodes": "gb-c1,gb-c2,gb-c3"},
        {"block": "nvl-1b6c7f3e-32766", "nodes": "gb-a1,gb-a4"},
        {"block": "nvl-7e0c2a91-7", "nodes": "gb-b1,gb-b2"}]
    assert "#   excluded gb-b3: 2 critical audit findings" in out


# `scontrol show topology` of the default output: three blocks of base size 2 (the smallest
# healthy domain) and Slurm's aggregated blocks of 2 and 4 base blocks.
SHOWN_BLOCKS = [
    "BlockName=nvl-0c5d9e2f-1 BlockIndex=0 Nodes=gb-c1,gb-c2,gb-c3 BlockSize=2",
    "BlockName=nvl-1b6c7f3e-32766 BlockIndex=1 Nodes=gb-a1,gb-a4 BlockSize=2",
    "BlockName=nvl-7e0c2a91-7 BlockIndex=2 Nodes=gb-b1,gb-b2 BlockSize=2",
    "AggregatedBlock=nvl-0c5d9e2f-1,nvl-1b6c7f3e-32766 BlockIndex=3 "
    "Nodes=gb-a[1,4],gb-c[1-3] BlockSize=4",
    "AggregatedBlock=nvl-0c5d9e2f-1,nvl-1b6c7f3e-32766,nvl-7e0c2a91-7 BlockIndex=4 "
    "Nodes=gb-a[1,4],gb-b[1-2],gb-c[1-3] BlockSize=8"]


def _topology(fleet_dir: Path, capsys, *args: str) -> str:
    with pytest.raises(SystemExit):
        main(["fleet", "topology", str(fleet_dir), *args])
    return capsys.readouterr().out


def _nodes(fleet_dir: Path) -> list[str]:
    return [p.stem for p in sorted(fleet_dir.glob("*.json"))]


@pytest.mark.slow
def test_slurm_24_11_loads_the_block_topology_of_a_partly_healthy_fleet(
        fleet_dir: Path, capsys) -> None:
    """Debian trixie's slurmctld 24.11 (topology/block) takes the default output, and the
    --block-size one; without BlockSizes= it refuses a block smaller than the first."""
    conf = _topology(fleet_dir, capsys)
    with slurm_chroot.controller("trixie", _nodes(fleet_dir), {"topology.conf": conf},
                                 "TopologyPlugin=topology/block") as ctld:
        shown = slurm_chroot.show_topology(ctld)
    assert shown.splitlines() == SHOWN_BLOCKS

    conf = _topology(fleet_dir, capsys, "--block-size", "3")
    with slurm_chroot.controller("trixie", _nodes(fleet_dir), {"topology.conf": conf},
                                 "TopologyPlugin=topology/block") as ctld:
        shown = slurm_chroot.show_topology(ctld)
    assert shown == "BlockName=nvl-0c5d9e2f-1 BlockIndex=0 Nodes=gb-c1,gb-c2,gb-c3 BlockSize=3\n"

    unsized = "".join(line for line in _topology(fleet_dir, capsys).splitlines(keepends=True)
                      if not line.startswith("BlockSizes="))
    with slurm_chroot.controller("trixie", _nodes(fleet_dir), {"topology.conf": unsized},
                                 "TopologyPlugin=topology/block") as ctld:
        ctld.daemon.wait(timeout=20)
        assert "children count lower than bblock_node_cnt" in ctld.log()


@pytest.mark.slow
def test_slurm_26_05_loads_topology_yaml(fleet_dir: Path, capsys) -> None:
    """Debian sid's slurmctld (26.05; topology.yaml since 25.05) takes --format slurm-yaml."""
    text = _topology(fleet_dir, capsys, "--format", "slurm-yaml")
    with slurm_chroot.controller("sid", _nodes(fleet_dir), {"topology.yaml": text}) as ctld:
        shown = slurm_chroot.show_topology(ctld)
    assert shown.splitlines() == SHOWN_BLOCKS


@pytest.mark.slow
def test_real_slurmctld_accepts_the_tree_topology(fleet_dir: Path, capsys) -> None:
    """Debian 12's slurm-wlm (22.05) has topology/tree, not topology/block (23.11+)."""
    conf = _topology(fleet_dir, capsys, "--format", "slurm-tree")
    with slurm_chroot.controller(None, _nodes(fleet_dir), {"topology.conf": conf},
                                 "TopologyPlugin=topology/tree") as ctld:
        shown = slurm_chroot.show_topology(ctld)
    assert shown.splitlines() == [
        "SwitchName=nvl-0c5d9e2f-1 Level=0 LinkSpeed=1 Nodes=gb-c1,gb-c2,gb-c3",
        "SwitchName=nvl-1b6c7f3e-32766 Level=0 LinkSpeed=1 Nodes=gb-a1,gb-a4",
        "SwitchName=nvl-7e0c2a91-7 Level=0 LinkSpeed=1 Nodes=gb-b1,gb-b2",
        "SwitchName=nvl-all Level=1 LinkSpeed=1 Nodes=gb-a[1,4],gb-b[1-2],gb-c[1-3] "
        "Switches=nvl-0c5d9e2f-1,nvl-1b6c7f3e-32766,nvl-7e0c2a91-7"]
