"""NVLink5 (Blackwell) link counters: read per link as NVML field values by the live backend,
carried into the GPU facts and judged by nvlink.recovery_failed (NT3010), nvlink.recovery_events
(NT3011) and nvlink.effective_errors (NT3012). The recording is synthetic (a GB200 tray from
tests/fixtures/synth.py with counters planted); GPUs before Blackwell skip these checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pynvml
import pytest

from nodetune.cli import main
from nodetune.node import nvml, nvml_ctypes
from tests import fake_pynvml

FIXTURES = Path(__file__).parent / "fixtures"
RECORDING = FIXTURES / "nvml" / "synthetic-gb200-tray-nvlink5-faults.json"
PLANTED = {1: {"effective_errors": 7, "symbol_errors": 90210},
           2: {"recovery_failed": 1, "recovery_successful": 3}}
CHECKS = ("nvlink.recovery_failed", "nvlink.recovery_events", "nvlink.effective_errors")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def use_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(module: Any) -> Any:
        monkeypatch.setitem(sys.modules, "pynvml", module)
        monkeypatch.setattr(nvml, "driver_loaded", lambda: True)
        return module
    return install


def test_field_ids_are_nvml_h_s() -> None:
    """The ids nodetune asks for are the NVML_FI_DEV_NVLINK_COUNT_* of nvidia-ml-py (nvml.h)."""
    names = {"symbol_errors": "SYMBOL_ERRORS", "effective_errors": "EFFECTIVE_ERRORS",
             "recovery_successful": "LINK_RECOVERY_SUCCESSFUL_EVENTS",
             "recovery_failed": "LINK_RECOVERY_FAILED_EVENTS",
             "recovery_events": "LINK_RECOVERY_EVENTS"}
    for name, fid in nvml.NVLINK5_COUNTERS:
        assert getattr(pynvml, f"NVML_FI_DEV_NVLINK_COUNT_{names[name]}") == fid
    history = tuple(getattr(pynvml, f"NVML_FI_DEV_NVLINK_COUNT_FEC_HISTORY_{i}")
                    for i in range(16))
    assert history == nvml.NVLINK5_FEC_HISTORY


def test_the_committed_recording_is_what_synth_builds(synth: Any, synth_tmp: Path) -> None:
    host = synth.build_gb200_tray(synth_tmp, synth.Options(nvlink5_counters=PLANTED))
    built = json.loads(host.nvml.read_text())
    committed = json.loads(RECORDING.read_text())
    assert committed.pop("captured_from").startswith("synthetic: ")
    assert committed == built


def test_the_live_backend_reads_each_links_counters(use_module: Any) -> None:
    """Played through nvmlDeviceGetFieldValues with (field, link) pairs, the counters come back
    per link, as recorded; inactive links are not asked."""
    doc = json.loads(RECORDING.read_text())
    module = use_module(fake_pynvml.from_recording(doc))
    backend, note = nvml.live_backend()
    assert note is None
    dumped = backend.dump()["devices"]
    for got, want in zip(dumped, doc["devices"], strict=True):
        assert [link.get("counters") for link in got["nvlink"]] == \
               [link.get("counters") for link in want["nvlink"]]
    assert dumped[2]["nvlink"][0]["counters"]["recovery_failed"] == 1
    assert dumped[1]["nvlink"][0]["counters"]["effective_errors"] == 7
    assert dumped[0]["nvlink"][0]["counters"]["fec_history"] == [0] * 16
    # one field-value call per GPU for every link (plus the recovery action's)
    assert module.calls.count("nvmlDeviceGetFieldValues") == 2 * len(dumped)


def test_the_thin_ctypes_binding_reads_the_same_counters() -> None:
    """`nodetune check` reads live NVML through nodetune.node.nvml_ctypes: the (field, link)
    pairs reach libnvidia-ml with their scope ids, and the counters are the same."""
    doc = json.loads(RECORDING.read_text())
    module = fake_pynvml.from_recording(doc)
    binding = nvml_ctypes.CtypesNvml(fake_pynvml.c_library(module))
    binding.nvmlInit()
    thin = nvml.PynvmlBackend(binding).dump()["devices"]
    assert [[link.get("counters") for link in d["nvlink"]] for d in thin] == \
           [[link.get("counters") for link in d["nvlink"]] for d in doc["devices"]]


def test_a_gpu_without_the_fields_gives_no_counters(use_module: Any) -> None:
    """A Hopper recording (real nvidia-smi capture): every NVLink5 field is not supported."""
    doc = json.loads((FIXTURES / "nvml" / "h200x2-vm.json").read_text())
    use_module(fake_pynvml.from_recording(doc))
    backend, _ = nvml.live_backend()
    links = [link for d in backend.dump()["devices"] for link in d["nvlink"]]
    assert links and all(link.get("counters") is None for link in links)


def run_check(capsys: pytest.CaptureFixture[str], root: Path, recording: Path,
              profile: str = "gb200") -> tuple[int, dict[str, Any]]:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--json", "--root", str(root), "--nvml", str(recording),
              "--profile", profile])
    return int(exit_info.value.code or 0), json.loads(capsys.readouterr().out)


def statuses(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["id"]: {str(f["subject"]): f["status"] for f in c["findings"]}
            for c in doc["checks"] if c["id"] in CHECKS}


def test_planted_counters_give_their_fault_codes(synthetic_host: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    host = synthetic_host("synthetic-gb200-tray")
    code, doc = run_check(capsys, host.root, RECORDING)
    assert code == 1  # a failed recovery drains
    got = statuses(doc)
    assert got["nvlink.recovery_failed"] == {"GPU0": "pass", "GPU1": "pass", "GPU2": "fail",
                                             "GPU3": "pass"}
    assert got["nvlink.recovery_events"]["GPU2"] == "fail"
    assert got["nvlink.effective_errors"] == {"GPU0": "pass", "GPU1": "fail", "GPU2": "pass",
                                              "GPU3": "pass"}
    assert [(f["fault_code"], f["message"]) for f in doc["faults"]] == [
        ("NT3010", "GPU2 NVLink recovery failed 1 times since the driver loaded")]
    assert {(w["fault_code"], w["subject"]) for w in doc["warnings"]} >= {
        ("NT3011", "GPU2"), ("NT3012", "GPU1")}


def test_clean_tray_passes_and_a_driver_without_the_fields_is_unknown(
        synthetic_host: Any, synth: Any, synth_tmp: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host = synthetic_host("synthetic-gb200-tray")
    code, doc = run_check(capsys, host.root, host.nvml)
    assert code == 0, doc["summary"]
    assert all(s == "pass" for c in statuses(doc).values() for s in c.values())
    quiet = synth.build_gb200_tray(synth_tmp, synth.Options(nvlink5_reported=False))
    code, doc = run_check(capsys, quiet.root, quiet.nvml)
    assert code == 0, doc["summary"]
    for check in CHECKS:
        result = next(c for c in doc["checks"] if c["id"] == check)
        assert result["status"] == "unknown", check
        assert "reports no NVML_FI_DEV_NVLINK_COUNT_* field values" in \
            result["findings"][0]["message"]


def test_hopper_gpus_skip_the_nvlink5_checks(synthetic_host: Any,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    host = synthetic_host("synthetic-dgx-h100")
    _, doc = run_check(capsys, host.root, host.nvml, "dgx-h100")
    for check in CHECKS:
        assert next(c for c in doc["checks"] if c["id"] == check)["status"] == "skipped"
