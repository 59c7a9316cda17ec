"""The topology matrix: synthetic DGX H100 and GB200 trees against the nvidia-smi references,
real VM trees against the `nvidia-smi topo -m` captured on them, and hand-built facts."""
# ruff: noqa: E501  (the reference tables keep the tab-separated lines nvidia-smi prints)

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from nodetune.facts.topology import build_topology, class_rank, format_cpus
from nodetune.node.source import open_node

TOPO_COLLECTORS = ("cpu", "numa", "memory", "pci", "gpu", "nic", "rdma", "storage")
NVML = Path(__file__).parent / "fixtures" / "nvml"

# tests/fixtures/README.md "Reference for synthetic trees" (sgl-project/sglang issue
# 30401): GPU0-3 on NUMA 0 (CPUs 0-47,96-143), GPU4-7 on NUMA 1 (CPUs 48-95,144-191), every
# GPU pair NV18, GPUi-NICi PIX, other NICs of the socket NODE, across sockets SYS.
DGX_H100_REFERENCE = """
\tGPU0\tGPU1\tGPU2\tGPU3\tGPU4\tGPU5\tGPU6\tGPU7\tNIC0\tNIC1\tNIC2\tNIC3\tNIC4\tNIC5\tNIC6\tNIC7\tCPU Affinity\tNUMA Affinity
GPU0\t X \tNV18\tNV18\tNV18\tNV18\tNV18\tNV18\tNV18\tPIX\tNODE\tNODE\tNODE\tSYS\tSYS\tSYS\tSYS\t0-47,96-143\t0
GPU1\tNV18\t X \tNV18\tNV18\tNV18\tNV18\tNV18\tNV18\tNODE\tPIX\tNODE\tNODE\tSYS\tSYS\tSYS\tSYS\t0-47,96-143\t0
GPU2\tNV18\tNV18\t X \tNV18\tNV18\tNV18\tNV18\tNV18\tNODE\tNODE\tPIX\tNODE\tSYS\tSYS\tSYS\tSYS\t0-47,96-143\t0
GPU3\tNV18\tNV18\tNV18\t X \tNV18\tNV18\tNV18\tNV18\tNODE\tNODE\tNODE\tPIX\tSYS\tSYS\tSYS\tSYS\t0-47,96-143\t0
GPU4\tNV18\tNV18\tNV18\tNV18\t X \tNV18\tNV18\tNV18\tSYS\tSYS\tSYS\tSYS\tPIX\tNODE\tNODE\tNODE\t48-95,144-191\t1
GPU5\tNV18\tNV18\tNV18\tNV18\tNV18\t X \tNV18\tNV18\tSYS\tSYS\tSYS\tSYS\tNODE\tPIX\tNODE\tNODE\t48-95,144-191\t1
GPU6\tNV18\tNV18\tNV18\tNV18\tNV18\tNV18\t X \tNV18\tSYS\tSYS\tSYS\tSYS\tNODE\tNODE\tPIX\tNODE\t48-95,144-191\t1
GPU7\tNV18\tNV18\tNV18\tNV18\tNV18\tNV18\tNV18\t X \tSYS\tSYS\tSYS\tSYS\tNODE\tNODE\tNODE\tPIX\t48-95,144-191\t1
"""

# A real GB200 compute tray's `nvidia-smi topo -m` (sgl-project/sglang issue 11208). Its NUMA
# Affinity column also lists the GPUs' memory-less partition nodes ("0,3-9,11-17"); nodetune
# shows the CPU node, so that column holds the CPU node here.
GB200_REFERENCE = """
\tGPU0\tGPU1\tGPU2\tGPU3\tNIC0\tNIC1\tNIC2\tNIC3\tNIC4\tNIC5\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID
GPU0\t X \tNV18\tNV18\tNV18\tSYS\tSYS\tSYS\tSYS\tSYS\tSYS\t0-71\t0\t2
GPU1\tNV18\t X \tNV18\tNV18\tSYS\tSYS\tSYS\tSYS\tSYS\tSYS\t0-71\t0\t10
GPU2\tNV18\tNV18\t X \tNV18\tSYS\tSYS\tSYS\tSYS\tSYS\tSYS\t72-143\t1\t18
GPU3\tNV18\tNV18\tNV18\t X \tSYS\tSYS\tSYS\tSYS\tSYS\tSYS\t72-143\t1\t26
"""


def parse_topo_m(text: str) -> dict[str, dict[str, str]]:
    """`nvidia-smi topo -m` text -> {row: {column: cell}} (GPU and NIC rows)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header_at = next(i for i, ln in enumerate(lines) if "CPU Affinity" in ln)
    columns = [c.strip() for c in lines[header_at].split("\t") if c.strip()]
    table: dict[str, dict[str, str]] = {}
    for line in lines[header_at + 1:]:
        cells = [c.strip() for c in line.split("\t")]
        if not re.fullmatch(r"(GPU|NIC)\d+", cells[0]):
            break
        table[cells[0]] = dict(zip(columns, [c for c in cells[1:]], strict=False))
    return table


def facts_of(root: Path, nvml: Path | str) -> dict[str, Any]:
    with open_node(root=str(root), nvml=str(nvml)) as node:
        return node.facts(TOPO_COLLECTORS).to_json()


def assert_matches_reference(topo: Any, reference: str) -> None:
    expected = parse_topo_m(reference)
    for row, cells in expected.items():
        device = topo.device(row)
        for column, value in cells.items():
            if column == "CPU Affinity":
                assert format_cpus(device.cpus) == value, row
            elif column == "NUMA Affinity":
                assert str(device.numa_node) == value, row
            elif column == "GPU NUMA ID":
                assert str(device.gpu_numa_id if device.gpu_numa_id is not None else "N/A") \
                    == value, row
            else:
                assert topo.cell(row, column) == value, (row, column)
                assert topo.cell(column, row) == value, (column, row)


# -- synthetic trees against their references ------------------------------------------------
def test_dgx_h100_matrix_is_the_reference_cell_by_cell(synthetic_host) -> None:
    host = synthetic_host("synthetic-dgx-h100")
    topo = build_topology(facts_of(host.root, host.nvml))
    assert [d.name for d in topo.of_kind("gpu")] == [f"GPU{i}" for i in range(8)]
    assert [d.label for d in topo.of_kind("nic")] == ["mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5",
                                                      "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"]
    assert_matches_reference(topo, DGX_H100_REFERENCE)
    # NICs among themselves, and the NVMe drives of the documented layout
    for a in topo.of_kind("nic"):
        for b in topo.of_kind("nic"):
            want = "X" if a is b else "NODE" if a.numa_node == b.numa_node else "SYS"
            assert topo.cell(a.name, b.name) == want
    nvme = {d.label: d.name for d in topo.of_kind("nvme")}
    assert topo.cell("GPU0", nvme["nvme2n1"]) == "PIX"
    assert topo.cell("GPU7", nvme["nvme9n1"]) == "PIX"
    assert topo.cell(nvme["nvme0n1"], nvme["nvme1n1"]) == "PHB"
    assert topo.cell("GPU0", nvme["nvme0n1"]) == "NODE"
    assert topo.cell("GPU4", nvme["nvme0n1"]) == "SYS"
    assert "eno3" in " ".join(topo.notes)  # the management NIC has no RDMA: left out
    for i in range(8):
        assert topo.nearest_nic(i).name == f"NIC{i}"
        assert topo.gpu_cpus(i) == host.cpus_by_node[i // 4]
        assert topo.numa_of(f"GPU{i}") == i // 4


def test_gb200_tray_matrix_is_the_reference_cell_by_cell(synthetic_host) -> None:
    host = synthetic_host("synthetic-gb200-tray")
    facts = facts_of(host.root, host.nvml)
    assert len(facts["numa"]["nodes"]) == 34
    topo = build_topology(facts)
    assert_matches_reference(topo, GB200_REFERENCE)
    for a in topo.of_kind("nic"):
        for b in topo.of_kind("nic"):
            want = "X" if a is b else "NODE" if a.numa_node == b.numa_node else "SYS"
            assert topo.cell(a.name, b.name) == want
    # all NICs are SYS to a GPU: the nearest is one on the GPU's own CPU node
    assert topo.nearest_nic(0).numa_node == 0 and topo.nearest_nic(3).numa_node == 1
    memory_of = {n["id"]: n["gpu_memory_of"] for n in topo.to_json()["numa"]}
    assert (memory_of[2], memory_of[10], memory_of[18], memory_of[26]) == \
        ("GPU0", "GPU1", "GPU2", "GPU3")


def test_gb200_without_gpu_numa_nodes_falls_back_to_pcie_classes(synth, synth_tmp) -> None:
    host = synth.build_gb200_tray(synth_tmp, synth.Options(gpu_numa_nodes=False))
    topo = build_topology(facts_of(host.root, host.nvml))
    assert all(d.gpu_numa_id is None for d in topo.devices)
    assert topo.cell("GPU0", "NIC0") == "NODE" and topo.cell("GPU0", "NIC3") == "SYS"


def test_planted_faults_change_the_matrix(synth, synth_tmp) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(
        nic_on_wrong_socket=(0,), missing_gpus=(3,), gpu_link_width={1: 8}, nvlink_down={5: 2}))
    topo = build_topology(facts_of(host.root, host.nvml))
    gpus = topo.of_kind("gpu")
    assert len(gpus) == 7 and gpus[3].pci_address == "0000:9d:00.0"  # NVML renumbers
    mlx5_0 = topo.device("mlx5_0")
    assert mlx5_0.numa_node == 1 and topo.cell("GPU0", mlx5_0.name) == "SYS"
    assert topo.cell(topo.nearest_nic(0).name, "GPU0") == "NODE"
    assert gpus[1].link["current_width"] == 8 and gpus[1].link["max_width"] == 16
    # GPU5 (now GPU4) has 16 active NVSwitch links: NV16 to every other GPU
    assert topo.cell("GPU4", "GPU0") == "NV16" and topo.cell("GPU0", "GPU1") == "NV18"


# -- real trees against nvidia-smi on the same machine -----------------------------------------
def test_h200_vm_matches_its_nvidia_smi_topo(host_tree) -> None:
    tree = host_tree("h200x2-vm-gather")
    truth = parse_topo_m((tree / "cmd" / "nvidia-smi_topo_m.txt").read_text())
    topo = build_topology(facts_of(tree, NVML / "h200x2-vm.json"))
    assert truth["GPU0"]["GPU1"] == "NV18"
    for row, cells in truth.items():
        for column, value in cells.items():
            if re.fullmatch(r"GPU\d+", column):
                assert topo.cell(row, column) == value
        assert format_cpus(topo.device(row).cpus) == cells["CPU Affinity"]
        assert str(topo.numa_of(row)) == cells["NUMA Affinity"]
    # every numa_node is -1 and the tree has no parent links: said so, classes by NUMA only
    notes = " ".join(topo.notes)
    assert "plain directories" in notes and "one NUMA node" in notes
    assert topo.cell("GPU0", "NIC0") == "NODE"


def test_h100_vm_matches_its_nvidia_smi_topo(host_tree) -> None:
    tree = host_tree("h100x2-fc-vm-gather")
    commands = next(tree.rglob("commands.txt")).read_text()
    section = commands.split("=== nvidia-smi topo -m", 1)[1].split("\n===", 1)[0]
    truth = parse_topo_m(section)
    topo = build_topology(facts_of(tree, NVML / "h100x2-fc-vm.json"))
    for row, cells in truth.items():
        assert topo.cell(row, "GPU0" if row == "GPU1" else "GPU1") == \
            cells["GPU0" if row == "GPU1" else "GPU1"]
        assert format_cpus(topo.gpu_cpus(int(row[3:]))) == cells["CPU Affinity"]
        assert str(topo.numa_of(row)) == cells["NUMA Affinity"]
    # this tree keeps its sysfs links: both GPUs hang off one host bridge
    assert topo.device("GPU0").host_bridge == "pci0000:00"
    without_nvml = build_topology(facts_of(tree, "off"))
    assert without_nvml.cell("GPU0", "GPU1") == "PHB"


def test_pcilocality_tree_places_nics_by_sysfs(host_tree) -> None:
    facts = facts_of(host_tree("40intel64-2g2n4c+pcilocality"), "off")
    topo = build_topology(facts)
    (qib,) = topo.of_kind("nic")  # the only RDMA device; the Broadcom NICs are left out
    assert (qib.label, qib.pci_address, qib.numa_node) == ("qib0", "0000:43:00.0", 2)
    assert topo.numa_of("qib0") == 2 and "left out" in topo.notes[0]
    del facts["rdma"]  # without RDMA facts every network function is a NIC
    topo = build_topology(facts)
    bnx2 = [d for d in topo.of_kind("nic") if d.pci_address.startswith("0000:0")]
    assert len(bnx2) == 4 and all(d.numa_node is None for d in bnx2)  # -1 on a 4-node host
    assert topo.cell(bnx2[0].name, bnx2[1].name) == "PIX"  # two functions of one device
    assert topo.cell(bnx2[0].name, bnx2[2].name) == "PHB"  # two root ports of pci0000:00
    assert topo.cell(bnx2[0].name, topo.device("0000:43:00.0").name) == "SYS"
    assert any("NUMA node unknown" in n for n in topo.notes)


# -- hand-built facts --------------------------------------------------------------------------
def _pci(address: str, kind: str, path: list[str], host_bridge: str | None = "pci0000:00",
         numa: int | None = 0, switch: str | None = None, cpus: list[int] | None = None,
         port_type: str | None = None) -> dict[str, Any]:
    return {"address": address, "class": "0x060400" if kind == "bridge" else "0x020000",
            "kind": kind, "numa_node": numa, "local_cpus": cpus, "path": path,
            "parent": path[-1] if path else None, "root_port": path[0] if path else None,
            "switch": switch, "host_bridge": host_bridge, "port_type": port_type,
            "driver": None, "link": None}


def _facts(devices: list[dict[str, Any]], nodes: dict[int, list[int]] | None = None,
           **extra: Any) -> dict[str, Any]:
    nodes = nodes if nodes is not None else {0: [0, 1, 2, 3]}
    return {"numa": {"nodes": [{"id": n, "cpus": c, "has_cpus": bool(c)}
                               for n, c in nodes.items()]},
            "pci": {"devices": devices}, **extra}


def test_nested_switches_give_pxb_and_one_host_bridge_phb() -> None:
    rp, usp, dsp1, dsp2 = "0000:00:01.0", "0000:01:00.0", "0000:02:00.0", "0000:02:01.0"
    usp2, dsp3 = "0000:03:00.0", "0000:04:00.0"
    facts = _facts([
        _pci(rp, "bridge", []), _pci(usp, "bridge", [rp]),
        _pci(dsp1, "bridge", [rp, usp], switch=usp), _pci(dsp2, "bridge", [rp, usp], switch=usp),
        _pci(usp2, "bridge", [rp, usp, dsp2], switch=usp),
        _pci(dsp3, "bridge", [rp, usp, dsp2, usp2], switch=usp2),
        _pci("0000:05:00.0", "nic", [rp, usp, dsp1], switch=usp),
        _pci("0000:06:00.0", "nic", [rp, usp, dsp2, usp2, dsp3], switch=usp2),
        _pci("0000:06:00.1", "nic", [rp, usp, dsp2, usp2, dsp3], switch=usp2),
        _pci("0000:00:03.0", "nic", []),  # on the root bus of the same host bridge
    ])
    topo = build_topology(facts)
    names = {d.pci_address: d.name for d in topo.devices}
    assert topo.cell(names["0000:05:00.0"], names["0000:06:00.0"]) == "PXB"
    assert topo.cell(names["0000:06:00.0"], names["0000:06:00.1"]) == "PIX"
    assert topo.cell(names["0000:05:00.0"], names["0000:00:03.0"]) == "PHB"
    assert not topo.notes


def test_numa_from_local_cpus_when_sysfs_says_minus_one() -> None:
    facts = _facts([
        _pci("0000:17:00.0", "nic", ["0000:16:01.0"], "pci0000:16", None, cpus=[4, 5, 6, 7]),
        _pci("0000:98:00.0", "nic", ["0000:97:01.0"], "pci0000:97", None,
             cpus=[0, 1, 2, 3, 4, 5, 6, 7]),
        _pci("0000:30:00.0", "nic", ["0000:2f:01.0"], "pci0000:2f", 1),
    ], nodes={0: [0, 1, 2, 3], 1: [4, 5, 6, 7]})
    topo = build_topology(facts)
    inferred, unknown, known = topo.device("0000:17:00.0"), topo.device("0000:98:00.0"), \
        topo.device("0000:30:00.0")
    assert (inferred.numa_node, inferred.numa_source) == (1, "local_cpus")
    assert unknown.numa_node is None
    assert topo.cell(inferred.name, known.name) == "NODE"
    assert topo.cell(unknown.name, known.name) == "SYS"
    notes = " ".join(topo.notes)
    assert "local CPU list" in notes and "NUMA node unknown" in notes


def test_nvlink_counts_direct_links_and_switch_links() -> None:
    gpus = [{"index": i, "pci_address": f"0000:0{i}:00.0", "numa_node": 0, "local_cpus": None,
             "nvlink": {"links": [], "peers": {}}} for i in range(3)]
    # GPU0-GPU1: 4 direct links (reported by both ends); GPU2 has none
    for a, b in ((0, 1), (1, 0)):
        gpus[a]["nvlink"]["links"] = [{"link": k, "active": True, "peer_kind": "gpu",
                                       "peer_pci_address": f"0000:0{b}:00.0"} for k in range(4)]
    pci = [_pci(f"0000:0{i}:00.0", "gpu", [f"0000:00:0{i}.0"]) for i in range(3)]
    topo = build_topology(_facts(pci, gpus=gpus))
    assert topo.cell("GPU0", "GPU1") == "NV4" and topo.cell("GPU1", "GPU0") == "NV4"
    assert topo.cell("GPU0", "GPU2") == "PHB"
    # NVML's peer counts win over counting links
    gpus[0]["nvlink"]["peers"] = {"00000000:02:00.0": 12}
    topo = build_topology(_facts(pci, gpus=gpus))
    assert topo.cell("GPU0", "GPU2") == "NV12" and topo.cell("GPU2", "GPU0") == "NV12"
    # NVSwitch: the links both GPUs have
    for g, n in zip(gpus, (18, 18, 16), strict=True):
        g["nvlink"] = {"links": [{"link": k, "active": True, "peer_kind": "switch",
                                  "peer_pci_address": None} for k in range(n)], "peers": {}}
    topo = build_topology(_facts(pci, gpus=gpus))
    assert topo.cell("GPU0", "GPU1") == "NV18" and topo.cell("GPU0", "GPU2") == "NV16"


def test_nic_choice_labels_and_api() -> None:
    pci = [_pci("0000:01:00.0", "infiniband", ["0000:00:01.0"]),
           _pci("0000:02:00.0", "nic", ["0000:00:02.0"]),
           _pci("0000:03:00.0", "nvme", ["0000:00:03.0"])]
    pci[2]["class"] = "0x010802"
    facts = _facts(pci, rdma={"devices": [{"name": "mlx5_0", "pci_address": "0000:01:00.0"}]},
                   nic={"interfaces": [{"name": "eno1", "pci_address": "0000:02:00.0"}]},
                   storage={"block": [{"name": "nvme0n1", "kind": "nvme",
                                       "pci_address": "0000:03:00.0"}]})
    topo = build_topology(facts)
    assert [(d.name, d.label) for d in topo.devices] == [("NIC0", "mlx5_0"),
                                                         ("NVME0", "nvme0n1")]
    assert "eno1" in topo.notes[0]
    assert topo.device("nvme0n1").name == "NVME0" and topo.numa_of("mlx5_0") == 0
    with pytest.raises(KeyError):
        topo.device("GPU9")
    del facts["rdma"]
    topo = build_topology(facts)
    # without RDMA facts every network function is a NIC, named by its netdev when known
    assert [d.label for d in topo.of_kind("nic")] == ["0000:01:00.0", "eno1"]
    assert class_rank("NV18") < class_rank("PIX") < class_rank("SYS")


def test_missing_sections_do_not_crash() -> None:
    topo = build_topology({"cpu": {"online": [0, 1]}})
    assert topo.devices == [] and topo.numa[0]["cpus"] == [0, 1]
    assert any("no PCI facts" in n for n in topo.notes)
    doc = topo.to_json()
    assert set(doc) >= {"devices", "matrix", "numa", "notes"}


def test_gpu_invisible_to_nvml_is_numbered_after_the_others() -> None:
    pci = [_pci(f"0000:0{i}:00.0", "gpu", [f"0000:00:0{i}.0"]) for i in range(3)]
    gpus = [{"index": None, "pci_address": "0000:01:00.0"},
            {"index": 1, "pci_address": "0000:02:00.0"},
            {"index": 0, "pci_address": "0000:00:00.0"}]
    topo = build_topology(_facts(pci, gpus=gpus))
    assert [(d.name, d.pci_address) for d in topo.devices] == [
        ("GPU0", "0000:00:00.0"), ("GPU1", "0000:02:00.0"), ("GPU2", "0000:01:00.0")]
    assert "GPU2 (0000:01:00.0) is not visible to NVML" in topo.notes[0]

