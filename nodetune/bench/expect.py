"""What the hardware should reach, derived from the facts document (topology and PCIe links).

- PCIe: lanes x transfer rate x line-code efficiency / 8 per direction (8b/10b for Gen1-2,
  128b/130b for Gen3-5, 242B/256B FLITs for Gen6). Gen5 x16 = 63.0 GB/s.
- NVLink: the NV# between two GPUs in the topology matrix (`nodetune.facts.topology`, as
  `nvidia-smi topo -m` shows it) x the per-link rate per direction: 25 GB/s for NVLink 2-4
  (V100, A100, H100/H200: NV18 = 450 GB/s = 900 GB/s bidirectional), 50 GB/s for NVLink 5
  (B200/GB200: 1.8 TB/s bidirectional).
- Figures measured on known systems (`PROFILE_FIGURES`) where no link formula applies.

`min_ratio` marks the fraction below which a result is reported "low"; it is set only where
measurements on healthy machines sit reliably above it (a 2x H200 VM: H2D pinned 55.5 GB/s =
0.88 of Gen5 x16, GPU-to-GPU 394 GB/s = 0.88 of NV18, all-reduce busbw 329 GB/s = 0.73).
"""

from __future__ import annotations

import os
import re
from typing import Any

from nodetune.bench.results import Expected
from nodetune.facts.pcie import ENCODING, GT_PER_S, gen_of, link_gbps, normalize_address
from nodetune.facts.topology import build_topology

HOST_COPY_MIN_RATIO = 0.80
NVLINK_P2P_MIN_RATIO = 0.75
NVLINK_ALLREDUCE_MIN_RATIO = 0.60

# GPU name pattern -> (figure, unit, basis); sources: profiles/SOURCES.md keys A1-A3
PROFILE_FIGURES: dict[str, list[tuple[str, float, str]]] = {
    "d2d": [
        (r"H200", 4000.0,
         "HBM copy measured on ND H200 v5: 4.0-4.15 TB/s (Azure AI benchmarking guide)"),
        (r"H100", 2900.0,
         "HBM copy measured on ND H100 v5: 2.9-3.0 TB/s (Azure AI benchmarking guide)"),
    ],
    "h2d": [(r"GB200", 201.0, "nvbandwidth H2D on ND GB200 v6 over NVLink-C2C: ~201 GB/s")],
    "d2h": [(r"GB200", 193.0, "nvbandwidth D2H on ND GB200 v6 over NVLink-C2C: ~193 GB/s")],
}


def pcie_rate(gen: int | None, width: int | None) -> Expected | None:
    """Theoretical bandwidth per direction of a PCIe link, or None when gen/width are unknown."""
    value = link_gbps(gen, width)
    if gen is None or value is None:
        return None
    num, den = ENCODING[gen]
    basis = (f"PCIe Gen{gen} x{width}: {GT_PER_S[gen]:g} GT/s x {width} lanes x {num}/{den} / 8"
             f" = {value:.1f} GB/s per direction")
    return Expected(value=round(value, 2), basis=basis)


def _pci_device(facts: dict[str, Any], address: str | None) -> dict[str, Any] | None:
    if not address:
        return None
    for dev in (facts.get("pci") or {}).get("devices") or []:
        if str(dev.get("address", "")).lower() == address.lower():
            found: dict[str, Any] = dev
            return found
    return None


def gpu_by_address(facts: dict[str, Any], address: str | None) -> dict[str, Any] | None:
    if not address:
        return None
    want = normalize_bus_id(address)
    for gpu in facts.get("gpus") or []:
        if normalize_bus_id(str(gpu.get("pci_address", ""))) == want:
            found: dict[str, Any] = gpu
            return found
    return None


def normalize_bus_id(bus_id: str) -> str:
    """"00000000:18:00.0", "0000:18:00.0" or "18:00.0" -> "0000:18:00.0"."""
    return normalize_address(bus_id) or bus_id.strip().lower()


def link_capability(facts: dict[str, Any],
                    address: str | None) -> tuple[int | None, int | None, str]:
    """(gen, width) the link of a PCI device can train to: the lower of the device's and its
    upstream port's maximum. Falls back to the GPU's NVML view. The current state is not used:
    GPUs lower their link speed when idle."""
    dev = _pci_device(facts, address)
    gen = width = None
    note = ""
    if dev is not None:
        link = dev.get("link") or {}
        gen = link.get("max_gen") or gen_of(link.get("max_speed_gts"))
        width = link.get("max_width")
        parent = _pci_device(facts, dev.get("parent"))
        plink = (parent or {}).get("link") or {}
        pgen = plink.get("max_gen") or gen_of(plink.get("max_speed_gts"))
        if pgen and gen and pgen < gen:
            gen, note = pgen, f" (upstream port {dev.get('parent')} caps the link)"
        if plink.get("max_width") and width and plink["max_width"] < width:
            width, note = plink["max_width"], f" (upstream port {dev.get('parent')} caps the link)"
    if gen is None or width is None:
        pcie = (gpu_by_address(facts, address) or {}).get("pcie") or {}
        gen = gen or pcie.get("max_gen") or pcie.get("current_gen")
        width = width or pcie.get("max_width") or pcie.get("current_width")
    return gen, width, note


def _profile_figure(kind: str, gpu_name: str | None) -> Expected | None:
    for pattern, value, basis in PROFILE_FIGURES.get(kind, []):
        if gpu_name and re.search(pattern, gpu_name):
            return Expected(value=value, basis=basis)
    return None


def host_copy(facts: dict[str, Any], address: str | None, direction: str,
              pinned: bool) -> Expected | None:
    """H2D / D2H: the GPU's host link (PCIe, or NVLink-C2C figures on Grace systems)."""
    gpu = gpu_by_address(facts, address) or {}
    figure = _profile_figure(direction, gpu.get("name"))
    if figure is not None:
        return figure
    gen, width, note = link_capability(facts, address)
    rate = pcie_rate(gen, width)
    if rate is None:
        return None
    if not pinned:  # pageable copies go through a CPU staging copy: no minimum is claimed
        return Expected(value=rate.value, basis=rate.basis + note)
    return Expected(value=rate.value, basis=rate.basis + note, min_ratio=HOST_COPY_MIN_RATIO)


def device_copy(facts: dict[str, Any], address: str | None) -> Expected | None:
    return _profile_figure("d2d", (gpu_by_address(facts, address) or {}).get("name"))


def nvlink_lane_rate(gpu_name: str | None) -> float:
    """GB/s per NVLink link per direction for this GPU's NVLink generation."""
    if gpu_name and re.search(r"\bG?B[123]00\b|GB[23]00", gpu_name):
        return 50.0
    return 25.0


def _topology(facts: dict[str, Any]) -> Any:
    key = id(facts)
    cached = _TOPOLOGY_CACHE.get(key)
    if cached is None or cached[0] is not facts:
        cached = (facts, build_topology(facts))
        _TOPOLOGY_CACHE.clear()
        _TOPOLOGY_CACHE[key] = cached
    return cached[1]


_TOPOLOGY_CACHE: dict[int, tuple[dict[str, Any], Any]] = {}


def nvlinks(facts: dict[str, Any], src: str, dst: str) -> int:
    """NVLinks between two GPUs: the NV# of the topology matrix (`nvidia-smi topo -m`)."""
    if not facts.get("gpus"):
        return 0
    topo = _topology(facts)
    names = {normalize_bus_id(d.pci_address): d.name for d in topo.of_kind("gpu")
             if d.pci_address}
    a, b = names.get(normalize_bus_id(src)), names.get(normalize_bus_id(dst))
    if a is None or b is None:
        return 0
    cell = topo.cell(a, b)
    return int(cell[2:]) if cell.startswith("NV") and cell[2:].isdigit() else 0


def _active_links(facts: dict[str, Any], address: str) -> int | None:
    nvlink = (gpu_by_address(facts, address) or {}).get("nvlink") or {}
    active = nvlink.get("active")
    return int(active) if isinstance(active, int) else None


def peer_copy(facts: dict[str, Any], src: str, dst: str) -> Expected | None:
    count = nvlinks(facts, src, dst)
    if count:
        rate = nvlink_lane_rate((gpu_by_address(facts, src) or {}).get("name"))
        return Expected(value=count * rate, min_ratio=NVLINK_P2P_MIN_RATIO,
                        basis=f"NV{count}: {count} NVLinks x {rate:g} GB/s per direction")
    rates = [host_copy(facts, a, "h2d", pinned=False) for a in (src, dst)]
    if any(r is None for r in rates):
        return None
    low = min(rates, key=lambda r: r.value if r else 0.0)
    assert low is not None
    return Expected(value=low.value, basis="no NVLink: the slower GPU's " + low.basis)


def allreduce_busbw(facts: dict[str, Any], addresses: list[str]) -> Expected | None:
    """Ring all-reduce bus bandwidth is bounded by each GPU's NVLink bandwidth to the others:
    the NV# to every other GPU added up (through NVSwitch each pair shows all of a GPU's
    links), never more than the GPU's active links."""
    if len(addresses) < 2:
        return None
    per_gpu: list[tuple[float, int, float]] = []
    for src in addresses:
        links = sum(nvlinks(facts, src, dst) for dst in addresses if dst != src)
        active = _active_links(facts, src)
        if active is not None:
            links = min(links, active)
        if not links:
            per_gpu = []
            break
        rate = nvlink_lane_rate((gpu_by_address(facts, src) or {}).get("name"))
        per_gpu.append((links * rate, links, rate))
    if per_gpu:
        value, links, rate = min(per_gpu)
        return Expected(value=value, min_ratio=NVLINK_ALLREDUCE_MIN_RATIO,
                        basis=f"NVLink per GPU: {links} links x {rate:g} GB/s per direction "
                              f"= {value:g} GB/s (NVLink SHARP off)")
    rates = [host_copy(facts, a, "h2d", pinned=False) for a in addresses]
    if any(r is None for r in rates):
        return None
    low = min(rates, key=lambda r: r.value if r else 0.0)
    assert low is not None
    return Expected(value=low.value, basis="no NVLink: ring over PCIe, the slowest " + low.basis)


def network_busbw(facts: dict[str, Any]) -> Expected | None:
    """Multi-node all-reduce is bounded by the node's aggregate RDMA port rate."""
    ports = [p for dev in (facts.get("rdma") or {}).get("devices") or []
             for p in dev.get("ports") or [] if p.get("state") == "ACTIVE" and p.get("rate_gbps")]
    if not ports:
        return None
    total = sum(float(p["rate_gbps"]) for p in ports) / 8
    return Expected(value=round(total, 1),
                    basis=f"{len(ports)} active RDMA ports, {total:g} GB/s together per direction "
                          "(this node's; multi-node all-reduce cannot beat its network)")


def storage_read(facts: dict[str, Any], target: str, *, device: bool) -> Expected | None:
    """Sequential read of an NVMe device is bounded by its PCIe link."""
    block = _block_for(facts, target, device=device)
    if block is None or block.get("kind") != "nvme":
        return None
    gen, width, note = link_capability(facts, block.get("pci_address"))
    rate = pcie_rate(gen, width)
    if rate is None:
        return None
    return Expected(value=rate.value, basis=f"{block['name']} on " + rate.basis + note)


def _block_for(facts: dict[str, Any], target: str, *, device: bool) -> dict[str, Any] | None:
    storage = facts.get("storage") or {}
    blocks = storage.get("block") or []
    if device:
        dev_name = os.path.basename(os.path.realpath(target))
    else:
        path = os.path.realpath(target)
        best = None
        for mount in storage.get("mounts") or []:
            point = mount.get("mountpoint") or ""
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) > len(best.get("mountpoint", ""))):
                best = mount
        if best is None or not str(best.get("device", "")).startswith("/dev/"):
            return None
        dev_name = os.path.basename(best["device"])
    candidates = [b for b in blocks if dev_name.startswith(b.get("name", "\0"))]
    return max(candidates, key=lambda b: len(b["name"])) if candidates else None
