"""`nodetune check`: faults planted in the real 2x H200 VM tree and in the synthetic DGX H100
tree are each caught with their fault code and exit code 1; the clean trees pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodetune.check.evaluate import Unit, join_limited, run_units, write_probe
from nodetune.check.options import OPTIONS
from nodetune.check.options import parse as parse_fast
from nodetune.check.suite import load_suite
from nodetune.cli import main
from nodetune.node.hostroot import HostRoot
from tests.hanging import HANGING

FIXTURES = Path(__file__).parent / "fixtures"
H200_NVML = FIXTURES / "nvml" / "h200x2-vm.json"
H200_GPU1 = "0000:00:07.0"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--json", *args])
    out = capsys.readouterr().out
    return int(exit_info.value.code or 0), json.loads(out)


def codes(doc: dict[str, Any]) -> set[str]:
    return {f["fault_code"] for f in doc["faults"]}


# -- the real 2x H200 VM -------------------------------------------------------------------------

@pytest.fixture
def h200(host_tree: Callable[[str], Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the real H200 VM tree and of its recorded NVML, to plant faults in."""
    root = tmp_path / "node"
    shutil.copytree(host_tree("h200x2-vm-gather"), root, symlinks=True)
    nvml = tmp_path / "nvml.json"
    shutil.copy(H200_NVML, nvml)
    return root, nvml


def edit_nvml(nvml: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(nvml.read_text())
    change(doc)
    nvml.write_text(json.dumps(doc))


def _drop_gpu1_everywhere(root: Path, nvml: Path) -> None:
    shutil.rmtree(root / "sys/bus/pci/devices" / H200_GPU1)
    shutil.rmtree(root / "proc/driver/nvidia/gpus" / H200_GPU1)
    edit_nvml(nvml, lambda d: d["devices"].pop(1))


def _lose_gpu1_in_nvml(root: Path, nvml: Path) -> None:
    def lose(doc: dict[str, Any]) -> None:
        doc["devices"].pop(1)
        doc["errors"] = {"devices.1": "NVMLError_GpuIsLost"}
    edit_nvml(nvml, lose)


def _gpu0_lost_mid_query(root: Path, nvml: Path) -> None:
    def lost(doc: dict[str, Any]) -> None:
        doc["devices"][0]["ecc"] = None
        doc["devices"][0]["errors"]["ecc"] = "NVMLError_GpuIsLost"
    edit_nvml(nvml, lost)


def _gpu1_link_x8(root: Path, nvml: Path) -> None:
    (root / "sys/bus/pci/devices" / H200_GPU1 / "current_link_width").write_text("8\n")
    edit_nvml(nvml, lambda d: d["devices"][1]["pcie"].update(current_width=8))


def _gpu0_ecc(root: Path, nvml: Path) -> None:
    edit_nvml(nvml, lambda d: d["devices"][0]["ecc"]["volatile"].update(uncorrected=3))


def _gpu1_nvlink_down(root: Path, nvml: Path) -> None:
    def down(doc: dict[str, Any]) -> None:
        for link in doc["devices"][1]["nvlink"][:2]:
            link["active"] = False
    edit_nvml(nvml, down)


def _mounts(root: Path, root_options: str) -> None:
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    (root / "proc/self/mounts").write_text(
        f"/dev/vda1 / ext4 {root_options},relatime 0 0\n"
        "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
        "tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0\n")


def _root_read_only(root: Path, nvml: Path) -> None:
    _mounts(root, "ro")


def _no_nvidia_uvm(root: Path, nvml: Path) -> None:
    modules = root / "proc/modules"
    modules.write_text("".join(line for line in modules.read_text().splitlines(keepends=True)
                               if not line.startswith("nvidia_uvm ")))


def _xid79_on_gpu1(root: Path, nvml: Path) -> None:
    (root / "var/log").mkdir(parents=True)
    (root / "var/log/kern.log").write_text(
        "Nov 20 10:00:00 vm kernel: [    0.000000] Linux version 6.18.44 (builder@host) #1\n"
        "Nov 20 10:05:00 vm kernel: [  300.100000] NVRM: Xid (PCI:0000:00:07): 79, pid=2211, "
        "name=python, GPU has fallen off the bus.\n")


H200_FAULTS = [
    # (fault, plant, extra arguments, fault codes, first line of the summary)
    ("gpu missing", _drop_gpu1_everywhere, (), {"NT1001"}, "nodetune: GPU count 1 (expected 2)"),
    ("gpu fell off the bus", _lose_gpu1_in_nvml, (), {"NT1001", "NT1005"},
     "nodetune: GPU count 1 (expected 2); GPU at 0000:00:07.0 on the PCI bus but not seen by "
     "NVML (fallen off the bus?)"),
    ("GPU_IS_LOST", _gpu0_lost_mid_query, (), {"NT1006"},
     "nodetune: GPU0 NVML errors: NVMLError_GpuIsLost"),
    ("x8 link", _gpu1_link_x8, (), {"NT2001"}, "nodetune: GPU1 PCIe x8 (expected x16)"),
    ("uncorrectable ECC", _gpu0_ecc, (), {"NT1010"},
     "nodetune: GPU0 3 uncorrectable ECC errors since the last reset"),
    ("NVLink down", _gpu1_nvlink_down, (), {"NT3001"}, "nodetune: GPU1 NVLink 2/18 links down"),
    ("read-only filesystem", _root_read_only, (), {"NT5002"},
     "nodetune: / read-only (/ mounted ro); /tmp read-only (/ mounted ro)"),
    ("module missing", _no_nvidia_uvm, ("--require-module", "nvidia_uvm"), {"NT4004"},
     "nodetune: kernel module nvidia_uvm not loaded"),
    ("Xid 79", _xid79_on_gpu1, (), {"NT1020"}, "nodetune: GPU1 Xid 79 since boot"),
]


def test_clean_h200_vm_is_healthy(h200: tuple[Path, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    root, nvml = h200
    _mounts(root, "rw")
    code, doc = run_check(capsys, "--root", str(root), "--nvml", str(nvml), "--expect-gpus", "2",
                          "--expect-model", "NVIDIA H200", "--require-module", "nvidia_uvm")
    assert code == 0, doc["summary"]
    assert doc["healthy"] is True and doc["faults"] == [] and doc["exit_code"] == 0
    assert doc["summary"].startswith("nodetune: healthy (quick: ")
    status = {c["id"]: c["status"] for c in doc["checks"]}
    for check in ("gpu.count", "gpu.model", "gpu.lost", "gpu.ecc.uncorrected", "pcie.gpu.width",
                  "nvlink.inactive", "fabric.state", "fs.read_only", "kernel.modules"):
        assert status[check] == "pass", check
    assert status["pcie.gpu.gen"] == "skipped"  # the recording's GPUs are idle


@pytest.mark.parametrize(("fault", "plant", "extra", "expected", "summary"), H200_FAULTS,
                         ids=[f[0] for f in H200_FAULTS])
def test_h200_vm_fault_is_caught(h200: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
                                 fault: str, plant: Callable[[Path, Path], None],
                                 extra: tuple[str, ...], expected: set[str], summary: str) -> None:
    root, nvml = h200
    plant(root, nvml)
    code, doc = run_check(capsys, "--root", str(root), "--nvml", str(nvml), "--expect-gpus", "2",
                          *extra)
    assert code == 1 and doc["healthy"] is False and doc["exit_code"] == 1
    assert codes(doc) == expected
    assert doc["summary"] == summary


def test_text_output_first_line_is_the_drain_reason(h200: tuple[Path, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root, nvml = h200
    _gpu1_link_x8(root, nvml)
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--root", str(root), "--nvml", str(nvml)])
    lines = capsys.readouterr().out.splitlines()
    assert exit_info.value.code == 1
    assert lines[0] == "nodetune: GPU1 PCIe x8 (expected x16)"
    assert lines[1].startswith("  FAIL NT2001 pcie.gpu.width: GPU1: GPU1 PCIe x8")


# -- the synthetic DGX H100 ----------------------------------------------------------------------

DGX_ARGS = ("--profile", "dgx-h100", "--mount", "/raid", "--expect-idle")


def test_clean_dgx_h100_is_healthy(synthetic_host: Callable[[str], Any],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    host = synthetic_host("synthetic-dgx-h100")
    code, doc = run_check(capsys, "--root", str(host.root), "--nvml", str(host.nvml), *DGX_ARGS)
    assert code == 0, doc["summary"]
    status = {c["id"]: c["status"] for c in doc["checks"]}
    # rdma.gpudirect: nvidia_peermem registered (and DMA-BUF complete besides)
    for check in ("gpu.count", "gpu.model", "rdma.port.state", "rdma.gpudirect", "fabric.manager",
                  "fabric.state", "nvlink.inactive", "pcie.rdma.width", "fs.mounted",
                  "pcie.gpu.aer_fatal", "pcie.rdma.aer_fatal", "gpu.recovery_action",
                  "fabric.health", "nvlink.recovery_errors"):
        assert status[check] == "pass", check
    assert doc["variables"]["gpu_count"] == 8  # from the profile


def _proprietary_driver(root: Path) -> None:
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.133.20  Release Build\n")


DGX_FAULTS = [
    ("gpu missing", {"missing_gpus": (3,)}, None, {"NT1001"}, "GPU count 7 (expected 8)"),
    ("x8 link", {"gpu_link_width": {3: 8}}, None, {"NT2001"}, "GPU3 PCIe x8 (expected x16)"),
    ("uncorrectable ECC", {"ecc_uncorrectable": {2: 4}}, None, {"NT1010", "NT1011"},
     "GPU2 4 uncorrectable ECC errors since the last reset"),
    ("NVLink down", {"nvlink_down": {5: 2}}, None, {"NT3001"}, "GPU5 NVLink 2/18 links down"),
    ("IB port down", {"ib_port_down": (1,)}, None, {"NT4001"},
     "mlx5_3/1 DOWN/Disabled (expected ACTIVE/LinkUp)"),
    ("read-only filesystem", {"read_only_mounts": ("/raid",)}, None, {"NT5002"},
     "/raid read-only (/raid mounted ro)"),
    ("module missing", {"missing_modules": ("nvidia_peermem",)}, _proprietary_driver, {"NT4003"},
     "no GPUDirect RDMA: nvidia_peermem not loaded; DMA-BUF lacks open kernel modules"),
    ("peermem not registered", {"peer_memory_registered": False}, _proprietary_driver,
     {"NT4003"}, "no GPUDirect RDMA: nvidia_peermem loaded but not registered with the RDMA "
     "core (no /sys/kernel/mm/memory_peers/nv_mem); DMA-BUF lacks open kernel modules"),
    ("fatal PCIe error", {"gpu_aer": {6: (3, 0, 1)}}, None, {"NT2007"},
     "GPU6 logged 1 fatal PCIe errors since boot"),
    ("leftover process", {"gpu_processes": {4: 2}}, None, {"NT1032"},
     "GPU4 held by 2 compute processes before the job"),
    ("driver asks for a GPU reset", {"recovery_action": {2: "gpu_reset"}}, None, {"NT1031"},
     "GPU2 driver asks for recovery: gpu_reset"),
    ("fabric route unhealthy", {"fabric_health": {3: {"route_unhealthy": True}}}, None,
     {"NT3008"}, "GPU3 NVLink fabric unhealthy: route_unhealthy"),
    ("tray misconfigured", {"fabric_health": {0: {"configuration": "insufficient_nvlinks",
                                                  "degraded_bandwidth": True}}}, None,
     {"NT3008"},
     "GPU0 NVLink fabric unhealthy: degraded_bandwidth, configuration: insufficient_nvlinks"),
]


def test_registered_peermem_gives_gpudirect_with_the_proprietary_driver(
        synth: Any, synth_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options())
    _proprietary_driver(host.root)
    code, doc = run_check(capsys, "--root", str(host.root), "--nvml", str(host.nvml), *DGX_ARGS)
    assert code == 0, doc["summary"]
    assert {c["id"]: c["status"] for c in doc["checks"]}["rdma.gpudirect"] == "pass"


def test_busy_gpus_are_judged_only_at_job_start(synth: Any, synth_tmp: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The agent checks while jobs run: without --expect-idle a busy GPU is no fault."""
    host = synth.build_dgx_h100(synth_tmp, synth.Options(gpu_processes={0: 1}))
    code, doc = run_check(capsys, "--root", str(host.root), "--nvml", str(host.nvml),
                          "--profile", "dgx-h100", "--mount", "/raid")
    busy = [c for c in doc["checks"] if c["id"] == "gpu.busy"]
    assert code == 0 and {c["status"] for c in busy} == {"skipped"}
    assert "--expect-idle" in json.dumps(busy)


def test_nvlink_recoveries_warn_and_keep_the_node(synth: Any, synth_tmp: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(nvlink_recovery_errors={4: 3}))
    code, doc = run_check(capsys, "--root", str(host.root), "--nvml", str(host.nvml), *DGX_ARGS)
    assert code == 0
    warned = [c for c in doc["checks"] if c["id"] == "nvlink.recovery_errors"]
    assert [c["status"] for c in warned] == ["fail"]
    assert "GPU4 NVLink links recovered 3 times" in json.dumps(warned)


def test_recovery_action_is_unknown_where_the_driver_does_not_report_it(
        h200: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A recording made before R570 (no recovery_action field): unknown, never pass."""
    root, nvml = h200
    code, doc = run_check(capsys, "--root", str(root), "--nvml", str(nvml))
    status = {c["id"]: c for c in doc["checks"]}
    assert code == 0
    assert status["gpu.recovery_action"]["status"] == "unknown"


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "knobs", "tweak", "expected", "message"), DGX_FAULTS,
                         ids=[f[0] for f in DGX_FAULTS])
def test_dgx_h100_fault_is_caught(synth: Any, synth_tmp: Path,
                                  capsys: pytest.CaptureFixture[str], fault: str,
                                  knobs: dict[str, Any], tweak: Callable[[Path], None] | None,
                                  expected: set[str], message: str) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(**knobs))
    if tweak is not None:
        tweak(host.root)
    code, doc = run_check(capsys, "--root", str(host.root), "--nvml", str(host.nvml), *DGX_ARGS)
    assert code == 1
    assert codes(doc) == expected
    assert doc["faults"][0]["message"] == message
    assert doc["summary"].startswith(f"nodetune: {message}")


# -- timeouts -------------------------------------------------------------------------------------

def test_a_hung_unit_is_abandoned_named_and_the_rest_still_runs() -> None:
    release = threading.Event()
    units = [Unit("fast1", lambda: 1, 1.0), Unit("hangs", release.wait, 0.2),
             Unit("fast2", lambda: 2, 1.0)]
    start = time.monotonic()
    results, abandoned = run_units(units, deadline=time.monotonic() + 10)
    release.set()
    assert time.monotonic() - start < 2
    assert abandoned
    assert results["fast1"].value == 1 and results["fast2"].value == 2
    assert results["hangs"].timed_out and results["hangs"].note == \
        "hangs did not answer within 0.2 s"


def test_total_timeout_names_what_did_not_run() -> None:
    release = threading.Event()
    units = [Unit("hangs", release.wait, 30.0), Unit("later", lambda: 1, 30.0)]
    results, _ = run_units(units, deadline=time.monotonic() + 0.3)
    release.set()
    assert results["hangs"].note == "the total --timeout ran out"
    assert results["later"].timed_out and results["later"].note == \
        "the total --timeout ran out first"


def test_a_fifo_in_place_of_a_file_is_unknown_at_once(h200: tuple[Path, Path]) -> None:
    """/proc/meminfo as a FIFO without a writer: never opened for a blocking read, the memory
    checks are unknown, and check finishes well within its timeout."""
    root, nvml = h200
    (root / "proc/meminfo").unlink()
    os.mkfifo(root / "proc/meminfo")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "nodetune", "check", "--json", "--root", str(root),
                           "--nvml", str(nvml), "--timeout", "30"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert time.monotonic() - start < 30
    status = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert status["memory.available"]["status"] == "unknown", status["memory.available"]


def test_a_hanging_read_is_reported_by_check_name(h200: tuple[Path, Path], tmp_path: Path) -> None:
    """A read of /proc/meminfo that blocks like a hung filesystem (made to sleep): the memory
    checks time out by name, the node is unhealthy, and the process exits without waiting."""
    root, nvml = h200
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", HANGING, "check", "--json", "--root",
                           str(root), "--nvml", str(nvml), "--timeout", "1.5"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert time.monotonic() - start < 30
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    status = {c["id"]: c for c in doc["checks"]}
    assert status["memory.available"]["status"] == "timeout"
    assert status["memory.available"]["note"].startswith(
        "check memory.available timed out after 5 s (")
    assert any(f["id"] == "memory.available" and f["timed_out"] for f in doc["faults"])
    assert doc["collectors"]["memory"]["timed_out"] is True
    assert status["gpu.driver"]["status"] != "timeout" or "memory" not in \
        status["gpu.driver"]["note"]


# -- cache, output, errors -----------------------------------------------------------------------

def test_max_age_reuses_a_recent_result_for_the_same_question(
        h200: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, nvml = h200
    args = ("--root", str(root), "--nvml", str(nvml), "--cache-file", str(tmp_path / "c.json"))
    _, first = run_check(capsys, *args, "--max-age", "60")
    assert first["cached"] is False
    _root_read_only(root, nvml)  # a cached result is reused for its lifetime, faults or not
    code, second = run_check(capsys, *args, "--max-age", "60")
    assert second["cached"] is True and code == 0
    assert second["started_at"] == first["started_at"]
    code, other = run_check(capsys, *args, "--max-age", "60", "--expect-gpus", "2")
    assert other["cached"] is False and code == 1  # another question: checked afresh
    code, fresh = run_check(capsys, *args)  # no --max-age: never reused
    assert fresh["cached"] is False and code == 1


def test_json_document_shape(h200: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, nvml = h200
    _gpu0_ecc(root, nvml)
    _, doc = run_check(capsys, "--root", str(root), "--nvml", str(nvml))
    assert next(iter(doc)) == "schema" and doc["schema"] == "nodetune.check/2"
    fault = doc["faults"][0]
    assert {k: fault[k] for k in ("id", "fault_code", "severity", "action", "subject")} == {
        "id": "gpu.ecc.uncorrected", "fault_code": "NT1010", "severity": "critical",
        "action": "drain", "subject": "GPU0"}
    assert fault["actual"] == "3" and fault["expected"] == "<= 0"
    assert doc["tier"] == "quick" and doc["counts"]["fail"] == 1
    assert "\n" not in doc["summary"]


def test_bad_root_and_bad_tier_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--root", str(tmp_path / "nothing")])
    assert exit_info.value.code == 3
    assert capsys.readouterr().err.startswith("nodetune: error: --root ")
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--tier", "thorough"])
    assert exit_info.value.code == 3


def test_live_host(capsys: pytest.CaptureFixture[str]) -> None:
    """The machine running the tests: the check runs, answers healthy or not, never errors."""
    code, doc = run_check(capsys)
    assert code in (0, 1) and doc["origin"] == "live"
    assert doc["exit_code"] == code


def test_summary_stays_one_bounded_line() -> None:
    parts = [f"GPU{i} PCIe x8 (expected x16)" for i in range(8)]
    text = join_limited("nodetune:", parts, 120)
    assert len(text) <= 120 and text.startswith("nodetune: GPU0 PCIe x8 (expected x16); GPU1")
    assert text.endswith(" more)")
    assert join_limited("nodetune:", ["x" * 300], 100).endswith("...")
    assert join_limited("nodetune:", ['GPU0 "bad" \u2013 link', "GPU0 \"bad\" \u2013 link"], 200) \
        == "nodetune: GPU0 'bad' ? link"


def test_write_probe_on_the_live_host(tmp_path: Path) -> None:
    result = write_probe(HostRoot("/"), [str(tmp_path), str(tmp_path / "missing")])
    assert result[0] == {"subject": str(tmp_path), "writable": True, "error": ""}
    assert result[1]["writable"] is False and result[1]["error"]
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


# -- the start-up fast path ---------------------------------------------------------------------

def test_fast_path_parses_the_documented_options(tmp_path: Path) -> None:
    defaults = {o.dest: o.default for o in OPTIONS}
    assert parse_fast(["--tier=standard", "--json", "--mount", "/a", "--mount=/b", "-v",
                       "--expect-gpus", "8", "--timeout", "2.5", "--root", str(tmp_path)],
                      environ={}) == {
        **defaults, "tier": "standard", "as_json": True, "mounts": ("/a", "/b"), "modules": (),
        "verbose": True, "expect_gpus": 8, "timeout": 2.5, "root": str(tmp_path)}


@pytest.mark.parametrize("argv", [["--help"], ["--tier", "bogus"], ["--timeout", "0"],
                                  ["--bogus"], ["--root"], ["--expect-gpus", "-1"],
                                  ["--max-age", "nan"]])
def test_fast_path_leaves_other_command_lines_to_click(argv: list[str]) -> None:
    assert parse_fast(argv) is None


def test_fast_path_does_not_import_click(h200: tuple[Path, Path], tmp_path: Path) -> None:
    root, nvml = h200
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "nodetune", "check",
                           "--root", str(root), "--nvml", str(nvml), "--json"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "NODETUNE_CACHE_DIR": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["schema"] == "nodetune.check/2"
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "nodetune.check.evaluate" in imported and "click" not in imported


# -- the suites ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tier", ["quick", "standard"])
def test_suites_load_with_unique_ids_and_codes(tier: str) -> None:
    suite = load_suite(tier)  # validates every rule against the fact-path registry
    ids = [c.id for c in suite.checks]
    fault_codes = [c.rule["fault_code"] for c in suite.checks]
    assert len(ids) == len(set(ids)) and len(fault_codes) == len(set(fault_codes))
    assert all(c.rule["message"] and c.action in ("drain", "warn") for c in suite.checks)
    if tier == "standard":
        assert {c.id for c in load_suite("quick").checks} < set(ids)
        assert {c.needs[-1] for c in suite.checks if c.bench} == {"bench:memcpy",
                                                                  "bench:allreduce",
                                                                  "bench:gpu"}


def test_suite_cache_is_used_and_invalidated(tmp_path: Path) -> None:
    (tmp_path / "checks").mkdir()
    shutil.copy(load_suite("quick").files[0], tmp_path / "checks" / "quick.yaml")
    cache = tmp_path / "cache"
    cache.mkdir()
    first = load_suite("quick", tmp_path / "checks", str(cache))
    assert len(list(cache.glob("suite-quick-*.json"))) == 1
    assert load_suite("quick", tmp_path / "checks", str(cache)) == first
    text = (tmp_path / "checks" / "quick.yaml").read_text()
    (tmp_path / "checks" / "quick.yaml").write_text(text.replace("timeout_s: 5", "timeout_s: 7"))
    assert load_suite("quick", tmp_path / "checks", str(cache)).checks[0].timeout == 7


@pytest.mark.slow
def test_gb200_tray_needs_imex(synth: Any, synth_tmp: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """GB200 GPUs report an NVLink fabric cluster UUID: IMEX is required without any setting."""
    host = synth.build_gb200_tray(synth_tmp, synth.Options(imex=False))
    code, doc = run_check(capsys, "--root", str(host.root), "--nvml", str(host.nvml),
                          "--profile", "gb200")
    assert code == 1 and codes(doc) == {"NT3004"}
    assert doc["summary"] == "nodetune: nvidia-imex not-running (multi-node NVLink needs it)"
    status = {c["id"]: c["status"] for c in doc["checks"]}
    assert status["fabric.imex_channels"] == "pass" and status["fabric.state"] == "pass"


@pytest.mark.slow
@pytest.mark.parametrize("imex_running", [True, False])
def test_gb200_tray_under_the_dra_driver_keeps_the_host_imex_off(
        synth: Any, synth_tmp: Path, capsys: pytest.CaptureFixture[str],
        imex_running: bool) -> None:
    """With the NVIDIA DRA driver's ComputeDomain plugin, IMEX runs inside pods: the host service
    is not required (no drain when it is off) and running it is reported."""
    host = synth.build_gb200_tray(synth_tmp, synth.Options(imex=imex_running))
    (host.root / "var/lib/kubelet/plugins/compute-domain.nvidia.com").mkdir(parents=True)
    code, doc = run_check(capsys, "--root", str(host.root), "--nvml", str(host.nvml),
                          "--profile", "gb200")
    checks = {c["id"]: c for c in doc["checks"]}
    assert checks["fabric.imex"]["status"] == "skipped"
    assert checks["fabric.imex"]["note"] == (
        "IMEX runs per ComputeDomain inside pods (NVIDIA DRA driver)")
    assert checks["fabric.imex_host_off"]["status"] == ("fail" if imex_running else "pass")
    assert code == 0 and "NT3004" not in codes(doc)  # a warning, never a drain


def test_the_host_imex_check_does_not_apply_without_multi_node_nvlink(
        host_tree: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A node without GPUs (a real hwloc tree) has no IMEX question: skipped, not unknown."""
    _, doc = run_check(capsys, "--root", str(host_tree("8em64t-2s2ca2c")))
    check = next(c for c in doc["checks"] if c["id"] == "fabric.imex_host_off")
    assert (check["status"], check["note"]) == (
        "skipped", "not a multi-node NVLink system (no fabric cluster UUID, require_imex unset)")
