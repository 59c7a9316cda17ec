"""Pinning configuration for each way users launch work, rendered from one placement plan.

Each target module exposes `render(plan, options) -> Rendered`; `render(target, ...)` picks it.
Kubernetes objects are built as dicts (so tests can validate them against the API schemas)
and laid out by templates that add the explanations as comments.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nodetune import __version__

if TYPE_CHECKING:
    from nodetune.placement.plan import Placement

# target name -> module under nodetune.manifests
TARGETS: dict[str, str] = {
    "kubelet": "kubelet",
    "k8s-pod": "pods",
    "daemonset": "daemonset",
    "docker": "docker",
    "slurm": "slurm",
    "dra": "dra",
    "nccl-topo": "nccl_topo",
    "npd": "npd",
}

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Options:
    node_name: str = "node"
    image: str = f"nodetune:{__version__}"  # the agent's image (daemonset)
    workload_image: str = "nvcr.io/nvidia/pytorch:24.12-py3"  # example pods and containers
    namespace: str = "nodetune"
    rdma_resource: str = "rdma/rdma_shared_device_a"
    interval: int = 300
    taint_unhealthy: bool = False
    gpu_minors: dict[int, int] = field(default_factory=dict)  # GPU index -> /dev/nvidiaN minor
    memory_total_bytes: int = 0  # MemTotal, for Slurm's RealMemory
    sockets: int | None = None
    pcie_roots: dict[str, str] = field(default_factory=dict)  # PCI address -> "pci0000:17"
    rdma_addresses: dict[str, str] = field(default_factory=dict)  # RDMA name -> PCI address
    nvlink_cluster: bool = False  # multi-node NVLink fabric (ComputeDomain)
    kubelet_version: tuple[int, int] | None = None  # the kubelet the config is for, if given
    pci_ids: dict[str, dict[str, Any]] = field(default_factory=dict)  # address -> class, ids, link
    virtual_machine: bool = False  # a hypervisor's guest: its sysfs PCIe tree may be flattened


@dataclass(frozen=True)
class Rendered:
    target: str
    files: dict[str, str]  # file name -> text
    objects: list[dict[str, Any]] = field(default_factory=list)  # Kubernetes objects, if any
    notes: list[str] = field(default_factory=list)


def render(target: str, plan: Placement, options: Options) -> Rendered:
    module = importlib.import_module(f"nodetune.manifests.{TARGETS[target]}")
    result: Rendered = module.render(plan, options)
    return result


def mebibytes(n_bytes: int) -> str:
    """A Kubernetes quantity in whole MiB, rounded down."""
    return f"{n_bytes // MIB}Mi"


def hugepage_resource(size_kb: int) -> str:
    """Kubernetes resource name of a hugepage size: 2048 -> "hugepages-2Mi"."""
    for unit, factor in (("Gi", 1 << 20), ("Mi", 1 << 10), ("Ki", 1)):
        if size_kb % factor == 0:
            return f"hugepages-{size_kb // factor}{unit}"
    return f"hugepages-{size_kb}Ki"


def rdma_present(plan: Placement) -> bool:
    return any(g.nic for g in plan.gpus)
