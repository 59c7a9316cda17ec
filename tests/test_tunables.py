"""Tunables: one declaration gives a setting's check and its fix.

The value apply writes follows from the expectation (an override `max: 5` writes 5), the
dry run shows that value, each kind of tunable checks the fact its fix changes, and a setting
whose fix could not satisfy its own expectation is refused when the profile loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nodetune.apply import remediate
from nodetune.errors import ProfileError
from nodetune.facts.model import Status
from nodetune.profiles import tunables
from nodetune.profiles.catalog import Library
from nodetune.rules.evaluation import evaluate
from nodetune.rules.operators import target
from nodetune.rules.resolve import resolve


def nodetune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodetune", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)


@pytest.fixture
def untuned(synth, synth_tmp):
    """A synthetic DGX H100 with vm.swappiness 60 (and the default 128 KB NVMe read-ahead)."""
    return synth.build_dgx_h100(synth_tmp, synth.Options(swappiness=60))


def _overrides(tmp_path: Path, text: str) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return str(path)


def _plan(host: Any, overrides: str, only: str, workdir: Path) -> remediate.Plan:
    request = remediate.Request(root=str(host.root), nvml=str(host.nvml), overrides=overrides,
                                only=(only,))
    return remediate.prepare(request, workdir, run_check=False)


# -- the value written follows from the bound ----------------------------------------------

def test_override_max_writes_the_bound_and_the_node_then_passes(untuned, tmp_path):
    over = _overrides(tmp_path, "settings:\n  memory.swappiness: {max: 5}\n")
    plan = _plan(untuned, over, "memory.swappiness", tmp_path / "work")
    assert plan.plan.variables["kernel_sysctl"] == {"vm.swappiness": "5"}
    (change,) = plan.changes
    assert (change.current, change.wanted) == ("60", "5")
    # what the role writes, read back by the next audit: the setting passes
    (untuned.root / "proc/sys/vm/swappiness").write_text("5\n")
    after = remediate.audit_node(plan.request)
    (swappiness,) = [f for f in after.findings if f.id == "memory.swappiness"]
    assert swappiness.status is Status.PASS


def test_override_min_writes_the_bound_to_every_device(untuned, tmp_path):
    over = _overrides(tmp_path, "settings:\n  storage.read_ahead: {min: 8192}\n")
    plan = _plan(untuned, over, "storage.read_ahead", tmp_path / "work")
    block = plan.plan.variables["storage_block"]
    assert block and {d["read_ahead_kb"] for d in block.values()} == {8192}
    assert {c.wanted for c in plan.changes} == {"8192"}
    assert all("echo 8192 > /sys/block/" in f.fix for f in plan.audit.findings
               if f.id == "storage.read_ahead" and f.status is Status.FAIL)


def test_shipped_bound_writes_the_bound_itself(untuned, tmp_path):
    plan = _plan(untuned, None, "memory.swappiness", tmp_path / "work")  # type: ignore[arg-type]
    assert plan.plan.variables["kernel_sysctl"] == {"vm.swappiness": "10"}
    assert plan.changes[0].wanted == "10"


def test_a_range_writes_the_bound_nearest_the_current_value():
    expect = {"min": 10, "max": 20}
    assert target(expect, 60) == 20
    assert target(expect, 3) == 10
    assert target(expect, None) == 10
    assert target({"one_of": ["madvise", "never"]}, "always") == "madvise"
    assert target({"min": 20, "max": 5}, 0) is None
    assert target({"regex": "^1"}, 0) is None


@pytest.mark.slow
def test_dry_run_wanted_column_is_what_ansible_writes(untuned, tmp_path):
    over = _overrides(tmp_path, "settings:\n  memory.swappiness: {max: 5}\n")
    result = nodetune("apply", "--root", str(untuned.root), "--nvml", str(untuned.nvml),
                      "--overrides", over, "--only", "memory.swappiness", "--dry-run", "--json")
    doc = json.loads(result.stdout)
    (setting,) = doc["settings"]
    assert (setting["current"], setting["wanted"]) == ("60", "5")
    diffs = [d for c in doc["changes"] for d in c["diff"] if d["path"] == "/proc/sys/vm/swappiness"]
    assert diffs, doc["changes"]
    assert all("5" in json.dumps(d) and "10" not in json.dumps(d) for d in diffs)


@pytest.mark.slow
def test_apply_with_override_max_writes_it_and_verifies_ok(untuned, tmp_path):
    over = _overrides(tmp_path, "settings:\n  memory.swappiness: {max: 5}\n")
    result = nodetune("apply", "--root", str(untuned.root), "--nvml", str(untuned.nvml),
                      "--overrides", over, "--only", "memory.swappiness", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    (setting,) = json.loads(result.stdout)["settings"]
    assert setting["status"] == "fixed", setting
    assert (untuned.root / "proc/sys/vm/swappiness").read_text().strip() == "5"


# -- refused at load time, with file:line ---------------------------------------------------

@pytest.mark.parametrize(("text", "line", "expected"), [
    ("settings:\n  memory.swappiness: {regex: '^1'}\n", 2,
     "memory.swappiness.regex: regex names no value to write to sysctl vm.swappiness"),
    ("settings:\n  memory.swappiness:\n    min: 20\n    max: 5\n", 3,
     "memory.swappiness.min: >= 20 and <= 5 names no value that satisfies it"),
    ("settings:\n  memory.thp: {equals: sometimes}\n", 2,
     "memory.thp.equals: sometimes cannot be written to "
     "/sys/kernel/mm/transparent_hugepage/enabled"),
    ("settings:\n  cpu.energy_perf_bias: {write: power}\n", 2,
     "cpu.energy_perf_bias.write: writing power to sysfs "
     "/sys/devices/system/cpu/cpu*/power/energy_perf_bias would not satisfy one of 0, "
     "performance"),
    ("settings:\n  nic.max_read_request: {min: 3000}\n", 2,
     "max_read_request takes one of 128, 256, 512, 1024, 2048, 4096 bytes, not 3000"),
])
def test_an_override_the_fix_cannot_satisfy_is_refused(tmp_path, text, line, expected):
    over = _overrides(tmp_path, text)
    with pytest.raises(ProfileError) as err:
        Library().load("hgx-h100", over)
    assert err.value.message.startswith(f"{over}:{line}: ")
    assert expected in err.value.message
    assert "\n" not in err.value.one_line()


def _profile(tmp_path: Path, body: str) -> Library:
    (tmp_path / "site.yaml").write_text("summary: site\n" + body)
    return Library([tmp_path])


def test_free_form_remediation_contradicting_its_expectation_is_refused(tmp_path):
    library = _profile(tmp_path, """\
memory:
  swappiness:
    fact: memory.swappiness
    max: 5
    fix: sysctl -w vm.swappiness=10
    remediation: {role: kernel, task: sysctl, vars: {kernel_sysctl: {vm.swappiness: "10"}}}
""")
    with pytest.raises(ProfileError) as err:
        library.load("site")
    assert err.value.message.startswith(f"{tmp_path / 'site.yaml'}:7: memory.swappiness: the "
                                        "remediation writes '10' to sysctl vm.swappiness, which "
                                        "does not satisfy <= 5")


def test_a_key_that_follows_from_the_tunable_is_refused(tmp_path):
    library = _profile(tmp_path, """\
memory:
  swappiness:
    tunable: {sysctl: vm.swappiness}
    max: 10
    persisted: kernel.persisted.sysctl.vm.swappiness.value
""")
    with pytest.raises(ProfileError, match=r"site.yaml:6: memory.swappiness.persisted: follows "
                                           r"from the tunable; remove it"):
        library.load("site")


@pytest.mark.parametrize(("tunable", "line", "expected"), [
    ("{sysfs: /sys/kernel/mm/nothing}", 4, "no nodetune role writes /sys/kernel/mm/nothing"),
    ("{block_queue: rotational}", 4, "unknown block queue attribute 'rotational'"),
    ("{sysctl: vm.swappiness, devices: x}", 4, "unknown key 'devices' for a sysctl tunable"),
    ("{sysctl: vm.swappiness, cmdline: x}", 4, "tunable names exactly one kind"),
])
def test_a_bad_tunable_declaration_names_file_line(tmp_path, tunable, line, expected):
    library = _profile(tmp_path, f"memory:\n  swappiness:\n    tunable: {tunable}\n"
                                 "    max: 10\n")
    with pytest.raises(ProfileError) as err:
        library.load("site")
    assert err.value.message.startswith(f"{tmp_path / 'site.yaml'}:{line}: memory.swappiness."
                                        "tunable")
    assert expected in err.value.message


# -- every kind: the check reads what the fix writes ---------------------------------------

# kind: (setting section and YAML, a facts document where the setting fails, how the fix's
# value lands in the facts, the fix text expected, the role variables expected)
KINDS: dict[str, tuple[str, str, dict[str, Any], str, dict[str, Any]]] = {
    "sysctl": ("memory", "tunable: {sysctl: vm.dirty_ratio}\n    max: 15",
               {"memory": {"dirty_ratio": 40}},
               "sysctl -w vm.dirty_ratio=15 and persist it in /etc/sysctl.d/",
               {"kernel_sysctl": {"vm.dirty_ratio": "15"}}),
    "sysctl-unlisted": ("kernel", "tunable: {sysctl: net.core.rmem_max}\n    min: 4194304",
                        {"kernel": {"sysctl": {"net.core.rmem_max": "212992"}}},
                        "sysctl -w net.core.rmem_max=4194304 and persist it in /etc/sysctl.d/",
                        {"kernel_sysctl": {"net.core.rmem_max": "4194304"}}),
    "sysfs": ("memory", "tunable: {sysfs: /sys/kernel/mm/transparent_hugepage/defrag}\n"
                        "    one_of: [defer, madvise]",
              {"memory": {"thp": {"defrag": "always"}}},
              "echo defer > /sys/kernel/mm/transparent_hugepage/defrag",
              {"memory_thp_defrag": "defer"}),
    "sysfs-boolean": ("cpu", "tunable: {sysfs: /sys/devices/system/cpu/cpufreq/boost}\n"
                             "    equals: false",
                      {"cpu": {"boost": True}},
                      "echo 0 > /sys/devices/system/cpu/cpufreq/boost (or echo 1 > "
                      "/sys/devices/system/cpu/intel_pstate/no_turbo)",
                      {"cpu_boost": "off"}),
    "cmdline": ("kernel", "tunable: {cmdline: init_on_alloc}\n    equals: '0'",
                {"kernel": {"cmdline_args": {"init_on_alloc": "1"}}},
                "add init_on_alloc=0 to the kernel command line and reboot",
                {"kernel_cmdline": {"init_on_alloc": "0"}}),
    "module": ("kernel", "tunable: {module: nvidia_peermem}\n    equals: loaded",
               {"kernel": {"modules": ["nvidia"]}},
               "modprobe nvidia_peermem and add it to /etc/modules-load.d/",
               {"modules_load": ["nvidia_peermem"]}),
    "module-option": ("kernel", "tunable: {module: nvidia, option: NVreg_EnableGpuFirmware}\n"
                                "    equals: 1",
                      {"kernel": {"persisted": {"modprobe": {"nvidia": {
                          "options": "NVreg_EnableGpuFirmware=0"}}}}},
                      "add `options nvidia NVreg_EnableGpuFirmware=1` to /etc/modprobe.d/ and "
                      "reboot (or reload the module)",
                      {"modules_options": {"nvidia": "NVreg_EnableGpuFirmware=1"}}),
    "service": ("gpu", "tunable: {service: nvidia-persistenced}\n    equals: running",
                {"services": {"units": {"nvidia-persistenced": {"state": "inactive"}}}},
                "systemctl enable --now nvidia-persistenced",
                {"services_enabled": ["nvidia-persistenced"]}),
    "block_queue": ("storage", "tunable: {block_queue: nr_requests, devices: kind=nvme}\n"
                               "    min: 1023",
                    {"storage": {"block": [{"name": "nvme0n1", "kind": "nvme",
                                            "nr_requests": 255},
                                           {"name": "sda", "kind": "disk", "nr_requests": 2}]}},
                    "echo 1023 > /sys/block/nvme0n1/queue/nr_requests",
                    {"storage_block": {"nvme0n1": {"nr_requests": 1023}}}),
    "pci_register": ("nic", "tunable: {pci_register: max_read_request, devices: vendor=0x15b3}\n"
                            "    equals: 2048",
                     {"pci": {"devices": [{"address": "0000:17:00.0", "vendor": "0x15b3",
                                           "max_read_request_bytes": 512}]}},
                     "setpci -s 0000:17:00.0 CAP_EXP+8.w=4000:7000 (runtime only; nodetune "
                     "apply repeats it at every boot)",
                     {"nic_max_read_request": {"0000:17:00.0": 2048}}),
}


def _written(facts: dict[str, Any], fact: str, bindings: dict[str, int], value: Any) -> None:
    """Put `value` where the fact at `path` (with these list bindings) lives."""
    (item,) = resolve(facts, fact, bindings)
    parts = item.path.split(".")
    node: Any = facts
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = value


def _apply_to_facts(kind: str, facts: dict[str, Any], finding: Any, value: Any) -> None:
    """What the role does to the node, as the collectors would then report it."""
    if kind == "module":
        facts["kernel"]["modules"].append("nvidia_peermem")
    elif kind == "module-option":
        facts["kernel"]["persisted"]["modprobe"]["nvidia"]["options"] = \
            finding.remediation["vars"]["modules_options"]["nvidia"]
    elif kind == "sysctl-unlisted":
        facts["kernel"]["sysctl"]["net.core.rmem_max"] = str(value)
    else:
        bindings = {}
        for item in resolve(facts, finding.fact):
            if item.subject == finding.subject:
                bindings = item.bindings
        _written(facts, finding.fact, bindings, value)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_checks_the_fact_its_fix_writes(tmp_path, kind):
    section, yaml_body, facts, fix, role_vars = KINDS[kind]
    library = _profile(tmp_path, f"{section}:\n  it:\n    {yaml_body}\n    why: x\n")
    (rule,) = library.load("site").rules
    assert rule.remedy is not None
    (failed,) = [f for f in evaluate([rule], facts) if f.status is Status.FAIL]
    assert failed.fix == fix
    assert failed.remediation is not None
    assert failed.remediation["vars"] == role_vars
    assert failed.disruption is rule.disruption
    _apply_to_facts(kind, facts, failed, failed.remediation["value"])
    after = [f for f in evaluate([rule], facts) if f.subject == failed.subject]
    assert [f.status for f in after] == [Status.PASS], after


def test_every_kind_is_covered_and_every_known_sysfs_knob_parses():
    assert {k.split("-")[0] for k in KINDS} == set(tunables.KINDS)
    for path, knob in tunables.SYSFS_KNOBS.items():
        tunable = tunables.parse({"sysfs": path})
        assert tunable.fact() == knob.fact


def test_shipped_tunable_settings_fix_what_they_check():
    """Every shipped setting on a tunable: the static remediation writes a value that
    satisfies the setting, to the fact the setting reads."""
    library = Library()
    seen = set()
    for name in library.names():
        for rule in library.load(name).rules:
            if rule.remedy is None:
                continue
            seen.add(rule.id)
            assert rule.remediation is not None, rule.id
            written = tunables.written_by(rule.remediation["vars"])
            for tunable, value in written:
                assert tunable.fact().split("[")[0] == rule.fact.split("[")[0], rule.id
                assert tunable.value_problem(value) is None
    assert {"memory.swappiness", "storage.read_ahead", "kernel.nvidia_peermem",
            "gpu.fabric_manager", "nic.max_read_request", "kernel.init_on_alloc"} <= seen
