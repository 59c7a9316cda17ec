"""Dynamic Resource Allocation (resource.k8s.io/v1, Kubernetes 1.34+): one ResourceClaimTemplate
per GPU rank asking for that GPU and every rail of it on the same PCIe root.

The Topology Manager does not align DRA-allocated devices, so the alignment lives in the claim:
the GPU request (NVIDIA's DRA driver, device class gpu.nvidia.com) and one request per RDMA NIC
(class rdma-nic.nodetune.io, for a generic RDMA DRA driver) share a `matchAttribute` constraint
on the standard attribute resource.kubernetes.io/pcieRoot, and each request selects the PCIe
root the plan found (its value is the sysfs root complex, "pci0000:17"). Multi-node NVLink
nodes also get a ComputeDomain (resource.nvidia.com/v1beta1) for the IMEX channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodetune import __version__
from nodetune.manifests import Options, Rendered
from nodetune.views import templating

if TYPE_CHECKING:
    from nodetune.placement.plan import GpuPlacement, Placement

GPU_CLASS = "gpu.nvidia.com"
NIC_CLASS = "rdma-nic.nodetune.io"
# The driver name of the RDMA DRA driver the NIC class selects; edit it for yours.
NIC_DRIVER = "dra.net"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
NUMA_NODE = "resource.kubernetes.io/numaNode"
SAME_NUMA_PATHS = ("PHB", "NODE")  # nvidia-smi topo classes inside one NUMA node
COMPUTE_DOMAIN_API = "resource.nvidia.com/v1beta1"


def _root_selector(root: str) -> dict[str, Any]:
    return {"cel": {"expression":
                    f'device.attributes["resource.kubernetes.io"].pcieRoot == "{root}"'}}


def claim_template(g: GpuPlacement, root: str | None, rails: list[str], namespace: str,
                   match: str = PCIE_ROOT) -> dict[str, Any]:
    """The GPU and `rails` NICs; on one PCIe `root` (match pcieRoot) or one NUMA node."""
    on_root = match == PCIE_ROOT and root
    gpu: dict[str, Any] = {"deviceClassName": GPU_CLASS, "count": 1}
    if on_root:
        gpu["selectors"] = [_root_selector(str(root))]
    requests: list[dict[str, Any]] = [{"name": "gpu", "exactly": gpu}]
    for k, _ in enumerate(rails):
        nic: dict[str, Any] = {"deviceClassName": NIC_CLASS, "count": 1}
        if on_root:
            nic["selectors"] = [_root_selector(str(root))]
        requests.append({"name": f"nic{k}", "exactly": nic})
    devices: dict[str, Any] = {"requests": requests}
    if rails:
        devices["constraints"] = [{"requests": [r["name"] for r in requests],
                                   "matchAttribute": match}]
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": f"gpu{g.index}-rails", "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "nodetune"}},
            "spec": {"spec": {"devices": devices}}}


def nic_device_class() -> dict[str, Any]:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
            "metadata": {"name": NIC_CLASS},
            "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{NIC_DRIVER}"'}}]}}


def compute_domain(namespace: str, nodes: int) -> dict[str, Any]:
    return {"apiVersion": COMPUTE_DOMAIN_API, "kind": "ComputeDomain",
            "metadata": {"name": "nvlink-domain", "namespace": namespace},
            "spec": {"numNodes": nodes,
                     "channel": {"resourceClaimTemplate": {"name": "nvlink-domain-channel"}}}}


def objects(plan: Placement, options: Options) -> tuple[list[dict[str, Any]], list[str]]:
    root_of, nic_pci = options.pcie_roots, options.rdma_addresses
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for g in plan.gpus:
        root = root_of.get(g.pci_address or "")
        rails = [n for n in (g.nics or ((g.nic,) if g.nic else ()))
                 if root and root_of.get(nic_pci.get(n, "")) == root]
        if not root:
            notes.append(f"GPU {g.index}: PCIe root unknown, so its claim asks for the GPU alone")
        elif not rails and g.nic and g.nic_path in SAME_NUMA_PATHS:
            notes.append(f"GPU {g.index}: no RDMA NIC on its PCIe root {root}; its nearest, "
                         f"{g.nic} ({g.nic_path}), is on its NUMA node: matched by {NUMA_NODE}")
            out.append(claim_template(g, root, [g.nic], options.namespace, NUMA_NODE))
            continue
        elif not rails:
            notes.append(f"GPU {g.index}: no RDMA NIC on its PCIe root {root} or NUMA node: "
                         "its claim asks for the GPU alone")
        out.append(claim_template(g, root, rails, options.namespace))
    if any(o["spec"]["spec"]["devices"].get("constraints") for o in out):
        out.insert(0, nic_device_class())
    if options.nvlink_cluster:
        out.append(compute_domain(options.namespace, 2))
        notes.append("multi-node NVLink (fabric cluster UUID set): the ComputeDomain gives a "
                     "job's pods one IMEX channel; set numNodes to the job's node count")
    notes.append("CPU and memory: DRA allocates no CPUs; the kubelet's Topology Manager does not "
                 "see DRA devices, so pin CPUs to the GPU's NUMA node with the kubelet target's "
                 "static CPU and memory managers and a Guaranteed pod, or a CPU DRA driver")
    return out, notes


def render(plan: Placement, options: Options) -> Rendered:
    if not plan.gpus:
        return Rendered(target="dra", files={}, notes=["no GPUs: no DRA claims"])
    objs, notes = objects(plan, options)
    head = [f"# DRA claims for {options.node_name} (nodetune {__version__}): resource.k8s.io/v1,",
            "# Kubernetes 1.34+ (DRA GA). One ResourceClaimTemplate per GPU: the GPU and every",
            f"# RDMA NIC on its PCIe root, held together by matchAttribute {PCIE_ROOT}.",
            *(f"# note: {n}" for n in notes)]
    text = "\n".join(head) + "\n" + "".join(
        "---\n" + templating.to_yaml(o).rstrip("\n") + "\n" for o in objs)
    return Rendered(target="dra", files={"dra-claims.yaml": text}, objects=objs, notes=notes)
