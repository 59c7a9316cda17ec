"""Plan and apply one rank's binding: its GPU's cores, that GPU's memory node, its nearest NIC.

`plan_rank(placement, env, ...)` is pure: it maps the local rank to a GPU the way CUDA will
number it (NVIDIA_VISIBLE_DEVICES, then CUDA_VISIBLE_DEVICES, whose order is kept), and picks
the CPUs and memory policy. `exec_argv(plan)` says how to apply it: through `numactl` when it is
on PATH, else in-process (sched_setaffinity + libnuma's set_mempolicy), both inherited by exec.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nodetune.errors import NodetuneError
from nodetune.facts import cpulist
from nodetune.placement import rails

if TYPE_CHECKING:
    from nodetune.placement.plan import GpuPlacement, Placement

RANK_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
MEM_POLICIES = ("auto", "bind", "preferred", "none")
_MPOL = {"preferred": 1, "bind": 2}  # <linux/mempolicy.h> MPOL_PREFERRED, MPOL_BIND


@dataclass
class RankPlan:
    rank: int
    rank_source: str
    gpu: GpuPlacement | None
    cpus: list[int]  # CPUs to run on; empty: leave affinity alone
    memory_node: int | None
    mem_policy: str  # "bind", "preferred" or "none"
    env: dict[str, str] = field(default_factory=dict)  # variables to export
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        g = self.gpu
        return {"rank": self.rank, "rank_source": self.rank_source,
                "gpu": None if g is None else {"index": g.index, "pci_address": g.pci_address,
                                               "name": g.name, "uuid": g.uuid,
                                               "numa_node": g.numa_node, "nic": g.nic,
                                               "nic_path": g.nic_path,
                                               "nics": list(g.nics),
                                               "nic_paths": list(g.nic_paths)},
                "cpus": cpulist.format(self.cpus), "memory_node": self.memory_node,
                "mem_policy": self.mem_policy, "env": self.env, "notes": self.notes,
                "warnings": self.warnings}


def local_rank(env: Mapping[str, str], given: int | None) -> tuple[int, str]:
    if given is not None:
        return given, "--local-rank"
    for name in RANK_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            if not value.isdigit():
                raise NodetuneError(f"{name}={value!r} is not a local rank",
                                    fix="unset it or pass --local-rank N")
            return int(value), name
    return 0, "default (no LOCAL_RANK, SLURM_LOCALID or OMPI_COMM_WORLD_LOCAL_RANK set)"


def _resolve(token: str, gpus: Sequence[GpuPlacement], by_minor: Mapping[int, int],
             what: str) -> GpuPlacement:
    token = token.strip()
    if token.isdigit():
        index = by_minor.get(int(token), int(token)) if what.startswith("SLURM") else int(token)
        for g in gpus:
            if g.index == index:
                return g
        raise NodetuneError(f"{what} names GPU {token}, which this node does not have",
                            fix="check the variable against `nvidia-smi -L`")
    if token.startswith("GPU-"):
        for g in gpus:
            if g.uuid and (g.uuid == token or g.uuid.startswith(token)):
                return g
        raise NodetuneError(f"{what} names {token}, and no GPU here has that UUID",
                            fix="run with --nvml live so GPU UUIDs are known")
    raise NodetuneError(f"{what} entry {token!r} is not a GPU index or UUID (MIG devices are "
                        "not bound)", fix="pass plain GPU indices or UUIDs, or skip nodetune bind")


def visible_gpus(plan: Placement, env: Mapping[str, str],
                 minors: Mapping[int, int] | None = None) -> tuple[list[GpuPlacement], list[str]]:
    """The GPUs in the order CUDA numbers them for this process."""
    notes: list[str] = []
    by_minor = dict(minors or {})
    gpus: list[GpuPlacement] = sorted(plan.gpus, key=lambda g: g.index)
    container = env.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if container and container not in ("all", "void", "none"):
        gpus = [_resolve(t, gpus, by_minor, "NVIDIA_VISIBLE_DEVICES") for t in container.split(",")]
        notes.append(f"container GPUs (NVIDIA_VISIBLE_DEVICES): {container}")
    cuda = env.get("CUDA_VISIBLE_DEVICES")
    if cuda is None:
        return gpus, notes
    tokens = [t.strip() for t in cuda.split(",") if t.strip()]
    slurm = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS")
    slurm_ids = [t.strip() for t in slurm.split(",")] if slurm else []
    if slurm_ids and all(t.isdigit() for t in tokens + slurm_ids) and len(slurm_ids) == len(tokens):
        # Slurm with ConstrainDevices renumbers CUDA_VISIBLE_DEVICES from 0 inside the job;
        # SLURM_STEP_GPUS / SLURM_JOB_GPUS keep the node's own GPU numbers.
        notes.append(f"Slurm GPUs {','.join(slurm_ids)} for CUDA_VISIBLE_DEVICES={cuda}")
        return [_resolve(t, plan.gpus, by_minor, "SLURM_STEP_GPUS") for t in slurm_ids], notes
    out = []
    for t in tokens:
        if t.isdigit():
            if int(t) >= len(gpus):
                raise NodetuneError(f"CUDA_VISIBLE_DEVICES={cuda} names device {t}, but only "
                                    f"{len(gpus)} GPUs are visible", fix="fix CUDA_VISIBLE_DEVICES")
            out.append(gpus[int(t)])
        else:
            out.append(_resolve(t, gpus, by_minor, "CUDA_VISIBLE_DEVICES"))
    notes.append(f"CUDA_VISIBLE_DEVICES={cuda} kept as it is")
    return out, notes


def plan_rank(plan: Placement, env: Mapping[str, str], *, rank: int | None = None,
              mem_policy: str = "auto", nic_env: bool = False,
              minors: Mapping[int, int] | None = None,
              allowed_cpus: set[int] | None = None,
              allowed_mems: set[int] | None = None) -> RankPlan:
    """The binding of one local rank. `allowed_*`: this process's cpuset (None: no limit)."""
    r, source = local_rank(env, rank)
    if not plan.gpus:
        raise NodetuneError("no GPUs found on this node, so there is nothing to bind to",
                            fix="run on a GPU node; check `nodetune facts` gpus")
    visible, notes = visible_gpus(plan, env, minors)
    if not visible:
        raise NodetuneError("CUDA_VISIBLE_DEVICES hides every GPU",
                            fix="unset it or list the rank's GPU")
    if len(visible) == 1:
        gpu = visible[0]
    elif r < len(visible):
        gpu = visible[r]
    else:
        raise NodetuneError(f"local rank {r} ({source}) but only {len(visible)} GPUs are visible",
                            fix="start one rank per GPU, or pass --local-rank")
    names = {g.name for g in visible}
    if len(names) > 1 and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        notes.append("GPUs of different models: set CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA numbers "
                     "them in the PCI order nodetune uses")
    out = RankPlan(rank=r, rank_source=source, gpu=gpu, cpus=[], memory_node=None,
                   mem_policy="none", notes=notes)
    if not gpu.cpus:
        out.warnings.append(f"GPU {gpu.index} is not pinned ({gpu.numa_reason}): the command "
                            "runs with its current CPU and memory placement")
    else:
        cpus = sorted(set(gpu.cpus) & allowed_cpus) if allowed_cpus is not None else list(gpu.cpus)
        if not cpus:
            out.warnings.append(f"GPU {gpu.index}'s CPUs {cpulist.format(gpu.cpus)} are all "
                                f"outside this process's allowed CPUs "
                                f"{cpulist.format(allowed_cpus or [])} (job or container "
                                "cpuset): the command runs unbound")
        else:
            if len(cpus) < len(gpu.cpus):
                out.notes.append(f"only CPUs {cpulist.format(cpus)} of the GPU's "
                                 f"{cpulist.format(gpu.cpus)} are allowed to this process")
            if gpu.shares_cores:
                out.notes.append(f"GPU {gpu.index} shares its NUMA node's cores with other GPUs")
            out.cpus = cpus
        out.memory_node = gpu.memory_node
        out.mem_policy = _mem_policy(plan, mem_policy, out)
        if out.memory_node is not None and allowed_mems is not None \
                and out.memory_node not in allowed_mems:
            out.notes.append(f"NUMA node {out.memory_node} is outside this process's allowed "
                             "memory nodes: memory policy left alone")
            out.mem_policy = "none"
        if not out.cpus:
            out.mem_policy = "none"
    if nic_env:
        _nic_env(gpu, out)
    return out


def _nic_env(gpu: GpuPlacement, out: RankPlan) -> None:
    """NCCL, UCX and libfabric variables naming every rail of the GPU, nearest first."""
    mine = rails.of_gpu(gpu)
    if not mine:
        out.notes.append("no RDMA device with an active port near this GPU: NCCL_IB_HCA "
                         "not set")
        return
    out.env.update(rails.env(mine))
    efa = [r.name for r in mine if rails.is_efa(r.name)]
    if efa:
        out.notes.append(f"EFA devices of this GPU: {','.join(efa)} (aws-ofi-nccl chooses "
                         "among them by topology)")
    if len(mine) > 1:
        out.notes.append(f"GPU {gpu.index} has {len(mine)} rails under its PCIe switch: "
                         f"{rails.describe(mine)}")


def _mem_policy(plan: Placement, wanted: str, out: RankPlan) -> str:
    if out.memory_node is None or wanted == "none":
        return "none"
    if wanted != "auto":
        return wanted
    if any(not n.has_cpus for n in plan.memory_numa_nodes):
        out.notes.append("NUMA nodes with memory but no CPUs exist (GPU memory on Grace): memory "
                         "is preferred, not bound, to the GPU's node so pages can still migrate")
        return "preferred"
    return "bind"


def exec_argv(rank_plan: RankPlan, command: Sequence[str],
              numactl: str | None = "auto") -> tuple[list[str], str]:
    """(argv to exec, method): "numactl", "in-process" or "none"."""
    if not rank_plan.cpus:
        return list(command), "none"
    path = shutil.which("numactl") if numactl == "auto" else numactl
    if path:
        argv = [path, f"--physcpubind={cpulist.format(rank_plan.cpus)}"]
        if rank_plan.mem_policy == "bind":
            argv.append(f"--membind={rank_plan.memory_node}")
        elif rank_plan.mem_policy == "preferred":
            argv.append(f"--preferred={rank_plan.memory_node}")
        return [*argv, "--", *command], "numactl"
    return list(command), "in-process"


def apply_in_process(rank_plan: RankPlan) -> list[str]:
    """Set this process's CPU affinity and memory policy (kept across exec); returns notes."""
    notes: list[str] = []
    os.sched_setaffinity(0, rank_plan.cpus)
    if rank_plan.mem_policy == "none" or rank_plan.memory_node is None:
        return notes
    name = ctypes.util.find_library("numa")
    if not name:
        notes.append("neither numactl nor libnuma found: CPU affinity set, memory policy not "
                     "(install numactl)")
        return notes
    libnuma = ctypes.CDLL(name, use_errno=True)
    bits = ctypes.sizeof(ctypes.c_ulong) * 8
    words = rank_plan.memory_node // bits + 1
    mask = (ctypes.c_ulong * words)()
    mask[rank_plan.memory_node // bits] = 1 << (rank_plan.memory_node % bits)
    if libnuma.set_mempolicy(_MPOL[rank_plan.mem_policy], mask, words * bits + 1) != 0:
        err = ctypes.get_errno()
        notes.append(f"set_mempolicy failed ({os.strerror(err)}): memory policy not set")
    return notes
