"""An NCCL topology file (NCCL_TOPO_FILE) that states which NICs each GPU should use.

NCCL builds its rings and trees, and decides GPUDirect RDMA, from the PCIe tree it reads in
sysfs. In many VMs that tree is flat (every device on one virtual root: PHB everywhere), so NCCL
sees no GPU-NIC pair behind a switch and may run GPUDirect RDMA off or stripe every GPU over every
NIC. Cloud providers ship topology files for that (Azure's ND-series files put each GPU and its
NIC under a virtual switch); this target writes one from the node's own plan: each GPU and its
rails (nodetune's nearest RDMA devices, `bind --nic-env`'s order) under one virtual PCIe switch
in the CPU NUMA node the GPU works from. NCCL reads the attributes it needs from the file and the
rest from the devices themselves. Format: NCCL's src/graph/xml.cc (`<system version="1">`).
On bare metal only rails that really share the GPU's switch (PIX, PXB) join it; in a VM also
those on the GPU's host bridge or NUMA node, since the guest's tree hides the switches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

from nodetune.manifests import Options, Rendered

if TYPE_CHECKING:
    from nodetune.placement.plan import GpuPlacement, Placement

SWITCH_DOMAIN = "ffff"  # virtual switches, as the providers' files number them


def _mask(cpus: tuple[int, ...]) -> str:
    """NCCL's affinity format: 32-bit hex words, most significant first, comma-separated."""
    value = sum(1 << c for c in cpus)
    words = []
    while True:
        words.append(f"{value & 0xFFFFFFFF:08x}")
        value >>= 32
        if not value:
            break
    return ",".join(reversed(words))


def _speed(gts: Any) -> str:
    return f"{float(gts):.1f} GT/s PCIe"


def _attrs(**values: Any) -> str:
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in values.items() if v is not None)


def _link(ids: dict[str, Any]) -> dict[str, Any]:
    """link_speed and link_width attributes, when sysfs gave both."""
    if ids.get("speed_gts") and ids.get("width"):
        return {"link_speed": _speed(ids["speed_gts"]), "link_width": ids["width"]}
    return {}


def _pci(address: str, ids: dict[str, Any], indent: str) -> str:
    """One <pci> element; a device's own children (gpu, nic) are left for NCCL to fill from
    the device, as the providers' files do."""
    return (f"{indent}<pci{_attrs(busid=address, **{'class': ids.get('class')})}"
            f"{_attrs(vendor=ids.get('vendor'), device=ids.get('device'), **_link(ids))}"
            "/>")


def _rails(g: GpuPlacement, options: Options) -> list[str]:
    """The rails that go in the GPU's switch: those under the GPU's own PCIe switch (PIX, PXB)
    and, in a VM, those the guest's flattened tree shows on its host bridge or NUMA node."""
    names = g.nics or ((g.nic,) if g.nic else ())
    paths = g.nic_paths or ((g.nic_path or "",) if g.nic else ())
    wanted = {"PIX", "PXB"} | ({"PHB", "NODE"} if options.virtual_machine else set())
    return [n for n, path in zip(names, paths, strict=False) if path in wanted]


def render(plan: Placement, options: Options) -> Rendered:
    if not plan.gpus:
        return Rendered(target="nccl-topo", files={}, notes=["no GPUs: no NCCL topology file"])
    by_node: dict[int, list[GpuPlacement]] = {}
    unplaced = []
    for g in plan.gpus:
        if g.numa_node is None or g.pci_address is None:
            unplaced.append(g)
        else:
            by_node.setdefault(g.numa_node, []).append(g)
    notes = [f"GPU {g.index} left out: {g.numa_reason}" for g in unplaced]
    used: set[str] = set()
    lines = ['<system version="1">']
    switch = 0
    pairs: list[str] = []
    for node in plan.numa_nodes:
        gpus = by_node.get(node.id)
        if not gpus:
            continue
        lines.append(f"  <cpu{_attrs(numaid=node.id, affinity=_mask(node.cpus))}>")
        for g in sorted(gpus, key=lambda x: x.index):
            nics = [n for n in _rails(g, options) if n not in used]
            used.update(nics)
            gpu_ids = options.pci_ids.get(str(g.pci_address), {})
            switch += 1
            busid = f"{SWITCH_DOMAIN}:{switch:02x}:00.0"
            switch_attrs = _attrs(busid=busid, **{"class": "0x060400"}, **_link(gpu_ids))
            lines.append(f"    <pci{switch_attrs}>")
            lines.append(_pci(str(g.pci_address), gpu_ids, "      "))
            lines += [_pci(options.rdma_addresses[n], options.pci_ids.get(
                options.rdma_addresses[n], {}), "      ") for n in nics
                if n in options.rdma_addresses]
            lines.append("    </pci>")
            pairs.append(f"GPU {g.index} ({g.pci_address}): {', '.join(nics) or 'no NIC'}")
            if not nics:
                notes.append(f"GPU {g.index} has no RDMA NIC under its switch: alone in it "
                             "(NCCL finds the node's NICs in sysfs)")
        lines.append("  </cpu>")
    lines.append("</system>")
    return Rendered(target="nccl-topo", files={"nccl-topo.xml": "\n".join(lines) + "\n"},
                    notes=[*notes, *pairs,
                           "each GPU and its rails sit under one virtual PCIe switch: check the "
                           "pairs against the provider's documented layout, then export "
                           "NCCL_TOPO_FILE=/path/to/nccl-topo.xml in the job"])
