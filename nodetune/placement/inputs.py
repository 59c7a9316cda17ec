"""What `nodetune manifests` and `nodetune bind` take from a node's facts besides the CPUs.

All of it comes from the facts document, never from the host: the topology (nearest NIC,
NVLink counts), each GPU's /dev/nvidiaN minor (`gpus[*].device_minor`) and the host name
(`kernel.hostname`). So `--root TREE` and `--from SNAPSHOT` of one node give the same output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodetune.facts.topology import build_topology


def topology_doc(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The `nodetune.topo/1` document for these facts."""
    return build_topology(dict(facts)).to_json()


def device_minors(facts: Mapping[str, Any]) -> dict[str, int]:
    """PCI address -> N of /dev/nvidiaN, for the GPUs whose minor is known."""
    return {str(g["pci_address"]): int(g["device_minor"]) for g in facts.get("gpus") or []
            if g.get("pci_address") and isinstance(g.get("device_minor"), int)}


def node_name(facts: Mapping[str, Any]) -> str | None:
    """The short host name (Slurm's NodeName, the kubelet's node name), or None when unknown."""
    name = (facts.get("kernel") or {}).get("hostname")
    return str(name).split(".")[0] or None if name else None


def pcie_roots(facts: Mapping[str, Any]) -> dict[str, str]:
    """PCI address -> PCIe root complex ("pci0000:17") of every device the facts list."""
    return {str(d["address"]): str(d["host_bridge"])
            for d in (facts.get("pci") or {}).get("devices") or []
            if d.get("address") and d.get("host_bridge")}


def rdma_addresses(facts: Mapping[str, Any]) -> dict[str, str]:
    """RDMA device name -> its PCI address."""
    return {str(d["name"]): str(d["pci_address"])
            for d in (facts.get("rdma") or {}).get("devices") or []
            if d.get("name") and d.get("pci_address")}


def nvlink_cluster(facts: Mapping[str, Any]) -> bool:
    """A GPU belongs to a multi-node NVLink fabric (a non-zero cluster UUID): GB200 NVL72."""
    return any(str((g.get("fabric") or {}).get("cluster_uuid") or "").strip("0-")
               for g in facts.get("gpus") or [])


def pci_ids(facts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """PCI address -> class, vendor, device and the link's maximum speed (GT/s) and width."""
    out = {}
    for d in (facts.get("pci") or {}).get("devices") or []:
        if not d.get("address"):
            continue
        link = d.get("link") or {}
        out[str(d["address"])] = {"class": d.get("class"), "vendor": d.get("vendor"),
                                  "device": d.get("device"),
                                  "speed_gts": link.get("max_speed_gts"),
                                  "width": link.get("max_width")}
    return out


def virtual_machine(facts: Mapping[str, Any]) -> bool:
    """A hypervisor's guest (not a container): systemd-detect-virt names or the CPU flag."""
    virt = (facts.get("kernel") or {}).get("virtualization")
    containers = {"docker", "podman", "lxc", "lxc-libvirt", "systemd-nspawn", "rkt", "wsl",
                  "container-other", "openvz"}
    return bool(virt) and str(virt) not in containers
