"""cpu, numa and memory collectors against the real hwloc and GPU-VM trees and small tmp trees."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from nodetune.collectors.cpu import CpuCollector, identify, parse_boot_cpulist, parse_cpuinfo
from nodetune.collectors.memory import MemoryCollector, page_size_from_pmd
from nodetune.collectors.numa import NumaCollector, parse_meminfo
from nodetune.errors import CollectorError
from nodetune.facts import cpulist
from tests.host_trees import context, write_tree

HOSTS = Path(__file__).parent / "fixtures" / "hosts"


def _expected() -> list[dict[str, str]]:
    with open(HOSTS / "expected.tsv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))




@pytest.mark.parametrize("row", _expected(), ids=lambda r: r["tree"])
def test_real_tree_cpus_and_numa_nodes_match_expected(host_tree, row: dict[str, str]) -> None:
    tree = host_tree(row["tree"])
    cpu = CpuCollector().collect(context(tree))
    numa = NumaCollector().collect(context(tree))
    assert cpu.online == cpulist.parse(row["online_cpus"])
    assert len(cpu.cpus) == len(cpulist.parse(row["online_cpus"]))
    assert len(numa.nodes) == int(row["numa_nodes"])
    expected_nodes = {int(m.group(1)): cpulist.parse(m.group(2))
                      for m in re.finditer(r"N(\d+):(\S+)", row["node_cpulists"])}
    assert {n.id: n.cpus for n in numa.nodes} == expected_nodes
    # every online CPU is placed on the node that lists it
    placed = {c.id: c.numa_node for c in cpu.cpus}
    assert placed == {c: n for n, cpus in expected_nodes.items() for c in cpus}


def test_offline_cpus_without_online_file(host_tree) -> None:
    """16em64t has no cpu/online: cpu2/5/13/14 say online=0 in their own directories."""
    cpu = CpuCollector().collect(context(host_tree("16em64t-4s2c2t-offlines")))
    assert cpu.offline == [2, 5, 13, 14]
    assert cpu.sockets == 4
    assert cpu.threads_per_core == 2
    assert cpu.smt_active is True
    assert cpu.sources["online"].endswith("cpu*/online")


def test_cpufreq_and_cstates_of_32em64t(host_tree) -> None:
    cpu = CpuCollector().collect(context(host_tree("32em64t-2n8c+dax+nvme+mic+dimms")))
    assert (cpu.sockets, cpu.cores, cpu.threads_per_core) == (2, 16, 1)
    assert cpu.model_name == "Intel(R) Xeon(R) CPU E5-2680 0 @ 2.70GHz"
    assert cpu.frequency_driver == "acpi-cpufreq"
    assert cpu.governor == "performance"
    assert cpu.governors == {"performance": "0-15"}
    assert (cpu.min_freq_khz, cpu.max_freq_khz) == (1200000, 2701000)
    assert [(c.name, c.latency_us) for c in cpu.cstates] == [
        ("C0", 0), ("C1", 3), ("C2", 93), ("C3", 93)]
    assert cpu.cstates_enabled == ["C0", "C1", "C2", "C3"]
    assert cpu.cpuidle_driver == "acpi_idle"
    assert cpu.boost is None and "boost" in cpu.unknown


def test_numa_distances_memory_and_hugepages_of_32em64t(host_tree) -> None:
    numa = NumaCollector().collect(context(host_tree("32em64t-2n8c+dax+nvme+mic+dimms")))
    assert [n.distances for n in numa.nodes] == [[10, 21], [21, 10]]
    tree = host_tree("32em64t-2n8c+dax+nvme+mic+dimms")
    text = (tree / "sys/devices/system/node/node1/meminfo").read_text()
    kb = int(re.search(r"MemTotal:\s+(\d+) kB", text).group(1))
    assert numa.nodes[1].memory_total_bytes == kb * 1024
    assert numa.nodes[0].hugepages == {"2048": {"total": 0, "free": 0}}
    assert numa.balancing is None and "balancing" in numa.unknown


def test_power7_sparse_nodes_and_sockets_from_core_siblings(host_tree) -> None:
    tree = host_tree("256ppc-8n8s4t")
    cpu = CpuCollector().collect(context(tree))
    numa = NumaCollector().collect(context(tree))
    assert [n.id for n in numa.nodes] == [0, 1, 4, 5, 8, 9, 12, 13]
    assert numa.nodes[0].distances == [10, 20, 40, 40, 40, 40, 40, 40]
    assert cpu.architecture == "ppc64" and cpu.model_name == "POWER7 (architected)"
    assert (cpu.cores, cpu.threads_per_core) == (64, 4)
    # physical_package_id is -1; core_siblings (0-3, 4-7, ...) gives the packages, and
    # `lstopo-no-graphics --input 256ppc-8n8s4t` shows 64 of them
    assert cpu.sockets == 64 and "sockets" not in cpu.unknown


def test_arm_identities(host_tree) -> None:
    gb10 = CpuCollector().collect(context(host_tree("nvidia-dgx-gb10")))
    assert (gb10.architecture, gb10.vendor) == ("aarch64", "ARM")
    assert gb10.model_name == "Cortex-A725 / Cortex-X925"
    assert gb10.frequency_driver == "cppc_cpufreq"
    assert gb10.governor == "performance" and gb10.boost is False
    assert (gb10.min_freq_khz, gb10.max_freq_khz) == (338000, 3900000)
    kunpeng = CpuCollector().collect(context(host_tree("128arm-2pa2n8cluster4co")))
    assert (kunpeng.vendor, kunpeng.model_name, kunpeng.sockets) == ("HiSilicon", "Kunpeng-920", 2)


def test_hugepage_pools_with_16g_pages(host_tree) -> None:
    mem = MemoryCollector().collect(context(host_tree("2i386-2t-hugepagesizecount")))
    assert [(p.size_kb, p.total, p.free) for p in mem.hugepages] == [
        (2048, 1, 0), (16777216, 1, 0)]
    assert mem.default_hugepage_size_kb == 2048
    assert mem.page_size_bytes == 4096


def _lscpu(tree: Path) -> dict[str, str]:
    text = (tree / "cmd/lscpu.txt").read_text()
    return {k.strip(): v.strip() for k, _, v in
            (line.partition(":") for line in text.splitlines()) if v}


def test_h200_vm_matches_lscpu_and_numactl(host_tree) -> None:
    tree = host_tree("h200x2-vm-gather")
    cpu = CpuCollector().collect(context(tree))
    lscpu = _lscpu(tree)
    assert len(cpu.online) == int(lscpu["CPU(s)"])
    assert cpu.online == cpulist.parse(lscpu["On-line CPU(s) list"])
    assert cpu.sockets == int(lscpu["Socket(s)"])
    assert cpu.threads_per_core == int(lscpu["Thread(s) per core"])
    assert cpu.cores == int(lscpu["Core(s) per socket"]) * int(lscpu["Socket(s)"])
    assert cpu.model_name == lscpu["Model name"] and cpu.vendor == lscpu["Vendor ID"]
    assert cpu.architecture == lscpu["Architecture"]
    assert cpu.hypervisor is True
    assert cpu.frequency_driver is None and "no cpufreq driver" in cpu.unknown["frequency_driver"]
    numa = NumaCollector().collect(context(tree))
    numactl = (tree / "cmd/numactl_H.txt").read_text()
    size_mb = int(re.search(r"node 0 size: (\d+) MB", numactl).group(1))
    node_cpus = [int(c) for c in re.search(r"node 0 cpus: ([\d ]+)", numactl).group(1).split()]
    assert len(numa.nodes) == 1
    assert numa.nodes[0].cpus == node_cpus
    assert numa.nodes[0].memory_total_bytes // 2**20 == size_mb
    assert numa.nodes[0].distances == [10]
    assert numa.balancing == 0


def test_h200_vm_memory(host_tree) -> None:
    tree = host_tree("h200x2-vm-gather")
    mem = MemoryCollector().collect(context(tree))
    meminfo = parse_meminfo((tree / "proc/meminfo").read_text())
    assert mem.total_bytes == meminfo["MemTotal"] == 263998500 * 1024
    assert mem.thp.enabled == "madvise" and mem.thp.defrag == "madvise"
    assert mem.thp.size_bytes == 2 * 2**20
    assert mem.page_size_bytes == 4096  # derived from the 2 MiB PMD size
    assert mem.swap_total_bytes == 0
    assert (mem.swappiness, mem.zone_reclaim_mode) == (60, 0)
    assert [p.size_kb for p in mem.hugepages] == [2048, 1048576]


def test_h100_vm_matches_its_command_outputs(host_tree) -> None:
    tree = host_tree("h100x2-fc-vm-gather")
    text = (tree / "cmd/commands.txt").read_text()
    cpu = CpuCollector().collect(context(tree))
    assert len(cpu.online) == int(re.search(r"^CPU\(s\):\s+(\d+)", text, re.M).group(1))
    numa = NumaCollector().collect(context(tree))
    size_mb = int(re.search(r"node 0 size: (\d+) MB", text).group(1))
    assert numa.nodes[0].memory_total_bytes // 2**20 == size_mb
    mem = MemoryCollector().collect(context(tree))
    total_gib = int(re.search(r"^Mem:\s+(\d+)", text, re.M).group(1))
    assert mem.total_bytes // 2**30 == total_gib


def test_pure_parsers() -> None:
    blocks = parse_cpuinfo("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu lm hypervisor"
                           "\nmodel name\t: Xeon\n\nprocessor\t: 1\n")
    ident = identify(blocks)
    assert (ident.architecture, ident.vendor, ident.model_name, ident.hypervisor) == (
        "x86_64", "GenuineIntel", "Xeon", True)
    assert parse_boot_cpulist("ro isolcpus=domain,managed_irq,2-5,8 quiet", "isolcpus") == [
        2, 3, 4, 5, 8]
    assert parse_boot_cpulist("ro quiet", "nohz_full") is None
    assert page_size_from_pmd(2 * 2**20) == 4096
    assert page_size_from_pmd(512 * 2**20) == 65536
    assert page_size_from_pmd(32 * 2**20) == 16384
    assert parse_meminfo("Node 1 MemTotal:  100 kB\nNode 1 HugePages_Free:  3\n") == {
        "MemTotal": 102400, "HugePages_Free": 3}


def test_minimal_tree_without_online_or_node_files(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {f"sys/devices/system/cpu/cpu{i}/topology/core_id": str(i // 2)
                             for i in range(4)})
    write_tree(root, {f"sys/devices/system/cpu/cpu{i}/topology/thread_siblings_list":
                  f"{i - i % 2}-{i - i % 2 + 1}" for i in range(4)})
    write_tree(root, {"proc/meminfo": "MemTotal: 2048 kB\nMemFree: 1024 kB\n"})
    cpu = CpuCollector().collect(context(root))
    assert cpu.online == [0, 1, 2, 3]
    assert (cpu.cores, cpu.threads_per_core, cpu.smt_active) == (2, 2, True)
    assert cpu.governor is None and cpu.unknown["governor"].startswith("no cpufreq driver")
    numa = NumaCollector().collect(context(root))
    assert [(n.id, n.cpus, n.memory_total_bytes) for n in numa.nodes] == [
        (0, [0, 1, 2, 3], 2 * 2**20)]


def test_mixed_governors_across_policies(tmp_path: Path) -> None:
    base = "sys/devices/system/cpu"
    files = {f"{base}/online": "0-3"}
    for policy, (cpus, gov) in enumerate((("0 1", "performance"), ("2 3", "powersave"))):
        p = f"{base}/cpufreq/policy{policy * 2}"
        files |= {f"{p}/affected_cpus": cpus, f"{p}/scaling_governor": gov,
                  f"{p}/scaling_driver": "intel_pstate",
                  f"{p}/scaling_max_freq": str(3000000 + policy),
                  f"{p}/scaling_min_freq": "800000",
                  f"{p}/energy_performance_preference": "performance"}
    files[f"{base}/intel_pstate/no_turbo"] = "1"
    cpu = CpuCollector().collect(context(write_tree(tmp_path, files)))
    assert cpu.governor == "mixed"
    assert cpu.governors == {"performance": "0-1", "powersave": "2-3"}
    assert cpu.energy_performance_preference == "performance"
    assert cpu.boost is False  # intel_pstate/no_turbo = 1
    assert cpu.max_freq_khz == 3000001


def test_empty_tree_is_a_collector_error(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    with pytest.raises(CollectorError, match="online CPUs"):
        CpuCollector().collect(context(tmp_path))
    with pytest.raises(CollectorError, match="meminfo"):
        MemoryCollector().collect(context(tmp_path))


def test_cache_groups_of_a_real_tree(host_tree) -> None:
    """8em64t-2s2ca2c: each L2 is shared by two cores, CPUs i and i+4 (its sysfs says so)."""
    cpu = CpuCollector().collect(context(host_tree("8em64t-2s2ca2c")))
    assert [(g.level, g.cpus) for g in cpu.cache_groups] == [
        (2, [0, 4]), (2, [1, 5]), (2, [2, 6]), (2, [3, 7])]
    masks_only = CpuCollector().collect(context(host_tree("16em64t-4s2c2t-offlines")))
    assert masks_only.cache_groups and "cache_groups" in masks_only.sources  # shared_cpu_map


def test_cache_groups_outermost_first_each_group_read_once(tmp_path: Path) -> None:
    files = {"sys/devices/system/cpu/online": "0-3\n"}
    for cpu in range(4):
        base = f"sys/devices/system/cpu/cpu{cpu}/cache"
        files[f"{base}/index0/level"] = "1\n"
        files[f"{base}/index0/shared_cpu_list"] = f"{cpu}\n"
        files[f"{base}/index2/level"] = "2\n"
        files[f"{base}/index2/shared_cpu_list"] = "0-1\n" if cpu < 2 else "2-3\n"
        files[f"{base}/index3/level"] = "3\n"
        files[f"{base}/index3/shared_cpu_map"] = "0000000f\n"  # no list: an older kernel
    write_tree(tmp_path, files)
    ctx = context(tmp_path)
    ctx.root.recording = True
    cpu = CpuCollector().collect(ctx)
    assert [(g.level, g.cpus) for g in cpu.cache_groups] == [(3, [0, 1, 2, 3]), (2, [0, 1]),
                                                            (2, [2, 3])]
    lists = sorted(p for p in ctx.root.read_files if "/index2/shared_cpu_list" in p)
    assert lists == [f"/sys/devices/system/cpu/cpu{c}/cache/index2/shared_cpu_list"
                     for c in (0, 2)]
    empty = CpuCollector().collect(context(write_tree(tmp_path / "bare", {
        "sys/devices/system/cpu/online": "0\n"})))
    assert empty.cache_groups == [] and "shared_cpu_list" in empty.unknown["cache_groups"]
