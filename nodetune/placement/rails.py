"""The rails of a set of GPUs (their RDMA NICs, nearest path class first) and the variables
that point NCCL, UCX and libfabric at them.

One declaration for every consumer: `nodetune bind --nic-env` (one rank's GPU), the example
pods (every GPU the device plugin may give a pod) and the per-GPU comments of gres.conf.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodetune.placement.plan import PATH_RANK

if TYPE_CHECKING:
    from nodetune.placement.plan import GpuPlacement


@dataclass(frozen=True)
class Rail:
    name: str  # RDMA device, e.g. "mlx5_0" or "rdmap16s27"
    port: int  # its active port (UCX_NET_DEVICES names device:port)
    path: str  # nvidia-smi topo class to the nearest of the GPUs it serves
    gpus: tuple[int, ...]  # the GPUs whose rail it is


def of_gpu(g: GpuPlacement) -> list[Rail]:
    """The rails of one GPU, nearest first: the plan's `nics`, or its one nearest NIC."""
    names = list(g.nics) or ([g.nic] if g.nic else [])
    paths = list(g.nic_paths) or [g.nic_path or ""] * len(names)
    ports = list(g.nic_ports) or [1] * len(names)
    return [Rail(n, port, path, (g.index,))
            for n, path, port in zip(names, paths, ports, strict=True)]


def of_gpus(gpus: Iterable[GpuPlacement]) -> list[Rail]:
    """Every rail of `gpus`, once: by path class to its nearest GPU (PIX before PXB ... SYS),
    then in GPU order, each GPU's rails nearest first."""
    found: dict[str, Rail] = {}
    for g in sorted(gpus, key=lambda g: g.index):
        for rail in of_gpu(g):
            seen = found.get(rail.name)
            if seen is None:
                found[rail.name] = rail
                continue
            path = min(seen.path, rail.path, key=lambda p: PATH_RANK.get(p, len(PATH_RANK)))
            found[rail.name] = Rail(seen.name, seen.port, path, (*seen.gpus, g.index))
    order = list(found)
    return sorted(found.values(), key=lambda r: (PATH_RANK.get(r.path, len(PATH_RANK)),
                                                 order.index(r.name)))


def is_efa(rdma_name: str) -> bool:
    """AWS EFA devices: the efa driver names them rdmapBUSsSLOT (rdma-core providers/efa)."""
    return rdma_name.startswith(("rdmap", "efa"))


def env(rails: Sequence[Rail]) -> dict[str, str]:
    """NCCL_IB_HCA for InfiniBand/RoCE rails, FI_PROVIDER/FI_EFA_USE_DEVICE_RDMA for EFA ones,
    UCX_NET_DEVICES for all; empty without rails."""
    out: dict[str, str] = {}
    ib = [r.name for r in rails if not is_efa(r.name)]
    if ib:
        # "=" makes NCCL match the names exactly (mlx5_1 would also match mlx5_10..19).
        out["NCCL_IB_HCA"] = "=" + ",".join(ib)
    if any(is_efa(r.name) for r in rails):
        # NCCL reaches EFA through the aws-ofi-nccl plugin and libfabric, not its IB
        # transport: NCCL_IB_HCA would be ignored. The plugin picks each GPU's EFA devices by
        # PCIe topology itself; FI_PROVIDER keeps libfabric from falling back to TCP, and
        # FI_EFA_USE_DEVICE_RDMA turns on GPUDirect RDMA reads and writes.
        out["FI_PROVIDER"] = "efa"
        out["FI_EFA_USE_DEVICE_RDMA"] = "1"
    if rails:
        out["UCX_NET_DEVICES"] = ",".join(f"{r.name}:{r.port}" for r in rails)
    return out


def describe(rails: Sequence[Rail]) -> str:
    """"mlx5_0 (PIX), mlx5_12 (PIX)"."""
    return ", ".join(f"{r.name} ({r.path})" if r.path else r.name for r in rails)
