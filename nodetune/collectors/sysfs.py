"""Small readers shared by the system collectors: facts with their sources, device links.

`FactNotes` reads one value per fact and records where it came from (`sources`) or why it could
not be read (`unknown`), so every collector reports missing files the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from nodetune.facts.pcie import sysfs_address
from nodetune.node.hostroot import HostRoot

T = TypeVar("T")


def why_unreadable(root: HostRoot, path: str) -> str:
    """Why `path` gave nothing: absent from the tree, or present but needing root."""
    if root.exists(path) and root.is_live and os.geteuid() != 0:
        return f"{path} is readable by root only; run nodetune as root"
    if root.exists(path):
        return f"{path} could not be read"
    return f"{path} is not present"


class FactNotes:
    """Sources and unknown-reasons of one FactSet, filled while reading."""

    def __init__(self, root: HostRoot) -> None:
        self.root = root
        self.sources: dict[str, str] = {}
        self.unknown: dict[str, str] = {}

    def source(self, fact: str, where: str) -> None:
        self.sources[fact] = where
        self.unknown.pop(fact, None)

    def missing(self, fact: str, reason: str) -> None:
        self.unknown[fact] = reason

    def text(self, fact: str, path: str, hint: str = "") -> str | None:
        """The stripped text of `path`, or None with the reason recorded."""
        value = self.root.read_str(path, None)
        if value is None:
            self.missing(fact, why_unreadable(self.root, path) + (f" ({hint})" if hint else ""))
            return None
        self.source(fact, path)
        return value

    def parsed(self, fact: str, path: str, parse: Callable[[str], T], hint: str = "") -> T | None:
        """`parse(text of path)`; None with a reason when missing or not parseable."""
        text = self.text(fact, path, hint)
        if text is None:
            return None
        try:
            return parse(text)
        except (ValueError, IndexError):
            self.missing(fact, f"{path} holds {text[:40]!r}, which is not understood")
            self.sources.pop(fact, None)
            return None

    def int(self, fact: str, path: str, hint: str = "") -> int | None:
        return self.parsed(fact, path, lambda t: int(t.split()[0]), hint)


def bracketed(text: str) -> tuple[str | None, list[str]]:
    """"always [madvise] never" -> ("madvise", ["always", "madvise", "never"])."""
    choices = text.split()
    chosen = next((c[1:-1] for c in choices if c.startswith("[") and c.endswith("]")), None)
    return chosen, [c.strip("[]") for c in choices]


def numa_node(text: str | None) -> int | None:
    """A sysfs numa_node value; -1 (no affinity known) and junk give None, never node -1."""
    try:
        value = int(text) if text is not None else -1
    except ValueError:
        return None
    return value if value >= 0 else None


def pci_address_in(hostpath: str) -> str | None:
    """The last PCI address among the components of a resolved sysfs path."""
    for part in reversed(hostpath.split("/")):
        address = sysfs_address(part)
        if address is not None:
            return address
    return None


def device_pci_address(root: HostRoot, devdir: str) -> str | None:
    """PCI address of the device behind a class directory (`/sys/class/net/eth0`).

    Tries the resolved class entry itself, then its `device` link; gathered trees keep only
    the link (as `device` or `device.link`), live sysfs has both.
    """
    address = pci_address_in(root.realpath(devdir))
    if address is None:
        address = pci_address_in(root.realpath(devdir + "/device"))
    return address


def pci_numa_node(root: HostRoot, address: str | None, devdir: str | None = None) -> int | None:
    """NUMA node of a PCI device: /sys/bus/pci/devices/<address>/numa_node, or, in trees
    without /sys/bus, the numa_node beside the address in `devdir`'s resolved path."""
    if address is None:
        return None
    text = root.read_str(f"/sys/bus/pci/devices/{address}/numa_node", None)
    if text is None and devdir is not None:
        for candidate in (root.realpath(devdir), root.realpath(devdir + "/device")):
            if f"/{address}" in candidate:
                prefix = candidate[:candidate.index(f"/{address}") + len(address) + 1]
                text = root.read_str(f"{prefix}/numa_node", None)
                if text is not None:
                    break
    return numa_node(text)


def link_name(root: HostRoot, hostpath: str) -> str | None:
    """Base name of a link's target (`.../device/driver` -> "mlx5_core"), or None.

    Resolves every component, so a `device` link stored as `device.link` in a gathered tree
    still leads to its `driver` link.
    """
    target = root.readlink(hostpath)
    if target:
        return target.rstrip("/").rsplit("/", 1)[-1]
    name = hostpath.rsplit("/", 1)[-1]
    resolved = root.realpath(hostpath).rsplit("/", 1)[-1]
    return resolved if resolved != name else None
