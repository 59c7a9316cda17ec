"""`nodetune bind`: which GPU a rank gets, the plan it prints, and a real exec on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nodetune.cli import cli, main
from nodetune.facts import cpulist
from nodetune.placement import binding
from tests import placement_trees as trees

CHILD = ("import re; s = open('/proc/self/status').read(); "
         "print(re.search(r'Cpus_allowed_list:\\s*(\\S+)', s).group(1)); "
         "print(open('/proc/self/numa_maps').readline().split()[1])")
# Launcher variables of the process running the tests must not leak into the plans.
CLEAN = {k: None for k in ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK",
                         "MPI_LOCALRANKID", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                         "SLURM_STEP_GPUS", "SLURM_JOB_GPUS")}


@pytest.fixture
def dgx(request):
    return trees.tree(request, "dgx-h100")


def plan_json(root_nvml, *args: str, **env: str) -> dict:
    result = CliRunner().invoke(cli, ["bind", *trees.cli_args(*root_nvml), "--json", *args,
                                      "--", "python", "train.py"], env={**CLEAN, **env})
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def node_of(root_nvml, cpus: str) -> set[int]:
    doc = trees.facts(*root_nvml)
    wanted = set(cpulist.parse(cpus))
    return {n["id"] for n in doc["numa"]["nodes"] if wanted & set(n["cpus"])}


def test_local_rank_picks_its_gpu_cores_memory_and_nic(dgx):
    doc = plan_json(dgx, "--nic-env", LOCAL_RANK="5")
    assert next(iter(doc)) == "schema" and doc["schema"] == "nodetune.bind/1"
    assert doc["rank"] == 5 and doc["rank_source"] == "LOCAL_RANK"
    assert doc["gpu"]["index"] == 5 and doc["gpu"]["numa_node"] == 1
    assert node_of(dgx, doc["cpus"]) == {1} and len(cpulist.parse(doc["cpus"])) == 24
    assert doc["memory_node"] == 1 and doc["mem_policy"] == "bind"
    assert doc["env"] == {"NCCL_IB_HCA": "=mlx5_9", "UCX_NET_DEVICES": "mlx5_9:1"}
    if doc["method"] == "numactl":
        assert doc["argv"][1:] == [f"--physcpubind={doc['cpus']}", "--membind=1", "--",
                                   "python", "train.py"]
    else:
        assert doc["argv"] == ["python", "train.py"]


def test_every_rank_gets_its_own_cores_on_its_gpu_node(dgx):
    seen: set[int] = set()
    for rank in range(8):
        doc = plan_json(dgx, "--local-rank", str(rank), SLURM_LOCALID="0")
        assert doc["rank_source"] == "--local-rank"
        cpus = set(cpulist.parse(doc["cpus"]))
        assert node_of(dgx, doc["cpus"]) == {0 if rank < 4 else 1}
        assert not cpus & seen
        seen |= cpus
    assert "NCCL_IB_HCA" not in plan_json(dgx, SLURM_LOCALID="2")["env"]


def test_cuda_visible_devices_order_is_kept(dgx):
    doc = plan_json(dgx, LOCAL_RANK="0", CUDA_VISIBLE_DEVICES="6,2")
    assert doc["gpu"]["index"] == 6
    uuid = trees.facts(*dgx)["gpus"][3]["uuid"]
    assert plan_json(dgx, LOCAL_RANK="0", CUDA_VISIBLE_DEVICES=uuid)["gpu"]["index"] == 3
    # a container that sees one GPU: CUDA device 0 is that GPU, whatever the rank
    assert plan_json(dgx, OMPI_COMM_WORLD_LOCAL_RANK="3",
                     NVIDIA_VISIBLE_DEVICES=uuid)["gpu"]["index"] == 3
    # Slurm (ConstrainDevices) renumbers CUDA_VISIBLE_DEVICES from 0; SLURM_STEP_GPUS keeps ids
    doc = plan_json(dgx, SLURM_LOCALID="1", CUDA_VISIBLE_DEVICES="0,1", SLURM_STEP_GPUS="4,5")
    assert doc["gpu"]["index"] == 5


def test_rank_beyond_the_visible_gpus_is_a_one_line_error(dgx, capsys, monkeypatch):
    for key in CLEAN:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(SystemExit) as exit_info:
        main(["bind", *trees.cli_args(*dgx), "--dry-run", "--", "true"])
    assert exit_info.value.code == 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "local rank 2" in line and "2 GPUs are visible" in line and "fix:" in line


def test_unknown_numa_node_runs_unbound_with_a_warning(dgx):
    doc = trees.facts(*dgx)
    for g in doc["gpus"]:
        g["numa_node"], g["local_cpus"] = None, doc["cpu"]["online"]
    plan = trees.plan(doc, reserve=False)
    rank = binding.plan_rank(plan, {"LOCAL_RANK": "1"})
    assert rank.cpus == [] and rank.mem_policy == "none"
    assert "cannot tell" in rank.warnings[0]
    assert binding.exec_argv(rank, ["python", "x.py"]) == (["python", "x.py"], "none")


def test_gb200_prefers_rather_than_binds_memory(request):
    plan = trees.plan(trees.facts(*trees.tree(request, "gb200")), reserve=False)
    rank = binding.plan_rank(plan, {"LOCAL_RANK": "2"})
    assert rank.gpu.index == 2 and set(rank.cpus) <= set(range(72, 144))
    assert rank.mem_policy == "preferred" and rank.memory_node == 1
    argv, method = binding.exec_argv(rank, ["a.out"], numactl="/usr/bin/numactl")
    assert method == "numactl" and "--preferred=1" in argv


def test_allowed_cpus_narrow_the_binding(dgx):
    plan = trees.plan(trees.facts(*dgx), reserve=False)
    rank = binding.plan_rank(plan, {"LOCAL_RANK": "0"}, allowed_cpus={0, 1, 2, 96})
    assert rank.cpus == [0, 1, 2, 96] and "only CPUs" in rank.notes[0]
    rank = binding.plan_rank(plan, {"LOCAL_RANK": "4"}, allowed_cpus={0, 1})
    assert rank.cpus == [] and rank.mem_policy == "none" and "outside" in rank.warnings[0]


@pytest.mark.slow
@pytest.mark.parametrize("numactl", [True, False], ids=["numactl", "in-process"])
def test_real_bind_sets_the_planned_affinity_and_memory_policy(request, numactl):
    """A DGX layout with 4 single-thread cores per socket: GPU0 gets CPU 0, GPU1 CPU 1, and
    GPU4 (node 1: CPUs 4-7, absent here) cannot be bound on this machine."""
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1 in this process's affinity")
    root, nvml = trees.tree(request, "dgx-h100-small")
    nodetune = os.path.join(os.path.dirname(sys.executable), "nodetune")
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    if not numactl:
        env["PATH"] = "/nonexistent"  # no numactl on PATH: sched_setaffinity + libnuma
    before = cpulist.format(os.sched_getaffinity(0))
    results = {}
    for rank in (0, 1, 4):
        args = [nodetune, "bind", "--root", str(root), "--nvml", nvml, "--local-rank", str(rank)]
        plan = json.loads(subprocess.run([*args, "--json"], env=env, capture_output=True,
                                         text=True, check=True).stdout)
        run = subprocess.run([*args, "--", sys.executable, "-c", CHILD], env=env,
                             capture_output=True, text=True, check=True)
        cpus, policy = run.stdout.split()
        results[rank] = (cpus, policy, plan, run.stderr)
    for rank, cpu in ((0, "0"), (1, "1")):
        cpus, policy, plan, _ = results[rank]
        assert plan["method"] == ("numactl" if numactl else "in-process")
        assert cpus == plan["cpus"] == cpu
        assert plan["memory_node"] == 0 and policy == "bind:0"
    # the plan of the tree names CPU 4 and node 1; where this machine lacks them, it says so
    cpus, policy, plan, stderr = results[4]
    assert plan["cpus"] == "4" and plan["memory_node"] == 1
    if 4 in os.sched_getaffinity(0):
        assert cpus == "4"
    else:
        assert cpus == before and "runs unbound" in stderr
    if not os.path.exists("/sys/devices/system/node/node1"):
        assert policy == "default"


def test_multi_rail_gpu_exports_every_rail_under_its_switch(request):
    """Synthetic HGX with two ConnectX-7 per PCIe switch: each rank's env names both, PIX,
    and the rails are the ones the sysfs tree really puts under the GPU's switch."""
    tree = trees.tree(request, "hgx-multirail")
    facts = trees.facts(*tree)
    pci_of = {d["name"]: d["pci_address"] for d in facts["rdma"]["devices"]}
    switch_of = {d["address"]: d.get("switch") for d in facts["pci"]["devices"]}
    plan = trees.plan(facts, reserve=False)
    rails_seen: list[str] = []
    for rank in range(8):
        doc = binding.plan_rank(plan, {}, rank=rank, nic_env=True).to_json()
        rails = doc["gpu"]["nics"]
        assert len(rails) == 2 and doc["gpu"]["nic_paths"] == ["PIX", "PIX"]
        assert doc["env"]["NCCL_IB_HCA"] == "=" + ",".join(rails)
        assert doc["env"]["UCX_NET_DEVICES"] == ",".join(f"{n}:1" for n in rails)
        gpu_switch = switch_of[doc["gpu"]["pci_address"]]
        assert gpu_switch and {switch_of[pci_of[n]] for n in rails} == {gpu_switch}
        rails_seen += rails
    assert len(set(rails_seen)) == 16
    cli_doc = plan_json(tree, "--nic-env", LOCAL_RANK="5")  # the command says the same
    assert cli_doc["env"] == binding.plan_rank(plan, {}, rank=5, nic_env=True).env


def test_efa_rails_set_libfabric_not_nccl_ib(request):
    tree = trees.tree(request, "hgx-multirail")
    doc = trees.facts(*tree)
    for d in doc["rdma"]["devices"]:
        d["name"] = "rdmap" + d["pci_address"].split(":")[1] + "s0"
    plan = trees.plan(doc, reserve=False)
    rank = binding.plan_rank(plan, {}, rank=0, nic_env=True)
    rails = rank.gpu.nics
    assert len(rails) == 2 and all(n.startswith("rdmap") for n in rails)
    assert rank.env["FI_PROVIDER"] == "efa" and "NCCL_IB_HCA" not in rank.env
    assert rank.env["UCX_NET_DEVICES"] == ",".join(f"{n}:1" for n in rails)
