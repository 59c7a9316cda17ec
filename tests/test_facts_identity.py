"""Facts operators compare across a fleet: VBIOS, DMI product and BIOS, OS release, clock source,
EDAC ECC counts, NVMe controllers, the GPU behind each CPU-less NUMA node, and PCIe AER on the
ports above a device. Real captures where one holds the fact; synthetic trees (named so) follow
the kernel's sysfs ABI where none does."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nodetune.collectors import Context
from nodetune.collectors.gpu import normalize_vbios
from nodetune.collectors.kernel import KernelCollector
from nodetune.collectors.memory import MemoryCollector
from nodetune.collectors.storage import StorageCollector
from nodetune.collectors.system import SystemCollector, parse_os_release
from nodetune.facts.derived import derive
from nodetune.node.hostroot import HostRoot
from nodetune.node.smi_text import convert
from tests.host_trees import context, write_tree
from tests.test_health import run_check

FIXTURES = Path(__file__).parent / "fixtures"


def facts_json(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "nodetune", "facts", "--json", *args],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# -- VBIOS ---------------------------------------------------------------------------------------

def test_vbios_comes_from_the_driver_file_without_nvml(host_tree) -> None:
    """The real 2x H200 VM: /proc/driver/nvidia/gpus/*/information says "96.00.a5.00.1a";
    nvidia-smi and NVML print it upper case, so fleet drift compares like with like."""
    doc = facts_json("--root", str(host_tree("h200x2-vm-gather")))
    gpus = doc["gpus"]
    assert [g["vbios_version"] for g in gpus] == ["96.00.A5.00.1A"] * 2
    assert "information" in doc["gpu"]["sources"]["gpus.*.vbios_version"]


def test_vbios_from_nvidia_smi_text_reaches_the_facts(tmp_path: Path) -> None:
    text = (FIXTURES / "nvidia" / "h100x8-nvidia-smi-q.txt").read_text()
    recording = convert(text, origin="h100x8-nvidia-smi-q.txt")
    assert {d["vbios_version"] for d in recording["devices"]} == {"95.02.18.C0.09"}


@pytest.mark.parametrize("raw, wanted", [("96.00.a5.00.1a", "96.00.A5.00.1A"),
                                         ("??.??.??.??.??", None), ("", None), (None, None)])
def test_vbios_normalisation(raw: str | None, wanted: str | None) -> None:
    assert normalize_vbios(raw) == wanted


def test_the_live_h200_capture_replays_its_identity_facts() -> None:
    """The snapshot taken on a real H200 node gives the facts `nodetune facts` printed live."""
    live = json.loads((FIXTURES / "snapshots" / "h200x1-fc-vm-2026-12-03-facts.json").read_text())
    replay = facts_json("--from", str(FIXTURES / "snapshots" / "h200x1-fc-vm-2026-12-03.tar.gz"))
    for doc in (live, replay):
        assert doc["system"]["os"] == {"id": "ubuntu", "version_id": "24.04",
                                       "pretty_name": "Ubuntu 24.04.3 LTS"}
        assert doc["kernel"]["clocksource"] == {"current": "tsc", "available": ["tsc", "kvm-clock"]}
        assert [g["vbios_version"] for g in doc["gpus"]] == ["96.00.A5.00.1A"]
    assert live["gpu"]["sources"]["gpus.*.vbios_version"].startswith("nvmlDeviceGetVbiosVersion")


def test_the_live_h200_capture_replays_its_gpudirect_path_facts() -> None:
    """A later capture of a real H200 node: the PCIe-path facts nodetune printed live (Relaxed
    Ordering on, no IOMMU groups in that VM, no peer-memory client) come back from its snapshot."""
    live = json.loads((FIXTURES / "snapshots" / "h200x1-fc-vm-2026-12-04-facts.json").read_text())
    replay = facts_json("--from", str(FIXTURES / "snapshots" / "h200x1-fc-vm-2026-12-04.tar.gz"))
    keys = ("address", "kind", "relaxed_ordering", "ats_enabled", "iommu_group", "iommu_domain",
            "max_read_request_bytes", "acs")
    for doc in (live, replay):
        gpu = next(d for d in doc["pci"]["devices"] if d["kind"] == "gpu")
        assert (gpu["relaxed_ordering"], gpu["iommu_group"]) == (True, None)
        assert doc["nvidia_driver"]["peer_memory_clients"] == []
    assert ([{k: d[k] for k in keys} for d in replay["pci"]["devices"]]
            == [{k: d[k] for k in keys} for d in live["pci"]["devices"]])
    assert replay["nvidia_driver"] == live["nvidia_driver"]


# -- DMI and OS release ----------------------------------------------------------------------

def test_dmi_of_a_real_server_and_its_placeholders(host_tree) -> None:
    """hwloc's 128-core Arm tree: a Huawei XA320 V2 whose product_version is the firmware's
    "To be filled by O.E.M." placeholder, which must be unknown, not a version."""
    root = HostRoot(str(host_tree("128arm-2pa2n8cluster4co")), recording=True)
    facts = SystemCollector().collect(Context(root=root))
    assert facts.dmi is not None
    assert (facts.dmi.sys_vendor, facts.dmi.product_name) == ("Huawei", "XA320 V2")
    assert (facts.dmi.bios_version, facts.dmi.bios_date) == ("0.86", "07/19/2019")
    assert facts.dmi.product_version is None
    assert "placeholder" in facts.unknown["dmi.product_version"]
    assert not [p for p in root.read_files if "serial" in p or "uuid" in p], \
        "serial numbers and UUIDs are never read"


def test_no_dmi_is_unknown_with_the_reason(host_tree) -> None:
    facts = SystemCollector().collect(context(host_tree("h200x2-vm-gather")))
    assert facts.dmi is None and "no /sys/class/dmi/id" in facts.unknown["dmi"]


def test_os_release_of_this_machine_agrees_with_the_shell() -> None:
    """The live host's /etc/os-release, read by nodetune and by sh's own `.`."""
    path = next((p for p in ("/etc/os-release", "/usr/lib/os-release") if os.path.exists(p)),
                None)
    if path is None:
        pytest.skip("this machine has no os-release")
    shell = subprocess.run(["sh", "-c", f". {shlex.quote(path)}; printf '%s\\n%s\\n%s' "
                                        "\"$ID\" \"$VERSION_ID\" \"$PRETTY_NAME\""],
                           capture_output=True, text=True, check=True).stdout.split("\n")
    os_facts = SystemCollector().collect(context("/")).os
    assert os_facts is not None
    assert [os_facts.id or "", os_facts.version_id or "", os_facts.pretty_name or ""] == shell


def test_os_release_parser_follows_shell_quoting() -> None:
    fields = parse_os_release('# comment\nID=ubuntu\nVERSION_ID="24.04"\n'
                              "PRETTY_NAME='Ubuntu 24.04.1 LTS'\nBROKEN\nQ=\"unterminated\n")
    assert fields == {"ID": "ubuntu", "VERSION_ID": "24.04", "PRETTY_NAME": "Ubuntu 24.04.1 LTS"}


# -- clock source ---------------------------------------------------------------------------------

def test_clocksource_of_this_machine() -> None:
    base = Path("/sys/devices/system/clocksource/clocksource0")
    if not base.is_dir():
        pytest.skip("no clocksource in this machine's sysfs")
    clock = KernelCollector().collect(context("/")).clocksource
    assert clock.current == (base / "current_clocksource").read_text().strip()
    assert clock.available == (base / "available_clocksource").read_text().split()


def test_clocksource_missing_from_a_gathered_tree_is_unknown(host_tree) -> None:
    facts = KernelCollector().collect(context(host_tree("128arm-2pa2n8cluster4co")))
    assert facts.clocksource.current is None
    assert "clocksource.current" in facts.unknown


# -- EDAC (synthetic, per Documentation/ABI/testing/sysfs-devices-edac) ---------------------------

def test_edac_counts_per_controller_and_in_total(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "synthetic-edac", {
        "/proc/meminfo": "MemTotal: 1000 kB\n",
        "/sys/devices/system/edac/mc/mc0/mc_name": "Skylake Socket#0 IMC#0",
        "/sys/devices/system/edac/mc/mc0/ce_count": "3",
        "/sys/devices/system/edac/mc/mc0/ue_count": "0",
        "/sys/devices/system/edac/mc/mc10/ce_count": "1",
        "/sys/devices/system/edac/mc/mc10/ue_count": "2",
        "/sys/devices/system/edac/mc/mc1/ce_count": "0",
        "/sys/devices/system/edac/mc/mc1/ue_count": "0",
        "/sys/devices/system/edac/power/control": "auto",
    })
    edac = MemoryCollector().collect(context(root)).edac
    assert edac is not None
    assert [(c.name, c.corrected, c.uncorrected) for c in edac.controllers] == [
        ("mc0", 3, 0), ("mc1", 0, 0), ("mc10", 1, 2)]
    assert (edac.corrected, edac.uncorrected) == (4, 2)
    assert edac.controllers[0].mc_name == "Skylake Socket#0 IMC#0"


def test_an_unreadable_edac_counter_makes_the_total_unknown(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "synthetic-edac-partial", {
        "/proc/meminfo": "MemTotal: 1000 kB\n",
        "/sys/devices/system/edac/mc/mc0/ce_count": "3",
        "/sys/devices/system/edac/mc/mc0/ue_count": "x",
    })
    facts = MemoryCollector().collect(context(root))
    assert facts.edac is not None
    assert facts.edac.corrected == 3 and facts.edac.uncorrected is None
    assert "edac.mc0.uncorrected" in facts.unknown


def test_no_edac_driver_is_unknown(host_tree) -> None:
    facts = MemoryCollector().collect(context(host_tree("h200x2-vm-gather")))
    assert facts.edac is None and "no EDAC driver" in facts.unknown["edac"]


# -- NVMe controllers (synthetic, per Documentation/ABI/testing/sysfs-class-nvme) --------------

def test_nvme_controllers_model_firmware_state(tmp_path: Path) -> None:
    root = tmp_path / "synthetic-nvme"
    ctrl = "sys/devices/pci0000:00/0000:00:1d.0/0000:3b:00.0/nvme/nvme0"
    write_tree(root, {
        "/proc/mounts": "",
        f"{ctrl}/model": "SAMSUNG MZ1L21T9HCLS-00A07                \n",
        f"{ctrl}/firmware_rev": "GDC7302Q\n",
        f"{ctrl}/state": "live\n",
        f"{ctrl}/transport": "pcie\n",
        f"{ctrl}/serial": "S64ENA0R000000\n",
        "sys/devices/pci0000:00/0000:00:1d.0/0000:3b:00.0/numa_node": "1\n",
        "sys/block/.keep": "",
    })
    (root / "sys/class/nvme").mkdir(parents=True)
    os.symlink(f"../../{ctrl[4:]}", root / "sys/class/nvme/nvme0")
    (root / ctrl / "device").symlink_to("../../../0000:3b:00.0")
    host = HostRoot(str(root), recording=True)
    facts = StorageCollector().collect(Context(root=host))
    assert [(c.name, c.model, c.firmware_rev, c.state, c.transport, c.pci_address)
            for c in facts.nvme] == [("nvme0", "SAMSUNG MZ1L21T9HCLS-00A07", "GDC7302Q", "live",
                                      "pcie", "0000:3b:00.0")]
    assert not [p for p in host.read_files if p.endswith("/serial")]


# -- which GPU owns a CPU-less NUMA node ------------------------------------------------------

def test_gpu_memory_numa_nodes_belong_to_their_gpu(synthetic_host) -> None:
    """synthetic-gb200-tray (PROFILE-FACTS: GPU memory on nodes 2, 10, 18, 26, eight per GPU)."""
    host = synthetic_host("synthetic-gb200-tray")
    nodes = derive(facts_json("--root", str(host.root), "--nvml", str(host.nvml)))["numa_nodes"]
    owners = {n["id"]: n["memory_of_gpu"] for n in nodes}
    assert owners[0] is None and owners[1] is None
    assert [owners[i] for i in range(2, 34)] == [g for g in range(4) for _ in range(8)]


def test_no_cpuless_nodes_no_owners(host_tree) -> None:
    nodes = derive(facts_json("--root", str(host_tree("h200x2-vm-gather"))))["numa_nodes"]
    assert nodes and all(n["memory_of_gpu"] is None for n in nodes)


# -- AER on the ports above a device -------------------------------------------------------

def test_fatal_errors_on_the_switch_port_above_a_gpu_drain(synth, synth_tmp, capsys) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(gpu_port_aer={3: (4, 0, 2)}))
    code, doc = run_check(capsys, "--root", str(host.root), "--nvml", str(host.nvml))
    assert code == 1
    assert [(f["fault_code"], f["subject"], f["actual"]) for f in doc["faults"]] == [
        ("NT2011", "GPU3", "2")]


def test_nonfatal_errors_above_a_gpu_warn(synth, synth_tmp, capsys) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(gpu_port_aer={5: (0, 3, 0)}))
    code, doc = run_check(capsys, "--root", str(host.root), "--nvml", str(host.nvml))
    assert code == 0 and doc["faults"] == []
    assert [(w["fault_code"], w["subject"]) for w in doc["warnings"]] == [("NT2013", "GPU5")]
    status = {c["id"]: c["status"] for c in doc["checks"] if c["id"].startswith("pcie.gpu_path")}
    assert status == {"pcie.gpu_path.aer_fatal": "pass", "pcie.gpu_path.aer_nonfatal": "fail"}


def test_aer_above_devices_is_unknown_on_vms_without_aer(host_tree, capsys) -> None:
    code, doc = run_check(capsys, "--root", str(host_tree("h200x2-vm-gather")))
    status = {c["status"] for c in doc["checks"] if c["id"].startswith("pcie.gpu_path")}
    assert code == 0 and status == {"unknown"}
