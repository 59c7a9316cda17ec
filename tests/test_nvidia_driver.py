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
