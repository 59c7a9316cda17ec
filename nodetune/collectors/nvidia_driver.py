"""NVIDIA kernel driver flavour and IMEX channel devices: what GPUDirect and IMEX checks need.

- `version`: the kernel driver's version ("580.95.05") from the same first line of
  /proc/driver/nvidia/version; DMA-BUF export needs R515 or later (NCCL refuses DMA-BUF below
  CUDA driver 11.7, the R515 branch: NVIDIA/nccl src/init.cc `dmaBufSupported`).
- `open_kernel_modules`: /proc/driver/nvidia/version names the open GPU kernel modules
  ("NVIDIA UNIX Open Kernel Module") or the proprietary ones ("NVIDIA UNIX x86_64 Kernel
  Module"). Only the open modules export GPU memory through DMA-BUF, which lets RDMA NICs reach
  GPU memory without nvidia_peermem (NVIDIA GPUDirect RDMA docs, "Using DMA-BUF").
- `imex_channels`: device nodes under /dev/nvidia-caps-imex-channels (channel0, ...), which
  multi-node NVLink memory sharing needs (NVIDIA IMEX guide, "IMEX channels").
- `peer_memory_clients`: the peer-memory clients registered with the RDMA core, one directory
  each under /sys/kernel/mm/memory_peers (MLNX_OFED's ib_core, drivers/infiniband/core/peer_mem.c).
  nvidia_peermem registers as `nv_mem`; loaded but absent there, the NIC cannot reach GPU
  memory through it. Empty where the RDMA core has no peer-memory API (inbox kernels), null
  where the tree holds no /sys/kernel/mm at all (a gathered tree).
- `dra_compute_domains`: the NVIDIA DRA driver's ComputeDomain kubelet plugin is installed
  (/var/lib/kubelet/plugins/compute-domain.nvidia.com). IMEX daemons then run per ComputeDomain
  inside pods, and a host nvidia-imex service must stay off (NVIDIA DRA driver docs).
"""

from __future__ import annotations

import re

from nodetune.collectors import Context, register
from nodetune.errors import NoData
from nodetune.facts.model import FactSet
from nodetune.facts.record import record

VERSION_FILE = "/proc/driver/nvidia/version"
IMEX_DIR = "/dev/nvidia-caps-imex-channels"
DRA_COMPUTE_DOMAIN_DIR = "/var/lib/kubelet/plugins/compute-domain.nvidia.com"
PEER_MEMORY_DIR = "/sys/kernel/mm/memory_peers"
_VERSION = re.compile(r"\s(\d+\.\d+(?:\.\d+)?)\s")


@record(frozen=True, kw_only=True)
class DriverFacts(FactSet):
    version: str | None  # "580.95.05"
    open_kernel_modules: bool | None
    imex_channels: int | None  # None: the directory does not exist
    dra_compute_domains: bool  # the NVIDIA DRA driver's ComputeDomain plugin is installed
    peer_memory_clients: list[str] | None  # "nv_mem": nvidia_peermem is registered


def parse_flavour(version_text: str) -> bool | None:
    """True for the open kernel modules, False for the proprietary ones, None if unclear."""
    first = version_text.splitlines()[0] if version_text else ""
    if "NVRM version" not in first:
        return None
    return "Open Kernel Module" in first


def parse_version(version_text: str) -> str | None:
    """The driver version on the NVRM line ("... Kernel Module  535.183.01  Sun May ..")."""
    first = version_text.splitlines()[0] if version_text else ""
    match = _VERSION.search(first + " ") if "NVRM version" in first else None
    return match.group(1) if match else None


@register("nvidia_driver")
class NvidiaDriverCollector:
    """NVIDIA driver flavour (open or proprietary kernel modules) and IMEX channel devices."""

    def collect(self, ctx: Context) -> DriverFacts:
        root = ctx.root
        text = root.read_text(VERSION_FILE, None)
        if text is None:
            raise NoData(f"no NVIDIA kernel driver loaded ({VERSION_FILE} absent)")
        unknown: dict[str, str] = {}
        flavour = parse_flavour(text)
        if flavour is None:
            unknown["open_kernel_modules"] = f"unrecognised first line in {VERSION_FILE}"
        version = parse_version(text)
        if version is None:
            unknown["version"] = f"no driver version on the first line of {VERSION_FILE}"
        channels = None
        if root.isdir(IMEX_DIR):
            channels = sum(1 for n in root.listdir(IMEX_DIR) if n.startswith("channel"))
        else:
            unknown["imex_channels"] = f"{IMEX_DIR} absent (no IMEX channels created)"
        peers: list[str] | None = None
        if root.isdir(PEER_MEMORY_DIR):
            peers = sorted(n for n in root.listdir(PEER_MEMORY_DIR)
                           if root.isdir(f"{PEER_MEMORY_DIR}/{n}"))
        elif root.isdir("/sys/kernel/mm"):
            peers = []
        else:
            unknown["peer_memory_clients"] = "the tree holds no /sys/kernel/mm"
        return DriverFacts(version=version, open_kernel_modules=flavour, imex_channels=channels,
                           dra_compute_domains=root.isdir(DRA_COMPUTE_DOMAIN_DIR),
                           peer_memory_clients=peers,
                           sources={"version": VERSION_FILE,
                                    "open_kernel_modules": VERSION_FILE,
                                    "imex_channels": IMEX_DIR,
                                    "dra_compute_domains": DRA_COMPUTE_DOMAIN_DIR,
                                    "peer_memory_clients": PEER_MEMORY_DIR},
                           unknown=unknown)
