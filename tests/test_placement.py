"""The placement plan on synthetic DGX H100 / GB200 trees, the real 2x H200 VM and edge cases."""

from __future__ import annotations

import subprocess

import pytest

from nodetune.facts import cpulist
from nodetune.placement import plan as placement
from nodetune.placement import rails
from tests import placement_trees as trees


# Each test gets its own copy of the facts document (some edit it).
@pytest.fixture
def dgx(request):
    return trees.facts(*trees.tree(request, "dgx-h100"))


@pytest.fixture
def gb200(request):
    return trees.facts(*trees.tree(request, "gb200"))


@pytest.fixture
def h200(host_tree):
    return trees.facts(host_tree("h200x2-vm-gather"), str(trees.H200_NVML))


def node_cpus(facts: dict) -> dict[int, set[int]]:
    return {n["id"]: set(n["cpus"]) for n in facts["numa"]["nodes"]}


def siblings(facts: dict) -> dict[int, set[int]]:
    """CPU -> the CPUs of its core, from the facts' (socket, core_id)."""
    by_core: dict[tuple, set[int]] = {}
    for c in facts["cpu"]["cpus"]:
        by_core.setdefault((c["socket_id"], c["core_id"]), set()).add(c["id"])
    return {c: core for core in by_core.values() for c in core}


def test_dgx_gpu_cpus_lie_inside_their_numa_node_in_whole_cores(dgx):
    plan = trees.plan(dgx)
    nodes, sib = node_cpus(dgx), siblings(dgx)
    assert [g.numa_node for g in plan.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    seen: set[int] = set()
    for g in plan.gpus:
        cpus = set(g.cpus)
        assert cpus and cpus <= nodes[g.numa_node]
        assert all(sib[c] <= cpus for c in cpus), f"GPU {g.index} splits a core"
        assert not cpus & seen, "two GPUs own the same CPU"
        seen |= cpus
        assert g.memory_node == g.numa_node and not g.shares_cores


def test_dgx_reserved_cpus_are_whole_cores_on_every_node_and_never_pinned(dgx):
    plan = trees.plan(dgx)
    reserved = set(plan.reserved_cpus)
    pinned = {c for g in plan.gpus for c in g.cpus} | {c for gr in plan.groups for c in gr.cpus}
    assert reserved and not reserved & pinned
    nodes, sib = node_cpus(dgx), siblings(dgx)
    assert all(reserved & cpus for cpus in nodes.values())
    assert all(sib[c] <= reserved for c in reserved)
    # 48 cores per node: one reserved core per 32, rounded -> 2 cores (4 CPUs) per node
    assert len(reserved) == 8
    assert set(placement.compute(dgx, None, reserve=False).reserved_cpus) == set()


def test_dgx_nearest_nic_is_the_pix_connectx_of_the_dgx_default_pairing(dgx):
    plan = trees.plan(dgx)
    assert [g.nic for g in plan.gpus] == ["mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6",
                                          "mlx5_9", "mlx5_10", "mlx5_11"]
    assert {g.nic_path for g in plan.gpus} == {"PIX"}
    assert all(g.nvlinks == {p: 18 for p in range(8) if p != g.index} for g in plan.gpus)


def test_gb200_gpus_run_on_their_grace_and_34_numa_nodes_are_seen(gb200):
    plan = trees.plan(gb200)
    assert len(plan.numa_nodes) == 34
    assert [g.numa_node for g in plan.gpus] == [0, 0, 1, 1]
    assert all(set(g.cpus) <= set(range(72)) for g in plan.gpus[:2])
    assert all(set(g.cpus) <= set(range(72, 144)) for g in plan.gpus[2:])
    assert plan.threads_per_core == 1
    assert any("SMT is off" in n for n in plan.notes)
    assert {n.id for n in plan.memory_numa_nodes if not n.has_cpus} == {2, 10, 18, 26}


def test_gb200_rails_are_the_connectx_7_of_each_gpu_s_grace(gb200):
    """Every GPU-NIC pair of the tray is SYS, so nvidia-smi's class cannot choose: each GPU
    gets its own ConnectX-7 on the NUMA node its work runs on, never a BlueField-3."""
    pci = {d["address"]: d for d in gb200["pci"]["devices"]}
    nic_pci = {d["name"]: d["pci_address"] for d in gb200["rdma"]["devices"]}
    plan = trees.plan(gb200)
    assert {g.nic_path for g in plan.gpus} == {"SYS"}
    assert len({g.nic for g in plan.gpus}) == 4
    for g in plan.gpus:
        nic = pci[nic_pci[g.nic]]
        assert nic["device"] == "0x1021"  # ConnectX-7; the BlueField-3 is 0xa2dc
        assert nic["numa_node"] == g.numa_node


def test_gpu_reported_on_a_cpuless_numa_node_maps_to_its_cpu_node(gb200):
    """Kernels that report the GPU's own memory node as its numa_node (GB200 non-CDMM)."""
    for g, memory_node in zip(gb200["gpus"], (2, 10, 18, 26), strict=True):
        g["numa_node"] = memory_node
    plan = trees.plan(gb200)
    assert [g.numa_node for g in plan.gpus] == [0, 0, 1, 1]
    assert "local_cpus lie on node 0" in plan.gpus[0].numa_reason
    for g in gb200["gpus"]:  # no local_cpus either: the distance table decides
        g["local_cpus"] = []
    plan = trees.plan(gb200)
    assert [g.numa_node for g in plan.gpus] == [0, 0, 1, 1]
    assert "distance" in plan.gpus[3].numa_reason


def test_h200_vm_with_numa_node_minus_one_places_everything_on_node_0(h200):
    raw = h200["gpus"][0]["numa_node"]
    for g in h200["gpus"]:
        g["numa_node"] = None  # what sysfs says on this VM (-1)
    plan = trees.plan(h200)
    assert [g.numa_node for g in plan.gpus] == [0, 0]
    assert any("numa_node -1" in n for n in plan.notes)
    assert not plan.warnings
    assert set(plan.gpus[0].cpus).isdisjoint(plan.gpus[1].cpus)
    assert raw in (0, None)


def test_unknown_gpu_numa_on_a_two_node_host_is_never_pinned(dgx):
    doc = dgx
    for g in doc["gpus"]:
        g["numa_node"] = None
        g["local_cpus"] = doc["cpu"]["online"]  # what sysfs gives for numa_node -1
    plan = trees.plan(doc)
    assert all(g.numa_node is None and not g.cpus for g in plan.gpus)
    assert len(plan.warnings) == 8 and "cannot tell" in plan.warnings[0]
    assert [gr.numa_node for gr in plan.groups] == [None]


def test_isolated_cpus_and_their_core_siblings_are_left_out(dgx):
    dgx["cpu"]["isolated"] = [2, 3, 50]
    plan = trees.plan(dgx)
    left_out = {2, 3, 50, 98, 99, 146}  # with their SMT siblings (n + 96)
    for g in plan.gpus:
        assert not set(g.cpus) & left_out
    assert not set(plan.reserved_cpus) & left_out
    assert any("isolated CPUs 2-3,50" in n for n in plan.notes)
    assert any("98-99,146" in n and "share a core" in n for n in plan.notes)


def test_offline_cpus_are_left_out(dgx):
    gone = set(range(140, 144))
    dgx["cpu"]["online"] = [c for c in dgx["cpu"]["online"] if c not in gone]
    dgx["cpu"]["offline"] = sorted(gone)
    plan = trees.plan(dgx)
    assert not {c for g in plan.gpus for c in g.cpus} & gone
    assert any("offline CPUs 140-143" in n for n in plan.notes)


def test_smt_off_gives_single_thread_cores(dgx):
    keep = {c["id"] for c in dgx["cpu"]["cpus"] if c["id"] < 96}
    dgx["cpu"]["cpus"] = [c for c in dgx["cpu"]["cpus"] if c["id"] in keep]
    dgx["cpu"]["online"] = sorted(keep)
    dgx["cpu"]["threads_per_core"], dgx["cpu"]["smt_active"] = 1, False
    for n in dgx["numa"]["nodes"]:
        n["cpus"] = [c for c in n["cpus"] if c in keep]
    plan = trees.plan(dgx)
    assert all(len(core.cpus) == 1 for core in plan.cores)
    assert all(len(g.cpus) == 11 for g in plan.gpus)  # (48 - 2 reserved) // 4


def test_fewer_cores_than_gpus_shares_the_node_and_says_so(dgx):
    keep = {0, 1, 2, 48, 49, 50}  # three single-thread cores per socket for four GPUs
    dgx["cpu"]["cpus"] = [c for c in dgx["cpu"]["cpus"] if c["id"] in keep]
    dgx["cpu"]["online"] = sorted(keep)
    dgx["cpu"]["threads_per_core"] = 1
    for n in dgx["numa"]["nodes"]:
        n["cpus"] = [c for c in n["cpus"] if c in keep]
    plan = trees.plan(dgx)
    assert all(g.shares_cores for g in plan.gpus)
    assert set(plan.gpus[0].cpus) <= {0, 1, 2} and set(plan.gpus[7].cpus) <= {48, 49, 50}
    # node 1 keeps its 3 cores; node 0 gives one to the system (the static CPU manager needs one)
    assert any("node 1 has 3 usable cores for 4 GPUs" in w for w in plan.warnings)
    assert any("node 0 has 2 usable cores for 4 GPUs" in w for w in plan.warnings)
    assert plan.reserved_cpus == (0,) and any("reserved anyway" in w for w in plan.warnings)
    assert set(plan.gpus[0].cpus) == {1, 2}


def test_h200_vm_per_node_memory_disagreeing_with_memtotal_is_flagged(h200):
    plan = trees.plan(h200)
    assert any("MemTotal" in n for n in plan.notes)


@pytest.mark.parametrize("name", ["16em64t-4s2c2t-offlines", "8em64t-2s2ca2c", "256ppc-8n8s4t",
                                  "40intel64-2g2n4c+pcilocality"])
def test_logical_core_numbering_matches_hwloc(host_tree, name):
    """Slurm's gres.conf Cores= are hwloc logical core indices: compare with hwloc-calc."""
    root = host_tree(name)
    if subprocess.run(["which", "hwloc-calc"], capture_output=True).returncode:
        pytest.skip("hwloc-calc not installed (tests/run.sh installs hwloc)")
    doc = trees.facts(root, None)
    assert doc["cpu"]["cache_groups"], "the tree has cache/index* directories"
    plan = placement.compute(doc, None, reserve=False)
    online = [c for core in plan.cores for c in core.cpus]
    out = subprocess.run(["hwloc-calc", "--input", str(root), "--physical-input", "-I", "core",
                          *[f"pu:{c}" for c in online]], capture_output=True, text=True,
                         check=True)
    # hwloc-calc prints the cores holding all given PUs; ask per CPU to get the mapping.
    assert cpulist.parse(out.stdout) == sorted(c.logical_index for c in plan.cores)
    for core in plan.cores[:: max(1, len(plan.cores) // 16)]:
        one = subprocess.run(["hwloc-calc", "--input", str(root), "--physical-input", "-I",
                              "core", f"pu:{core.cpus[0]}"], capture_output=True, text=True,
                             check=True)
        assert one.stdout.strip() == str(core.logical_index), core


def test_rails_of_several_gpus_come_nearest_class_first_each_once():
    """A NIC two GPUs share is listed once, with the nearer of its two classes."""
    def gpu(index: int, nics: list[str], paths: list[str]) -> placement.GpuPlacement:
        return placement.GpuPlacement(
            index=index, pci_address=None, name=None, uuid=None, numa_node=0, numa_reason="",
            cpus=(), nic=nics[0], nic_path=paths[0], nics=tuple(nics), nic_paths=tuple(paths),
            nic_ports=tuple(1 for _ in nics))

    found = rails.of_gpus([gpu(1, ["mlx5_2"], ["PHB"]), gpu(0, ["mlx5_0", "mlx5_1"],
                                                             ["PIX", "PXB"]),
                           gpu(2, ["mlx5_1"], ["PIX"])])
    assert [(r.name, r.path, r.gpus) for r in found] == [
        ("mlx5_0", "PIX", (0,)), ("mlx5_1", "PIX", (0, 2)), ("mlx5_2", "PHB", (1,))]
    assert rails.env(found) == {"NCCL_IB_HCA": "=mlx5_0,mlx5_1,mlx5_2",
                                "UCX_NET_DEVICES": "mlx5_0:1,mlx5_1:1,mlx5_2:1"}
    assert rails.env([]) == {}
