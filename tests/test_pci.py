"""The PCI collector: parsing (link speeds, config space) and real and synthetic trees."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from nodetune.collectors import Context
from nodetune.collectors.pci import (
    LazyConfig,
    PciCollector,
    collect_pci,
    device_kind,
    find_ext_capability,
    parse_acs,
    parse_chain,
    parse_link_speed,
    parse_max_read_request,
    parse_port_type,
)
from nodetune.errors import NoData
from nodetune.facts import cpulist
from nodetune.facts.pcie import gen_of
from nodetune.node.hostroot import HostRoot

LSPCI = Path(__file__).parent / "fixtures" / "nvidia" / "h100x8-lspci-vvv.txt"
ACS_FLAGS = ("SrcValid", "TransBlk", "ReqRedir", "CmpltRedir", "UpstreamFwd", "EgressCtrl",
             "DirectTrans")


@pytest.mark.parametrize(("text", "speed", "gen"), [
    ("32.0 GT/s PCIe", 32.0, 5), ("16.0 GT/s PCIe", 16.0, 4), ("8.0 GT/s PCIe", 8.0, 3),
    ("8 GT/s", 8.0, 3), ("5 GT/s", 5.0, 2), ("2.5 GT/s PCIe", 2.5, 1), ("2.5 GT/s", 2.5, 1),
    ("64.0 GT/s PCIe", 64.0, 6), ("Unknown", None, None), ("", None, None), (None, None, None),
])
def test_link_speed_and_generation(text: str | None, speed: float | None, gen: int | None) -> None:
    assert parse_link_speed(text) == speed
    assert gen_of(parse_link_speed(text)) == gen


@pytest.mark.parametrize(("class_code", "vendor", "kind"), [
    (0x030200, 0x10DE, "gpu"), (0x030000, 0x10DE, "gpu"), (0x030000, 0x1A03, "other"),
    (0x020700, 0x15B3, "infiniband"), (0x020000, 0x15B3, "nic"), (0x0C0600, 0x1077, "infiniband"),
    (0x010802, 0x144D, "nvme"), (0x010601, 0x8086, "storage"), (0x060400, 0x1000, "bridge"),
    (0x088000, 0x8086, "other"), (None, None, "other"),
])
def test_device_kind(class_code: int | None, vendor: int | None, kind: str) -> None:
    assert device_kind(class_code, vendor) == kind


def test_chain_from_resolved_path() -> None:
    assert parse_chain("/sys/devices/pci0000:17/0000:17:01.0/0000:18:00.0/0000:19:01.0/"
                       "0000:1b:00.0") == ("pci0000:17", ["0000:17:01.0", "0000:18:00.0",
                                                          "0000:19:01.0"])
    # Intel VMD: the last host bridge wins
    assert parse_chain("/sys/devices/pci0000:00/0000:00:0e.0/pci10000:00/10000:00:02.0/"
                       "10000:01:00.0") == ("pci10000:00", ["10000:00:02.0"])
    assert parse_chain("/sys/bus/pci/devices/0000:00:06.0") is None


# -- config space ------------------------------------------------------------------------------
def _config(pcie_at: int, port_type: int, mrrs: int, acs_at: int | None, acs_ctl: int,
            size: int = 4096) -> bytes:
    """A config image laid out as the PCIe spec says: header, capability list from 0x34,
    extended capabilities from 0x100 (AER first, then ACS where given)."""
    buf = bytearray(size)
    struct.pack_into("<HHHH", buf, 0, 0x1000, 0xC030, 0x0406, 0x0010)
    buf[0x34] = 0x40
    buf[0x40], buf[0x41] = 0x01, pcie_at  # Power Management, then PCIe
    buf[pcie_at], buf[pcie_at + 1] = 0x10, 0x00
    struct.pack_into("<H", buf, pcie_at + 2, 0x2 | port_type << 4)
    struct.pack_into("<H", buf, pcie_at + 8, (mrrs.bit_length() - 8) << 12 | 0x10)
    if size > 0x100:
        next_cap = acs_at if acs_at not in (None, 0x100) else 0
        if acs_at == 0x100:
            struct.pack_into("<IHH", buf, 0x100, 0x000D | 1 << 16, 0x5F, acs_ctl)
        else:
            struct.pack_into("<I", buf, 0x100, 0x0001 | 2 << 16 | (next_cap or 0) << 20)
            if acs_at is not None:
                struct.pack_into("<IHH", buf, acs_at, 0x000D | 1 << 16, 0x5F, acs_ctl)
    return bytes(buf)


def _lspci_ports() -> list[dict[str, object]]:
    """Devices of the real lspci -vvv capture that show an ACSCtl line."""
    out = []
    for block in LSPCI.read_text().split("\n\n"):
        acs = re.search(r"Capabilities: \[([0-9a-f]+) v1\] Access Control Services", block)
        ctl = re.search(r"ACSCtl:\s+(.*)", block)
        express = re.search(r"Capabilities: \[([0-9a-f]+)\] Express \(v2\) ([A-Za-z ]+?)(?:,|\()",
                            block)
        mrrs = re.search(r"MaxReadReq (\d+) bytes", block)
        if not (acs and ctl and express and mrrs):
            continue
        flags = dict(re.findall(r"(\w+)([+-])", ctl.group(1)))
        out.append({"address": block.split()[0], "acs_at": int(acs.group(1), 16),
                    "pcie_at": int(express.group(1), 16), "port": express.group(2).strip(),
                    "flags": {k: flags[k] == "+" for k in ACS_FLAGS},
                    "mrrs": int(mrrs.group(1))})
    return out


def test_acs_and_max_read_request_at_the_offsets_of_a_real_lspci_capture() -> None:
    ports = _lspci_ports()
    assert len(ports) >= 20  # root ports, switch downstream ports, ConnectX functions
    assert any(p["flags"]["SrcValid"] for p in ports)  # the capture has ACS on somewhere
    types = {"Root Port": 0x4, "Downstream Port": 0x6, "Upstream Port": 0x5, "Endpoint": 0x0}
    for port in ports:
        ctl = sum(1 << bit for bit, name in enumerate(ACS_FLAGS) if port["flags"][name])
        config = _config(port["pcie_at"], types.get(port["port"], 0), port["mrrs"],
                         port["acs_at"], ctl)
        acs = parse_acs(config)
        assert acs is not None, port["address"]
        assert acs.ctl == port["flags"], port["address"]
        assert acs.source_validation == port["flags"]["SrcValid"]
        assert parse_max_read_request(config) == port["mrrs"], port["address"]


def test_lazy_config_reads_audit_acs_and_max_read_request_from_few_dwords(
        tmp_path: Path) -> None:
    """Read lazily, the config images of the real lspci capture give the same ACS control,
    MaxReadReq and port type as the whole 4 KiB, from the header and a few extended dwords."""
    types = {"Root Port": 0x4, "Downstream Port": 0x6, "Upstream Port": 0x5, "Endpoint": 0x0}
    for i, port in enumerate(_lspci_ports()):
        ctl = sum(1 << bit for bit, name in enumerate(ACS_FLAGS) if port["flags"][name])
        whole = _config(port["pcie_at"], types.get(port["port"], 0), port["mrrs"],
                        port["acs_at"], ctl)
        path = tmp_path / f"config{i}"
        path.write_bytes(whole)
        lazy = LazyConfig.open(str(path))
        assert isinstance(lazy, LazyConfig) and len(lazy) == 4096
        try:
            assert parse_acs(lazy) == parse_acs(whole), port["address"]
            assert parse_max_read_request(lazy) == parse_max_read_request(whole) == port["mrrs"]
            assert parse_port_type(lazy) == parse_port_type(whole)
            assert lazy[0x100:0x108] == whole[0x100:0x108]
            # the 64-byte header in one read, then single dwords of the capability and
            # extended lists (the old 256-byte header read was 64 dwords for the kernel)
            assert lazy.reads <= 8, lazy.reads
        finally:
            lazy.close()
    short = tmp_path / "unprivileged"
    short.write_bytes(whole[:64])  # what a non-root reader gets from sysfs
    assert LazyConfig.open(str(short)) == whole[:64]
    assert LazyConfig.open(str(tmp_path / "absent")) is None


def test_config_space_edge_cases() -> None:
    config = _config(0x60, 0x6, 512, 0x148, 0b1101)
    assert parse_port_type(config) == "downstream"
    assert find_ext_capability(config, 0x000D) == 0x148
    acs = parse_acs(config)
    assert acs is not None
    assert acs.ctl["SrcValid"] and acs.ctl["ReqRedir"] and acs.ctl["CmpltRedir"]
    assert not acs.ctl["TransBlk"] and not acs.ctl["UpstreamFwd"]
    # no ACS capability; only 256 bytes (standard space); only 64 bytes (unprivileged read)
    assert parse_acs(_config(0x60, 0x0, 4096, None, 0)) is None
    assert parse_acs(_config(0x60, 0x0, 4096, 0x148, 1, size=256)) is None
    assert parse_max_read_request(_config(0x60, 0x0, 4096, None, 0, size=256)) == 4096
    assert parse_max_read_request(_config(0x60, 0x0, 4096, None, 0)[:64]) is None
    # a capability list that loops on itself ends instead of hanging
    looping = bytearray(_config(0x60, 0x0, 128, None, 0))
    looping[0x41] = 0x40
    struct.pack_into("<I", looping, 0x100, 0x0001 | 1 << 16 | 0x100 << 20)
    assert parse_max_read_request(bytes(looping)) is None
    assert parse_acs(bytes(looping)) is None


# -- real trees --------------------------------------------------------------------------------
def _files(tree: Path, address: str) -> Path:
    return (tree / "sys/bus/pci/devices" / address).resolve()


@pytest.mark.parametrize("name", ["32em64t-2n8c+dax+nvme+mic+dimms",
                                  "40intel64-2g2n4c+pcilocality"])
def test_numa_node_and_local_cpus_match_the_files(host_tree, name: str) -> None:
    tree = host_tree(name)
    facts = collect_pci(HostRoot(str(tree)))
    listed = sorted(p.name for p in (tree / "sys/bus/pci/devices").iterdir())
    assert sorted(d.address for d in facts.devices) == listed
    for index, dev in enumerate(facts.devices):
        files = _files(tree, dev.address)
        raw = int((files / "numa_node").read_text())
        assert dev.numa_node == (raw if raw >= 0 else None), dev.address
        if raw < 0:
            assert "-1" in facts.unknown[f"devices.{index}.numa_node"]
        assert dev.local_cpus == cpulist.parse((files / "local_cpulist").read_text())
        assert dev.pci_class == (files / "class").read_text().strip()
        if (files / "driver").exists():
            assert dev.driver == Path(str((files / "driver").readlink())).name
        # parent bridges: the directories between the host bridge and the device
        above = [p for p in files.relative_to(tree / "sys/devices").parts[1:-1]]
        assert dev.path == above and dev.parent == (above[-1] if above else None)
        assert dev.host_bridge == files.relative_to(tree / "sys/devices").parts[0]
        # the gathered config files hold 64 bytes: ACS and MaxReadReq need root
        assert dev.acs is None and dev.max_read_request_bytes is None
        assert facts.unknown[f"devices.{index}.acs"].endswith(
            "config space beyond 64 bytes needs root")


def test_pcilocality_tree_devices(host_tree) -> None:
    facts = collect_pci(HostRoot(str(host_tree("40intel64-2g2n4c+pcilocality"))))
    qib = next(d for d in facts.devices if d.address == "0000:43:00.0")
    assert (qib.kind, qib.driver, qib.numa_node) == ("infiniband", "ib_qib", 2)
    assert (qib.link.current_speed_gts, qib.link.current_gen, qib.link.current_width) == \
        (8.0, 3, 4)
    assert (qib.root_port, qib.switch, qib.host_bridge) == ("0000:40:03.0", None, "pci0000:40")
    nvme = collect_pci(HostRoot(str(host_tree("32em64t-2n8c+dax+nvme+mic+dimms"))))
    drive = next(d for d in nvme.devices if d.kind == "nvme")
    assert (drive.address, drive.numa_node, drive.local_cpus) == ("0000:00:02.0", None,
                                                                  [0, 1, 2, 3])
    # the VGA behind a bridge with only endpoints below: that bridge is no PCIe switch
    vga = next(d for d in nvme.devices if d.address == "0000:05:00.0")
    assert vga.path == ["0000:00:1c.0", "0000:04:00.0"] and vga.switch is None


def test_h200_vm_tree_stores_plain_directories(host_tree) -> None:
    tree = host_tree("h200x2-vm-gather")
    facts = collect_pci(HostRoot(str(tree)))
    gpus = [d for d in facts.devices if d.kind == "gpu"]
    assert [g.address for g in gpus] == ["0000:00:06.0", "0000:00:07.0"]
    for g in gpus:
        assert g.driver == "nvidia" and g.numa_node is None and g.local_cpus == list(range(32))
        assert (g.link.current_speed_gts, g.link.current_gen, g.link.current_width) == \
            (32.0, 5, 16)
        assert (g.link.max_gen, g.link.max_width) == (5, 16)
        assert g.path == [] and g.parent is None and g.host_bridge is None
        index = facts.devices.index(g)
        assert "plain directory" in facts.unknown[f"devices.{index}.path"]
        assert "-1" in facts.unknown[f"devices.{index}.numa_node"]


def test_h100_vm_tree_reads_config_space(host_tree) -> None:
    tree = host_tree("h100x2-fc-vm-gather")
    facts = collect_pci(HostRoot(str(tree)))
    gpus = [d for d in facts.devices if d.kind == "gpu"]
    assert len(gpus) == 2
    for g in gpus:
        config = (_files(tree, g.address) / "config").read_bytes()
        assert len(config) == 4096
        devctl = None
        offset = config[0x34]
        while offset:
            if config[offset] == 0x10:
                devctl = int.from_bytes(config[offset + 8:offset + 10], "little")
                break
            offset = config[offset + 1]
        assert devctl is not None
        assert g.max_read_request_bytes == 128 << (devctl >> 12 & 7)
        assert g.host_bridge == "pci0000:00" and g.path == [] and g.root_port is None


def test_no_pci_devices_is_no_data(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    with pytest.raises(NoData):
        PciCollector().collect(Context(root=HostRoot(str(tmp_path))))


# -- synthetic trees -----------------------------------------------------------------------------
def test_dgx_switch_chain_acs_and_max_read_request(synthetic_host) -> None:
    host = synthetic_host("synthetic-dgx-h100")
    sections = PciCollector().to_sections(collect_pci(HostRoot(str(host.root))))
    devices = {d["address"]: d for d in sections["pci"]["devices"]}
    gpu0, nic0 = devices[host.gpus[0]], devices[host.nics[0][1]]
    assert list(gpu0)[:3] == ["address", "class", "kind"]
    assert gpu0["path"] == ["0000:17:01.0", "0000:18:00.0", "0000:19:01.0"]
    assert (gpu0["root_port"], gpu0["switch"], gpu0["parent"]) == \
        ("0000:17:01.0", "0000:18:00.0", "0000:19:01.0")
    assert nic0["switch"] == gpu0["switch"] and nic0["max_read_request_bytes"] == 4096
    dsp = devices["0000:19:01.0"]
    assert dsp["acs"]["source_validation"] is False and not any(dsp["acs"]["ctl"].values())
    assert dsp["switch"] == "0000:18:00.0" and dsp["port_type"] == "downstream"
    assert devices["0000:18:00.0"]["switch"] is None
    # the BMC VGA sits behind a PCIe-to-PCI bridge, which is not a switch
    assert devices["0000:03:00.0"]["switch"] is None
    assert gpu0["link"] == {"current_speed_gts": 32.0, "current_width": 16,
                            "max_speed_gts": 32.0, "max_width": 16, "current_gen": 5,
                            "max_gen": 5}


def test_dgx_faults_show_in_pci_facts(synth, synth_tmp: Path) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(
        acs_enabled=True, nic_max_read_request=512, gpu_link_width={3: 8},
        config_bytes=64))
    facts = collect_pci(HostRoot(str(host.root)))
    devices = {d.address: (i, d) for i, d in enumerate(facts.devices)}
    _, gpu3 = devices[host.gpus[3]]
    assert (gpu3.link.current_width, gpu3.link.max_width) == (8, 16)
    index, nic = devices[host.nics[0][1]]
    assert nic.max_read_request_bytes is None and nic.acs is None
    assert facts.unknown[f"devices.{index}.acs"].endswith("beyond 64 bytes needs root")
    # switch roles still come from the chain when config space is unreadable
    assert nic.switch == "0000:18:00.0"

    full = synth.build_dgx_h100(synth_tmp / "full", synth.Options(acs_enabled=True,
                                                                 nic_max_read_request=512))
    facts = collect_pci(HostRoot(str(full.root)))
    by_address = {d.address: d for d in facts.devices}
    assert by_address[full.nics[0][1]].max_read_request_bytes == 512
    dsp = by_address["0000:19:00.0"]
    assert dsp.acs is not None and dsp.acs.source_validation
    assert dsp.acs.ctl["ReqRedir"] and dsp.acs.ctl["CmpltRedir"] and dsp.acs.ctl["UpstreamFwd"]


@pytest.mark.parametrize(("text", "address"), [
    ("0000:18:00.0", "0000:18:00.0"),
    ("00000000:1B:00.0", "0000:1b:00.0"),  # NVML
    ("18:00.0", "0000:18:00.0"),  # lspci short form
    ("0000:3b:00", "0000:3b:00.0"),  # Xid messages omit the function
    ("10000:e0:00.0", "10000:e0:00.0"),  # Intel VMD domain
    (b"00000000:07:00.0", "0000:07:00.0"),
    ("FFFFFFFF:FF:FF.0", None),  # NVML's "no device"
    ("0000:18:20.0", None),  # device number out of range
    ("eth0", None), ("", None), (None, None),
])
def test_normalize_address_spellings(text, address):
    from nodetune.facts.pcie import normalize_address

    assert normalize_address(text) == address
