"""Everything `nodetune manifests` and `nodetune bind` read about a node besides its facts.

The topology document (for the nearest NIC and NVLink counts), the driver's /dev/nvidiaN minor
numbers and UUIDs from /proc/driver/nvidia/gpus, and the host name. All reads go through the
node's HostRoot, so --root and --from work the same as the live host.
"""

from __future__ import annotations

import socket
from typing import Any

from nodetune.node.hostroot import HostRoot


def topology_doc(facts: dict[str, Any]) -> dict[str, Any] | None:
    """The `nodetune.topo/1` document for these facts, or None when it cannot be built."""
    from nodetune.facts.topology import build_topology

    topo = build_topology(facts)
    to_json = getattr(topo, "to_json", None)
    doc = to_json() if callable(to_json) else topo
    return doc if isinstance(doc, dict) else None


def driver_gpus(root: HostRoot | None) -> dict[str, dict[str, str]]:
    """PCI address -> {"minor": "0", "uuid": "GPU-..."} from /proc/driver/nvidia/gpus."""
    out: dict[str, dict[str, str]] = {}
    if root is None:
        return out
    for entry in root.listdir("/proc/driver/nvidia/gpus"):
        text = root.read_text(f"/proc/driver/nvidia/gpus/{entry}/information", "")
        fields = {}
        for line in str(text).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        info = {}
        if fields.get("Device Minor", "").isdigit():
            info["minor"] = fields["Device Minor"]
        if fields.get("GPU UUID"):
            info["uuid"] = fields["GPU UUID"]
        address = (fields.get("Bus Location") or entry).lower()
        out[address] = info
    return out


def host_name(root: HostRoot | None) -> str | None:
    if root is None:
        return None
    if root.is_live:
        return socket.gethostname().split(".")[0] or None
    name = root.read_str("/proc/sys/kernel/hostname", None)
    return str(name).split(".")[0] if name else None


def cache_groups(root: HostRoot | None) -> list[list[list[int]]]:
    """CPU sets sharing each cache level (outermost first), from sysfs cache/index*/."""
    from nodetune.facts import cpulist

    if root is None:
        return []
    by_level: dict[int, set[tuple[int, ...]]] = {}
    base = "/sys/devices/system/cpu"
    for entry in root.listdir(base):
        if not (entry.startswith("cpu") and entry[3:].isdigit()):
            continue
        for index in root.listdir(f"{base}/{entry}/cache"):
            if not index.startswith("index"):
                continue
            level = root.read_int(f"{base}/{entry}/cache/{index}/level", None)
            shared = root.read_str(f"{base}/{entry}/cache/{index}/shared_cpu_list", None)
            if level is None or level < 2 or not shared:
                continue
            by_level.setdefault(level, set()).add(tuple(cpulist.parse(shared)))
    return [[list(g) for g in sorted(by_level[lv])] for lv in sorted(by_level, reverse=True)]
