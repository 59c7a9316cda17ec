"""nodetune apply / rollback with the real ansible-playbook (through ansible-runner) against
copies of host trees: audit, apply, re-audit, idempotence, rollback byte for byte, check mode,
failures half-way, unreachable hosts, ansible-lint of static and rendered playbooks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodetune.apply.render import project, roles
from nodetune.node.resources import data_dir
from tests.apply_runs import STATE, nodetune, snapshot

pytestmark = pytest.mark.slow

def as_json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def failing(audit_doc: dict) -> dict[tuple[str, str | None], dict]:
    return {(f["id"], f["subject"]): f for f in audit_doc["findings"] if f["status"] == "fail"}


def audit(root: Path, nvml: Path | None = None) -> dict:
    args = ["audit", "--root", str(root), "--json"]
    if nvml is not None:
        args += ["--nvml", str(nvml)]
    return as_json(nodetune(*args))


FAULTS = {"thp": "always", "numa_balancing": 1, "swappiness": 60, "governor": "powersave",
          "nvme_scheduler": "mq-deadline", "missing_modules": ("nvidia_peermem",),
          "acs_enabled": True, "nic_max_read_request": 512, "iommu": "translated"}
PLANTED = {"numa.balancing", "memory.thp", "memory.swappiness", "cpu.governor",
           "storage.nvme_scheduler", "kernel.nvidia_peermem", "pcie.acs", "nic.max_read_request",
           "kernel.iommu"}


def faulty_node(synth, synth_tmp):
    """A synthetic DGX H100 with faults planted; its fixable findings."""
    host = synth.build_dgx_h100(synth_tmp, synth.Options(**FAULTS))
    before = failing(audit(host.root, host.nvml))
    fixable = {k: f for k, f in before.items() if f["remediation"]}
    assert {i for i, _ in fixable} >= PLANTED
    return host, before, fixable


def test_dry_run_and_refusals_change_nothing(synth, synth_tmp):
    host, _, fixable = faulty_node(synth, synth_tmp)
    root = host.root
    original = snapshot(root, with_state=False)

    # Without a terminal and without --yes: refused, nothing changed.
    refused = nodetune("apply", "--root", str(root), "--nvml", str(host.nvml), "--allow-reboot")
    assert refused.returncode == 4, refused.stderr
    assert "--yes" in refused.stderr
    # A reboot-only change without --allow-reboot: refused, nothing changed.
    gated = nodetune("apply", "--root", str(root), "--nvml", str(host.nvml), "--yes")
    assert gated.returncode == 4
    assert "need --allow-reboot" in gated.stderr and "kernel.iommu" in gated.stderr

    # Check mode (dry run) shows every change and changes nothing.
    plan = as_json(nodetune("apply", "--root", str(root), "--nvml", str(host.nvml), "--dry-run",
                                "--json"))
    assert plan["schema"] == "nodetune.apply/1" and plan["mode"] == "dry-run"
    assert plan["changed"] > 0
    assert {(s["id"], s["subject"]) for s in plan["settings"]} == set(fixable)
    iommu = next(s for s in plan["settings"] if s["id"] == "kernel.iommu")
    assert (iommu["status"], iommu["disruption"]) == ("refused", "reboot")
    thp = next(s for s in plan["settings"] if s["id"] == "memory.thp")
    assert (thp["current"], thp["status"]) == ("always", "would-change")
    paths = {d["path"] for c in plan["changes"] for d in c["diff"]}
    assert {"/sys/kernel/mm/transparent_hugepage/enabled", "/etc/default/grub",
            "/etc/modules-load.d/nodetune.conf"} <= paths
    # the value that will be written, not the rule it satisfies
    assert (iommu["current"], iommu["wanted"]) == ("translated", "iommu=pt")
    swappiness = next(s for s in plan["settings"] if s["id"] == "memory.swappiness")
    assert (swappiness["current"], swappiness["wanted"]) == ("60", "10")

    # The text dry run: the whole unified diff, the command to run next, exit 2 for CI.
    text = nodetune("apply", "--root", str(root), "--nvml", str(host.nvml), "--dry-run",
                    "--detailed-exitcode")
    assert text.returncode == 2, text.stderr
    assert "more (--json shows all)" not in text.stdout
    assert "--- a/etc/default/grub\n+++ b/etc/default/grub\n" in text.stdout
    assert '-GRUB_CMDLINE_LINUX=""\n+GRUB_CMDLINE_LINUX="iommu=pt"\n' in text.stdout
    cpus = len(list((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")))
    assert text.stdout.count("cpufreq/scaling_governor\n@@ -1 +1 @@\n-powersave\n"
                             "+performance\n") == cpus
    assert (f"To apply: nodetune apply --root {root} --nvml {host.nvml} --allow-reboot\n"
            in text.stdout)
    assert snapshot(root, with_state=False) == original
    assert not (root / STATE).exists()


def test_apply_fixes_a_faulty_node_and_rollback_restores_it(synth, synth_tmp):
    host, before, fixable = faulty_node(synth, synth_tmp)
    root = host.root
    original = snapshot(root, with_state=False)

    applied = nodetune("apply", "--root", str(root), "--nvml", str(host.nvml), "--yes",
                       "--allow-reboot", "--json")
    assert applied.returncode == 0, applied.stderr
    report = as_json(applied)
    status = {(s["id"], s["subject"]): s["status"] for s in report["settings"]}
    assert set(status) == set(fixable)
    # Settings whose runtime half needs the live kernel (modprobe, setpci) or a reboot wait
    # for the next boot; every other fixable finding is gone.
    boot_only = {k for k, f in fixable.items()
                 if set(f["remediation"]["vars"]) <= roles.LIVE_ONLY_RUNTIME
                 or f["disruption"] == "reboot"}
    assert {k for k, s in status.items() if s == "pending-reboot"} == boot_only
    assert {k for k, s in status.items() if s == "fixed"} == set(fixable) - boot_only
    after = failing(audit(root, host.nvml))
    assert not (set(after) & (set(fixable) - boot_only))
    assert set(after) - set(before) == set()
    grub = (root / "etc/default/grub").read_text()
    assert "iommu=pt" in grub
    assert (root / "etc/modules-load.d/nodetune.conf").read_text() == "nvidia_peermem\n"
    acs_unit = (root / "etc/systemd/system/nodetune-acs.service").read_text()
    assert "ExecStart=/usr/bin/env setpci -s 0000:19:00.0 ECAP_ACS+0x6.w=0000:ffff" in acs_unit
    assert (root / "etc/systemd/system/multi-user.target.wants/nodetune-acs.service").is_symlink()
    assert report["rejected"] == []
    assert (root / "sys/kernel/mm/transparent_hugepage/enabled").read_text() \
        == "always [madvise] never\n"
    state_file = Path(report["state_file"])
    assert state_file.parent == root / STATE
    state = json.loads(state_file.read_text())
    assert state["schema"] == "nodetune.state/1" and state["status"] == "applied"
    assert state["hosts"]["localhost"]["runtime"]["/proc/sys/kernel/numa_balancing"]["raw"] \
        == "1\n"

    # Idempotence: what is left waits for a reboot, and a second apply changes nothing.
    again = as_json(nodetune("apply", "--root", str(root), "--nvml", str(host.nvml), "--yes",
                             "--allow-reboot", "--json"))
    assert again["changed"] == 0 and again["changes"] == []
    assert again["state_file"] is None

    rolled = nodetune("rollback", "--root", str(root), "--yes", "--json")
    assert rolled.returncode == 0, rolled.stderr
    assert as_json(rolled)["schema"] == "nodetune.rollback/1"
    assert snapshot(root, with_state=False) == original
    assert json.loads(state_file.read_text())["status"] == "rolled-back"
    assert nodetune("rollback", "--root", str(root), "--yes").returncode == 3


def test_unreachable_host_is_a_one_line_error(host_tree, tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("gpu-node-1 ansible_host=127.0.0.1 ansible_port=1 "
                         "ansible_connection=ssh ansible_ssh_common_args='-o ConnectTimeout=2'\n")
    result = nodetune("apply", "--root", str(host_tree("h200x2-vm-gather")), "--profile", "base",
                      "--inventory", str(inventory), "--dry-run")
    assert result.returncode == 3
    assert result.stderr.startswith("nodetune: error: host gpu-node-1 is unreachable")
    assert len(result.stderr.strip().splitlines()) == 1


def ansible_lint() -> str | None:
    beside = Path(sys.executable).parent / "ansible-lint"
    return str(beside) if beside.is_file() else shutil.which("ansible-lint")


def lint_production(directory: Path, tmp_path: Path) -> None:
    """`ansible-lint --offline --profile production` of every file in `directory` passes."""
    lint = ansible_lint()
    if lint is None:
        pytest.skip("ansible-lint is not installed (pip install ansible-lint; "
                    "dependency group lint)")
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "NO_COLOR": "1"}
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)  # the directory's ansible.cfg names its own
    # ansible-lint runs a syntax check per playbook and loads every rule: 5 s on an idle
    # machine, minutes on a loaded one
    checked = subprocess.run([lint, "--offline", "--profile", "production"],
                             cwd=directory, capture_output=True, text=True, env=env,
                             timeout=900, check=False)
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output


def test_shipped_collection_and_playbooks_pass_ansible_lint(tmp_path):
    lint_production(data_dir("playbooks"), tmp_path)


def test_rendered_project_is_a_site_project_that_passes_ansible_lint(synth, synth_tmp,
                                                                      tmp_path):
    """--render-only writes ansible.cfg, site.yml with FQCN roles, group_vars for every host,
    host_vars for this host's own values and a copy of the collection; it lints clean, and
    ansible-playbook runs it from the directory with no other option (check mode)."""
    host = synth.build_dgx_h100(synth_tmp, synth.Options(
        thp="always", numa_balancing=1, nvme_scheduler="mq-deadline", acs_enabled=True,
        nic_max_read_request=512, iommu="translated", persistenced=False,
        missing_modules=("nvidia_peermem",), governor="powersave"))
    out = tmp_path / "rendered"
    result = nodetune("apply", "--root", str(host.root), "--render-only", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = as_json(result)
    assert report["mode"] == "render-only" and report["render_dir"] == str(out)
    assert {p.name for p in out.iterdir()} == {"ansible.cfg", "site.yml", "inventory.ini",
                                               "group_vars", "host_vars", "collections"}
    config = (out / "ansible.cfg").read_text()
    assert "collections_path = ./collections" in config
    assert "interpreter_python = /usr/bin/python3" in config
    assert "ansible_python_interpreter='{{ ansible_playbook_python }}'" in (
        out / "inventory.ini").read_text()
    playbook = (out / "site.yml").read_text()
    assert "- role: nodetune.node.kernel" in playbook and "vars_files" not in playbook
    shared = (out / "group_vars" / "all" / "nodetune.yml").read_text()
    own = (out / "host_vars" / "localhost.yml").read_text()
    assert "memory_thp_enabled: madvise" in shared and "nodetune_root: ''" in shared
    assert str(host.root) not in shared
    assert f"nodetune_root: {host.root}" in own and "gpu_acs_disable:" in own
    assert "gpu_acs_disable" not in shared
    assert (out / "collections/ansible_collections/nodetune/node/galaxy.yml").is_file()

    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1"}
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    ran = subprocess.run([str(playbook_bin), "site.yml", "--check", "--diff"], cwd=out,
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "localhost" in ran.stdout and "failed=0" in ran.stdout

    back = project.write_rollback(
        tmp_path / "rollback", per_host={"localhost": {"rollback_files": [
            {"path": "/etc/sysctl.d/99-nodetune.conf", "state": "absent", "missing_dirs": []}]}},
        root="", inventory=project.Inventory(), become=True, state_file="state.json",
        created="2026-01-01T00:00:00Z")
    for directory in (out, back.directory):
        lint_production(directory, tmp_path)


def test_kernel_rejected_hugepage_size_is_reported_loudly(synth, synth_tmp, tmp_path):
    """A 1 GiB pool on a 64K-page kernel (which has 2M, 512M and 16G pools only) is rejected:
    the setting fails with the kernel's reason and is not persisted; the 2M pool is applied."""
    from nodetune.apply import remediate
    from nodetune.node.source import open_node
    from nodetune.rules.evaluation import evaluate
    from nodetune.rules.rule import Rule

    host = synth.build_gb200_tray(synth_tmp, synth.Options(page_size_kb=64))
    rules = [Rule.from_dict(r) for r in (
        {"id": "memory.hugepages_1g", "area": "numa-memory",
         "fact": "memory.default_hugepage_size_kb", "equals": 1048576,
         "remediation": {"role": "memory",
                         "vars": {"memory_hugepages": [{"size_kb": 1048576, "pages": 4}]}}},
        {"id": "memory.hugepages_2m", "area": "numa-memory",
         "fact": "memory.hugepages[size_kb=2048].total", "min": 8,
         "remediation": {"role": "memory",
                         "vars": {"memory_hugepages": [{"size_kb": 2048, "pages": 8}]}}})]

    def audit(request: remediate.Request) -> remediate.Audit:
        with open_node(root=request.root, nvml="off") as node:
            facts = node.facts().to_json()
        return remediate.Audit(profile="test", findings=evaluate(rules, facts), facts=facts)

    request = remediate.Request(root=str(host.root))
    prepared = remediate.prepare(request, tmp_path / "work", audit=audit)
    assert [c.id for c in prepared.changes] == ["memory.hugepages_1g", "memory.hugepages_2m"]
    report = remediate.execute(prepared, audit=audit)
    outcome = {s.change.id: s for s in report.settings}
    assert outcome["memory.hugepages_2m"].status == "fixed"
    rejected = outcome["memory.hugepages_1g"]
    assert rejected.status == "failed"
    assert "kernel rejected" in rejected.message
    assert "hugepages-1048576kB/nr_hugepages does not exist" in rejected.message
    assert [t.rejected for t in report.rejected] and report.failed
    boot = (host.root / "etc/tmpfiles.d/nodetune.conf").read_text()
    assert boot == "w /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages - - - - 8\n"
