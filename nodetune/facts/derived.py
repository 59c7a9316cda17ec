"""Derived facts: what rules need that no single collector reports.

`derive(facts)` reads the facts document (and the topology built from it) and returns the
`derived` section that rules see next to the raw facts: whether the node is a VM, the GPU model,
each GPU's nearest RDMA NIC and the PCIe path class between them, switch ports with ACS
redirection on the GPU-NIC path, the bandwidth a link gives at its trained and at its maximum
generation and width, GPUs per NUMA node, and so on. Raw facts and derived facts stay separate
stages; nothing here reads the host.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from nodetune.facts.nvlink import links_down
from nodetune.facts.pcie import link_gbps

# PCI device ids of NVIDIA data-centre GPUs (pci.ids), for nodes where NVML gives no name.
GPU_MODELS_BY_DEVICE = {
    "0x20b0": "A100", "0x20b1": "A100", "0x20b2": "A100", "0x20b3": "A100", "0x20b5": "A100",
    "0x20f1": "A100", "0x20f3": "A800", "0x20f5": "A800", "0x20f6": "A800",
    "0x2321": "H100", "0x2330": "H100", "0x2331": "H100", "0x2336": "H100", "0x2339": "H100",
    "0x2322": "H800", "0x2324": "H800",
    "0x2335": "H200",
    "0x2901": "B200",
    "0x2941": "GB200",  # seen as "GB100 [GB200]" in lspci output of NVL72 compute trays
    "0x26b5": "L40",
}

NVIDIA = "0x10de"
BRIDGE_OTHER = "0x0680"  # class of NVSwitch chips as PCI functions (HGX/DGX baseboards)

# ACS control flags that send peer-to-peer traffic up to the root complex.
_ACS_REDIRECT_FLAGS = {"srcvalid", "sourcevalidation", "reqredir", "requestredirect",
                       "cmpltredir", "completionredirect"}

_MODEL_RE = re.compile(r"\b(G?[A-Z]{1,2}\d{2,3}[A-Z]?)\b")


def pcie_gbps(gen: int | None, width: int | None) -> float | None:
    """Usable bandwidth of a PCIe link per direction in GB/s (Gen5 x16 -> 63.0)."""
    rate = link_gbps(gen, width)
    return None if rate is None else round(rate, 1)


def gpu_model(name: str | None, device_id: str | None) -> str | None:
    """The GPU's model family ("H100", "GB200") from its NVML name or its PCI device id."""
    if name:
        match = _MODEL_RE.search(name.replace("NVIDIA", " "))
        if match:
            return match.group(1)
    if device_id:
        return GPU_MODELS_BY_DEVICE.get(device_id.lower())
    return None


def parse_cmdline(text: str | None) -> dict[str, Any] | None:
    """Kernel command line to {key: value or True}; the last occurrence of a key wins."""
    if text is None:
        return None
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    args: dict[str, Any] = {}
    for word in words:
        key, eq, value = word.partition("=")
        args[key] = value if eq else True
    return args


def derive(facts: dict[str, Any]) -> dict[str, Any]:
    """The `derived` section for a facts document (its shape: nodetune.facts.sections.Derived)."""
    unknown: dict[str, str] = {}
    pci = {str(d["address"]): d for d in _list(facts, "pci", "devices") if d.get("address")}
    gpus = facts.get("gpus") or []
    rdma_addrs = _rdma_addresses(facts, pci)
    models = [gpu_model(g.get("name"), _device(pci, g.get("pci_address")).get("device"))
              for g in gpus]
    known_models = sorted({m for m in models if m})
    out: dict[str, Any] = {
        "virtualized": _virtualized(facts),
        "gpu_found": bool(gpus),
        "gpu_count": len(gpus),
        "gpu_model": known_models[0] if len(known_models) == 1 else
        ("mixed" if known_models else None),
        "gpu_models": known_models,
        "nvswitch_count": sum(1 for d in pci.values() if d.get("vendor") == NVIDIA
                              and str(d.get("class") or "").startswith(BRIDGE_OTHER)),
        "rdma_present": bool(rdma_addrs),
        "rdma_nic_count": len(rdma_addrs),
        "pci_numa_unknown": [g.get("pci_address") for g in gpus if g.get("numa_node") is None]
        + [a for a in rdma_addrs if _device(pci, a).get("numa_node") is None],
    }
    if gpus and out["gpu_model"] is None:
        unknown["gpu_model"] = "no NVML name and an unlisted PCI device id"
    out["numa"], out["numa_nodes"] = _numa(facts, gpus, rdma_addrs, pci)
    out["gpus"] = _gpus(facts, gpus, pci, rdma_addrs, unknown)
    out["nics"] = _nics(facts, pci, unknown)
    persisted = (facts.get("kernel") or {}).get("persisted") or {}
    out["persisted_cmdline_args"] = parse_cmdline(persisted.get("cmdline"))
    if out["persisted_cmdline_args"] is None:
        unknown["persisted_cmdline_args"] = "no boot configuration found (/etc/default/grub, " \
                                            "/etc/kernel/cmdline)"
    out["unknown"] = unknown
    return out


def _list(facts: dict[str, Any], section: str, key: str) -> list[dict[str, Any]]:
    return [x for x in ((facts.get(section) or {}).get(key) or []) if isinstance(x, dict)]


def _device(pci: dict[str, dict[str, Any]], address: Any) -> dict[str, Any]:
    """The PCI device at `address` ({} when unknown)."""
    return pci.get(str(address), {}) if address else {}


def _reason(facts: dict[str, Any], section: str, key: str) -> str | None:
    """Why a collector could not read `key` of its section, if it said so."""
    unknown = (facts.get(section) or {}).get("unknown") or {}
    return unknown.get(key)


def _virtualized(facts: dict[str, Any]) -> bool | None:
    hypervisor = (facts.get("cpu") or {}).get("hypervisor")
    virt = (facts.get("kernel") or {}).get("virtualization")
    if hypervisor or (virt and str(virt).lower() not in ("none", "bare-metal", "")):
        return True
    if hypervisor is None and virt is None:
        return None
    return False


def _rdma_addresses(facts: dict[str, Any], pci: dict[str, Any]) -> list[str]:
    """PCI addresses of RDMA-capable NICs (InfiniBand HCAs, RoCE NICs), in a stable order."""
    addrs = [d.get("pci_address") for d in _list(facts, "rdma", "devices")]
    addrs += [i.get("pci_address") for i in _list(facts, "nic", "interfaces")
              if i.get("rdma_device")]
    addrs += [a for a, d in pci.items() if d.get("kind") == "infiniband"]
    seen: dict[str, None] = {}
    for a in addrs:
        if a and a not in seen:
            seen[a] = None
    return sorted(seen)


def gpu_memory_owners(nodes: list[dict[str, Any]], gpus: list[dict[str, Any]]) -> dict[int, int]:
    """CPU-less NUMA node id -> index of the GPU whose memory it is.

    NVML names one node per GPU (nvmlDeviceGetNumaNodeId). On Grace systems the driver adds
    seven more CPU-less nodes after it for MIG partitions (GB200: 2, 10, 18, 26 and the seven
    after each; PROFILE-FACTS S3-S5), so a CPU-less node belongs to the GPU with the nearest
    first node at or below it, up to the next CPU node or the next GPU's first node.
    """
    cpuless = sorted(n["id"] for n in nodes
                     if isinstance(n.get("id"), int) and not n.get("cpus"))
    with_cpus = {n["id"] for n in nodes if isinstance(n.get("id"), int) and n.get("cpus")}
    first = {g["memory_numa_node"]: g["index"] for g in gpus
             if isinstance(g.get("memory_numa_node"), int) and isinstance(g.get("index"), int)}
    owners: dict[int, int] = {}
    owner: int | None = None
    last = -1
    for nid in cpuless:
        if any(last < c < nid for c in with_cpus):
            owner = None  # a CPU node in between: the run of GPU nodes ended
        if nid in first:
            owner = first[nid]
        if owner is not None:
            owners[nid] = owner
        last = nid
    return owners


def _numa(facts: dict[str, Any], gpus: list[dict[str, Any]], rdma_addrs: list[str],
          pci: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    nodes = _list(facts, "numa", "nodes")
    owners = gpu_memory_owners(nodes, gpus)
    per_node = []
    for node in nodes:
        nid = node.get("id")
        on_node = [g.get("index") for g in gpus if g.get("numa_node") == nid]
        per_node.append({
            "id": nid, "subject": f"NUMA{nid}", "has_cpus": bool(node.get("cpus")),
            "gpu_count": len(on_node), "gpus": on_node,
            "rdma_nic_count": sum(1 for a in rdma_addrs
                                  if _device(pci, a).get("numa_node") == nid),
            "memory_of_gpu": owners.get(nid) if isinstance(nid, int) else None,
        })
    cpu_nodes = sum(1 for n in per_node if n["has_cpus"])
    summary = {"node_count": len(nodes) if nodes else None,
               "cpu_node_count": cpu_nodes if nodes else None,
               "cpuless_node_count": len(nodes) - cpu_nodes if nodes else None}
    return summary, per_node


def _gpus(facts: dict[str, Any], gpus: list[dict[str, Any]], pci: dict[str, Any],
          rdma_addrs: list[str], unknown: dict[str, str]) -> list[dict[str, Any]]:
    nearest = _nearest_nics(facts, gpus, rdma_addrs, unknown)
    out: list[dict[str, Any]] = []
    for pos, gpu in enumerate(gpus):
        addr = gpu.get("pci_address")
        dev = _device(pci, addr)
        reasons = gpu.get("clock_event_reasons")
        item: dict[str, Any] = {
            "index": gpu.get("index"), "subject": f"GPU{gpu.get('index')}", "pci_address": addr,
            "numa_node": gpu.get("numa_node"),
            "idle": None if reasons is None else "gpu_idle" in reasons,
            "pcie": _gpu_link(gpu, dev, f"gpus.{pos}.pcie", unknown),
            "nic": nearest.get(pos),
            "acs_redirect_ports": None,
            "iommu_translated": None,
        }
        nvlink = gpu.get("nvlink")
        item["nvlink_down"], item["nvlink_expected"] = links_down(
            gpu.get("name"), (nvlink or {}).get("active"), (nvlink or {}).get("inactive"))
        if nvlink is None:
            unknown[f"gpus.{pos}.nvlink_down"] = "NVLink state needs NVML"
        if reasons is None:
            unknown[f"gpus.{pos}.idle"] = "no clock event reasons (NVML not used)"
        if item["nic"] is None and f"gpus.{pos}.nic" not in unknown:
            unknown[f"gpus.{pos}.nic"] = "no RDMA NIC on this node"
        item["acs_redirect_ports"] = _acs_ports(facts, pos, dev, item["nic"], pci, unknown)
        item["iommu_translated"] = _iommu_translated(facts, pos, dev, item["nic"], pci, unknown)
        out.append(item)
    return out


def _gpu_link(gpu: dict[str, Any], dev: dict[str, Any], key: str,
              unknown: dict[str, str]) -> dict[str, Any]:
    """The GPU's PCIe link: NVML's view where it has one, else the sysfs link of the device."""
    nvml = gpu.get("pcie") or {}
    link = dev.get("link") or {}
    merged = {k: nvml.get(k) if nvml.get(k) is not None else link.get(k)
              for k in ("current_gen", "max_gen", "current_width", "max_width")}
    merged["current_gbps"] = pcie_gbps(merged["current_gen"], merged["current_width"])
    merged["max_gbps"] = pcie_gbps(merged["max_gen"], merged["max_width"])
    for name, value in merged.items():
        if value is None:
            unknown[f"{key}.{name}"] = ("PCIe link not reported by NVML or sysfs "
                                        f"for {gpu.get('pci_address')}")
    return merged


def _nearest_nics(facts: dict[str, Any], gpus: list[dict[str, Any]], rdma_addrs: list[str],
                  unknown: dict[str, str]) -> dict[int, dict[str, Any]]:
    """For each GPU (by position), its nearest RDMA NIC with the topology class between them."""
    if not gpus or not rdma_addrs:
        return {}
    try:
        # deferred: 1.5 ms of every check start; only nodes with GPUs and RDMA NICs need it
        from nodetune.facts.topology import build_topology

        topo = build_topology(facts)
    except Exception as exc:  # topology is optional for every other derived fact
        for pos in range(len(gpus)):
            unknown[f"gpus.{pos}.nic"] = f"topology unavailable: {exc}"
        return {}
    out: dict[int, dict[str, Any]] = {}
    for pos, gpu in enumerate(gpus):
        try:
            gdev = topo.device(gpu.get("pci_address") or f"GPU{gpu.get('index')}")
            nic = topo.nearest_nic(gdev.index)
        except KeyError:
            nic = None
            gdev = None
        if gdev is None or nic is None:
            unknown[f"gpus.{pos}.nic"] = "GPU or NIC missing from the topology"
            continue
        cls = topo.cell(gdev.name, nic.name)
        same = None if nic.numa_node is None or gdev.numa_node is None else (
            nic.numa_node == gdev.numa_node)
        out[pos] = {"name": nic.label, "pci_address": nic.pci_address,
                    "numa_node": nic.numa_node, "path_class": cls,
                    "share_switch": cls == "PIX", "same_numa": same}
        if same is None:
            unknown[f"gpus.{pos}.nic.same_numa"] = "NUMA node of the GPU or its NIC unknown"
    return out


def _acs_ports(facts: dict[str, Any], pos: int, gpu_dev: dict[str, Any],
               nic: dict[str, Any] | None, pci: dict[str, Any],
               unknown: dict[str, str]) -> list[str] | None:
    """Switch ports between the GPU (and its NIC) and the root port with ACS redirection on."""
    index = {a: i for i, a in enumerate(pci)}
    ports: list[str] = []
    for dev in (gpu_dev, _device(pci, nic.get("pci_address")) if nic else None):
        if not dev:
            continue
        why_no_path = _reason(facts, "pci", f"devices.{index.get(str(dev.get('address')))}.path")
        if why_no_path:
            unknown[f"gpus.{pos}.acs_redirect_ports"] = why_no_path
            return None
        for addr in dev.get("path") or []:
            if addr == dev.get("root_port"):
                continue  # root ports: traffic reaches the host bridge anyway
            bridge = _device(pci, addr)
            acs = bridge.get("acs")
            if acs is None:
                why = _reason(facts, "pci", f"devices.{index.get(addr)}.acs") or ""
                if why and not why.endswith("no ACS capability"):
                    unknown[f"gpus.{pos}.acs_redirect_ports"] = why
                    return None
                continue  # the bridge has no ACS capability
            if _acs_redirects(acs) and addr not in ports:
                ports.append(addr)
    return ports


def _iommu_translated(facts: dict[str, Any], pos: int, gpu_dev: dict[str, Any],
                      nic: dict[str, Any] | None, pci: dict[str, Any],
                      unknown: dict[str, str]) -> bool | None:
    """Whether the IOMMU translates DMA of the GPU or its nearest RDMA NIC: a group whose
    domain type is DMA or DMA-FQ (not identity). No group with the IOMMU off: not translated."""
    if nic is None:
        return None
    iommu = (facts.get("kernel") or {}).get("iommu") or {}
    off = iommu.get("mode") == "off" or iommu.get("groups") == 0
    index = {a: i for i, a in enumerate(pci)}
    domains = []
    for dev in (gpu_dev, _device(pci, nic.get("pci_address"))):
        domain = dev.get("iommu_domain")
        if domain is None and not off:
            why = _reason(facts, "pci", f"devices.{index.get(str(dev.get('address')))}"
                                        ".iommu_domain")
            unknown[f"gpus.{pos}.iommu_translated"] = why or "IOMMU domain not read"
            return None
        domains.append(str(domain or ""))
    return any(d.startswith("DMA") for d in domains)


def _acs_redirects(acs: dict[str, Any]) -> bool:
    if acs.get("source_validation"):
        return True
    ctl = acs.get("ctl") or {}
    return any(bool(v) for k, v in ctl.items()
               if re.sub(r"[^a-z]", "", str(k).lower()) in _ACS_REDIRECT_FLAGS)


def _nics(facts: dict[str, Any], pci: dict[str, Any],
          unknown: dict[str, str]) -> list[dict[str, Any]]:
    """Physical network interfaces with whether their IRQs stay on NIC-local CPUs."""
    node_cpus = {n.get("id"): set(n.get("cpus") or []) for n in _list(facts, "numa", "nodes")}
    out: list[dict[str, Any]] = []
    for iface in _list(facts, "nic", "interfaces"):
        if iface.get("virtual") or not iface.get("pci_address"):
            continue
        pos = len(out)
        dev = _device(pci, iface.get("pci_address"))
        numa = iface.get("numa_node", dev.get("numa_node"))
        local = set(dev.get("local_cpus") or []) or node_cpus.get(numa, set())
        irq_cpus = iface.get("irq_cpus")
        irqs_local: bool | None = None
        if not irq_cpus:
            unknown[f"nics.{pos}.irqs_local"] = (
                _reason(facts, "nic", f"interfaces.{iface.get('name')}.irq_cpus")
                or "no IRQ affinity read for this interface")
        elif not local:
            unknown[f"nics.{pos}.irqs_local"] = "NIC NUMA node unknown (numa_node -1)"
        else:
            irqs_local = set(irq_cpus) <= local
        out.append({"name": iface.get("name"), "subject": iface.get("name"),
                    "pci_address": iface.get("pci_address"), "numa_node": numa,
                    "rdma_device": iface.get("rdma_device"), "irq_cpus": irq_cpus,
                    "irqs_local": irqs_local})
    return out
