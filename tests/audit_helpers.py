"""Facts documents of the real and synthetic trees, for the profile and audit tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

NVML = Path(__file__).parent / "fixtures" / "nvml"
# real trees captured with an NVML recording of the same machine
RECORDED_NVML = {"h200x2-vm-gather": NVML / "h200x2-vm.json",
                 "h100x2-fc-vm-gather": NVML / "h100x2-fc-vm.json"}


def tree_and_nvml(name: str, host_tree: Callable[[str], Path],
                  synthetic_host: Callable[[str], Any]) -> tuple[str, str]:
    """(--root, --nvml) for a real tree name or a synthetic-* name."""
    if name.startswith("synthetic-"):
        host = synthetic_host(name)
        return str(host.root), str(host.nvml)
    return str(host_tree(name)), str(RECORDED_NVML.get(name, "off"))


def collect(root: str, nvml: str) -> dict[str, Any]:
    from nodetune.node.source import open_node

    with open_node(root=root, nvml=nvml) as node:
        return node.facts().to_json()


def facts_getter(host_tree: Callable[[str], Path], synthetic_host: Callable[[str], Any]
                 ) -> Callable[[str], dict[str, Any]]:
    """A function name -> facts document of that tree, collecting each tree once."""
    cache: dict[str, dict[str, Any]] = {}

    def get(name: str) -> dict[str, Any]:
        if name not in cache:
            cache[name] = collect(*tree_and_nvml(name, host_tree, synthetic_host))
        return cache[name]

    return get
