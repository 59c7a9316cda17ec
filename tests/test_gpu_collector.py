"""The gpu collector: sysfs GPUs enriched by NVML recordings made from real nvidia-smi text."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from nodetune.collectors import Context
from nodetune.collectors.gpu import GpuCollector
from nodetune.node.hostroot import HostRoot
from nodetune.node.nvml import RecordedNvml

FIXTURES = Path(__file__).parent / "fixtures"
NVML = FIXTURES / "nvml"


def collect(root: Path | str, nvml: str | None = None, note: str | None = None) -> dict:
    backend = RecordedNvml.from_file(str(NVML / nvml)) if nvml else None
    ctx = Context(root=HostRoot(str(root)), nvml=backend,
                  nvml_note=None if backend else note or "NVML disabled (--nvml off)")
    collector = GpuCollector()
    return collector.to_sections(collector.collect(ctx))


def smi_values(text: str, key: str) -> list[str]:
    """Every value of `key` in nvidia-smi -q text, in GPU order."""
    return re.findall(rf"^\s*{re.escape(key)}\s+: (.*)$", text, re.M)


def tree_text(member: str) -> str:
    with tarfile.open(FIXTURES / "hosts" / "h200x2-vm-gather.tar.gz") as tar:
        return tar.extractfile(member).read().decode()


@pytest.fixture(scope="module")
def h200_q() -> str:
    return tree_text("node/cmd/nvidia-smi_q.txt")


def test_h200_vm_with_nvml(host_tree, h200_q):
    doc = collect(host_tree("h200x2-vm-gather"), "h200x2-vm.json")
    gpus, gpu = doc["gpus"], doc["gpu"]
    listing = tree_text("node/cmd/nvidia-smi_L.txt")
    assert gpu["count"] == len(gpus) == len(re.findall(r"^GPU \d+:", listing, re.M)) == 2
    assert [g["uuid"] for g in gpus] == re.findall(r"UUID: (GPU-[0-9a-f-]+)", listing)
    assert [g["name"] for g in gpus] == smi_values(h200_q, "Product Name")
    assert [g["pci_address"] for g in gpus] == ["0000:00:06.0", "0000:00:07.0"]
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpu["driver_version"] == smi_values(h200_q, "Driver Version")[0] == "580.159.04"
    assert gpu["cuda_driver_version"] == smi_values(h200_q, "CUDA Version")[0] == "13.0"
    assert gpu["nvml"]["available"] is True and gpu["nvml"]["note"] is None
    fb_mib = [int(v) for v in re.findall(r"FB Memory Usage\n\s+Total\s+: (\d+) MiB", h200_q)]
    temps = [int(v.split()[0]) for v in smi_values(h200_q, "GPU Current Temp")]
    for g, mib, temp in zip(gpus, fb_mib, temps, strict=True):
        assert g["source"] == "nvml" and g["driver"] == "nvidia"
        assert g["memory_total_bytes"] == mib * 2**20
        assert g["temperature_c"] == temp
        # sysfs says numa_node -1 (a VM); all 32 CPUs are on node 0, as topo -m's NUMA affinity
        assert g["numa_node"] == 0
        assert g["local_cpus"] == list(range(32))
        assert g["persistence_mode"] is True
        assert g["ecc"] == {"enabled": True, "pending": True, "volatile_uncorrected": 0,
                            "aggregate_uncorrected": 0, "volatile_corrected": 0,
                            "aggregate_corrected": 0}
        assert g["retired_pages"] is None  # Hopper remaps rows instead
        assert g["remapped_rows"] == {"correctable": 0, "uncorrectable": 0, "pending": False,
                                      "failure": False}
        assert g["clocks"] == {"sm_mhz": 345, "mem_mhz": 3201, "sm_max_mhz": 1980,
                               "mem_max_mhz": 3201, "sm_app_mhz": None, "mem_app_mhz": None,
                               "sm_default_app_mhz": None,
                               "mem_default_app_mhz": None}  # recorded before they were read
        assert g["clock_event_reasons"] == ["gpu_idle"]
        assert g["power_limit_w"] == 700.0
        assert g["mig"] == {"current": False, "pending": False}
        assert g["pcie"] == {"current_gen": 5, "max_gen": 5, "current_width": 16,
                             "max_width": 16}
        assert g["nvlink"]["active"] == 18 and g["nvlink"]["inactive"] == 0
        assert g["fabric"] == {"state": "completed", "status": "success",
                               "cluster_uuid": "00000000-0000-0000-0000-000000000000",
                               "clique_id": 0, "health": None}  # recorded before R550
    assert gpus[0]["nvlink"]["peers"] == {"0000:00:07.0": 18}
    assert gpus[1]["nvlink"]["peers"] == {"0000:00:06.0": 18}
    assert [g["power_draw_w"] for g in gpus] == [float(v) for v in re.findall(
        r"GPU Power Readings\n\s+Average Power Draw\s+: ([\d.]+) W", h200_q)]
    assert gpu["unknown"]["gpus.0.retired_pages"] == "NVML: N/A in nvidia-smi -q"


def test_h200_vm_without_nvml(host_tree):
    doc = collect(host_tree("h200x2-vm-gather"), note="NVML unavailable: the NVIDIA kernel "
                  "driver is not loaded (modprobe nvidia)")
    gpus, gpu = doc["gpus"], doc["gpu"]
    assert gpu["count"] == 2
    assert gpu["nvml"] == {"available": False, "source": None,
                           "note": "NVML unavailable: the NVIDIA kernel driver is not loaded "
                                   "(modprobe nvidia)"}
    assert gpu["driver_version"] == "580.159.04"
    assert gpu["sources"]["driver_version"] == "/sys/module/nvidia/version"
    assert gpu["cuda_driver_version"] is None
    for g, address in zip(gpus, ["0000:00:06.0", "0000:00:07.0"], strict=True):
        assert g["source"] == "sysfs" and g["pci_address"] == address
        # the driver's /proc/driver/nvidia/gpus/<address>/information still names the GPU
        assert g["name"] == "NVIDIA H200" and g["uuid"].startswith("GPU-")
        assert g["pcie"] == {"current_gen": 5, "max_gen": 5, "current_width": 16,
                             "max_width": 16}
        assert g["memory_total_bytes"] is None and g["ecc"]["enabled"] is None
    assert gpu["unknown"]["gpus.*.memory_total_bytes"].startswith("needs NVML (NVML unavailable")


def test_h100_vm_tree_with_its_recording(host_tree):
    doc = collect(host_tree("h100x2-fc-vm-gather"), "h100x2-fc-vm.json")
    assert [g["name"] for g in doc["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    assert [g["memory_total_bytes"] for g in doc["gpus"]] == [81559 * 2**20] * 2
    assert all(g["clocks"]["mem_max_mhz"] == 2619 for g in doc["gpus"])
    assert all(g["numa_node"] == 0 for g in doc["gpus"])
    assert doc["gpus"][0]["nvlink"]["peers"] == {"0000:00:07.0": 18}


def test_eight_rtx4090_recording_without_sysfs(tmp_path):
    """NVML alone (a --root tree without GPUs in sysfs): every GPU still appears."""
    (tmp_path / "proc").mkdir()
    q = (FIXTURES / "nvidia" / "h100x8-nvidia-smi-q.txt").read_text()
    doc = collect(tmp_path, "rtx4090x8-driver535.json")
    gpus = doc["gpus"]
    assert doc["gpu"]["count"] == 8
    assert [g["pci_address"] for g in gpus] == [
        "0000:" + v[-7:].lower() for v in smi_values(q, "Bus Id")]
    assert all(g["name"] == "NVIDIA GeForce RTX 4090" for g in gpus)
    assert doc["gpu"]["driver_version"] == "535.154.05"
    assert doc["gpu"]["cuda_driver_version"] == "12.2"
    idle = [i for i, v in enumerate(smi_values(q, "Idle")) if v == "Active"]
    capped = [i for i, v in enumerate(smi_values(q, "SW Power Cap")) if v == "Active"]
    assert idle and capped
    for i, g in enumerate(gpus):
        assert g["ecc"]["enabled"] is False
        assert g["ecc"]["volatile_uncorrected"] is None
        assert doc["gpu"]["unknown"][f"gpus.{i}.ecc.volatile_uncorrected"] == \
            "NVML: N/A in nvidia-smi -q"
        assert g["mig"] == {"current": None, "pending": None}
        assert g["fabric"] is None and g["nvlink"]["links"] == []
        assert g["numa_node"] is None and g["local_cpus"] is None
        assert ("gpu_idle" in g["clock_event_reasons"]) == (i in idle)
        assert ("sw_power_cap" in g["clock_event_reasons"]) == (i in capped)
        # idle GPUs drop their link to Gen1; the busy ones run at Gen4
        assert g["pcie"]["current_gen"] == (1 if i in idle else 4)
        assert g["pcie"]["max_gen"] == 4 and g["pcie"]["current_width"] == 16
        assert g["power_limit_w"] == 450.0
    assert [g["performance_state"] for g in gpus] == [
        int(v[1:]) for v in smi_values(q, "Performance State")]


def test_h200_under_load():
    q = (FIXTURES / "nvidia" / "h200-nvidia-smi-q-load.txt").read_text()
    doc = collect("/nonexistent-root", "h200-load.json")
    (g,) = doc["gpus"]
    assert g["clock_event_reasons"] == []  # every reason "Not Active" at full clocks
    assert g["clocks"]["sm_mhz"] == g["clocks"]["sm_max_mhz"] == 1980
    assert g["power_draw_w"] == float(smi_values(q, "Average Power Draw")[0].split()[0])
    assert doc["gpu"]["driver_version"] == "590.48.01"
    assert doc["gpu"]["cuda_driver_version"] == "13.1"


def _device(root: Path, address: str, **files: str) -> None:
    base = root / "sys/bus/pci/devices" / address
    base.mkdir(parents=True)
    for name, text in files.items():
        (base / name).write_text(text + "\n")


def _two_nodes(root: Path) -> None:
    for node, cpus in ((0, "0-3"), (1, "4-7")):
        d = root / f"sys/devices/system/node/node{node}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpus + "\n")
    (root / "sys/devices/system/cpu").mkdir(parents=True)
    (root / "sys/devices/system/cpu/online").write_text("0-7\n")


NVIDIA_3D = {"vendor": "0x10de", "class": "0x030200", "current_link_speed": "16.0 GT/s PCIe",
             "max_link_speed": "32.0 GT/s PCIe", "current_link_width": "8",
             "max_link_width": "16"}


def test_sysfs_gpu_fields_and_numa_edge_cases(tmp_path):
    _two_nodes(tmp_path)
    _device(tmp_path, "0000:18:00.0", numa_node="1", local_cpulist="4-7", **NVIDIA_3D)
    _device(tmp_path, "0000:3b:00.0", numa_node="-1", local_cpulist="0-7", **NVIDIA_3D)
    _device(tmp_path, "0000:5e:00.0", numa_node="-1", local_cpulist="0-3", **NVIDIA_3D)
    _device(tmp_path, "0000:01:00.0", vendor="0x102b", **{"class": "0x030000"})  # BMC VGA
    _device(tmp_path, "0000:c8:00.0", vendor="0x10de", **{"class": "0x068000"})  # NVSwitch
    doc = collect(tmp_path)
    gpus = doc["gpus"]
    assert [g["pci_address"] for g in gpus] == ["0000:18:00.0", "0000:3b:00.0", "0000:5e:00.0"]
    assert [g["index"] for g in gpus] == [0, 1, 2]
    assert [g["numa_node"] for g in gpus] == [1, None, 0]
    assert "not all on one NUMA node" in doc["gpu"]["unknown"]["gpus.1.numa_node"]
    assert gpus[0]["pcie"] == {"current_gen": 4, "max_gen": 5, "current_width": 8,
                               "max_width": 16}
    assert gpus[0]["name"] is None
    assert doc["gpu"]["driver_version"] is None
    assert "no NVIDIA kernel module loaded" in doc["gpu"]["unknown"]["driver_version"]


def test_gpu_missing_from_nvml_keeps_its_sysfs_facts(tmp_path):
    """A GPU bound to vfio-pci is in sysfs but not in NVML: listed, without an index."""
    _device(tmp_path, "0000:00:06.0", numa_node="0", local_cpulist="0-31", **NVIDIA_3D)
    _device(tmp_path, "0000:00:08.0", numa_node="0", local_cpulist="0-31", **NVIDIA_3D)
    (tmp_path / "sys/bus/pci/drivers/vfio-pci").mkdir(parents=True)
    (tmp_path / "sys/bus/pci/devices/0000:00:08.0/driver").symlink_to(
        "../../../bus/pci/drivers/vfio-pci")
    doc = collect(tmp_path, "h200x2-vm.json")
    by_address = {g["pci_address"]: g for g in doc["gpus"]}
    assert set(by_address) == {"0000:00:06.0", "0000:00:07.0", "0000:00:08.0"}
    assert by_address["0000:00:06.0"]["source"] == "nvml"
    assert by_address["0000:00:06.0"]["pcie"]["current_gen"] == 5  # NVML's view wins
    assert by_address["0000:00:07.0"]["numa_node"] is None  # NVML only: not in this sysfs
    lost = by_address["0000:00:08.0"]
    assert lost["source"] == "sysfs" and lost["index"] is None and lost["driver"] == "vfio-pci"
    assert doc["gpu"]["unknown"]["gpus.2.index"] == "not visible to NVML (driver: vfio-pci)"


def test_no_gpu_at_all(tmp_path):
    _device(tmp_path, "0000:00:03.0", vendor="0x1af4", **{"class": "0x020000"})
    doc = collect(tmp_path, note="NVML unavailable: libnvidia-ml.so.1 not found")
    assert doc["gpus"] == []
    assert doc["gpu"]["count"] == 0
    assert doc["gpu"]["nvml"]["available"] is False


def test_live_host_agrees_with_a_plain_sysfs_scan():
    """On this machine: exactly the NVIDIA display/3D controllers sysfs lists."""
    base = Path("/sys/bus/pci/devices")
    expected = sorted(
        d.name for d in base.iterdir()
        if (d / "vendor").read_text().strip() == "0x10de"
        and (d / "class").read_text().strip()[:6] in ("0x0300", "0x0302")) if base.is_dir() else []
    doc = collect("/")
    assert [g["pci_address"] for g in doc["gpus"]] == expected
    assert doc["gpu"]["count"] == len(expected)


def test_device_minor_from_the_driver_or_nvml(tmp_path, host_tree):
    """/dev/nvidiaN's N: the driver's information file, else NVML's minor number."""
    h100 = collect(host_tree("h100x2-fc-vm-gather"))
    assert [g["device_minor"] for g in h100["gpus"]] == [0, 1]  # "Device Minor:" lines
    assert h100["gpu"]["sources"]["gpus.*.device_minor"].endswith("/information")
    _device(tmp_path, "0000:00:06.0", numa_node="0", local_cpulist="0-31", **NVIDIA_3D)
    bare = collect(tmp_path)
    assert bare["gpus"][0]["device_minor"] is None
    assert "no Device Minor in /proc/driver/nvidia/gpus/0000:00:06.0/information" in \
        bare["gpu"]["unknown"]["gpus.0.device_minor"]
    recording = json.loads((NVML / "h200x2-vm.json").read_text())
    for minor, device in enumerate(recording["devices"]):
        device["minor_number"] = minor + 4
    (tmp_path / "nvml.json").write_text(json.dumps(recording))
    ctx = Context(root=HostRoot(str(tmp_path)),
                  nvml=RecordedNvml.from_file(str(tmp_path / "nvml.json")))
    by_address = {g.pci_address: g.device_minor for g in GpuCollector().collect(ctx).gpus}
    assert by_address == {"0000:00:06.0": 4, "0000:00:07.0": 5}
