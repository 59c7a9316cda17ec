"""`nodetune audit` on real trees and on synthetic DGX H100 / GB200 trees with planted faults."""

from __future__ import annotations

import copy
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nodetune.audit.operation import AuditResult, run_audit
from nodetune.cli import cli, main
from nodetune.facts.model import Status
from nodetune.node.source import open_node
from tests.audit_helpers import collect, facts_getter, tree_and_nvml
from tests.conftest import _ram_dir, real_tree_names


@pytest.fixture(scope="module")
def facts_of(host_tree, synthetic_host):
    return facts_getter(host_tree, synthetic_host)


def failing(result: AuditResult) -> dict[str, tuple[str, set[str | None]]]:
    """{setting id: (severity, subjects)} of the failed settings."""
    out: dict[str, tuple[str, set[str | None]]] = {}
    for f in result.findings:
        if f.status is Status.FAIL:
            out.setdefault(f.id, (f.severity.value, set()))[1].add(f.subject)
    return out


def invoke(*args: str) -> tuple[int, str]:
    """Run the CLI as a user would (exit code through nodetune.cli.main)."""
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(cli, list(args), standalone_mode=False)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return int(result.return_value if result.return_value is not None else 0), result.output


# -- real trees ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", real_tree_names())
def test_every_real_tree_audits(name: str, facts_of) -> None:
    facts = facts_of(name)
    result = run_audit(facts)
    gpus = bool(facts.get("gpus"))
    assert result.gpu_found is gpus
    # GPU VMs are cloud VMs (hypervisor flag, numa_node -1); the hwloc trees have no GPU
    assert result.profile.name == ("cloud-vm" if gpus else "base")
    if not gpus:
        assert "no NVIDIA GPU found" in result.notes[0]
    assert all(f.severity.value == "info" for f in result.findings if f.status is Status.FAIL)
    if result.count(Status.PASS) + result.count(Status.FAIL):
        assert result.exit_code == 0
    else:  # the hwloc gathers hold sys/ only: nothing the profile reads, so not compliant
        assert (result.exit_code, result.compliance) == (3, 0.0)
        assert "no setting could be checked" in result.notes[-1]
    doc = result.to_json()
    assert json.loads(json.dumps(doc)) == doc


def test_h200_vm_matches_cloud_vm_and_reports_what_a_guest_can_fix(facts_of) -> None:
    result = run_audit(facts_of("h200x2-vm-gather"))
    assert result.match.reason == ("a virtual machine with NVIDIA GPUs (derived.virtualized = "
                                   "true; derived.gpu_found = true)")
    assert failing(result) == {"memory.swappiness": ("info", {None})}
    swappiness = next(f for f in result.findings if f.id == "memory.swappiness")
    assert (swappiness.actual, swappiness.persisted) == ("60", "unknown (/etc is not present "
                                                                "in this tree)")
    passed = {f.id for f in result.findings if f.status is Status.PASS}
    assert {"gpu.persistence", "gpu.nvlink_inactive", "pcie.gpu_link_width", "memory.thp"} <= passed
    idle = [f for f in result.findings if f.id == "pcie.gpu_link_gen"]
    assert [f.status for f in idle] == [Status.SKIPPED, Status.SKIPPED]  # idle GPUs
    assert "GPU idle" in idle[0].message
    # the bare-metal profile of the same GPU would wrongly demand NVSwitch and 8 GPUs
    h200 = run_audit(facts_of("h200x2-vm-gather"), profile="h200")
    assert failing(h200)["gpu.count"] == ("critical", {None})


def test_a_node_without_gpu_says_so(facts_of) -> None:
    code, out = invoke("audit", "--root", str(_tree(facts_of, "8em64t-2s2ca2c")))
    # this hwloc gather holds sys/ only: the profile's settings are all unknown
    assert code == 3
    assert "Profile base" in out and "no NVIDIA GPU found" in out
    assert "base: not checked (no setting could be read)" in out
    assert "0 passed" in out and "compliance 0.0%" in out


def _tree(facts_of, name: str) -> str:
    return facts_of(name)["root"]


# -- synthetic trees ----------------------------------------------------------------------

# The synthetic builder leaves block read-ahead at the kernel default (128 KB), below the
# 4096 KB of TuneD's throughput profiles [T1]: the one info finding of its clean trees.
READ_AHEAD = "storage.read_ahead"


def test_clean_dgx_h100_reports_nothing_else(facts_of) -> None:
    result = run_audit(facts_of("synthetic-dgx-h100"))
    assert result.profile.name == "hgx-h100"  # Xeon 8468 like the reference, not the DGX 8480C
    assert set(failing(result)) == {READ_AHEAD}
    assert result.exit_code == 0
    unknown = {f.id for f in result.findings if f.status is Status.UNKNOWN}
    assert unknown == {"nic.ib_mtu"}  # sysfs has no InfiniBand active MTU
    passed = {(f.id, f.subject) for f in result.findings if f.status is Status.PASS}
    for gpu in range(8):
        for sid in ("pcie.gpu_nic_path", "pcie.acs", "pcie.gpu_link_width", "numa.gpu_placement"):
            assert (sid, f"GPU{gpu}") in passed
    dgx = run_audit(facts_of("synthetic-dgx-h100"), profile="dgx-h100")
    assert failing(dgx) == {READ_AHEAD: failing(result)[READ_AHEAD],
                            "cpu.cores": ("info", {None})}
    assert {(f.subject, f.status) for f in dgx.findings if f.id == "pcie.gpu_nic_pairing"} == {
        (f"GPU{i}", Status.PASS) for i in range(8)}


def test_clean_gb200_tray_reports_nothing_else(facts_of) -> None:
    result = run_audit(facts_of("synthetic-gb200-tray"))
    assert result.profile.name == "gb200"
    assert set(failing(result)) == {READ_AHEAD}
    passed = {f.id for f in result.findings if f.status is Status.PASS}
    assert {"gpu.imex", "gpu.fabric_state", "gpu.fabric_cluster", "memory.page_size",
            "numa.node_count", "numa.gpu_placement", "kernel.init_on_alloc",
            "kernel.numa_balancing_boot", "memory.dirty_ratio"} <= passed


DGX_FAULTS = {"nic_on_wrong_socket": (3,), "gpu_link_width": {5: 8}, "acs_enabled": True,
              "thp": "always", "numa_balancing": 1, "missing_modules": ("nvidia_peermem",),
              "governor": "powersave", "nvme_scheduler": "mq-deadline"}


@pytest.fixture(scope="module")
def faulty_dgx(synth, tmp_path_factory) -> Any:
    ram = _ram_dir("nodetune-faulty-dgx-")  # thousands of files: RAM when /dev/shm is writable
    yield synth.build_dgx_h100(ram or tmp_path_factory.mktemp("faulty-dgx"),
                               synth.Options(**DGX_FAULTS))
    if ram is not None:
        shutil.rmtree(ram, ignore_errors=True)


@pytest.mark.slow
def test_planted_faults_on_dgx_h100_found_with_their_severity(faulty_dgx) -> None:
    result = run_audit(collect(str(faulty_dgx.root), str(faulty_dgx.nvml)))
    gpus = {f"GPU{i}" for i in range(8)}
    nvme = {f"nvme{i}n1" for i in range(10)}
    assert failing(result) == {
        "pcie.gpu_nic_path": ("critical", {"GPU3"}),  # its ConnectX-7 moved to socket 1
        "pcie.gpu_link_width": ("critical", {"GPU5"}),  # trained to x8
        "pcie.acs": ("critical", gpus),  # ACS redirection on every switch downstream port
        "memory.thp": ("info", {None}),
        "numa.balancing": ("warning", {None}),
        "kernel.nvidia_peermem": ("critical", {None}),
        "cpu.governor": ("warning", {None}),
        "cpu.energy_perf_bias": ("warning", {None}),  # the builder sets EPB 6 with powersave
        "storage.nvme_scheduler": ("info", nvme),
        READ_AHEAD: ("info", nvme),
    }
    assert result.exit_code == 2
    by_id = {(f.id, f.subject): f for f in result.findings}
    width = by_id[("pcie.gpu_link_width", "GPU5")]
    assert width.message == ("PCIe link trained to x8 of x16: 31.5 instead of 63 GB/s per "
                             "direction")
    nic = by_id[("pcie.gpu_nic_path", "GPU3")]
    assert (nic.expected, nic.actual) == ("PIX", "NODE")
    acs = by_id[("pcie.acs", "GPU0")]
    assert acs.remediation == {"role": "gpu", "task": "acs",
                               "vars": {"gpu_acs_disable": acs.actual.split(", ")}}
    balancing = by_id[("numa.balancing", None)]
    assert (balancing.actual, balancing.persisted) == ("1", "1")
    peermem = by_id[("kernel.nvidia_peermem", None)]
    assert peermem.persisted == "not persisted" and peermem.message == "nvidia_peermem not loaded"


@pytest.mark.slow
def test_planted_faults_on_gb200_tray(synth, synth_tmp: Path) -> None:
    host = synth.build_gb200_tray(synth_tmp, synth.Options(
        page_size_kb=4, imex=False, numa_balancing=1, thp="always",
        missing_modules=("nvidia_peermem",), gpu_link_width={2: 8}))
    result = run_audit(collect(str(host.root), str(host.nvml)))
    nvme = {f"nvme{i}n1" for i in range(4)}
    assert failing(result) == {
        "memory.page_size": ("warning", {None}),
        "gpu.imex": ("critical", {None}),
        "numa.balancing": ("warning", {None}),
        # the builder drops numa_balancing=disable from the command line with the sysctl
        "kernel.numa_balancing_boot": ("warning", {None}),
        "memory.thp": ("info", {None}),
        "kernel.nvidia_peermem": ("critical", {None}),
        "pcie.gpu_link_width": ("warning", {"GPU2"}),
        READ_AHEAD: ("info", nvme),
    }
    boot = next(f for f in result.findings if f.id == "kernel.numa_balancing_boot")
    assert (boot.actual, boot.persisted, boot.needs_reboot) == ("not set", "not persisted", False)


def test_gb200_tray_under_the_dra_driver_wants_the_host_imex_stopped(
        synth, synth_tmp: Path) -> None:
    """The NVIDIA DRA driver runs IMEX per ComputeDomain in pods: apply must never enable the
    host service there, and a running one is a finding whose fix stops it."""
    host = synth.build_gb200_tray(synth_tmp, synth.Options(imex=True))
    (host.root / "var/lib/kubelet/plugins/compute-domain.nvidia.com").mkdir(parents=True)
    result = run_audit(collect(str(host.root), str(host.nvml)))
    by_id = {f.id: f for f in result.findings}
    assert by_id["gpu.imex"].status is Status.SKIPPED
    off = by_id["gpu.imex_off_with_dra"]
    assert (off.status, off.severity.value) == (Status.FAIL, "critical")
    assert "disable --now nvidia-imex" in off.fix


# -- the command ----------------------------------------------------------------------------

@pytest.mark.slow
def test_exit_codes_json_and_junit(faulty_dgx, synthetic_host, tmp_path: Path) -> None:
    clean = synthetic_host("synthetic-dgx-h100")
    root, nvml = str(faulty_dgx.root), str(faulty_dgx.nvml)
    assert invoke("audit", "--root", str(clean.root), "--nvml", str(clean.nvml))[0] == 0
    code, out = invoke("audit", "--root", root, "--nvml", nvml)
    assert code == 2
    assert "hgx-h100: critical findings" in out and "compliance" in out
    assert "pcie.gpu_link_width" in out and "GPU5" in out and "PCIe/topology" not in out
    code, out = invoke("audit", "--root", root, "--nvml", nvml, "-v")
    assert code == 2 and "PCIe/topology" in out and "fix: " in out and "Sources:" in out
    code, _ = invoke("audit", "--root", root, "--nvml", nvml, "--only", "numa.*,cpu.governor")
    assert code == 1  # warnings only
    code, _ = invoke("audit", "--root", root, "--nvml", nvml, "--skip", "pcie.*,kernel.*")
    assert code == 1
    junit = tmp_path / "audit.xml"
    code, out = invoke("audit", "--root", root, "--nvml", nvml, "--json", "--junit", str(junit),
                       "--severity", "warning")
    doc = json.loads(out)
    assert code == 2 and next(iter(doc)) == "schema" and doc["schema"] == "nodetune.audit/1"
    assert doc["profile"]["name"] == "hgx-h100" and doc["match"]["automatic"] is True
    assert {f["severity"] for f in doc["findings"]} <= {"warning", "critical"}
    summary = doc["summary"]
    assert summary["failed"] == {"critical": 11, "warning": 3, "info": 0}
    assert summary["fail"] == sum(1 for f in doc["findings"] if f["status"] == "fail")
    assert doc["findings"][0]["status"] == "fail" and doc["findings"][0]["severity"] == "critical"
    assert set(doc["findings"][0]) >= {"id", "area", "severity", "status", "subject", "fact",
                                       "expected", "actual", "message", "why", "fix",
                                       "persisted", "needs_reboot", "disruption",
                                       "remediation"}
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "nodetune.audit.hgx-h100"
    cases = suite.findall("testcase")
    assert len(cases) == len(doc["findings"]) == int(suite.get("tests", "0"))
    failures = [(c.get("name"), c.find("failure")) for c in cases if c.find("failure") is not None]
    assert len(failures) == summary["fail"] == int(suite.get("failures", "0"))
    types = {name: f.get("type") for name, f in failures}
    assert types["pcie.gpu_link_width[GPU5]"] == "critical"
    assert types["numa.balancing"] == "warning"
    assert "expected: PIX\nactual: NODE" in dict(failures)["pcie.gpu_nic_path[GPU3]"].text


def test_usage_errors_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for args in (["audit", "--root", str(tmp_path)],  # not a host tree
                 ["audit", "--profile", "nosuch"],
                 ["audit", "--skip", "cpu.gouvernor"],
                 ["audit", "--severity", "fatal"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 3, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("nodetune: error: "), err


def test_from_snapshot_gives_the_same_findings(facts_of, host_tree, synthetic_host,
                                               tmp_path: Path) -> None:
    root, nvml = tree_and_nvml("h200x2-vm-gather", host_tree, synthetic_host)
    snap = tmp_path / "node.tar.gz"
    with pytest.raises(SystemExit) as exit_info:
        main(["snapshot", "--root", root, "--nvml", nvml, "-o", str(snap)])
    assert exit_info.value.code == 0
    code, out = invoke("audit", "--from", str(snap), "--json")
    replayed = json.loads(out)
    direct = run_audit(facts_of("h200x2-vm-gather")).to_json()
    assert code == 0 and replayed["profile"]["name"] == "cloud-vm"
    key = ("id", "subject", "status", "actual")
    assert ([{k: f[k] for k in key} for f in replayed["findings"]]
            == [{k: f[k] for k in key} for f in direct["findings"]])


def test_live_host_audits(capsys: pytest.CaptureFixture) -> None:
    """The machine running the tests (the CI has no GPU): audit works and says what it found."""
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "--json"])
    assert exit_info.value.code in (0, 1, 2)
    doc = json.loads(capsys.readouterr().out)
    if not doc["gpu_found"]:
        assert doc["profile"]["name"] == "base"
        assert doc["notes"][0].startswith("no NVIDIA GPU found")


def test_blackwell_ultra_tray_gets_the_gb300_profile(facts_of) -> None:
    """GB300 trays share the GB200 tray's layout: the synthetic tray with Blackwell Ultra
    GPU names is recommended gb300 and passes what gb300 inherits from gb200."""
    facts = copy.deepcopy(facts_of("synthetic-gb200-tray"))
    for gpu in facts["gpus"]:
        gpu["name"] = "NVIDIA GB300"
    result = run_audit(facts)
    assert result.profile.name == "gb300"
    passed = {f.id for f in result.findings if f.status is Status.PASS}
    assert {"gpu.count", "gpu.imex", "gpu.fabric_state", "memory.page_size"} <= passed
    # 4 ConnectX HCAs and 2 BlueField-3 DPUs
    assert [f.status for f in result.findings if f.id == "nic.hca_count"] == [Status.PASS]
    gone = {d["pci_address"] for d in facts["rdma"]["devices"][3:]}  # 3 HCAs fell off the bus
    facts["rdma"]["devices"] = facts["rdma"]["devices"][:3]
    facts["pci"]["devices"] = [d for d in facts["pci"]["devices"] if d["address"] not in gone]
    facts["nic"]["interfaces"] = [i for i in facts["nic"]["interfaces"]
                                  if i.get("pci_address") not in gone]
    lost = run_audit(facts)
    assert [f.status for f in lost.findings if f.id == "nic.hca_count"] == [Status.FAIL]


def test_application_clocks_below_default_are_reported(synth, synth_tmp) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(app_clock_mhz={3: 1410}))
    with open_node(root=str(host.root), nvml=str(host.nvml)) as node:
        facts = node.facts().to_json()
    result = run_audit(facts, profile="dgx-h100")
    low = [f for f in result.findings if f.id == "gpu.app_clocks" and f.status is Status.FAIL]
    assert [f.subject for f in low] == ["GPU3"]
    assert "1410 MHz, below the default 1980 MHz" in low[0].message
