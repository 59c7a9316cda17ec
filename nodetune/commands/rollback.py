"""`nodetune rollback`: restore what an apply changed, from its state file."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from pathlib import Path

import click

from nodetune import exitcodes
from nodetune.apply import ansible, remediate, statefile
from nodetune.errors import Refused
from nodetune.views import apply_text as apply_report

HELP = """Restore the files and runtime values an apply changed, from its state file.

Without --state-file, uses the newest state file not yet rolled back in
/var/lib/nodetune/state (inside --root). Runs through Ansible like apply: check mode first,
then a confirmation (or --yes).

Refuses, before anything runs, a state file of another root or host, one naming a path that
leaves the root (links resolved), and one that is damaged or fails its checksum.

Exit codes: 0 restored; 1 some values could not be restored; 3 the state file is missing,
unreadable, damaged or fails its checksum, or Ansible failed; 4 refused, nothing was changed
(no confirmation, already rolled back, another root or host, a path leaving the root).
"""


@click.command("rollback", help=HELP)
@click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="The state file `nodetune apply` wrote (default: the latest).")
@click.option("--root", type=click.Path(file_okay=False, exists=True), envvar="NODETUNE_ROOT",
              metavar="DIR", help="The host tree the apply changed (default /).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report "
              "(schema nodetune.rollback/1).")
def cmd(state_file: Path | None, root: str | None, yes: bool, as_json: bool) -> int:
    host_root = os.path.abspath(root) if root else "/"
    with ExitStack() as stack:
        stack.enter_context(ansible.signals())
        if statefile.state_dir(host_root).is_dir():  # one apply or rollback of a root at a time
            stack.enter_context(statefile.locked(host_root, "rollback"))
        try:
            return _rollback(state_file, root, yes=yes, as_json=as_json)
        except ansible.Cancelled as exc:
            raise ansible.Interrupted(exc.signum, "before the first change; nothing was "
                                      "changed") from None


def _rollback(state_file: Path | None, root: str | None, *, yes: bool, as_json: bool) -> int:
    with remediate.workspace() as workdir:
        prepared = remediate.prepare_rollback(state_file, root, workdir)
        pending = prepared.check.pending
        for note in prepared.notes:
            click.echo(f"nodetune: note: {note}", err=True)
        if not yes:
            if not sys.stdin.isatty():
                raise Refused("no terminal to confirm on and --yes not given; nothing was changed",
                              fix="pass --yes")
            if not as_json:
                preview = remediate.Report(mode="rollback-plan", profile=prepared.state.profile,
                                           tasks=pending, changed=len(pending))
                apply_report.show(preview, as_json=False)
            if not click.confirm(f"Restore {len(pending)} item(s) recorded in "
                                 f"{prepared.state.path}?", err=True):
                raise Refused("not confirmed; nothing was changed")
        report = remediate.execute_rollback(prepared)
    apply_report.show(report, as_json=as_json)
    return exitcodes.FAILED if report.rejected else exitcodes.OK
