"""Facts exact on real captures: each class of fact that real trees got wrong, and each fact
added because operators expect it, checked against a real machine's data.

Trees: the hwloc project's gathered trees (tests/fixtures/hosts), compared with what hwloc's own
`lstopo-no-graphics --input TREE` says where hwloc is installed; the H100 node's
/sys/class/infiniband with the `ibstat` output beside it (tests/fixtures/rdma); values quoted from
prometheus/node_exporter's sysfs fixtures (Apache-2.0) where no tree here has the file.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from nodetune.collectors.cpu import CpuCollector
from nodetune.collectors.nic import NicCollector
from nodetune.collectors.numa import NumaCollector
from nodetune.collectors.rdma import RdmaCollector, parse_guid, port_guid_of_gid
from nodetune.collectors.storage import StorageCollector
from nodetune.collectors.sysfs import pci_address_in
from nodetune.facts.pcie import sysfs_address
from tests.conftest import FIXTURES, real_tree_names
from tests.host_trees import context, write_tree

HWLOC_TREES = [n for n in real_tree_names() if not n.startswith(("h100", "h200"))]


# -- PCI domains wider than four digits (Intel VMD) --------------------------------------------

def test_a_vmd_domain_is_one_pci_address_not_a_path_part() -> None:
    assert sysfs_address("10000:e1:00.0") == "10000:e1:00.0"
    assert sysfs_address("0000:18:00.0") == "0000:18:00.0"
    for not_one in ("pci10000:e0", "0000:18:00", "nvme0", "10000:e1:00.8"):
        assert sysfs_address(not_one) is None
    # drivers/pci/controller/vmd.c puts the NVMe behind the VMD endpoint in domain 0x10000
    path = "/sys/devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0/nvme/nvme0"
    assert pci_address_in(path) == "10000:e1:00.0"


def test_an_nvme_behind_vmd_maps_to_itself_not_to_the_vmd_controller(tmp_path: Path) -> None:
    vmd = "/sys/devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0"
    ns = f"{vmd}/nvme/nvme0/nvme0n1"
    write_tree(tmp_path, {f"{ns}/size": "7501476528", f"{ns}/queue/scheduler": "[none]",
                          f"{vmd}/numa_node": "0",
                          f"{vmd}/nvme/nvme0/model": "INTEL SSDPE2KX080T8"})
    (tmp_path / "sys/block").mkdir(parents=True)
    # absolute targets, as in a chroot: resolved inside the tree
    (tmp_path / "sys/block/nvme0n1").symlink_to(ns)
    (tmp_path / f"{ns.lstrip('/')}/device").symlink_to(f"{vmd}/nvme/nvme0")
    (tmp_path / f"{vmd.lstrip('/')}/nvme/nvme0/device").symlink_to(vmd)
    block = StorageCollector().collect(context(tmp_path)).block
    assert [(b.name, b.pci_address) for b in block] == [("nvme0n1", "10000:e1:00.0")]


# -- sockets and cores as hwloc counts them ------------------------------------------------------

def _lstopo_count(tree: Path, kind: str) -> int:
    out = subprocess.run(["lstopo-no-graphics", "--input", str(tree), "--of", "console",
                          "--only", kind], capture_output=True, text=True, timeout=60).stdout
    return len(out.splitlines())


@pytest.mark.skipif(shutil.which("lstopo-no-graphics") is None, reason="hwloc not installed")
@pytest.mark.parametrize("name", HWLOC_TREES)
def test_sockets_cores_and_threads_agree_with_hwloc(host_tree, name: str) -> None:
    tree = host_tree(name)
    cpu = CpuCollector().collect(context(tree))
    packages, cores, pus = (_lstopo_count(tree, k) for k in ("package", "core", "pu"))
    assert (cpu.sockets, cpu.cores, len(cpu.online)) == (packages, cores, pus)
    assert cpu.threads_per_core == -(-pus // cores)


def test_two_cores_of_one_compute_unit_are_two_cores(host_tree, tmp_path: Path) -> None:
    """AMD Bulldozer: the two cores of a compute unit share thread_siblings but have their own
    core_id; hwloc makes them two cores. The real 8em64t tree (2 sockets x 4 cores) with its
    core pairs' thread_siblings joined the way a Bulldozer kernel writes them."""
    tree = Path(shutil.copytree(host_tree("8em64t-2s2ca2c"), tmp_path / "t", symlinks=True))
    topo = tree / "sys/devices/system/cpu"
    # package 0 holds CPUs 0,2,4,6 with core ids 0,2,1,3: units (0,4) and (2,6), likewise 1
    for unit in ((0, 4), (2, 6), (1, 5), (3, 7)):
        ids = {(topo / f"cpu{c}/topology/core_id").read_text().strip() for c in unit}
        assert len(ids) == 2  # the real tree gives the two cores of a unit their own ids
        for cpu in unit:
            (topo / f"cpu{cpu}/topology/thread_siblings_list").write_text(
                f"{unit[0]},{unit[1]}\n")
            (topo / f"cpu{cpu}/topology/thread_siblings").write_text(
                f"{(1 << unit[0]) | (1 << unit[1]):08x}\n")
    cpu = CpuCollector().collect(context(tree))
    assert (cpu.sockets, cpu.cores, cpu.threads_per_core) == (2, 8, 1)


# -- partial or gathered trees --------------------------------------------------------------------

def test_cpu_offline_without_cpu_online(host_tree, tmp_path: Path) -> None:
    tree = Path(shutil.copytree(host_tree("2i386-2t-hugepagesizecount"), tmp_path / "t",
                                symlinks=True))
    (tree / "sys/devices/system/cpu/online").unlink()
    for cpu in (0, 1):  # without cpu/online, the per-CPU online files would answer
        (tree / f"sys/devices/system/cpu/cpu{cpu}/online").unlink(missing_ok=True)
    facts = CpuCollector().collect(context(tree))
    assert facts.online == [0, 1]  # present 0-1 less offline 2-7
    assert "offline" in facts.sources["online"]


def test_cpufreq_per_cpu_without_policy_directories(host_tree, tmp_path: Path) -> None:
    """GB10 with cpufreq/policyN gone (a gather that kept cpuN/cpufreq as directories)."""
    tree = Path(shutil.copytree(host_tree("nvidia-dgx-gb10"), tmp_path / "t", symlinks=True))
    base = tree / "sys/devices/system/cpu"
    for cpu in range(20):
        link = base / f"cpu{cpu}/cpufreq"
        policy = link.resolve()
        link.unlink()
        shutil.copytree(policy, link, symlinks=True)
    shutil.rmtree(base / "cpufreq")
    cpu = CpuCollector().collect(context(tree))
    assert cpu.frequency_driver == "cppc_cpufreq"
    assert [(f.cpus, f.max_khz) for f in cpu.freq_limits] == [("0-4,10-14", 2808000),
                                                             ("5-9,15-19", 3900000)]


def test_per_node_hugepages_from_node_meminfo(host_tree) -> None:
    """POWER7 gather: no nodeN/hugepages, but nodeN/meminfo has HugePages_* and /proc/meminfo
    Hugepagesize 16384 kB."""
    numa = NumaCollector().collect(context(host_tree("256ppc-8n8s4t")))
    assert [n.hugepages for n in numa.nodes] == [{"16384": {"total": 0, "free": 0}}] * 8


def test_a_nic_with_a_class_link_into_pci_but_no_device_link_is_not_virtual(
        host_tree, tmp_path: Path) -> None:
    tree = Path(shutil.copytree(host_tree("32em64t-2n8c+dax+nvme+mic+dimms"), tmp_path / "t",
                                symlinks=True))
    (tree / "sys/devices/pci0000:00/0000:00:01.1/0000:02:00.0/net/eth0/device").unlink()
    nics = {i.name: i for i in NicCollector().collect(context(tree)).interfaces}
    assert (nics["eth0"].virtual, nics["eth0"].pci_address) == (False, "0000:02:00.0")
    assert nics["br0"].virtual and nics["eth0.1015"].virtual


# -- CPU frequency limits per CPU set, core kinds, thermal throttling ------------------------------

def test_gb10_frequency_limits_and_core_kinds_per_cpu_set(host_tree) -> None:
    cpu = CpuCollector().collect(context(host_tree("nvidia-dgx-gb10")))
    assert [(f.cpus, f.min_khz, f.max_khz, f.cpuinfo_max_khz) for f in cpu.freq_limits] == [
        ("0-4,10-14", 338000, 2808000, 2808000), ("5-9,15-19", 1378000, 3900000, 3900000)]
    # hwloc's cpukinds give the same two frequencies; it splits them further by Linux capacity
    assert [(k.name, k.cpus, k.cpuinfo_max_freq_khz) for k in cpu.kinds] == [
        ("Cortex-A725", "0-4,10-14", 2808000), ("Cortex-X925", "5-9,15-19", 3900000)]


def test_thermal_throttle_counts(host_tree) -> None:
    throttle = CpuCollector().collect(context(host_tree("40intel64-2g2n4c+pcilocality")))
    assert throttle.thermal_throttle is not None
    assert (throttle.thermal_throttle.core_events, throttle.thermal_throttle.cpus_throttled) == (
        237, "13")
    old = CpuCollector().collect(context(host_tree("16em64t-4s2c2t-offlines")))  # `count` files
    assert old.thermal_throttle is not None and old.thermal_throttle.core_events == 0


# -- network interfaces: bonds, regular files, flaps, SR-IOV --------------------------------------

def test_bonding_masters_is_no_interface_and_bonds_list_their_slaves(tmp_path: Path) -> None:
    """Values of prometheus/node_exporter's fixtures: bonding_masters "bond0 dmz int", the
    slaves of dmz "eth0 eth4"."""
    write_tree(tmp_path, {"/sys/class/net/bonding_masters": "bond0 dmz int\n",
                          "/sys/devices/virtual/net/dmz/bonding/slaves": "eth0 eth4\n",
                          "/sys/devices/virtual/net/dmz/bonding/mode": "active-backup 1\n",
                          "/sys/devices/virtual/net/dmz/carrier_changes": "2\n",
                          "/sys/devices/virtual/net/dmz/operstate": "up\n"})
    (tmp_path / "sys/class/net/dmz").symlink_to("/sys/devices/virtual/net/dmz")  # as in a chroot
    nics = NicCollector().collect(context(tmp_path)).interfaces
    assert [(n.name, n.bond_slaves, n.bond_mode, n.carrier_changes) for n in nics] == [
        ("dmz", ["eth0", "eth4"], "active-backup", 2)]


# -- InfiniBand: counters, LIDs, GUIDs ------------------------------------------------------------

def _ib_root(tmp_path: Path) -> Path:
    with tarfile.open(FIXTURES / "rdma/h100x8-sys-class-infiniband.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    (tmp_path / "root/sys/class").mkdir(parents=True)
    (tmp_path / "x/sys-class-infiniband-h100.0").rename(tmp_path / "root/sys/class/infiniband")
    return tmp_path / "root"


def test_ib_port_counters_of_a_real_h100_node(tmp_path: Path) -> None:
    root = _ib_root(tmp_path)
    devices = {d.name: d for d in RdmaCollector().collect(context(root)).devices}
    port = devices["mlx5_0"].ports[0]
    counters = root / "sys/class/infiniband/mlx5_0/ports/1"
    assert port.counters["link_downed"] == int((counters / "counters/link_downed").read_text())
    assert port.counters["port_xmit_data"] == int(
        (counters / "counters/port_xmit_data").read_text())
    assert port.hw_counters["out_of_buffer"] == int(
        (counters / "hw_counters/out_of_buffer").read_text())
    assert len(port.counters) == len(list((counters / "counters").iterdir()))


def test_ib_lids_and_guids_as_ibstat_prints_them(tmp_path: Path) -> None:
    """mlx5_0 of tests/fixtures/rdma/h100x8-ibstat-some-down.txt, written as sysfs writes it:
    Base lid 75, SM lid 334, LMC 0, Node GUID and Port GUID 0x946dae0300cde72c."""
    ibstat = (FIXTURES / "rdma/h100x8-ibstat-some-down.txt").read_text()
    assert "Base lid: 75" in ibstat and "SM lid: 334" in ibstat
    port = "/sys/class/infiniband/mlx5_0/ports/1"
    write_tree(tmp_path, {"/sys/class/infiniband/mlx5_0/node_guid": "946d:ae03:00cd:e72c\n",
                          f"{port}/lid": "0x4b\n", f"{port}/sm_lid": "0x14e\n",
                          f"{port}/lid_mask_count": "0\n", f"{port}/state": "4: ACTIVE\n",
                          f"{port}/gids/0": "fe80:0000:0000:0000:946d:ae03:00cd:e72c\n"})
    device = RdmaCollector().collect(context(tmp_path)).devices[0]
    assert device.node_guid == "0x946dae0300cde72c"
    p = device.ports[0]
    assert (p.lid, p.sm_lid, p.lmc, p.port_guid) == (75, 334, 0, "0x946dae0300cde72c")
    assert f"Node GUID: {device.node_guid}" in ibstat
    assert parse_guid("not a guid") is None and port_guid_of_gid("fe80::1") is None
