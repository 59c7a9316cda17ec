"""hwloc XML (`lstopo --of xml`) as a topology source: `--from FILE.xml` gives the topology facts
the host tree itself gives. The XMLs are written by hwloc's own lstopo from the real trees of
tests/fixtures/hosts (hwloc's test-suite trees and the H100/H200 captures), and from this
machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodetune.node.hwloc_xml import parse_bitmap, tree_from_xml
from tests.conftest import real_tree_names

LSTOPO = shutil.which("lstopo-no-graphics") or shutil.which("lstopo")
needs_lstopo = pytest.mark.skipif(LSTOPO is None, reason="hwloc's lstopo is not installed "
                                                         "(apt-get install hwloc)")


def nodetune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodetune", *args], capture_output=True,
                          text=True, check=False, timeout=120)


def facts(*args: str) -> dict:
    proc = nodetune("facts", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def lstopo_xml(tmp_path: Path, tree: Path | None) -> Path:
    out = tmp_path / "topology.xml"
    args = [str(LSTOPO), "--of", "xml"] + (["--input", str(tree)] if tree else [])
    with out.open("w") as fh:
        subprocess.run(args, stdout=fh, stderr=subprocess.DEVNULL, check=True, timeout=120)
    return out


def pci_ids(doc: dict) -> dict[str, tuple[str, str, str]]:
    """address -> (class without prog-if, vendor, device): hwloc keeps no programming interface."""
    return {d["address"]: (str(d.get("class"))[:6], d.get("vendor"), d.get("device"))
            for d in (doc.get("pci") or {}).get("devices") or []}


def names(doc: dict, section: str, key: str) -> set[str]:
    return {str(i["name"]) for i in (doc.get(section) or {}).get(key) or []}


@needs_lstopo
@pytest.mark.parametrize("name", real_tree_names())
def test_xml_of_a_real_tree_gives_its_topology(name: str, host_tree, tmp_path: Path) -> None:
    tree = host_tree(name)
    from_tree = facts("--root", str(tree), "--nvml", "off")
    from_xml = facts("--from", str(lstopo_xml(tmp_path, tree)))
    for key in ("online", "sockets", "cores", "threads_per_core"):
        assert from_xml["cpu"][key] == from_tree["cpu"][key], key
    assert [(n["id"], n["cpus"]) for n in from_xml["numa"]["nodes"]] == \
        [(n["id"], n["cpus"]) for n in from_tree["numa"]["nodes"]]
    xml_pci, tree_pci = pci_ids(from_xml), pci_ids(from_tree)
    # lstopo keeps the devices that matter (GPUs, NICs, storage) and the bridges above them
    assert {a: tree_pci.get(a) for a in xml_pci} == xml_pci
    assert [g["pci_address"] for g in from_xml["gpus"]] == \
        [g["pci_address"] for g in from_tree["gpus"]]
    assert names(from_xml, "nic", "interfaces") <= names(from_tree, "nic", "interfaces")
    assert names(from_xml, "rdma", "devices") <= names(from_tree, "rdma", "devices")
    assert names(from_xml, "storage", "block") <= names(from_tree, "storage", "block")


@needs_lstopo
def test_xml_of_this_machine_agrees_with_the_live_facts(tmp_path: Path) -> None:
    live = facts("--nvml", "off")
    from_xml = facts("--from", str(lstopo_xml(tmp_path, None)))
    assert from_xml["cpu"]["online"] == live["cpu"]["online"]
    assert from_xml["cpu"]["sockets"] == live["cpu"]["sockets"]
    assert [n["cpus"] for n in from_xml["numa"]["nodes"]] == \
        [n["cpus"] for n in live["numa"]["nodes"]]


@needs_lstopo
def test_topo_manifests_and_bind_plan_from_an_xml(host_tree, tmp_path: Path) -> None:
    """The 2x H200 VM: both GPUs and the NIC below one host bridge (PHB), no NVML in an XML."""
    xml = lstopo_xml(tmp_path, host_tree("h200x2-vm-gather"))
    topo = nodetune("topo", "--from", str(xml), "--json")
    assert topo.returncode == 0, topo.stderr
    doc = json.loads(topo.stdout)
    assert "PHB" in json.dumps(doc)
    for command in (("manifests", "--from", str(xml), "-o", str(tmp_path / "m")),
                    ("bind", "--from", str(xml), "--json")):
        proc = nodetune(*command)
        assert proc.returncode == 0, (command, proc.stderr)


@pytest.mark.parametrize("text, wanted", [("0x00000005", [0, 2]), ("0x1,0x0", [32]),
                                          ("0x1,,0x0", [64]), ("", []),
                                          ("0xf...f,0x00000003", [0, 1])])
def test_bitmaps_as_hwloc_writes_them(text: str, wanted: list[int]) -> None:
    """hwloc-calc --taskset 0x1,,0x0 prints 0x10000000000000000: an empty word is a zero word."""
    assert parse_bitmap(text) == wanted


@pytest.mark.parametrize("body, says", [
    (b"<?xml version='1.0'?><topology", "not well-formed XML"),
    (b"<?xml version='1.0'?><!DOCTYPE t [<!ENTITY a 'aaaa'>]><topology/>", "entities"),
    (b"<?xml version='1.0'?><topology version='2.0'><object type='Machine' "
     b"cpuset='0x1'/></topology>", "no PU objects"),
    (b"<?xml version='1.0'?><topology version='2.0'><object type='Machine' cpuset='0x1'>"
     b"<object type='PU' os_index='0' cpuset='zz'/></object></topology>", "bad hwloc bitmap"),
    (b"<?xml version='1.0'?><html/>", "not <topology>"),
])
def test_bad_xml_is_one_line_and_exit_3(tmp_path: Path, body: bytes, says: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_bytes(body)
    proc = nodetune("facts", "--from", str(path))
    assert proc.returncode == 3
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_tree_from_xml_places_pci_devices_and_os_devices() -> None:
    xml = b"""<?xml version="1.0"?><topology version="2.0">
 <object type="Machine" os_index="0" cpuset="0x0000000f" nodeset="0x00000003">
  <info name="DMIProductName" value="synthetic-hwloc-node"/>
  <object type="Package" os_index="0" cpuset="0x0000000f" nodeset="0x00000003">
   <object type="NUMANode" os_index="0" cpuset="0x00000003" nodeset="0x00000001"
           local_memory="1073741824"/>
   <object type="NUMANode" os_index="1" cpuset="0x0000000c" nodeset="0x00000002"
           local_memory="1073741824"/>
   <object type="Core" os_index="0" cpuset="0x00000003"><object type="PU" os_index="0"
    cpuset="0x00000001"/><object type="PU" os_index="1" cpuset="0x00000002"/></object>
   <object type="Core" os_index="1" cpuset="0x0000000c"><object type="PU" os_index="2"
    cpuset="0x00000004"/><object type="PU" os_index="3" cpuset="0x00000008"/></object>
   <object type="Group" cpuset="0x0000000c" nodeset="0x00000002">
    <object type="Bridge" bridge_type="0-1" depth="0" bridge_pci="0000:[17-1a]">
     <object type="Bridge" bridge_type="1-1" depth="1" bridge_pci="0000:[18-1a]"
             pci_busid="0000:17:01.0" pci_type="0604 [8086:352a] [0000:0000] 04">
      <object type="PCIDev" pci_busid="0000:18:00.0" pci_type="0302 [10de:2330] [10de:16c1] a1">
       <object type="OSDev" name="cuda0" osdev_type="5"/></object>
      <object type="PCIDev" pci_busid="0000:19:00.0" pci_type="0207 [15b3:1021] [15b3:0041] 00">
       <object type="OSDev" name="ibp25s0" osdev_type="2"/>
       <object type="OSDev" name="mlx5_0" osdev_type="3"><info name="Port1State" value="4"/>
       </object></object>
     </object></object></object></object></object></topology>"""
    tree = tree_from_xml(xml, "synthetic-hwloc-node.xml")
    gpu = "/sys/devices/pci0000:17/0000:17:01.0/0000:18:00.0"
    assert tree["files"][f"{gpu}/class"] == "0x030200\n"
    assert tree["files"][f"{gpu}/numa_node"] == "1\n"
    assert tree["files"][f"{gpu}/local_cpulist"] == "2-3\n"
    assert tree["links"]["/sys/bus/pci/devices/0000:18:00.0"] == \
        "../../../devices/pci0000:17/0000:17:01.0/0000:18:00.0"
    nic = "/sys/devices/pci0000:17/0000:17:01.0/0000:19:00.0"
    assert tree["links"]["/sys/class/net/ibp25s0"] == f"../..{nic[4:]}/net/ibp25s0"
    assert tree["files"][f"{nic}/infiniband/mlx5_0/ports/1/state"] == "4: ACTIVE\n"
    assert tree["files"]["/sys/devices/system/node/node1/cpulist"] == "2-3\n"
    assert tree["files"]["/sys/devices/system/cpu/cpu3/topology/thread_siblings_list"] == "2-3\n"
    assert tree["files"]["/sys/class/dmi/id/product_name"] == "synthetic-hwloc-node\n"
