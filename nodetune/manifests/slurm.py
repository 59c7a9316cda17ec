"""gres.conf with Cores= and Links= per GPU, and the slurm.conf / cgroup.conf settings to match.

Slurm's gres.conf `Cores=` takes logical core indices (hwloc's "Core L#"), not the kernel's CPU
ids, and Slurm co-allocates GPUs with cores per socket / NUMA node, so each GPU lists the
unreserved cores of its NUMA node. `Links=` lists NVLink counts to every GPU in file order
(-1 for itself). `CpuSpecList` takes Slurm's abstract CPU ids (logical core x threads per core).

gres.conf has no NIC type, so each GPU's rails (nearest path class first) are named in the
comment above its line. A `Name=nic File=/dev/infiniband/uverbsN` gres is left out on
purpose: with ConstrainDevices=yes a job that did not ask for it would lose its HCAs, and
Slurm's gres/nic plugin sets only OMPI_MCA_btl_openib_if_include, for Open MPI's openib BTL
(removed in Open MPI 5.0).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from nodetune import __version__
from nodetune.facts import cpulist
from nodetune.manifests import MIB, Options, Rendered
from nodetune.placement import rails
from nodetune.views import templating

if TYPE_CHECKING:
    from nodetune.placement.plan import GpuPlacement, Placement


def gpu_type(name: str | None) -> str:
    """A gres Type from the GPU's name: "NVIDIA H100 80GB HBM3" -> "h100"."""
    for word in (name or "").replace("-", " ").split():
        if word.upper() != "NVIDIA" and re.search(r"\d", word):
            return re.sub(r"[^a-z0-9]", "", word.lower()) or "gpu"
    return "gpu"


def gres_lines(plan: Placement, options: Options) -> list[tuple[str, str]]:
    """(comment, line) per GPU, in /dev/nvidiaN order (the order Links= refers to)."""
    gpus = sorted(plan.gpus, key=lambda g: (options.gpu_minors.get(g.index, g.index), g.index))
    order = [g.index for g in gpus]
    group_cpus = {g.numa_node: g.cpus for g in plan.groups if g.numa_node is not None}
    out = []
    for g in gpus:
        minor = options.gpu_minors.get(g.index, g.index)
        line = (f"NodeName={options.node_name} Name=gpu Type={gpu_type(g.name)} "
                f"File=/dev/nvidia{minor}")
        cpus = group_cpus.get(g.numa_node, ()) if g.cpus and g.numa_node is not None else ()
        if cpus:
            line += f" Cores={cpulist.format(plan.logical_cores(cpus))}"
            comment = (f"GPU {g.index} ({g.pci_address}): NUMA node {g.numa_node}, "
                       f"CPUs {cpulist.format(cpus)}")
        else:
            comment = f"GPU {g.index} ({g.pci_address}): no Cores=, {g.numa_reason}"
        if g.nvlinks:
            line += " Links=" + ",".join(_link(g, peer) for peer in order)
        if plan.rdma_devices:
            mine = rails.of_gpu(g)
            comment += f"; rails {rails.describe(mine)}" if mine else "; no RDMA NIC near it"
        out.append((comment, line))
    return out


def _link(g: GpuPlacement, peer: int) -> str:
    return "-1" if peer == g.index else str(g.nvlinks.get(peer, 0))


def render(plan: Placement, options: Options) -> Rendered:
    if not plan.gpus:
        return Rendered(target="slurm", files={}, notes=["no GPUs: no gres.conf"])
    tpc = plan.threads_per_core
    reserved = plan.logical_cores(plan.reserved_cpus)
    cores = len(plan.cores)
    sockets = options.sockets or len({c.socket for c in plan.cores}) or 1
    types = sorted({gpu_type(g.name) for g in plan.gpus})
    node_line = (f"NodeName={options.node_name} Sockets={sockets} "
                 f"CoresPerSocket={cores // sockets} ThreadsPerCore={tpc}")
    if options.memory_total_bytes:
        node_line += f" RealMemory={options.memory_total_bytes // MIB // 1024 * 1024}"
    node_line += " Gres=" + ",".join(
        f"gpu:{t}:{sum(1 for g in plan.gpus if gpu_type(g.name) == t)}" for t in types)
    if reserved:
        node_line += " CpuSpecList=" + cpulist.format(c * tpc for c in reserved)
    values = {"version": __version__, "node_name": options.node_name,
              "warnings": list(plan.warnings), "notes": list(plan.notes)}
    files = {
        "gres.conf": templating.render("manifests/gres.conf.j2",
                                       lines=gres_lines(plan, options),
                                       rails=bool(plan.rdma_devices), **values),
        "slurm-hints.conf": templating.render(
            "manifests/slurm-hints.conf.j2", node_line=node_line,
            reserved_cpus=cpulist.format(plan.reserved_cpus), gpu_count=len(plan.gpus), **values),
    }
    return Rendered(target="slurm", files=files)
