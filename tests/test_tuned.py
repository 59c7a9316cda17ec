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
from nodetune.profiles import tunables
from nodetune.profiles import tuned as terms
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


@pytest.fixture(scope="module")
def vm_with(host_tree, tmp_path_factory):
    """vm_with(active, **options): the real H100 VM tree with TuneD and that active profile,
    made once per module for each set of arguments (tests only read it)."""
    trees: dict[str, Path] = {}

    def make(active: str | None, **options) -> Path:
        key = repr((active, sorted(options.items())))
        if key not in trees:
            trees[key] = with_tuned(host_tree(VM), tmp_path_factory.mktemp("tuned") / "tree",
                                    active, **options)
        return trees[key]
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


# -- nodetune apply --as tuned DIR ----------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden" / "tuned"


def as_tuned(tree: Path, out: Path, *args: str, nvml: str = "off"
             ) -> subprocess.CompletedProcess[str]:
    return nodetune("apply", "--root", str(tree), "--nvml", nvml, "--as", "tuned", str(out),
                    *args)


def activate(tree: Path, written: Path) -> None:
    """What `cp -r DIR /etc/tuned/NAME && tuned-adm profile NAME` leaves in the tree."""
    shutil.copytree(written, tree / "etc/tuned" / written.name)
    (tree / "etc/tuned/active_profile").write_text(f"{written.name}\n", encoding="utf-8")


@pytest.fixture
def untuned_dgx(synth, tmp_path):
    """A synthetic DGX H100 failing what TuneD can set (THP, governor, EPB, swappiness, NUMA
    balancing, iommu=pt, NVMe scheduler and read-ahead) and what it cannot (NIC MRRS), with
    Debian's TuneD profiles and no active profile."""
    host = synth.build("synthetic-dgx-h100", tmp_path / "dgx", synth.Options(
        thp="always", governor="powersave", iommu="translated", nvme_scheduler="mq-deadline",
        nic_max_read_request=512, swappiness=60, numa_balancing=1))
    shutil.copytree(TUNED_PROFILES / "usr", host.root / "usr", dirs_exist_ok=True)
    return host


@needs_tuned
def test_written_profile_merges_in_tuneds_parser_with_nodetunes_values(untuned_dgx,
                                                                       tmp_path) -> None:
    """TuneD 2.20's Loader and Merger load the written child over accelerator-performance and
    the merged profile holds every value nodetune writes, the parent's other options kept.

    `tuned-adm verify` is not used: in 2.20 it asks the running daemon over D-Bus
    (tuned/admin/admin.py: without the daemon it prints "Not supported in no_daemon mode."),
    and starting the daemon would tune this machine.
    """
    out = tmp_path / "nodetune-dgx"
    result = as_tuned(untuned_dgx.root, out, "--json", nvml=str(untuned_dgx.nvml))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["schema"], doc["include"], doc["host_changed"]) == (
        "nodetune.tuned-profile/1", "accelerator-performance", False)
    merged = tuned_load([untuned_dgx.root / "usr/lib/tuned", tmp_path], "nodetune-dgx")
    by_type = {u["type"]: u["options"] for u in merged.values() if u["uname_regex"] is None}
    wanted = {(s["section"], s["option"]): s["value"] for s in doc["settings"]}
    assert {(k[0], k[1]) for k in wanted} >= {
        ("sysctl", "vm.swappiness"), ("sysctl", "kernel.numa_balancing"),
        ("vm", "transparent_hugepages"), ("cpu", "governor"), ("cpu", "energy_perf_bias"),
        ("bootloader", "cmdline_nodetune"), ("sysfs", "/sys/block/nvme0n1/queue/scheduler"),
        ("sysfs", "/sys/block/nvme0n1/queue/read_ahead_kb")}
    for (section, option), value in wanted.items():
        assert by_type[section][option] == value, (section, option)
    assert by_type["cpu"]["force_latency"] == "99"  # accelerator-performance's own
    assert by_type["vm"]["transparent_hugepages"] == "madvise"
    assert by_type["bootloader"]["cmdline_nodetune"] == "+iommu=pt"
    left = {n["setting"].split("[")[0] for n in doc["not_expressible"]}
    assert left == {"nic.max_read_request"}
    assert "no TuneD plugin writes PCI register" in doc["not_expressible"][0]["reason"]
    text = (out / "tuned.conf").read_text()
    assert "#   nic.max_read_request[" in text  # listed in the file too


def test_once_active_the_written_profile_overrides_nothing(untuned_dgx, tmp_path) -> None:
    """The detector reading the written profile as the active one finds no setting of the
    plan that TuneD would set back."""
    out = tmp_path / "nodetune-dgx"
    assert as_tuned(untuned_dgx.root, out, nvml=str(untuned_dgx.nvml)).returncode == 0
    activate(untuned_dgx.root, out)
    (untuned_dgx.root / "proc/950").mkdir()
    (untuned_dgx.root / "proc/950/comm").write_text("tuned\n")
    result = run_audit(collect(str(untuned_dgx.root), str(untuned_dgx.nvml)))
    [finding] = [f for f in result.findings if f.id == tuned_check.SETTING_ID]
    assert finding.status.value == "pass", finding.message


@needs_tuned
def test_the_active_profile_is_included_and_its_overrides_carried(vm_with, tmp_path) -> None:
    """On the VM with hpc-compute active (THP always), the child includes hpc-compute and sets
    THP back to madvise; TuneD's merger lets the child win."""
    tree = vm_with("hpc-compute")
    out = tmp_path / "gpu-vm"
    doc = json.loads(as_tuned(tree, out, "--json").stdout)
    assert (doc["include"], doc["include_reason"]) == ("hpc-compute",
                                                       "the active TuneD profile")
    thp = next(s for s in doc["settings"] if s["setting"].startswith("memory.thp"))
    assert (thp["section"], thp["option"], thp["value"]) == (
        "vm", "transparent_hugepages", "madvise")
    merged = tuned_load([tree / "usr/lib/tuned", tmp_path], "gpu-vm")
    assert merged["vm"]["options"]["transparent_hugepages"] == "madvise"
    assert merged["sysctl"]["options"]["vm.zone_reclaim_mode"] == "1"  # hpc-compute's, kept


def test_text_output_names_options_and_how_to_activate(vm_with, tmp_path) -> None:
    tree = vm_with("virtual-guest")
    result = as_tuned(tree, tmp_path / "gpu-vm")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wrote {tmp_path}/gpu-vm/tuned.conf: TuneD profile gpu-vm, "
                               "include=virtual-guest (the active TuneD profile)")
    assert any(line.split() == ["[sysctl]", "vm.swappiness=10", "memory.swappiness:", "60",
                                "->", "10"] for line in lines)
    assert lines[-1] == (f"nothing on this host was changed. To activate: cp -r "
                         f"{tmp_path}/gpu-vm /etc/tuned/gpu-vm && tuned-adm profile gpu-vm")
    assert (tree / "proc/sys/vm/swappiness").read_text().strip() == "60"  # untouched


def test_golden_profile(vm_with, tmp_path, update_golden) -> None:
    from nodetune import __version__

    assert as_tuned(vm_with("hpc-compute"), tmp_path / "gpu-vm").returncode == 0
    text = (tmp_path / "gpu-vm/tuned.conf").read_text().replace(__version__, "VERSION")
    golden = GOLDEN / "h100x2-fc-vm-gather+hpc-compute.conf"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), "rerun with --update-golden after checking the diff"


def test_a_non_empty_directory_is_refused_unless_forced(vm_with, tmp_path) -> None:
    tree = vm_with("virtual-guest")
    out = tmp_path / "gpu-vm"
    out.mkdir()
    (out / "notes.txt").write_text("keep\n")
    refused = as_tuned(tree, out)
    assert refused.returncode == 4
    assert refused.stderr.startswith(f"nodetune: error: {out} is not empty; nothing was written")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (out / "tuned.conf").exists()
    assert as_tuned(tree, out, "--force").returncode == 0
    assert (out / "tuned.conf").exists() and (out / "notes.txt").read_text() == "keep\n"


@pytest.mark.parametrize(("args", "message"), [
    (("--as", "tuned"), "--as tuned needs DIR"),
    (("--render-only", "x", "--as", "tuned", "y"), "--as tuned and --render-only"),
])
def test_usage_errors_are_one_line_exit_3(vm_with, args, message) -> None:
    result = nodetune("apply", "--root", str(vm_with("virtual-guest")), "--nvml", "off", *args)
    assert result.returncode == 3 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_directory_name_tuned_cannot_load_is_an_error(vm_with, tmp_path) -> None:
    result = as_tuned(vm_with("virtual-guest"), tmp_path / "gpu vm")
    assert result.returncode == 3
    assert "'gpu vm' cannot name a TuneD profile" in result.stderr


# -- the tunable <-> TuneD option table -------------------------------------------------------

def test_every_sysfs_knob_has_a_tuned_option_read_back() -> None:
    for path, knob in tunables.SYSFS_KNOBS.items():
        tunable = tunables.SysfsKnob(path=path)
        value = knob.choices[0] if knob.choices else "performance"
        option = terms.option_for(tunable, value)
        assert terms.set_by(tunable, {option.plugin: {option.option: option.value}}) == option


@pytest.mark.parametrize(("tunable", "value", "subject"), [
    (tunables.Sysctl(sysctl="vm.swappiness"), 10, None),
    (tunables.SysfsKnob(path=terms.THP_ENABLED), "madvise", None),
    (tunables.SysfsKnob(path=terms.THP_DEFRAG), "defer+madvise", None),
    (tunables.SysfsKnob(path=terms.GOVERNOR), "performance", None),
    (tunables.SysfsKnob(path=terms.EPB), "performance", None),
    (tunables.SysfsKnob(path=terms.EPP), "performance", None),
    (tunables.SysfsKnob(path=terms.BOOST), True, None),
    (tunables.CmdlineArg(arg="iommu"), "pt", None),
    (tunables.BlockQueue(attribute="scheduler"), "none", "nvme0n1"),
    (tunables.BlockQueue(attribute="read_ahead_kb"), 4096, None),
    (tunables.ModuleOption(module="nvidia", option="NVreg_EnableStreamMemOPs"), "1", None),
    (tunables.Service(unit="nvidia-persistenced"), "running", None),
])
def test_what_the_writer_writes_the_detector_reads_back_as_agreeing(tunable, value,
                                                                     subject) -> None:
    option = terms.option_for(tunable, value, subject)
    found = terms.set_by(tunable, {option.plugin: {option.option: option.value}})
    assert found == option
    expect = tunable.expectation({"equals": value})
    assert terms.overrides(tunable, found, expect, value) is False
    other = {"equals": "never"} if tunable.fact() == "memory.thp.enabled" else None
    if other:
        assert terms.overrides(tunable, found, other, "never") is True


def test_a_pci_register_has_no_tuned_option() -> None:
    assert terms.option_for(tunables.PciRegister(), 4096) is None


@pytest.mark.parametrize(("raw", "written", "expect", "overrides"), [
    (">4096", 4096, {"min": 4096}, False),  # raises only: nodetune's 4096 is left alone
    (">8192", 4096, {"min": 4096}, False),  # raises to 8192, still at least 4096
    (">2048", 10, {"max": 10}, True),  # raises 10 to 2048
    ("<5", 10, {"max": 10}, False),  # lowers to 5: still at most 10
    ("8192 s", 4096, {"min": 4096}, False),  # sectors: 4096 KiB
    ("${f:calc_isolated_cores:2}", 0, {"equals": 0}, None),  # computed when TuneD runs
])
def test_tuned_modifiers_and_units(raw, written, expect, overrides) -> None:
    tunable = tunables.BlockQueue(attribute="read_ahead_kb")
    option = terms.Option("disk", "readahead", raw)
    assert terms.overrides(tunable, option, expect, written) is overrides


def test_a_snapshot_keeps_the_profile_and_replays_the_same_facts(vm_with, tmp_path) -> None:
    tree = vm_with("hpc-compute")
    archive = tmp_path / "node.tar.gz"
    assert nodetune("snapshot", "--root", str(tree), "--nvml", "off", "-o",
                    str(archive)).returncode == 0
    live = json.loads(nodetune("facts", "--root", str(tree), "--nvml", "off", "--only",
                               "services", "--json").stdout)
    replayed = json.loads(nodetune("facts", "--from", str(archive), "--only", "services",
                                   "--json").stdout)
    assert replayed["services"]["tuned"] == live["services"]["tuned"]
    assert live["services"]["tuned"]["settings"]["vm"] == {"transparent_hugepages": "always"}


def test_explain_knows_the_tuned_check() -> None:
    result = nodetune("explain", tuned_check.SETTING_ID)
    assert result.returncode == 0, result.stderr
    assert "nodetune apply --as tuned" in " ".join(result.stdout.split())


def test_a_broken_variables_file_is_unknown(vm_with) -> None:
    tree = vm_with("site", files={
        "/etc/tuned/site/tuned.conf": "[main]\ninclude=throughput-performance\n"
                                      "[variables]\ninclude=/etc/tuned/site-variables.conf\n",
        "/etc/tuned/site-variables.conf": "isolated_cores=2-7\n=no name\n"})
    _, unknown = tuned.read(HostRoot(str(tree)))
    assert unknown["tuned.settings"].startswith("TuneD profile site: cannot parse "
                                                "/etc/tuned/site-variables.conf")
