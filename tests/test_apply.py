"""nodetune apply / rollback without running Ansible: plans, merging, templates, state files,
the custom modules' pure helpers, and the refusals that happen before anything runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nodetune import __version__
from nodetune.apply.render import plan as planning
from nodetune.apply.render import project, roles
from nodetune.errors import RenderError, SourceError
from nodetune.facts.model import Disruption, Finding, Severity, Status
from nodetune.node.resources import data_dir

GOLDEN = Path(__file__).parent / "golden" / "ansible"
COLLECTION = data_dir("playbooks") / "ansible_collections" / "nodetune" / "node"


def finding(id_: str, variables: dict | None, *, subject: str | None = None,
            status: Status = Status.FAIL, disruption: Disruption = Disruption.NONE,
            actual: str = "1", expected: str = "0") -> Finding:
    return Finding(id=id_, area="kernel", severity=Severity.WARNING, status=status,
                   subject=subject, actual=actual, expected=expected, disruption=disruption,
                   fix="by hand", remediation=None if variables is None else
                   {"role": "x", "vars": variables})


def load_module_file(name: str):
    """A module or module_utils file of the collection as a Python module (for its pure
    helpers); module_utils under the name the modules import it by."""
    host_utils = _load("ansible_collections.nodetune.node.plugins.module_utils.nodetune_host",
                       COLLECTION / "plugins" / "module_utils" / "nodetune_host.py")
    if name == "nodetune_host":
        return host_utils
    return _load(f"nodetune_test_{name}", COLLECTION / "plugins" / "modules" / f"{name}.py")


def _load(modname: str, path: Path):
    spec = importlib.util.spec_from_file_location(modname, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    return module


# -- plans ------------------------------------------------------------------------------

def test_plan_merges_variables_across_settings_and_subjects():
    plan = planning.build([
        finding("numa.balancing", {"kernel_sysctl": {"kernel.numa_balancing": "0"}}),
        finding("memory.swappiness", {"kernel_sysctl": {"vm.swappiness": "10"}}),
        finding("storage.nvme_scheduler", {"storage_block": {"nvme0n1": {"scheduler": "none"}}},
                subject="nvme0n1"),
        finding("storage.read_ahead", {"storage_block": {"nvme0n1": {"read_ahead_kb": 4096}}},
                subject="nvme0n1"),
        finding("kernel.nvidia_peermem", {"modules_load": ["nvidia_peermem"]}),
        finding("kernel.nvidia_fs", {"modules_load": ["nvidia_fs", "nvidia_peermem"]}),
        finding("cpu.deep_cstates", None),
        finding("memory.thp", {"memory_thp_enabled": "madvise"}, status=Status.PASS),
    ])
    assert plan.variables == {
        "kernel_sysctl": {"kernel.numa_balancing": "0", "vm.swappiness": "10"},
        "storage_block": {"nvme0n1": {"scheduler": "none", "read_ahead_kb": 4096}},
        "modules_load": ["nvidia_peermem", "nvidia_fs"],
    }
    assert plan.roles == ["kernel", "modules", "storage"]
    assert [c.key for c in plan.changes][2:4] == ["storage.nvme_scheduler[nvme0n1]",
                                                  "storage.read_ahead[nvme0n1]"]
    assert [f.id for f in plan.manual] == ["cpu.deep_cstates"]


def test_free_form_remediation_shows_the_value_it_writes_not_the_rule():
    plan = planning.build([
        finding("kernel.iommu", {"kernel_cmdline": {"iommu": "pt"}}, actual="translated",
                expected="one of off, passthrough", disruption=Disruption.REBOOT),
        finding("pcie.acs", {"gpu_acs_disable": ["0000:19:01.0"]}, actual="0000:19:01.0",
                expected="none")])
    assert [(c.current, c.wanted) for c in plan.changes] == [("translated", "iommu=pt"),
                                                            ("0000:19:01.0", "none")]


def test_next_command_keeps_the_target_and_adds_the_flags_refused_changes_need(tmp_path):
    from nodetune.apply import remediate
    from nodetune.commands.apply import next_command

    nvml = tmp_path / "nvml.json"
    nvml.write_text("{}")
    request = remediate.Request(root=str(tmp_path), nvml=str(nvml), profile="hgx-h100",
                                overrides="site.yaml", only=("memory.*",))
    change = planning.build([finding("kernel.iommu", {"kernel_cmdline": {"iommu": "pt"}},
                                     disruption=Disruption.REBOOT)]).changes[0]
    prepared = remediate.Plan(request=request, audit=remediate.Audit("hgx-h100", [], {}),
                              plan=planning.Plan(changes=[change]), refused=[change])
    assert next_command(request, prepared) == (
        f"nodetune apply --root {tmp_path} --nvml {nvml} --profile hgx-h100 "
        "--overrides site.yaml --only 'memory.*' --allow-reboot")
    assert request.target() == f"the host tree {tmp_path} (--root)"
    remote = remediate.Request(inventory=Path("hosts.ini"), limit="gpu*")
    assert remote.target(["n1", "n2"]) == "host(s) n1, n2 of inventory hosts.ini (limit gpu*)"


def test_plan_refuses_two_settings_that_want_different_values():
    with pytest.raises(RenderError, match=r"memory.swappiness and tuned.swappiness want different "
                                          r"values for kernel_sysctl.vm.swappiness"):
        planning.build([finding("memory.swappiness", {"kernel_sysctl": {"vm.swappiness": "10"}}),
                        finding("tuned.swappiness", {"kernel_sysctl": {"vm.swappiness": "1"}})])


def test_plan_names_a_variable_no_role_declares():
    with pytest.raises(RenderError, match="'sysctl_typo' belongs to no nodetune role"):
        planning.build([finding("memory.swappiness", {"sysctl_typo": {"vm.swappiness": "10"}})])


def test_sysctl_persisted_in_another_etc_file_is_edited_there():
    facts = {"kernel": {"persisted": {"sysctl": {
        "vm.swappiness": {"value": "60", "file": "/etc/sysctl.conf"},
        "kernel.numa_balancing": {"value": "1", "file": "/usr/lib/sysctl.d/50-default.conf"}}}}}
    plan = planning.build([finding("a", {"kernel_sysctl": {"vm.swappiness": "10"}}),
                           finding("b", {"kernel_sysctl": {"kernel.numa_balancing": "0"}})], facts)
    # /usr/lib is the vendor's: nodetune's own /etc/sysctl.d file overrides it instead
    assert plan.variables["kernel_sysctl_files"] == {"vm.swappiness": "/etc/sysctl.conf"}


def test_every_role_variable_is_declared_once():
    owners: dict[str, str] = {}
    for role, defaults in roles.role_defaults().items():
        for name in defaults:
            assert name.startswith(f"{role}_"), (role, name)
            assert name not in owners
            owners[name] = role
    assert set(owners) >= roles.LIVE_ONLY_RUNTIME


def test_every_shipped_remediation_uses_declared_role_variables():
    from nodetune.profiles.catalog import Library

    library = Library()
    used = 0
    for name in library.names():
        for rule in library.load(name).rules:
            for variable in (rule.remediation or {}).get("vars") or {}:
                assert roles.owner(variable) is not None, (name, rule.id, variable)
                used += 1
    assert used >= 10


# -- templates (golden files) -------------------------------------------------------------

def _golden(name: str, text: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs (--update-golden)"


def test_rendered_project_matches_golden_files(tmp_path, update_golden):
    plan = planning.build([
        finding("numa.balancing", {"kernel_sysctl": {"kernel.numa_balancing": "0"}}),
        finding("memory.thp", {"memory_thp_enabled": "madvise"}, actual="always",
                expected="one of madvise, never"),
        finding("kernel.iommu", {"kernel_cmdline": {"iommu": "pt"}}, actual="translated",
                expected="one of off, passthrough", disruption=Disruption.REBOOT),
        finding("storage.nvme_scheduler", {"storage_block": {"nvme0n1": {"scheduler": "none"}}},
                subject="nvme0n1", actual="mq-deadline", expected="none"),
    ])
    out = project.write_apply(tmp_path, changes=plan.changes, variables=plan.variables,
                              profile="golden", root="/srv/node",
                              inventory=project.Inventory(python="/usr/bin/python3"),
                              become=True)
    _golden("site.yml", out.playbook.read_text(), update_golden)
    _golden("group_vars.yml", (tmp_path / project.VARS_FILE).read_text(), update_golden)
    _golden("host_vars_apply.yml", (tmp_path / "host_vars" / "localhost.yml").read_text(),
            update_golden)
    _golden("inventory.ini", out.inventory.read_text(), update_golden)
    _golden("ansible.cfg", (tmp_path / "ansible.cfg").read_text(), update_golden)
    copied = tmp_path / "collections" / "ansible_collections" / "nodetune" / "node"
    assert sorted(p.name for p in (copied / "roles").iterdir()) == sorted(
        p.name for p in (COLLECTION / "roles").iterdir())
    assert (copied / "plugins" / "modules" / "nodetune_sysfs.py").is_file()
    assert (copied / "galaxy.yml").read_text() == (COLLECTION / "galaxy.yml").read_text()

    back = project.write_rollback(
        tmp_path / "rb", per_host={"localhost": {"rollback_files": [
            {"path": "/etc/sysctl.d/99-nodetune.conf", "state": "absent",
             "missing_dirs": ["/etc/sysctl.d"]}]}},
        root="", inventory=project.Inventory(python="/usr/bin/python3"), become=False,
        state_file="/var/lib/nodetune/state/20260101T000000Z.json",
        created="2026-01-01T00:00:00Z")
    _golden("rollback.yml", back.playbook.read_text(), update_golden)
    _golden("host_vars.yml", (tmp_path / "rb" / "host_vars" / "localhost.yml").read_text(),
            update_golden)


# -- state files --------------------------------------------------------------------------

def test_latest_state_file_skips_rolled_back_and_orders_same_second_files(tmp_path):
    from nodetune.apply import statefile

    directory = statefile.state_dir(str(tmp_path))
    assert directory == tmp_path / "var/lib/nodetune/state"
    for name, status in (("20260101T000000Z.json", "applied"),
                         ("20260101T000000Z-1.json", "applied"),
                         ("20260102T000000Z.json", "rolled-back")):
        statefile.State(path=directory / name, created="", profile="p", root=str(tmp_path),
                        status=status).save()
    assert statefile.latest(str(tmp_path)).name == "20260101T000000Z-1.json"
    assert statefile.new_path(str(tmp_path)).parent == directory


def test_corrupt_or_missing_state_file_is_a_one_line_error(tmp_path):
    from nodetune.apply import statefile

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SourceError, match="is not readable JSON"):
        statefile.load(bad)
    bad.write_text(json.dumps({"schema": "nodetune.audit/1"}))
    with pytest.raises(SourceError, match="not a nodetune state file"):
        statefile.load(bad)
    with pytest.raises(SourceError, match="no state file to roll back"):
        statefile.latest(str(tmp_path))


# -- the collection ------------------------------------------------------------------------

def test_collection_is_nodetune_node_and_ships_in_the_wheel():
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    assert f"{galaxy['namespace']}.{galaxy['name']}" == roles.COLLECTION == "nodetune.node"
    assert galaxy["version"] == __version__
    assert roles.collection_dir() == COLLECTION
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"playbooks" = "nodetune/_data/playbooks"' in pyproject
    config = (data_dir("playbooks") / "ansible.cfg").read_text()
    assert "collections_path = .\n" in config
    present = {p.name for p in (COLLECTION / "roles").iterdir()}
    assert present == {*roles.ROLE_ORDER, "setpci", "rollback"}
    for module in (COLLECTION / "plugins" / "modules").glob("*.py"):
        assert f"module: {module.stem}\n" in module.read_text(), module


def _tasks(path: Path) -> list[dict]:
    return [t for t in yaml.safe_load(path.read_text()) or [] if isinstance(t, dict)]


def test_every_task_names_its_module_and_role_by_fqcn():
    """A site's own roles named kernel or memory, or its own library/, cannot shadow ours."""
    keywords = {"name", "when", "register", "loop", "loop_control", "notify", "listen",
                "changed_when", "failed_when", "environment", "vars", "become", "tags"}
    playbooks = [data_dir("playbooks") / "site.yml", data_dir("playbooks") / "fleet-collect.yml"]
    files = [*COLLECTION.glob("roles/*/tasks/*.yml"), *COLLECTION.glob("roles/*/handlers/*.yml")]
    for path in files:
        for task in _tasks(path):
            actions = [k for k in task if k not in keywords]
            assert len(actions) == 1 and actions[0].count(".") == 2, (path, actions)
            if actions[0] == "ansible.builtin.include_role":
                assert task[actions[0]]["name"].startswith("nodetune.node."), path
    for path in playbooks:
        for play in _tasks(path):
            for role in play.get("roles", []):
                assert role["role"].startswith("nodetune.node."), path
            for task in play.get("tasks", []):
                assert any(k.startswith("ansible.builtin.") for k in task), (path, task)


def load_filters():
    return _load("nodetune_test_filters", COLLECTION / "plugins" / "filter" / "nodetune.py")


def test_filters_turn_role_variables_into_module_arguments():
    import re

    filters = load_filters().FilterModule().filters()
    assert filters["sysctl_writes"]({"vm.swappiness": 10, "net.core.rmem_max": "4194304"}) == [
        {"path": "/proc/sys/vm/swappiness", "value": "10"},
        {"path": "/proc/sys/net/core/rmem_max", "value": "4194304"}]
    lines = filters["sysctl_lines"]({"vm.swappiness": 10, "kernel.numa_balancing": 0},
                                    {"vm.swappiness": "/etc/sysctl.conf"},
                                    "/etc/sysctl.d/99-nodetune.conf")
    assert lines == {
        "/etc/sysctl.conf": [{"regexp": r"^\s*-?\s*vm[./]swappiness\s*=",
                              "line": "vm.swappiness = 10"}],
        "/etc/sysctl.d/99-nodetune.conf": [{"regexp": r"^\s*-?\s*kernel[./]numa_balancing\s*=",
                                            "line": "kernel.numa_balancing = 0"}]}
    regexp = lines["/etc/sysctl.conf"][0]["regexp"]
    assert re.match(regexp, "- vm/swappiness=60") and not re.match(regexp, "vm.swappinessX = 1")
    assert filters["cmdline_args"]({"iommu": "pt", "nosmt": True, "quiet": False,
                                    "mitigations": ""}) == "iommu=pt nosmt mitigations"
    assert filters["memory_writes"]("madvise", "", [
        {"size_kb": 2048, "pages": 1024}, {"size_kb": 1048576, "pages": 4, "node": 1}]) == [
        {"path": "/sys/kernel/mm/transparent_hugepage/enabled", "value": "madvise"},
        {"path": "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "value": "1024"},
        {"path": "/sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages",
         "value": "4"}]
    results = [{"paths": [
        {"path": "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "after": "performance",
         "pattern": "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"},
        {"path": "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor", "after": "performance",
         "pattern": "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"},
        {"path": "/sys/x", "after": "1", "pattern": "/sys/x", "rejected": True}]},
        {"skipped": True}]
    assert filters["tmpfiles_lines"](results, key="pattern") == [{
        "regexp": r"^w\s+/sys/devices/system/cpu/cpu\[0\-9\]\*/cpufreq/scaling_governor\s",
        "line": "w /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor - - - - "
                "performance"}]
    assert len(filters["tmpfiles_lines"](results)) == 2
    assert filters["mrrs_writes"]({"0000:1a:00.0": 4096}) == [
        {"address": "0000:1a:00.0", "register": "CAP_EXP+0x8.w", "value": "5000",
         "mask": "7000"}]
    with pytest.raises(ValueError, match="Max_Read_Request_Size 3000"):
        filters["mrrs_writes"]({"0000:1a:00.0": 3000})
    assert filters["acs_writes"](["0000:18:00.0"])[0]["register"] == "ECAP_ACS+0x6.w"
    assert filters["block_udev_lines"]({"nvme*n[0-9]": {"scheduler": "none"}}) == [{
        "regexp": re.escape('KERNEL=="nvme*n[0-9]", ATTR{queue/scheduler}='),
        "line": 'ACTION=="add|change", SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", '
                'KERNEL=="nvme*n[0-9]", ATTR{queue/scheduler}="none"'}]
    assert filters["mtu_udev_lines"]({"ens1np0": 9000})[0]["line"] == \
        'ACTION=="add", SUBSYSTEM=="net", KERNEL=="ens1np0", ATTR{mtu}="9000"'
    assert filters["modprobe_lines"]({"nvidia": "NVreg_EnableGpuFirmware=0"}, ["nouveau"]) == [
        {"regexp": r"^\s*options\s+nvidia\s", "line": "options nvidia NVreg_EnableGpuFirmware=0"},
        {"regexp": r"^\s*blacklist\s+nouveau\s*$", "line": "blacklist nouveau"}]
    runtime = [{"path": "/proc/sys/vm/swappiness", "raw": "60\n", "value": "60"}]
    assert filters["rollback_writes"](runtime, True) == [
        {"path": "/proc/sys/vm/swappiness", "value": "60\n"}]
    assert filters["rollback_writes"](runtime, False)[0]["value"] == "60"


def test_local_values_go_to_host_vars_and_profile_values_to_group_vars(tmp_path):
    plan = planning.build([
        finding("memory.swappiness", {"kernel_sysctl": {"vm.swappiness": "10"}}),
        finding("nic.max_read_request", {"nic_max_read_request": {"0000:1a:00.0": 4096}},
                subject="0000:1a:00.0"),
    ])
    plan.variables["kernel_sysctl_files"] = {"vm.swappiness": "/etc/sysctl.conf"}
    local = project.write_apply(tmp_path / "local", changes=plan.changes,
                                variables=plan.variables, profile="p", root="",
                                inventory=project.Inventory(), become=True)
    shared = yaml.safe_load((local.directory / project.VARS_FILE).read_text())
    own = yaml.safe_load((local.directory / "host_vars" / "localhost.yml").read_text())
    assert shared == {"nodetune_root": "", "kernel_sysctl": {"vm.swappiness": "10"}}
    assert own == {"nic_max_read_request": {"0000:1a:00.0": 4096},
                   "kernel_sysctl_files": {"vm.swappiness": "/etc/sysctl.conf"}}
    hosts = tmp_path / "hosts.ini"
    hosts.write_text("[gpu]\nnode1\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("---\nsite_value: 1\n")
    fleet = project.write_apply(tmp_path / "fleet", changes=plan.changes,
                                variables=plan.variables, profile="p", root="",
                                inventory=project.Inventory(path=hosts, copy=True), become=True)
    assert not (fleet.directory / "host_vars").exists()
    assert (fleet.directory / "group_vars" / "all.yml").read_text() == "---\nsite_value: 1\n"
    assert "nic_max_read_request" in (fleet.directory / project.VARS_FILE).read_text()
    assert "inventory = hosts.ini\n" in (fleet.directory / "ansible.cfg").read_text()


# -- module helpers -----------------------------------------------------------------------

def test_choice_files_compare_and_move_the_bracket():
    host = load_module_file("nodetune_host")
    assert host.selected("always [madvise] never\n") == "madvise"
    assert host.selected("4096\t87380\t6291456\n") == "4096 87380 6291456"
    assert host.same("[none] mq-deadline kyber bfq\n", "none")
    assert not host.same("none [mq-deadline] kyber bfq\n", "none")
    assert host.same("0010\n", "10")
    assert host.emulated("[always] madvise never\n", "never") == "always madvise [never]\n"
    assert host.emulated("60\n", "10") == "10\n"


def test_lines_replace_the_last_match_and_append_the_rest():
    lines = load_module_file("nodetune_lines")
    text = "# keep\nvm.swappiness = 60\nvm.swappiness=30\n"
    new, added, replaced = lines.ensure(text, [
        {"regexp": r"^\s*vm\.swappiness\s*=", "line": "vm.swappiness = 10"},
        {"regexp": r"^\s*kernel\.numa_balancing\s*=", "line": "kernel.numa_balancing = 0"}])
    assert new == "# keep\nvm.swappiness = 60\nvm.swappiness = 10\nkernel.numa_balancing = 0\n"
    assert (added, replaced) == (["kernel.numa_balancing = 0"], ["vm.swappiness = 10"])
    assert lines.ensure(new, [{"regexp": r"^vm\.swappiness", "line": "vm.swappiness = 10"}])[0] \
        == new


def test_grub_command_line_edit_keeps_other_arguments_and_quotes():
    cmdline = load_module_file("nodetune_cmdline")
    text = ('GRUB_DEFAULT=0\n# GRUB_CMDLINE_LINUX="old"\n'
            "GRUB_CMDLINE_LINUX='quiet iommu=on numa_balancing=enable splash'\n")
    new, joined = cmdline.edit_grub(text, "GRUB_CMDLINE_LINUX",
                                    {"iommu": "pt", "init_on_alloc": "0", "nosmt": True},
                                    ["splash"])
    assert joined == "quiet iommu=pt numa_balancing=enable init_on_alloc=0 nosmt"
    assert new.splitlines()[1] == '# GRUB_CMDLINE_LINUX="old"'
    assert new.splitlines()[2] == f"GRUB_CMDLINE_LINUX='{joined}'"
    appended, _ = cmdline.edit_grub("GRUB_TIMEOUT=5", "GRUB_CMDLINE_LINUX", {"iommu": "pt"}, [])
    assert appended == 'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="iommu=pt"\n'


# -- refusals before Ansible runs ---------------------------------------------------------

def nodetune(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodetune", *args], capture_output=True,
                          text=True, input=stdin, timeout=120, check=False)


def test_unknown_profile_is_a_one_line_error(host_tree):
    result = nodetune("apply", "--root", str(host_tree("h200x2-vm-gather")),
                      "--profile", "no-such-profile", "--dry-run")
    assert result.returncode == 3
    assert result.stderr.startswith("nodetune: error: unknown profile 'no-such-profile'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_profile_for_other_hardware_is_refused_without_force(host_tree):
    result = nodetune("apply", "--root", str(host_tree("h200x2-vm-gather")),
                      "--profile", "dgx-h100", "--dry-run")
    assert result.returncode == 4
    assert "profile dgx-h100 does not match this node, which matches cloud-vm" in result.stderr
    assert "--force" in result.stderr


def test_limit_needs_an_inventory():
    result = nodetune("apply", "--limit", "gpu*", "--dry-run")
    assert result.returncode == 3
    assert "--limit needs --inventory" in result.stderr


def test_missing_ansible_is_named(monkeypatch):
    from nodetune.apply import ansible as apply
    from nodetune.errors import ApplyError

    monkeypatch.setattr(apply.shutil, "which", lambda name: None)
    monkeypatch.setattr(apply.sys, "executable", "/nonexistent/bin/python")
    with pytest.raises(ApplyError, match="Ansible is not installed") as info:
        apply.ansible_playbook()
    assert "pip install 'nodetune[apply]'" in info.value.one_line()


def test_rollback_without_state_file_is_a_one_line_error(tmp_path):
    (tmp_path / "proc").mkdir()
    result = nodetune("rollback", "--root", str(tmp_path), "--yes")
    assert result.returncode == 3
    assert "no state file to roll back in" in result.stderr
