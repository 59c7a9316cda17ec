"""Example Guaranteed pods sized to this node: 1 GPU, a NUMA node's worth, and every GPU.

Where the GPUs have rails, each pod's environment names every rail of the node's GPUs in
path-class order (NCCL_IB_HCA, UCX_NET_DEVICES; FI_PROVIDER and FI_EFA_USE_DEVICE_RDMA for
EFA): the device plugin, not the manifest, decides which GPUs a pod gets, and NCCL and UCX
each use the listed rail nearest to each of its GPUs, so listing them all is right for any
choice while leaving out the NICs no GPU uses (storage, front-end).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodetune import __version__
from nodetune.manifests import GIB, Options, Rendered, hugepage_resource
from nodetune.manifests.kubelet import reserved_memory_bytes
from nodetune.placement import rails
from nodetune.views import templating

if TYPE_CHECKING:
    from nodetune.placement.plan import Placement

MEMORY_SHARE = 0.8  # of a node's unreserved memory, per GPU, left for pods


def pod_sizes(plan: Placement) -> list[int]:
    total = len(plan.gpus)
    return sorted({n for n in (1, plan.gpus_per_numa_node, total) if 0 < n <= total})


def cpus_per_gpu(plan: Placement) -> int:
    """Whole CPUs a 1-GPU pod asks for: the smallest per-GPU core share on this node."""
    tpc = plan.threads_per_core
    owned = [len(g.cpus) for g in plan.gpus if g.cpus and not g.shares_cores]
    if owned:
        return max(min(owned) // tpc * tpc, tpc)
    usable = sum(len(n.cpus) for n in plan.cpu_numa_nodes) - len(plan.reserved_cpus)
    return max(usable // max(len(plan.gpus), 1) // tpc * tpc, tpc)


def memory_per_gpu(plan: Placement) -> int:
    """Bytes of memory per GPU that fit every GPU's NUMA node, in whole GiB."""
    shares = []
    for node in plan.cpu_numa_nodes:
        if node.gpus and node.memory_bytes:
            free = node.memory_bytes - reserved_memory_bytes(node.memory_bytes)
            shares.append(int(free * MEMORY_SHARE) // len(node.gpus))
    if not shares:
        total = sum(n.memory_bytes for n in plan.memory_numa_nodes)
        shares.append(int(total * MEMORY_SHARE) // max(len(plan.gpus), 1))
    return max(min(shares) // GIB * GIB, GIB)


def hugepages_per_gpu(plan: Placement) -> dict[int, int]:
    """Hugepage size (kB) -> pages per GPU, where the GPUs' nodes have a pool of that size."""
    out: dict[int, int] = {}
    gpu_nodes = [n for n in plan.cpu_numa_nodes if n.gpus]
    sizes = {int(s) for n in gpu_nodes for s, pages in n.hugepages.items() if pages}
    for size in sorted(sizes):
        per = min(n.hugepages.get(str(size), 0) // len(n.gpus) for n in gpu_nodes)
        if per:
            out[size] = per
    return out


def pod(plan: Placement, options: Options, gpus: int, rdma: bool,
        env: dict[str, str] | None = None) -> dict[str, Any]:
    cpus = cpus_per_gpu(plan) * gpus
    memory = memory_per_gpu(plan) * gpus
    shm = max(memory // 4 // GIB, 1)
    limits: dict[str, str] = {"cpu": str(cpus), "memory": f"{memory // GIB}Gi",
                              "nvidia.com/gpu": str(gpus)}
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory",
                                                                     "sizeLimit": f"{shm}Gi"}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    for size_kb, pages in hugepages_per_gpu(plan).items():
        resource = hugepage_resource(size_kb)
        limits[resource] = f"{pages * gpus * size_kb // 1024}Mi"
        name = resource.lower()
        volumes.append({"name": name, "emptyDir": {"medium": "HugePages-" + resource[10:]}})
        mounts.append({"name": name, "mountPath": f"/dev/{name}"})
    container: dict[str, Any] = {
        "name": "main", "image": options.workload_image, "command": ["sleep", "infinity"],
        "resources": {"requests": dict(limits), "limits": limits}, "volumeMounts": mounts,
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if rdma:
        limits[options.rdma_resource] = "1"
        container["resources"]["requests"][options.rdma_resource] = "1"
        # RDMA registers (pins) memory: the container needs to lift its memlock limit.
        container["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"]}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"nodetune-example-{gpus}gpu",
                     "labels": {"app.kubernetes.io/managed-by": "nodetune"}},
        "spec": {"restartPolicy": "Never",
                 "nodeSelector": {"nvidia.com/gpu.present": "true"},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                  "effect": "NoSchedule"}],
                 "containers": [container], "volumes": volumes},
    }


def render(plan: Placement, options: Options) -> Rendered:
    if not plan.gpus:
        return Rendered(target="k8s-pod", files={}, notes=["no GPUs: no example pods"])
    rdma = bool(plan.rdma_devices)
    node_rails = rails.of_gpus(plan.gpus)
    env = rails.env(node_rails)
    pods: list[dict[str, Any]] = []
    for n in pod_sizes(plan):
        spec = pod(plan, options, n, rdma, env)
        limits = spec["spec"]["containers"][0]["resources"]["limits"]
        fits = n <= plan.gpus_per_numa_node
        where = ("fits one NUMA node" if fits else
                 f"spans {-(-n // max(plan.gpus_per_numa_node, 1))} NUMA nodes")
        pods.append({"object": spec, "comment": f"{n} GPU{'s' if n > 1 else ''}: "
                     f"{limits['cpu']} CPUs, {limits['memory']} memory; {where}"})
    text = templating.render("manifests/pods.yaml.j2", pods=pods, version=__version__,
                             node_name=options.node_name, rdma=rdma,
                             rdma_resource=options.rdma_resource,
                             threads_per_core=plan.threads_per_core,
                             rails=bool(node_rails),
                             gpu_rails=[(g.index, rails.describe(rails.of_gpu(g)))
                                        for g in plan.gpus])
    return Rendered(target="k8s-pod", files={"pods.yaml": text},
                    objects=[p["object"] for p in pods])
