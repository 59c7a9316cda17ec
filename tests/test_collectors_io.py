"""nic, rdma, storage and services collectors against real trees and small tmp trees."""

from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from nodetune.collectors.nic import NicCollector, parse_speed
from nodetune.collectors.pci import PciCollector, parse_aer_total
from nodetune.collectors.rdma import RdmaCollector, parse_rate, parse_state, roce_active_mtu
from nodetune.collectors.services import ServicesCollector
from nodetune.collectors.storage import StorageCollector, parse_scheduler
from nodetune.errors import NoData
from nodetune.facts.model import to_jsonable
from nodetune.node.hostroot import HostRoot
from nodetune.profiles.catalog import Library
from nodetune.rules.evaluation import evaluate
from tests.host_trees import context, write_tree

FIXTURES = Path(__file__).parent / "fixtures"




def test_pure_parsers() -> None:
    assert parse_speed("25000") == 25000
    assert parse_speed("-1") is None and parse_speed("4294967295") is None
    assert parse_speed("") is None
    assert parse_state("4: ACTIVE") == "ACTIVE" and parse_state("5: LinkUp") == "LinkUp"
    assert parse_rate("400 Gb/sec (4X NDR)") == 400.0
    assert parse_rate("2.5 Gb/sec (1X SDR)") == 2.5
    assert roce_active_mtu(9000) == 4096 and roce_active_mtu(4200) == 4096
    assert roce_active_mtu(1500) == 1024 and roce_active_mtu(4000) == 2048
    assert parse_scheduler("none [mq-deadline] kyber bfq") == (
        "mq-deadline", ["none", "mq-deadline", "kyber", "bfq"])
    assert parse_scheduler("none") == ("none", ["none"])


def test_nics_of_32em64t(host_tree) -> None:
    nic = NicCollector().collect(context(host_tree("32em64t-2n8c+dax+nvme+mic+dimms")))
    by_name = {i.name: i for i in nic.interfaces}
    assert "lo" not in by_name
    assert {n for n, i in by_name.items() if i.virtual} == {"br0", "eth0.1015", "mic0"}
    eth0 = by_name["eth0"]
    assert (eth0.driver, eth0.speed_mbps, eth0.mtu, eth0.operstate) == ("igb", 1000, 1500, "up")
    assert (eth0.pci_address, eth0.numa_node, eth0.link_type) == ("0000:02:00.0", 0, "ethernet")
    ib0 = by_name["ib0"]
    assert (ib0.driver, ib0.pci_address, ib0.numa_node) == ("mlx4_core", "0000:82:00.0", 1)
    assert (ib0.rdma_device, ib0.mtu, ib0.link_type) == ("mlx4_0", 2044, "infiniband")
    assert ib0.speed_mbps is None and "interfaces.ib0.speed_mbps" in nic.unknown
    assert eth0.irq_cpus is None  # the tree has no /proc/irq
    assert "/proc/irq/101/smp_affinity_list" in nic.unknown["interfaces.eth0.irq_cpus"]


def test_nics_of_the_gpu_vms(host_tree) -> None:
    nics = NicCollector().collect(context(host_tree("h200x2-vm-gather"))).interfaces
    h200 = {i.name: i for i in nics}
    assert set(h200) == {"eth0", "ifb0", "ifb1"}
    assert (h200["eth0"].virtual, h200["eth0"].mtu, h200["eth0"].speed_mbps) == (False, 1400, None)
    assert h200["ifb0"].virtual and h200["ifb1"].virtual
    nics = NicCollector().collect(context(host_tree("h100x2-fc-vm-gather"))).interfaces
    h100 = {i.name: i for i in nics}
    eth0 = h100["eth0"]
    assert (eth0.driver, eth0.pci_address, eth0.numa_node) == ("virtio_net", "0000:00:03.0", None)
    tree = host_tree("h100x2-fc-vm-gather")
    irqs = os.listdir(tree / "sys/bus/pci/devices/0000:00:03.0/msi_irqs")
    expected: set[int] = set()
    for irq in irqs:
        text = (tree / f"proc/irq/{irq}/smp_affinity_list").read_text().strip()
        expected.update(range(int(text.split("-")[0]), int(text.split("-")[-1]) + 1))
    assert eth0.irq_cpus == sorted(expected) and eth0.irq_cpus


@pytest.fixture
def h100_ib_tree(tmp_path: Path) -> Path:
    """The real /sys/class/infiniband of an 8x H100 node, placed in a tree of its own."""
    with tarfile.open(FIXTURES / "rdma/h100x8-sys-class-infiniband.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    (tmp_path / "root/sys/class").mkdir(parents=True)
    (tmp_path / "x/sys-class-infiniband-h100.0").rename(tmp_path / "root/sys/class/infiniband")
    return tmp_path / "root"


def test_rdma_of_an_h100_node(h100_ib_tree: Path) -> None:
    rdma = RdmaCollector().collect(context(h100_ib_tree))
    by_name = {d.name: d for d in rdma.devices}
    assert sorted(by_name) == ["mlx5_0", "mlx5_1", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_7",
                               "mlx5_8", "mlx5_9", "mlx5_bond_0"]
    for name in ("mlx5_0", "mlx5_9"):
        dev = by_name[name]
        assert (dev.fw_ver, dev.hca_type) == ("28.41.1000", "MT4129")
        (port,) = dev.ports
        assert (port.port, port.state, port.phys_state) == (1, "ACTIVE", "LinkUp")
        assert (port.rate, port.rate_gbps, port.link_layer) == ("400 Gb/sec (4X NDR)", 400.0,
                                                                "InfiniBand")
        assert port.active_mtu is None
        assert dev.pci_address is None  # the capture kept no device links
    bond = by_name["mlx5_bond_0"]
    assert (bond.ports[0].link_layer, bond.ports[0].rate_gbps) == ("Ethernet", 200.0)
    assert "devices.mlx5_0.pci_address" in rdma.unknown


def test_rdma_with_device_links(host_tree) -> None:
    mlx4 = RdmaCollector().collect(context(host_tree("32em64t-2n8c+dax+nvme+mic+dimms")))
    dev = next(d for d in mlx4.devices if d.name == "mlx4_0")
    assert (dev.pci_address, dev.numa_node, dev.netdevs, dev.fw_ver) == (
        "0000:82:00.0", 1, ["ib0"], "2.11.500")
    assert dev.ports[0].rate == "56 Gb/sec (4X FDR)"
    qib = RdmaCollector().collect(context(host_tree("40intel64-2g2n4c+pcilocality"))).devices[0]
    assert (qib.name, qib.pci_address, qib.numa_node, qib.ports[0].rate_gbps) == (
        "qib0", "0000:43:00.0", 2, 40.0)


def test_no_rdma_is_no_data(host_tree) -> None:
    with pytest.raises(NoData):
        RdmaCollector().collect(context(host_tree("h200x2-vm-gather")))


def test_roce_port_mtu_follows_its_netdev(tmp_path: Path) -> None:
    base = "sys/class/infiniband/mlx5_0"
    root = write_tree(tmp_path, {f"{base}/ports/1/link_layer": "Ethernet\n",
                             f"{base}/ports/1/state": "4: ACTIVE\n",
                             f"{base}/ports/1/gid_attrs/ndevs/0": "ens1f0np0\n",
                             "sys/class/net/ens1f0np0/mtu": "9000\n"})
    dev = RdmaCollector().collect(context(root)).devices[0]
    assert dev.netdevs == ["ens1f0np0"] and dev.ports[0].active_mtu == 4096


def test_storage_of_h200_vm_matches_lsblk(host_tree) -> None:
    tree = host_tree("h200x2-vm-gather")
    storage = StorageCollector().collect(context(tree))
    lsblk = json.loads((tree / "cmd/lsblk.txt").read_text().split("# rc=0", 1)[1]
                       .split("# stderr", 1)[0])["blockdevices"]
    by_name = {b.name: b for b in storage.block}
    assert set(by_name) == {d["name"] for d in lsblk}
    units = {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    for dev in lsblk:
        ours = by_name[dev["name"]]
        assert ours.rotational == dev["rota"]
        assert ours.scheduler == dev["sched"]
        assert ours.read_ahead_kb == dev["ra"]
        assert ours.nr_requests == dev["rq-size"]
        number, unit = re.fullmatch(r"([\d.]+)([BKMGT])", dev["size"]).groups()
        assert ours.size_bytes == pytest.approx(float(number) * units[unit], rel=0.001)
    assert by_name["zram0"].kind == "virtual" and by_name["vda"].kind == "disk"
    assert storage.mounts is None and "mounts" in storage.unknown  # proc/mounts -> self/mounts


def test_storage_of_h100_vm(host_tree) -> None:
    storage = StorageCollector().collect(context(host_tree("h100x2-fc-vm-gather")))
    by_name = {b.name: b for b in storage.block}
    assert set(by_name) == {"vda", "vdb", "zram0"}  # as its lsblk; unused loop devices left out
    assert (by_name["vda"].pci_address, by_name["vdb"].pci_address) == ("0000:00:01.0",
                                                                        "0000:00:02.0")
    mounts = {m.mountpoint: m for m in storage.mounts}
    assert mounts["/usr/local/nvidia"].read_only is True


def test_storage_nvme_and_disks_of_hwloc_trees(host_tree) -> None:
    storage = StorageCollector().collect(context(host_tree("32em64t-2n8c+dax+nvme+mic+dimms")))
    by_name = {b.name: b for b in storage.block}
    nvme = by_name["nvme0n1"]  # listed only in /sys/class/block in this tree
    assert (nvme.kind, nvme.pci_address, nvme.scheduler, nvme.rotational) == (
        "nvme", "0000:00:02.0", "none", False)
    assert nvme.size_bytes == 781422768 * 512
    sda = by_name["sda"]
    assert (sda.kind, sda.model, sda.scheduler, sda.numa_node) == ("disk", "ST9250610NS", "cfq", 0)
    assert "nvme0n1p1" not in by_name and "ram0" not in by_name
    assert {m.mountpoint: m.fstype for m in storage.mounts}["/var"] == "ext3"
    sda40 = {b.name: b for b in StorageCollector().collect(
        context(host_tree("40intel64-2g2n4c+pcilocality"))).block}["sda"]
    assert (sda40.model, sda40.pci_address, sda40.max_sectors_kb) == ("PERC H700", "0000:01:00.0",
                                                                      128)


def _services_tree(root: Path) -> Path:
    write_tree(root, {"proc/1/comm": "systemd\n", "proc/812/comm": "nvidia-persiste\n",
                  "proc/901/comm": "irqbalance\n", "proc/self/comm": "python\n",
                  "usr/lib/systemd/system/nvidia-persistenced.service": "[Unit]\n",
                  "usr/lib/systemd/system/nvidia-fabricmanager.service": "[Unit]\n",
                  "usr/lib/systemd/system/irqbalance.service": "[Unit]\n"})
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    os.symlink("/usr/lib/systemd/system/nvidia-persistenced.service",
               wants / "nvidia-persistenced.service")
    os.symlink("/usr/lib/systemd/system/nvidia-fabricmanager.service",
               wants / "nvidia-fabricmanager.service")
    os.symlink("/dev/null", root / "etc/systemd/system/nvidia-fabricmanager.service")
    return root


def test_services_running_enabled_and_masked(tmp_path: Path) -> None:
    units = ServicesCollector().collect(context(_services_tree(tmp_path))).units
    persistenced = units["nvidia-persistenced"]
    assert (persistenced.state, persistenced.enabled, persistenced.installed) == (
        "running", True, True)
    assert persistenced.source == "/proc/812/comm"
    fabric = units["nvidia-fabricmanager"]
    assert (fabric.state, fabric.enabled, fabric.installed) == ("not-running", False, False)
    irq = units["irqbalance"]
    assert (irq.state, irq.enabled, irq.installed) == ("running", False, True)
    imex = units["nvidia-imex"]
    assert (imex.state, imex.enabled, imex.installed) == ("not-running", False, False)


def test_a_running_tuned_is_seen_and_flagged(tmp_path: Path) -> None:
    """TuneD re-applies its profile over what nodetune applies: base reports it (info)."""
    root = _services_tree(tmp_path)
    (root / "proc/950").mkdir()
    (root / "proc/950/comm").write_text("tuned\n", encoding="utf-8")
    units = ServicesCollector().collect(context(root)).units
    assert (units["tuned"].state, units["tuned"].source) == ("running", "/proc/950/comm")
    doc = {"services": to_jsonable(ServicesCollector().collect(context(root)))}
    setting = next(r for r in Library().load("base").rules if r.id == "cpu.tuning_daemon")
    [finding] = evaluate([setting], doc, {})
    assert (finding.status.value, finding.severity.value) == ("fail", "info")


def test_services_unknown_in_a_tree_without_processes(host_tree) -> None:
    facts = ServicesCollector().collect(context(host_tree("h200x2-vm-gather")))
    assert {u.state for u in facts.units.values()} == {"unknown"}
    assert {u.enabled for u in facts.units.values()} == {None}
    assert "no process directories" in facts.unknown["units.irqbalance.state"]


def test_missing_subsystems(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    with pytest.raises(NoData):
        NicCollector().collect(context(tmp_path))
    storage = StorageCollector().collect(context(tmp_path))
    assert storage.block == [] and storage.mounts is None
    assert set(storage.unknown) == {"block", "mounts"}


def test_files_only_root_may_read_say_so(tmp_path: Path, monkeypatch) -> None:
    from nodetune.collectors import sysfs

    secret = write_tree(tmp_path, {"sys/kernel/secret": "1\n"}) / "sys/kernel/secret"
    live = HostRoot("/")
    monkeypatch.setattr(live, "path", lambda hostpath: str(tmp_path) + hostpath)
    monkeypatch.setattr(sysfs.os, "geteuid", lambda: 1000)
    assert secret.exists()
    assert "run nodetune as root" in sysfs.why_unreadable(live, "/sys/kernel/secret")
    assert sysfs.why_unreadable(live, "/sys/kernel/absent").endswith("is not present")


def test_aer_totals_are_read_per_device(synth, synth_tmp: Path) -> None:
    """aer_dev_* files hold one counter per error type and a TOTAL_ERR_* line."""
    assert parse_aer_total("RxErr 2\nBadTLP 1\nTOTAL_ERR_COR 3\n", "TOTAL_ERR_COR") == 3
    assert parse_aer_total("DLP 0\n", "TOTAL_ERR_FATAL") is None
    host = synth.build_dgx_h100(synth_tmp, synth.Options(gpu_aer={2: (5, 1, 0)}))
    facts = PciCollector().collect(context(host.root))
    by_kind = [d for d in facts.devices if d.kind == "gpu"]
    assert [(d.aer.correctable, d.aer.nonfatal, d.aer.fatal) for d in by_kind][:3] == [
        (0, 0, 0), (0, 0, 0), (5, 1, 0)]


def test_aer_is_unknown_where_the_kernel_reports_none(host_tree) -> None:
    facts = PciCollector().collect(context(host_tree("h200x2-vm-gather")))
    assert all(d.aer is None for d in facts.devices)
    assert any("no aer_dev_* files" in reason for reason in facts.unknown.values())
