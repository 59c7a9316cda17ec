"""TuneD: the active profile as facts, the settings it would set back, and its parser's view.

Trees are real captures (tests/fixtures/hosts) with Debian's TuneD profiles laid over them
(tests/fixtures/tuned, copied from the tuned 2.20 package; tests/tuned_trees.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodetune.audit import tuned as tuned_check
from nodetune.audit.operation import run_audit
from nodetune.collectors import tuned
from nodetune.collectors.services import ServicesCollector
from nodetune.node.hostroot import HostRoot
from tests.audit_helpers import collect
from tests.host_trees import context
from tests.tuned_trees import TUNED_PROFILES, with_tuned

SYSTEM_PYTHON = "/usr/bin/python3"
LOADER = Path(__file__).parent / "tuned" / "load_profile.py"
VM = "h100x2-fc-vm-gather"


def tuned_parser_available() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import tuned.profiles"], capture_output=True,
                           check=False)
    return probe.returncode == 0


needs_tuned = pytest.mark.skipif(not tuned_parser_available(),
                                 reason="TuneD is not installed (apt-get install -y tuned): "
                                        "its profile parser is the reference")


def tuned_load(directories: list[Path], *names: str) -> dict[str, dict]:
    """The merged profile as TuneD 2.20's Loader and Merger build it (no daemon)."""
    out = subprocess.run([SYSTEM_PYTHON, str(LOADER), ":".join(map(str, directories)), *names],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture
def vm_with(host_tree, tmp_path):
    """vm_with(active, **options): the real H100 VM tree with TuneD and that active profile."""
    def make(active: str | None, **options) -> Path:
        return with_tuned(host_tree(VM), tmp_path / "tree", active, **options)
    return make


def test_include_chain_is_loaded_includes_first_and_the_child_wins(vm_with) -> None:
    profile, unknown = tuned.read(HostRoot(str(vm_with("hpc-compute"))))
    assert unknown == {}
    assert profile.active == "hpc-compute" and profile.mode == "manual"
    assert profile.chain == ["/usr/lib/tuned/latency-performance/tuned.conf",
                             "/usr/lib/tuned/hpc-compute/tuned.conf"]
    assert profile.settings["vm"] == {"transparent_hugepages": "always"}
    assert profile.settings["sysctl"]["vm.zone_reclaim_mode"] == "1"  # hpc-compute's own
    assert profile.settings["sysctl"]["vm.dirty_ratio"] == "10"  # from latency-performance
    assert profile.settings["cpu"]["governor"] == "performance"


def test_a_section_for_other_hardware_is_left_out(vm_with) -> None:
    """throughput-performance's [vm.thunderx] (uname_regex=aarch64) does not apply on x86_64."""
    profile, _ = tuned.read(HostRoot(str(vm_with("throughput-performance"))))
    assert "vm" not in profile.settings
    assert "kernel.numa_balancing" not in profile.settings["sysctl"]  # [sysctl.thunderx]
    assert profile.settings["disk"] == {"readahead": ">4096"}


def test_an_arm_tree_without_uname_files_still_decides_by_cpuinfo(host_tree, tmp_path) -> None:
    """The GB10 capture has /proc/cpuinfo but no /proc/sys/kernel: its CPU part (0xd87) is no
    ThunderX, so [vm.thunderx] does not apply whatever uname says."""
    tree = with_tuned(host_tree("nvidia-dgx-gb10"), tmp_path / "gb10", "throughput-performance")
    profile, unknown = tuned.read(HostRoot(str(tree)))
    assert unknown == {} and "vm" not in profile.settings


def test_local_profile_in_etc_wins_and_variables_expand(vm_with) -> None:
    tree = vm_with("site-gpu", files={"/etc/tuned/site-gpu/tuned.conf": (
        "[main]\ninclude=throughput-performance\n[variables]\nra=8192\n"
        "[disk]\nreadahead=>${ra}\n[bootloader]\ncmdline_site=iommu=pt quiet\n"
        "cmdline_drop=-quiet\n")})
    profile, unknown = tuned.read(HostRoot(str(tree)))
    assert unknown == {}
    assert profile.chain[-1] == "/etc/tuned/site-gpu/tuned.conf"
    assert profile.settings["disk"] == {"readahead": ">8192"}
    assert profile.settings["bootloader"] == {"cmdline": "iommu=pt"}


@pytest.mark.parametrize("active", ["hpc-compute", "throughput-performance", "virtual-guest",
                                    "network-latency", "accelerator-performance"])
@needs_tuned
def test_settings_agree_with_tunes_own_parser(vm_with, active) -> None:
    tree = vm_with(active)
    profile, _ = tuned.read(HostRoot(str(tree)))
    reference = tuned_load([tree / "usr/lib/tuned", tree / "etc/tuned"], active)
    expected: dict[str, dict[str, str]] = {}
    for unit in reference.values():
        applies = unit["uname_regex"] is None or "x86_64" in unit["uname_regex"]
        if unit["type"] in tuned.PLUGINS and unit["enabled"] and applies:
            options = dict(unit["options"])
            if unit["type"] == "bootloader":
                options = {"cmdline": tuned.fold_cmdline(options)}
            expected.setdefault(unit["type"], {}).update(options)
    assert profile.settings == expected


def test_unreadable_profile_is_unknown_not_pass(vm_with) -> None:
    tree = vm_with("no-such-profile")
    facts = ServicesCollector().collect(context(tree))
    assert "no-such-profile" in facts.unknown["tuned.settings"]
    doc = collect(str(tree), "off")
    [finding] = [f for f in run_audit(doc).findings if f.id == tuned_check.SETTING_ID]
    assert finding.status.value == "unknown"
    assert "is in none of /etc/tuned/profiles" in finding.actual


def test_running_without_an_active_profile_file_is_unknown(vm_with) -> None:
    doc = collect(str(vm_with(None)), "off")
    [finding] = [f for f in run_audit(doc).findings if f.id == tuned_check.SETTING_ID]
    assert finding.status.value == "unknown" and "active_profile" in finding.message


def test_virtual_guest_swappiness_overrides_nodetunes(vm_with) -> None:
    """virtual-guest sets vm.swappiness=30; every profile wants at most 10."""
    result = run_audit(collect(str(vm_with("virtual-guest")), "off"))
    [finding] = [f for f in result.findings if f.id == tuned_check.SETTING_ID]
    assert (finding.status.value, finding.severity.value) == ("fail", "warning")
    assert (finding.subject, finding.expected, finding.actual) == (
        "memory.swappiness", "10", "30 (TuneD virtual-guest)")
    assert "[sysctl] vm.swappiness=30" in finding.message
    assert result.exit_code == 1  # warnings


def test_hpc_compute_thp_always_overrides_madvise(vm_with) -> None:
    result = run_audit(collect(str(vm_with("hpc-compute")), "off"))
    overrides = {f.subject: f for f in result.findings if f.id == tuned_check.SETTING_ID}
    assert set(overrides) == {"memory.thp"}
    assert overrides["memory.thp"].expected == "madvise"
    assert "[vm] transparent_hugepages=always" in overrides["memory.thp"].message


def test_throughput_performance_agrees_and_passes(vm_with) -> None:
    """Its readahead=>4096 only raises read-ahead, which nodetune also wants at least 4096."""
    result = run_audit(collect(str(vm_with("throughput-performance")), "off"))
    [finding] = [f for f in result.findings if f.id == tuned_check.SETTING_ID]
    assert finding.status.value == "pass"


def test_no_check_while_tuned_neither_runs_nor_is_enabled(vm_with) -> None:
    doc = collect(str(vm_with("virtual-guest", running=False)), "off")
    assert not [f for f in run_audit(doc).findings if f.id == tuned_check.SETTING_ID]


def test_skip_leaves_the_check_out(vm_with) -> None:
    doc = collect(str(vm_with("virtual-guest")), "off")
    result = run_audit(doc, skip=[tuned_check.SETTING_ID])
    assert not [f for f in result.findings if f.id == tuned_check.SETTING_ID]


def test_copied_profiles_are_debians() -> None:
    """The fixture profiles are the package's files, byte for byte, where the package is here."""
    installed = Path("/usr/lib/tuned")
    if not installed.is_dir() or shutil.which("tuned-adm") is None:
        pytest.skip("TuneD is not installed (apt-get install -y tuned)")
    for conf in (TUNED_PROFILES / "usr/lib/tuned").glob("*/tuned.conf"):
        assert conf.read_bytes() == (installed / conf.parent.name / "tuned.conf").read_bytes()


def nodetune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodetune", *args], capture_output=True,
                          text=True, timeout=180, check=False)


def test_apply_dry_run_warns_before_changing_what_tuned_sets_back(vm_with) -> None:
    tree = vm_with("virtual-guest")
    text = nodetune("apply", "--root", str(tree), "--nvml", "off", "--dry-run")
    assert text.returncode == 0, text.stderr
    assert ("warning: TuneD profile virtual-guest sets [sysctl] vm.swappiness=30, over "
            "nodetune's 10 (memory.swappiness): TuneD puts its value back") in text.stdout
    doc = json.loads(nodetune("apply", "--root", str(tree), "--nvml", "off", "--dry-run",
                              "--json").stdout)
    assert doc["tuned_overrides"] == [{
        "setting": "memory.swappiness", "status": "fail", "tuned": "30 (TuneD virtual-guest)",
        "nodetune": "10", "message": "TuneD profile virtual-guest sets [sysctl] "
        "vm.swappiness=30, over nodetune's 10 (memory.swappiness)"}]


def test_apply_of_settings_tuned_leaves_alone_has_no_warning(vm_with) -> None:
    doc = json.loads(nodetune("apply", "--root", str(vm_with("throughput-performance")),
                              "--nvml", "off", "--dry-run", "--json").stdout)
    assert doc["tuned_overrides"] == []
