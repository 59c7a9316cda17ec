"""nodetune.node.nvml: the live pynvml backend (against fake pynvml modules answering with values
captured on real GPUs), the real library's no-driver path, and NVML recordings."""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path

import pytest

from nodetune.errors import SourceError
from nodetune.node import nvml
from tests import fake_pynvml
from tests.recorded_shape import as_recorded

FIXTURES = Path(__file__).parent / "fixtures"
RAW_H100 = FIXTURES / "nvml" / "h100x2-fc-vm-pynvml-raw.json"
H100_TREE = FIXTURES / "hosts" / "h100x2-fc-vm-gather.tar.gz"


def smi_section(command: str) -> str:
    """One `=== command` section of the H100 VM's commands.txt (same moment as the raw capture)."""
    with tarfile.open(H100_TREE) as tar:
        text = tar.extractfile("node/cmd/commands.txt").read().decode()
    return text.split(f"=== {command}\n", 1)[1].split("\n=== ", 1)[0]


def smi_fabric(q: str) -> tuple[int, int, int]:
    """(state, status, clique id) as NVML codes, from the "Fabric" block of nvidia-smi -q."""
    m = re.search(r"Fabric\n\s+State\s+: (\w+)\n\s+Status\s+: (\w+)\n\s+CliqueId\s+: (\d+)", q)
    states = {"Not Started": 1, "In Progress": 2, "Completed": 3}
    return states[m.group(1)], 0 if m.group(2) == "Success" else 1, int(m.group(3))


def recording(name: str) -> dict:
    return json.loads((FIXTURES / "nvml" / name).read_text())


@pytest.fixture
def use_module(monkeypatch):
    def install(module):
        monkeypatch.setitem(sys.modules, "pynvml", module)
        monkeypatch.setattr(nvml, "driver_loaded", lambda: True)
        return module
    return install


@pytest.fixture
def h100_raw_dump(use_module):
    raw = json.loads(RAW_H100.read_text())
    q = smi_section("nvidia-smi -q")
    topo = smi_section("nvidia-smi topo -m")
    cpus = re.search(r"^GPU0\s.*?NV18\s+(\d+)-(\d+)", topo, re.M)
    module = use_module(fake_pynvml.from_raw(
        raw, cpu_affinity=list(range(int(cpus.group(1)), int(cpus.group(2)) + 1)),
        fabric=smi_fabric(q),
        performance_state=int(re.search(r"Performance State\s+: P(\d+)", q).group(1)),
        nvlink_peer_ok="NV18" in topo))
    backend, note = nvml.live_backend()
    assert note is None
    doc = backend.dump()
    backend.close()
    return raw, doc, module


CLOCKS_RAW = dict.fromkeys(("sm_mhz", "mem_mhz", "sm_max_mhz", "mem_max_mhz"))  # raw capture's


def test_pynvml_dump_carries_the_raw_values(h100_raw_dump):
    raw, doc, module = h100_raw_dump
    assert doc["schema"] == "nodetune.nvml/1"
    assert doc["driver_version"] == raw["driver"] == "580.159.04"
    assert doc["cuda_driver_version"] == raw["cuda"]
    assert len(doc["devices"]) == raw["count"] == 2
    for dev, r in zip(doc["devices"], raw["devices"], strict=True):
        assert dev["name"] == r["nvmlDeviceGetName"]
        assert dev["uuid"] == r["nvmlDeviceGetUUID"]
        assert dev["pci_bus_id"] == r["nvmlDeviceGetPciInfo"]["busId"]
        assert dev["memory_total_bytes"] == r["nvmlDeviceGetMemoryInfo"]["total"]
        assert dev["power_draw_w"] == round(r["nvmlDeviceGetPowerUsage"] / 1000, 2)
        assert dev["power_limit_w"] == r["nvmlDeviceGetEnforcedPowerLimit"] / 1000
        assert dev["temperature_c"] == r["temp"]
        assert as_recorded(dev["clocks"], CLOCKS_RAW) == {
            "sm_mhz": r["clock_sm"], "mem_mhz": r["clock_mem"],
            "sm_max_mhz": r["maxclock_sm"], "mem_max_mhz": r["maxclock_mem"]}
        assert dev["clock_event_reasons_mask"] == r["nvmlDeviceGetCurrentClocksEventReasons"]
        assert dev["remapped_rows"] == {"correctable": 0, "uncorrectable": 0, "pending": False,
                                        "failure": False}
        # Hopper does not retire pages, and this VM's GPUs are not NUMA nodes: both unsupported.
        assert dev["retired_pages"] is None
        assert dev["errors"]["retired_pages"] == "NVMLError_NotSupported"
        assert dev["numa_node"] is None
        assert dev["errors"]["numa_node"] == "NVMLError_NotSupported"
        # Every NVLink of this VM's GPUs ends at an NVSwitch, whose address NVML hides.
        assert len(dev["nvlink"]) == len(r["nvlink"]) == 18
        assert all(link["active"] and link["remote_kind"] == "switch"
                   and link["remote_pci_bus_id"] is None for link in dev["nvlink"])
        assert "serial" not in json.dumps(dev).lower()
    assert "nvmlDeviceGetSerial" not in module.calls
    assert "nvmlShutdown" in module.calls


def test_pynvml_dump_agrees_with_nvidia_smi_of_the_same_machine(h100_raw_dump):
    """The live backend's dump and the recording converted from nvidia-smi text agree."""
    _, doc, _ = h100_raw_dump
    smi = recording("h100x2-fc-vm.json")
    stable = ("pci_bus_id", "name", "uuid", "memory_total_bytes", "persistence_mode", "ecc",
              "retired_pages", "remapped_rows", "clocks", "clock_event_reasons_mask",
              "clock_event_reasons", "performance_state", "power_limit_w", "mig", "pcie",
              "numa_node", "cpu_affinity", "nvlink_peers", "fabric")
    for dev, text in zip(doc["devices"], smi["devices"], strict=True):
        for key in stable:
            assert as_recorded(dev[key], text[key]) == text[key], key
        assert dev["power_draw_w"] == pytest.approx(text["power_draw_w"], abs=0.1)
        assert [link["active"] for link in dev["nvlink"]] == \
               [link["active"] for link in text["nvlink"]]


@pytest.mark.parametrize("name", ["h200x2-vm.json", "rtx4090x8-driver535.json", "h200-load.json"])
def test_recording_round_trips_through_the_api(name, use_module):
    """A recording played through fake NVML calls dumps back to itself."""
    doc = recording(name)
    use_module(fake_pynvml.from_recording(doc))
    backend, note = nvml.live_backend()
    assert note is None
    dumped = backend.dump()
    assert dumped["driver_version"] == doc["driver_version"]
    assert dumped["cuda_driver_version"] == doc["cuda_driver_version"]
    assert len(dumped["devices"]) == len(doc["devices"])
    for got, want in zip(dumped["devices"], doc["devices"], strict=True):
        for key, value in want.items():
            if key in ("errors", "nvlink_peers"):  # error texts differ; peers need link ends
                continue
            assert as_recorded(got[key], value) == value, key
        # Every field the text showed as N/A came back as an NVML error, never an exception.
        for field_name in want["errors"]:
            top = field_name.split(".")[0]
            if top not in ("nvlink",) and want.get(top) is None:
                assert top in {k.split(".")[0] for k in got["errors"]}, field_name


def test_direct_nvlink_peers_are_counted_per_peer(use_module):
    """Two GPUs joined directly (NVLink bridge): NV# counts links naming the peer."""
    doc = recording("h200x2-vm.json")
    a, b = doc["devices"]
    for dev, peer in ((a, b), (b, a)):
        dev["nvlink"] = [{"link": n, "active": n < 4, "remote_pci_bus_id": peer["pci_bus_id"],
                          "remote_kind": "gpu"} for n in range(6)]
    use_module(fake_pynvml.from_recording(doc))
    dumped = nvml.live_backend()[0].dump()
    assert dumped["devices"][0]["nvlink_peers"] == {"00000000:00:07.0": 4}
    assert dumped["devices"][1]["nvlink_peers"] == {"00000000:00:06.0": 4}
    assert [link["active"] for link in dumped["devices"][0]["nvlink"]] == [True] * 4 + [False] * 2


def test_failing_queries_are_recorded_not_raised(use_module):
    doc = recording("h200x2-vm.json")
    module = use_module(fake_pynvml.from_recording(doc))

    def lost(*_):
        raise fake_pynvml.error(fake_pynvml.real.NVML_ERROR_GPU_IS_LOST)

    def binding_bug(*_):
        raise TypeError("wrong argument count")

    module.nvmlDeviceGetTemperature = lost
    module.nvmlDeviceGetRemappedRows = binding_bug
    del module.nvmlDeviceGetCurrentClocksEventReasons  # older library: falls back
    module.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x44
    dumped = nvml.live_backend()[0].dump()
    dev = dumped["devices"][0]
    assert dev["temperature_c"] is None
    assert dev["errors"]["temperature_c"] == "NVMLError_GpuIsLost"
    assert dev["remapped_rows"] is None
    assert dev["errors"]["remapped_rows"].startswith("TypeError")
    assert dev["clock_event_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]
    assert dev["name"] == "NVIDIA H200"


def test_device_count_failure_gives_no_devices(use_module):
    module = use_module(fake_pynvml.from_recording(recording("h200x2-vm.json")))

    def fail():
        raise fake_pynvml.error("NVMLError_Unknown")

    module.nvmlDeviceGetCount = fail
    dumped = nvml.live_backend()[0].dump()
    assert dumped["devices"] == []
    assert dumped["errors"] == {"device_count": "NVMLError_Unknown"}


@pytest.mark.parametrize(("error_name", "words"), [
    ("NVMLError_DriverNotLoaded", "driver is not loaded"),
    ("NVMLError_LibraryNotFound", "libnvidia-ml.so.1 not found"),
    ("NVMLError_NoPermission", "no permission"),
    ("NVMLError_Unknown", "NVMLError_Unknown"),
])
def test_init_failure_gives_a_note(use_module, error_name, words):
    use_module(fake_pynvml.failing_init(error_name))
    backend, note = nvml.live_backend()
    assert backend is None
    assert note.startswith("NVML unavailable: ") and words in note
    assert "\n" not in note


def test_missing_binding_gives_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    monkeypatch.setattr(nvml, "driver_loaded", lambda: True)
    backend, note = nvml.live_backend()
    assert backend is None
    assert "nvidia-ml-py is not installed" in note


def test_real_library_without_driver():
    """On a machine without libnvidia-ml.so.1 the real nvidia-ml-py fails init cleanly."""
    import ctypes.util

    import pynvml

    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has an NVIDIA driver")
    backend, note = nvml.init_backend(pynvml)
    assert backend is None
    assert note == ("NVML unavailable: libnvidia-ml.so.1 not found (no NVIDIA driver installed, "
                    "or the container lacks the driver libraries)")


def test_no_kernel_driver_skips_the_library(monkeypatch):
    monkeypatch.setattr(nvml, "driver_loaded", lambda: False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # would fail if it were imported
    backend, note = nvml.live_backend()
    assert backend is None
    assert "NVIDIA kernel driver is not loaded" in note


def test_driver_loaded_matches_this_machine():
    assert nvml.driver_loaded() == (Path("/proc/driver/nvidia").exists()
                                    or Path("/dev/nvidiactl").exists())


# -- recordings ------------------------------------------------------------------------------

def test_recorded_backend_returns_copies(tmp_path):
    path = FIXTURES / "nvml" / "h200x2-vm.json"
    backend = nvml.RecordedNvml.from_file(str(path))
    first = backend.dump()
    first["devices"].clear()
    assert len(backend.dump()["devices"]) == 2
    assert backend.origin == str(path)


@pytest.mark.parametrize(("content", "words"), [
    ("{not json", "is not JSON"),
    ("[1, 2]", "holds a JSON list"),
    ('{"schema": "nodetune.facts/1", "devices": []}', "schema is 'nodetune.facts/1'"),
    ('{"schema": "nodetune.nvml/1"}', "no 'devices' list"),
    ('{"schema": "nodetune.nvml/1", "devices": [{"index": 0}]}', "devices[0] has no 'pci_bus_id'"),
])
def test_bad_recordings_give_one_line(tmp_path, content, words):
    path = tmp_path / "nvml.json"
    path.write_text(content)
    with pytest.raises(SourceError) as err:
        nvml.RecordedNvml.from_file(str(path))
    line = err.value.one_line()
    assert words in line and str(path) in line and "fix:" in line and "\n" not in line


def test_missing_recording(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        nvml.RecordedNvml.from_file(str(tmp_path / "absent.json"))


def test_bus_id_and_version_helpers():
    assert nvml.normalize_bus_id("00000000:18:00.0") == "0000:18:00.0"
    assert nvml.normalize_bus_id(b"00000001:B3:00.1") == "0001:b3:00.1"
    assert nvml.normalize_bus_id("FFFFFFFF:FF:FF.0") is None
    assert nvml.normalize_bus_id("") is None
    assert nvml.normalize_bus_id("garbage") is None
    assert nvml.cuda_version_text(13000) == "13.0"
    assert nvml.cuda_version_text(12020) == "12.2"
    assert nvml.clock_event_reason_names(0x1 | 0x8 | 0x200) == ["gpu_idle", "hw_slowdown",
                                                                "reason_0x200"]
def test_fabric_health_recovery_action_and_link_errors_come_through_the_api(
        synth, synth_tmp, use_module):
    """The health mask, the recovery-action field value and the per-link error counters of a
    GB200 tray's recording, played through the NVML calls, decode back to the recording."""
    host = synth.build(
        "synthetic-gb200-tray", synth_tmp,
        synth.Options(recovery_action={1: "drain_p2p"}, nvlink_recovery_errors={0: 2},
                      fabric_health={3: {"route_unhealthy": True,
                                         "configuration": "incorrect_chassis_sn"}}))
    doc = json.loads(host.nvml.read_text())
    use_module(fake_pynvml.from_recording(doc))
    backend, _ = nvml.live_backend()
    dumped = backend.dump()["devices"]
    assert [d["recovery_action"] for d in dumped] == ["none", "drain_p2p", "none", "none"]
    assert dumped[3]["fabric"]["health"] == {
        "degraded_bandwidth": False, "route_recovery": False, "route_unhealthy": True,
        "access_timeout_recovery": False, "configuration": "incorrect_chassis_sn"}
    assert dumped[0]["nvlink"][0]["errors"] == {"replay": 0, "recovery": 2, "crc_flit": 0,
                                                "crc_data": 0}
    assert all(link["errors"] is None for d in dumped for link in d["nvlink"]
               if not link["active"])


def test_a_health_mask_that_supports_nothing_is_no_health():
    assert nvml.fabric_health(0) is None
    assert nvml.fabric_health(0x1 | 0x2 << 4 | 0x5 << 8) == {
        "degraded_bandwidth": True, "route_recovery": None, "route_unhealthy": False,
        "access_timeout_recovery": None, "configuration": "insufficient_nvlinks"}
