"""The nvidia_driver collector: open or proprietary kernel modules, IMEX channel devices."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nodetune.collectors import Context
from nodetune.collectors.nvidia_driver import NvidiaDriverCollector, parse_flavour
from nodetune.errors import NoData
from nodetune.node.hostroot import HostRoot

PROPRIETARY = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  "
               "Sun May 12 19:39:15 UTC 2024\n")


def collect(root: Path):
    return NvidiaDriverCollector().collect(Context(root=HostRoot(str(root))))


def test_real_h200_vm_runs_the_open_modules(host_tree: Callable[[str], Path]) -> None:
    facts = collect(host_tree("h200x2-vm-gather"))
    assert facts.open_kernel_modules is True
    assert facts.imex_channels is None and "imex_channels" in facts.unknown


def test_flavours() -> None:
    assert parse_flavour(PROPRIETARY) is False
    assert parse_flavour("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.82.07\n")
    assert parse_flavour("garbage\n") is None


def test_imex_channels_and_missing_driver(tmp_path: Path) -> None:
    (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
    with pytest.raises(NoData, match="no NVIDIA kernel driver"):
        collect(tmp_path)
    (tmp_path / "proc/driver/nvidia/version").write_text(PROPRIETARY)
    (tmp_path / "dev/nvidia-caps-imex-channels").mkdir(parents=True)
    assert collect(tmp_path).imex_channels == 0
    (tmp_path / "dev/nvidia-caps-imex-channels/channel0").write_text("")
    facts = collect(tmp_path)
    assert facts.imex_channels == 1 and facts.open_kernel_modules is False


def test_peer_memory_clients_registered_absent_and_unknown(tmp_path: Path) -> None:
    (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
    (tmp_path / "proc/driver/nvidia/version").write_text(PROPRIETARY)
    facts = collect(tmp_path)  # a gathered tree without /sys/kernel/mm: unknown, with why
    assert facts.peer_memory_clients is None
    assert facts.unknown["peer_memory_clients"] == "the tree holds no /sys/kernel/mm"
    (tmp_path / "sys/kernel/mm/transparent_hugepage").mkdir(parents=True)
    assert collect(tmp_path).peer_memory_clients == []  # an RDMA core without peer memory
    (tmp_path / "sys/kernel/mm/memory_peers/nv_mem").mkdir(parents=True)
    (tmp_path / "sys/kernel/mm/memory_peers/nv_mem/version").write_text("1.2\n")
    assert collect(tmp_path).peer_memory_clients == ["nv_mem"]
