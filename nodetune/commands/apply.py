"""`nodetune apply`: fix failing profile settings through Ansible, dry-run first, with rollback."""

from __future__ import annotations

import os
import shlex
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from nodetune import exitcodes
from nodetune.apply import ansible, remediate, statefile, tuned_profile
from nodetune.commands.audit import profile_options
from nodetune.commands.params import PROFILE_NAME, non_empty_items
from nodetune.errors import ApplyError, Refused
from nodetune.views import apply_text as view
from nodetune.views import tuned_text

HELP = """Fix the settings `nodetune audit` finds wrong, through Ansible.

Renders a thin playbook from the failing settings (nodetune's roles do the work), runs it in
check mode to show, per setting, current -> new value and how disruptive the change is, asks
for confirmation, records the previous values in a state file, applies, and audits again:
each setting ends fixed, pending reboot, or failed.

With `--as tuned DIR` nothing is run: the same plan is written as a TuneD profile,
DIR/tuned.conf, including the active TuneD profile (or accelerator-performance or
throughput-performance); activate it with `tuned-adm profile NAME` (NAME: DIR's name).

Exit codes: 0 applied (or nothing to do, or a dry run); 1 some settings failed; 2 with
--detailed-exitcode: changes pending (dry run) or made (apply); 3 nodetune could not run
(unknown profile, no Ansible, unreachable host, a task failed: see the state file to roll
back); 4 refused, nothing was changed (no confirmation, a reboot or kubelet state reset not
allowed, profile does not match the hardware, a link under --root leads out of the tree).
"""


@click.command("apply", help=HELP)
@click.option("--profile", type=PROFILE_NAME, metavar="NAME",
              help="Profile to apply (default: the one matching "
              "this node, as `nodetune audit` picks it).")
@profile_options
@click.option("--nvml", default="auto", show_default=True, metavar="auto|live|off|FILE",
              help="NVML source for the audit (as for `nodetune audit`).")
@click.option("--dry-run", is_flag=True, help="Show what would change (Ansible check mode "
              "with diff); change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--allow-reboot", is_flag=True, help="Allow changes that need a reboot "
              "(kernel command line, module options).")
@click.option("--allow-disruptive", is_flag=True, help="Allow changes that reset kubelet state.")
@click.option("--only", multiple=True, callback=non_empty_items, metavar="ID",
              help="Fix only these settings "
              "(repeatable; an id, a glob such as 'storage.*', or ID[subject]).")
@click.option("--inventory", "-i", type=click.Path(exists=True, path_type=Path),
              metavar="FILE", help="Ansible inventory: apply to its hosts instead of this one.")
@click.option("--limit", "-l", metavar="PATTERN", help="Ansible host pattern within the "
              "inventory.")
@click.option("--root", type=click.Path(file_okay=False, exists=True), envvar="NODETUNE_ROOT",
              metavar="DIR", help="Apply to the host tree in DIR (a copy of a node) instead "
              "of /; boot-time tools are not run, reboot-only changes stay pending.")
@click.option("--render-only", type=click.Path(file_okay=False, path_type=Path),
              metavar="DIR", help="Write an Ansible project to DIR and stop: ansible.cfg, "
              "site.yml, group_vars/, host_vars/, the inventory and the collection nodetune.node.")
@click.option("--force", is_flag=True, help="Apply a --profile that does not match this "
              "node's hardware.")
@click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Where to record the previous values (default: "
              "/var/lib/nodetune/state/<time>.json, inside --root).")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes: "
              "pending (with --dry-run) or made; 0 when there is nothing to change.")
@click.option("--as", "as_format", type=click.Choice(["ansible", "tuned"]), default="ansible",
              show_default=True, help="How to make the changes: run Ansible, or write a TuneD "
              "profile to DIR (changes nothing; --force writes into a non-empty DIR).")
@click.argument("directory", required=False, metavar="[DIR]",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report "
              "(schema nodetune.apply/1; with --as tuned nodetune.tuned-profile/1).")
def cmd(profile: str | None, profiles_dirs: tuple[str, ...], overrides: str | None, nvml: str,
        dry_run: bool, yes: bool,
        allow_reboot: bool, allow_disruptive: bool, only: tuple[str, ...],
        inventory: Path | None, limit: str | None, root: str | None,
        render_only: Path | None, force: bool, state_file: Path | None,
        detailed_exitcode: bool, as_format: str, directory: Path | None, as_json: bool) -> int:

    if limit and inventory is None:
        raise click.UsageError("--limit needs --inventory")
    if (as_format == "tuned") != (directory is not None):
        raise click.UsageError("--as tuned needs DIR, and DIR is only for --as tuned")
    if directory is not None and render_only is not None:
        raise click.UsageError("--as tuned and --render-only both write a directory: use one")
    request = remediate.Request(
        profile=profile, root=root, only=only, inventory=inventory, limit=limit,
        allow_reboot=allow_reboot, allow_disruptive=allow_disruptive, force=force,
        state_file=state_file, profiles_dirs=profiles_dirs, overrides=overrides, nvml=nvml)
    if render_only is not None:
        return _render_only(request, render_only, as_json)
    if directory is not None:
        return _as_tuned(request, directory, force=force, as_json=as_json,
                         detailed_exitcode=detailed_exitcode)
    if request.local and request.host_root == "/" and os.geteuid() != 0 and not dry_run:
        raise ApplyError("changing this host needs root; nothing was changed",
                         fix="run it with sudo, or look first with --dry-run")
    with ExitStack() as stack:
        stack.enter_context(ansible.signals())
        try:
            return _apply(request, stack, dry_run=dry_run, yes=yes, as_json=as_json,
                          detailed_exitcode=detailed_exitcode)
        except ansible.Cancelled as exc:
            raise ansible.Interrupted(exc.signum, "before the first change; nothing was "
                                      "changed") from None


def _apply(request: remediate.Request, stack: ExitStack, *, dry_run: bool, yes: bool,
           as_json: bool, detailed_exitcode: bool) -> int:
    with remediate.workspace() as workdir:
        prepared = remediate.prepare(request, workdir, run_check=False)
        if not dry_run and prepared.changes:
            # refusals that need no Ansible run come first
            remediate.refuse_if_gated(prepared)
            if not yes and not sys.stdin.isatty():
                raise Refused("no terminal to confirm on and --yes not given; nothing was changed",
                              fix="review with --dry-run, then pass --yes")
            # one apply or rollback of a root at a time, from the check-mode run (which reads
            # the previous values) to the end
            stack.enter_context(statefile.locked(request.host_root if request.local else "/",
                                                 "apply"))
        remediate.check_plan(prepared)
        plan_report = remediate.dry_run_report(prepared)
        plan_report.next_command = next_command(request, prepared)
        if dry_run or not prepared.changes or not plan_report.tasks:
            # nothing to do also when every change is already made and waits for a reboot
            if not dry_run:
                plan_report.mode = "apply"
            view.show(plan_report, prepared, as_json=as_json)
            pending = dry_run and any(s.status in ("would-change", "refused")
                                      for s in plan_report.settings)
            return exitcodes.CHANGES if detailed_exitcode and pending else exitcodes.OK
        if not as_json:
            view.show(plan_report, prepared, as_json=False)
        if not yes:
            target = request.target(plan_report.hosts)
            if not click.confirm(f"Apply {len(prepared.changes)} setting(s) to {target}?",
                                 err=True):
                raise Refused("not confirmed; nothing was changed")
        report = remediate.execute(prepared)
        view.show(report, prepared, as_json=as_json)
    if report.failed or report.rejected:
        return exitcodes.FAILED
    return exitcodes.CHANGES if detailed_exitcode and report.changed else exitcodes.OK


def next_command(request: remediate.Request, prepared: remediate.Plan) -> str:
    """The `nodetune apply` command that applies this plan: the same target, NVML source,
    profile and overrides, plus the flags the refused changes need."""
    args = ["nodetune", "apply"]
    if request.root:
        args += ["--root", request.host_root]
    if request.nvml != "auto":
        args += ["--nvml", os.path.abspath(request.nvml) if os.path.exists(request.nvml)
                 else request.nvml]
    if request.profile:
        args += ["--profile", request.profile]
    for directory in request.profiles_dirs:
        args += ["--profiles-dir", directory]
    if request.overrides:
        args += ["--overrides", request.overrides]
    for item in request.only:
        args += ["--only", item]
    if request.inventory is not None:
        args += ["--inventory", str(request.inventory)]
    if request.limit:
        args += ["--limit", request.limit]
    if request.state_file is not None:
        args += ["--state-file", str(request.state_file)]
    if request.force:
        args.append("--force")
    needed = {remediate.GATED[c.disruption] for c in prepared.refused}
    if request.allow_reboot or "--allow-reboot" in needed:
        args.append("--allow-reboot")
    if request.allow_disruptive or "--allow-disruptive" in needed:
        args.append("--allow-disruptive")
    if request.local and request.host_root == "/" and os.geteuid() != 0:
        args.insert(0, "sudo")
    return shlex.join(args)


def _render_only(request: Any, directory: Path, as_json: bool) -> int:
    with remediate.workspace() as scratch:
        prepared = remediate.prepare(request, scratch, run_check=False)
    report = remediate.Report(mode="render-only", profile=prepared.audit.profile,
                              manual=list(prepared.plan.manual))
    report.settings = [remediate.SettingOutcome(c, "rendered") for c in prepared.changes]
    if prepared.changes:
        report.render_inventory = remediate.render(prepared, directory, for_user=True).inventory
        report.render_dir = directory
    view.show(report, prepared, as_json=as_json)
    return exitcodes.OK


def _as_tuned(request: remediate.Request, directory: Path, *, force: bool, as_json: bool,
              detailed_exitcode: bool) -> int:
    """Write the plan as a TuneD profile; nothing on the host changes."""
    with remediate.workspace() as scratch:
        prepared = remediate.prepare(request, scratch, run_check=False)
    result = tuned_profile.build(prepared, directory)
    tuned_profile.write(result, force=force)
    tuned_text.show(result, as_json=as_json)
    return exitcodes.CHANGES if detailed_exitcode and result.entries else exitcodes.OK
