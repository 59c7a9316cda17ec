"""`docker run` lines and a compose file: one container per GPU group (GPUs of one NUMA node)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from nodetune import __version__
from nodetune.facts import cpulist
from nodetune.manifests import GIB, Options, Rendered
from nodetune.views import templating

if TYPE_CHECKING:
    from nodetune.placement.plan import GpuGroup, Placement

STACK_BYTES = 64 << 20  # NVIDIA's container guides pair memlock=-1 with a 64 MiB stack
SHM_MAX_GIB = 64


def shm_gib(plan: Placement, group: GpuGroup) -> int:
    """/dev/shm for a group: an eighth of its node's memory, 1 to 64 GiB."""
    node = next((n for n in plan.numa_nodes if n.id == group.numa_node), None)
    memory = node.memory_bytes if node else sum(n.memory_bytes for n in plan.numa_nodes)
    return max(1, min(SHM_MAX_GIB, memory // 8 // GIB))


def service_name(group: GpuGroup) -> str:
    return f"gpu-numa{group.numa_node}" if group.numa_node is not None else "gpu-numa-unknown"


def run_argv(plan: Placement, group: GpuGroup, options: Options) -> list[str]:
    devices = ",".join(str(i) for i in group.gpus)
    argv = ["docker", "run", "--rm", "-it", "--name", f"nodetune-{service_name(group)}",
            "--gpus", f'"device={devices}"']
    if group.cpus:
        argv += ["--cpuset-cpus", cpulist.format(group.cpus),
                 "--cpuset-mems", str(group.numa_node)]
    argv += ["--ulimit", "memlock=-1", "--ulimit", f"stack={STACK_BYTES}",
             "--shm-size", f"{shm_gib(plan, group)}g"]
    if plan.rdma_devices:  # ib_uverbs creates /dev/infiniband for every RDMA device
        argv += ["--device", "/dev/infiniband", "--cap-add", "IPC_LOCK"]
    return [*argv, options.workload_image]


def compose_service(plan: Placement, group: GpuGroup, options: Options) -> dict[str, Any]:
    service: dict[str, Any] = {"image": options.workload_image, "command": ["sleep", "infinity"]}
    if group.cpus:
        service["cpuset"] = cpulist.format(group.cpus)
    service["shm_size"] = f"{shm_gib(plan, group)}gb"
    service["ulimits"] = {"memlock": {"soft": -1, "hard": -1}, "stack": STACK_BYTES}
    if plan.rdma_devices:  # ib_uverbs creates /dev/infiniband for every RDMA device
        service["devices"] = ["/dev/infiniband:/dev/infiniband"]
        service["cap_add"] = ["IPC_LOCK"]
    service["deploy"] = {"resources": {"reservations": {"devices": [
        {"driver": "nvidia", "device_ids": [str(i) for i in group.gpus],
         "capabilities": ["gpu"]}]}}}
    return service


def render(plan: Placement, options: Options) -> Rendered:
    if not plan.groups:
        return Rendered(target="docker", files={}, notes=["no GPUs: no containers"])
    runs = []
    for group in plan.groups:
        if group.cpus:
            why = (f"GPUs {','.join(map(str, group.gpus))} on NUMA node {group.numa_node}: "
                   f"CPUs {cpulist.format(group.cpus)}, memory node {group.numa_node}")
        else:
            why = (f"GPUs {','.join(map(str, group.gpus))}: NUMA node unknown, so no cpuset "
                   "(see the warnings above)")
        runs.append({"comment": why, "line": shlex.join(run_argv(plan, group, options))})
    compose = {"services": {service_name(g): compose_service(plan, g, options)
                            for g in plan.groups}}
    values = {"version": __version__, "node_name": options.node_name,
              "warnings": list(plan.warnings), "notes": list(plan.notes)}
    files = {
        "docker-run.sh": templating.render("manifests/docker-run.sh.j2", runs=runs, **values),
        "compose.yaml": templating.render("manifests/compose.yaml.j2", compose=compose,
                                          groups=plan.groups, **values),
    }
    return Rendered(target="docker", files=files, objects=[compose])
