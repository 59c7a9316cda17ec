"""The PCIe side of GPUDirect RDMA: Relaxed Ordering from the NIC's Device Control register, the
IOMMU domain of the GPU's and its NIC's groups, and the audit settings that judge them
(pcie.gpu_nic_iommu, nic.relaxed_ordering). Register layouts are checked against the real
`lspci -vvv` capture of an 8x H100 node; stories are planted in the synthetic DGX H100 tree."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from nodetune.cli import main
from nodetune.collectors.pci import (
    LazyConfig,
    collect_pci,
    parse_ats,
    parse_relaxed_ordering,
)
from nodetune.node.hostroot import HostRoot

FIXTURES = Path(__file__).parent / "fixtures"
LSPCI = FIXTURES / "nvidia" / "h100x8-lspci-vvv.txt"
SNAPSHOTS = sorted((FIXTURES / "snapshots").glob("*.tar.gz"))
SETTINGS = ("pcie.gpu_nic_iommu", "nic.relaxed_ordering", "nic.ats")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))


def _lspci_device_control() -> list[tuple[str, int, bool]]:
    """(address, PCIe capability offset, RlxdOrd) of every device lspci shows a DevCtl for."""
    out = []
    for block in LSPCI.read_text().split("\n\n"):
        express = re.search(r"Capabilities: \[([0-9a-f]+)\] Express", block)
        ctl = re.search(r"DevCtl:.*?RlxdOrd([+-])", block, re.S)
        if express and ctl:
            out.append((block.split()[0], int(express.group(1), 16), ctl.group(1) == "+"))
    return out


def _config(pcie_at: int, relaxed: bool) -> bytes:
    buf = bytearray(4096)
    struct.pack_into("<HHHH", buf, 0, 0x15B3, 0x1021, 0x0406, 0x0010)  # Status: cap list
    buf[0x34] = pcie_at
    buf[pcie_at], buf[pcie_at + 1] = 0x10, 0x00
    struct.pack_into("<H", buf, pcie_at + 8, 5 << 12 | 1 << 5 | (1 << 4 if relaxed else 0))
    return bytes(buf)


def test_relaxed_ordering_at_the_offsets_of_a_real_lspci_capture(tmp_path: Path) -> None:
    devices = _lspci_device_control()
    assert {r for _, _, r in devices} == {True, False}  # the capture has both
    assert ("1a:00.0", 0x60, True) in devices  # its ConnectX-7
    for i, (address, pcie_at, relaxed) in enumerate(devices):
        path = tmp_path / f"config{i}"
        path.write_bytes(_config(pcie_at, relaxed))
        lazy = LazyConfig.open(str(path))
        assert isinstance(lazy, LazyConfig)
        try:
            assert parse_relaxed_ordering(lazy) is relaxed, address
            # the header, then the capability list's dwords: nothing of 0x100-0xFFF
            assert lazy.reads <= 4 and all(offset < 0x100 for offset in lazy._words)
        finally:
            lazy.close()
    assert parse_relaxed_ordering(b"\x00" * 64) is None  # no capability list readable


def test_ats_control_enable_bit() -> None:
    """ATS extended capability 0x000F, Control register at +6, Enable bit 15 (PCIe 6.0,
    10.5.1.3), found by walking the extended list from 0x100."""
    buf = bytearray(4096)
    struct.pack_into("<I", buf, 0x100, 0x0001 | 1 << 16 | 0x1B0 << 20)  # AER, then ATS
    struct.pack_into("<IHH", buf, 0x1B0, 0x000F | 1 << 16, 0x0020, 0x8000)
    assert parse_ats(bytes(buf)) is True
    struct.pack_into("<H", buf, 0x1B6, 0x001F)  # STU set, Enable clear
    assert parse_ats(bytes(buf)) is False
    struct.pack_into("<I", buf, 0x100, 0x0001 | 1 << 16)  # the list ends before ATS
    assert parse_ats(bytes(buf)) is None


def _device(root: Path, address: str, class_code: str, group: int | None) -> None:
    d = root / "sys/devices/pci0000:00" / address
    d.mkdir(parents=True)
    for name, value in (("class", class_code), ("vendor", "0x15b3"), ("device", "0x1021")):
        (d / name).write_text(value + "\n")
    (root / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
    (root / "sys/bus/pci/devices" / address).symlink_to(f"../../../devices/pci0000:00/{address}")
    if group is not None:
        (d / "iommu_group").symlink_to(f"../../../kernel/iommu_groups/{group}")


def test_iommu_domain_of_gpus_and_nics_read_once_per_group(tmp_path: Path) -> None:
    """sysfs layout of Documentation/ABI/testing/sysfs-kernel-iommu_groups (Linux 5.11+)."""
    for group, kind in ((3, "DMA-FQ"), (4, "identity")):
        (tmp_path / f"sys/kernel/iommu_groups/{group}").mkdir(parents=True)
        (tmp_path / f"sys/kernel/iommu_groups/{group}/type").write_text(kind + "\n")
    _device(tmp_path, "0000:00:01.0", "0x020700", 3)  # an InfiniBand NIC
    _device(tmp_path, "0000:00:02.0", "0x020700", 4)
    _device(tmp_path, "0000:00:03.0", "0x020700", None)
    _device(tmp_path, "0000:00:04.0", "0x010802", 3)  # NVMe: not on a GPUDirect path
    devices = {d.address: d for d in collect_pci(HostRoot(str(tmp_path))).devices}
    assert (devices["0000:00:01.0"].iommu_group, devices["0000:00:01.0"].iommu_domain) == (
        3, "DMA-FQ")
    assert devices["0000:00:02.0"].iommu_domain == "identity"
    assert devices["0000:00:03.0"].iommu_domain is None
    assert devices["0000:00:04.0"].iommu_group is None


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, list[str]]:
    """{setting id: statuses of its findings} for the settings of this file."""
    with pytest.raises(SystemExit):
        main(["audit", "--json", *args])
    doc = json.loads(capsys.readouterr().out)
    out: dict[str, list[str]] = {s: [] for s in SETTINGS}
    for finding in doc["findings"]:
        if finding["id"] in out:
            out[finding["id"]].append(finding["status"])
    return out


STORIES = [
    ("IOMMU pass-through", {"iommu": "pt"}, {"pcie.gpu_nic_iommu": {"pass"}}),
    ("IOMMU off", {"iommu": "off"}, {"pcie.gpu_nic_iommu": {"pass"}}),
    ("IOMMU translating", {"iommu": "translated"}, {"pcie.gpu_nic_iommu": {"fail"}}),
    ("Relaxed Ordering on", {}, {"nic.relaxed_ordering": {"pass"}}),
    ("Relaxed Ordering off", {"nic_relaxed_ordering": False}, {"nic.relaxed_ordering": {"fail"}}),
]


@pytest.mark.parametrize(("story", "options", "wanted"), STORIES, ids=[s[0] for s in STORIES])
def test_pcie_path_stories(story: str, options: dict[str, Any], wanted: dict[str, set[str]],
                           synth: Any, synth_tmp: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(**options))
    got = audit(capsys, "--root", str(host.root), "--nvml", str(host.nvml),
                "--profile", "dgx-h100")
    for setting, statuses in wanted.items():
        assert set(got[setting]) == statuses, (story, setting, got[setting])
        assert len(got[setting]) == 8, story  # one per GPU, one per GPU NIC


VM_STORIES = [("ATS on", True, {"pass"}), ("ATS off", False, {"fail"}),
              ("no ATS capability", None, {"fail"})]


@pytest.mark.parametrize(("story", "ats", "wanted"), VM_STORIES, ids=[s[0] for s in VM_STORIES])
def test_ats_on_the_nics_of_a_vm(story: str, ats: bool | None, wanted: set[str], synth: Any,
                                 synth_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(nic_ats=ats))
    got = audit(capsys, "--root", str(host.root), "--nvml", str(host.nvml),
                "--profile", "cloud-vm")
    assert set(got["nic.ats"]) == wanted, story


@pytest.mark.parametrize("profile", ["generic-x86-gpu", "cloud-vm"])
@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=[s.name for s in SNAPSHOTS])
def test_no_real_capture_fails_the_pcie_path_settings(
        snapshot: Path, profile: str, capsys: pytest.CaptureFixture[str]) -> None:
    got = audit(capsys, "--from", str(snapshot), "--profile", profile)
    assert not [s for statuses in got.values() for s in statuses if s == "fail"], got
