"""`nodetune tune SUITE...`: apply the profile's fixes and prove them with benchmarks."""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from nodetune.apply import ansible, remediate, statefile
from nodetune.bench import SUITES, identity
from nodetune.bench.base import NullProgress, RunOptions
from nodetune.commands.audit import profile_options
from nodetune.commands.bench import _gpus_option, _sizes_option, output_file
from nodetune.commands.params import PROFILE_NAME, non_empty_items
from nodetune.errors import ApplyError, Refused
from nodetune.tune import TUNE_SCHEMA, benchstep, card, operation
from nodetune.views import tune_png, tune_text
from nodetune.views.bench_text import LineProgress, RichProgress
from nodetune.views.output import emit_json

HELP = """Apply the settings `nodetune audit` finds wrong and prove the change with benchmarks.

Audits, shows the plan, runs SUITE... as a baseline, applies (state file, as `nodetune
apply`), runs the same suites again with identical parameters and decides per metric with
the noise model of `bench --compare`: improved, unchanged, regressed, or incomparable. A
regression beyond noise is rolled back at once (unless --keep). --card, --save and --plot
write a before/after card (text, JSON, PNG) fingerprinted with the node's identity.

\b
Suites: memcpy, allreduce, fio, cpu-mem, gpu (as `nodetune bench`).

Exit codes: 0 kept (improved or unchanged) or nothing to apply; 1 regressed (rolled back, or
kept with --keep) or a setting failed; 3 nodetune could not run, or the two runs could not be
compared; 4 refused, nothing was changed.
"""


@click.command("tune", help=HELP)
@click.argument("suites", nargs=-1, required=True, type=click.Choice(list(SUITES)),
                metavar="SUITE...")
@click.option("--profile", type=PROFILE_NAME, metavar="NAME",
              help="Profile to apply (default: the one matching "
              "this node).")
@profile_options
@click.option("--nvml", default="auto", show_default=True, metavar="auto|live|off|FILE",
              help="NVML source for the audit.")
@click.option("--only", multiple=True, callback=non_empty_items, metavar="ID",
              help="Apply only these settings "
              "(repeatable; an id, a glob, or ID[subject]).")
@click.option("--allow-reboot", is_flag=True, help="Allow changes that need a reboot (they "
              "are not measured: the second run comes before the reboot).")
@click.option("--allow-disruptive", is_flag=True, help="Allow changes that reset kubelet state.")
@click.option("--root", type=click.Path(file_okay=False, exists=True), envvar="NODETUNE_ROOT",
              metavar="DIR", help="Apply to the host tree in DIR; benchmarks still measure "
              "this host (a rehearsal).")
@click.option("--keep", is_flag=True, help="Keep the change even when it regressed.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--quick", is_flag=True, help="The suites' quick form (both runs).")
@click.option("--repeat", type=click.IntRange(2, 100), default=3, show_default=True,
              help="Runs per measurement, for the noise model.")
@click.option("--gpus", callback=_gpus_option, metavar="LIST", help="GPUs to use, e.g. 0-3.")
@click.option("--sizes", callback=_sizes_option, metavar="LIST|MIN:MAX",
              help="Sizes, as for nodetune bench.")
@click.option("--save", "save_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the full report (nodetune.tune/1: both runs, decision, state file).")
@click.option("--card", "card_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the before/after card: FILE.json as JSON, anything else as text.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE.png",
              help="Draw the before/after card as a PNG chart (needs matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Print the nodetune.tune/1 report.")
def cmd(suites: tuple[str, ...], profile: str | None, profiles_dirs: tuple[str, ...],
        overrides: str | None, nvml: str, only: tuple[str, ...], allow_reboot: bool,
        allow_disruptive: bool, root: str | None, keep: bool, yes: bool, quick: bool,
        repeat: int, gpus: tuple[int, ...] | None, sizes: tuple[int, ...] | None,
        save_path: str | None, card_path: str | None, plot_path: str | None,
        as_json: bool) -> int:

    request = remediate.Request(profile=profile, root=root, only=only,
                                allow_reboot=allow_reboot, allow_disruptive=allow_disruptive,
                                profiles_dirs=profiles_dirs, overrides=overrides, nvml=nvml)
    if request.host_root == "/" and os.geteuid() != 0:
        raise ApplyError("changing this host needs root; nothing was changed",
                         fix="run it with sudo, or rehearse with --root DIR")
    if not yes and not sys.stdin.isatty():
        raise Refused("no terminal to confirm on and --yes not given; nothing was changed",
                      fix="review with nodetune apply --dry-run, then pass --yes")
    options = RunOptions(quick=quick, repeat=repeat, gpus=gpus, sizes=sizes)
    with ExitStack() as stack:
        stack.enter_context(ansible.signals())
        try:
            return _tune(request, stack, list(suites), options, keep=keep, yes=yes,
                         as_json=as_json, save_path=save_path, card_path=card_path,
                         plot_path=plot_path)
        except ansible.Cancelled as exc:
            raise ansible.Interrupted(exc.signum, "before the first change; nothing was "
                                      "changed") from None


def _tune(request: remediate.Request, stack: ExitStack, suites: list[str], options: RunOptions,
          *, keep: bool, yes: bool, as_json: bool, save_path: str | None,
          card_path: str | None, plot_path: str | None) -> int:
    facts = benchstep.live_facts()
    node = identity.node_json(facts)

    def confirm(prepared: Any, plan: Any) -> bool:
        if not as_json:
            tune_text.show_plan(plan, list(suites))
        if yes:
            return True
        return click.confirm(f"Benchmark, apply {len(prepared.changes)} change(s), benchmark "
                             "again?", err=True)

    # one apply, rollback or tune of a root at a time, from the check-mode run (which reads
    # the previous values) to the end of the cycle, its rollback included
    stack.enter_context(statefile.locked(request.host_root, "tune"))
    with ProgressFor(as_json) as progress, remediate.workspace() as workdir:
        bench = benchstep.bench_fn(suites, options, facts, progress)
        result = operation.prove(request, suites, bench, keep=keep, confirm=confirm,
                                 workdir=Path(workdir), fingerprint=node["fingerprint"],
                                 bench_options=options)
    the_card = card.build_card(result, node, options)
    doc = card.report(result, facts, node, options, the_card)
    _write(save_path, json.dumps(doc, indent=2, default=str) + "\n", "--save")
    if card_path:
        text = (json.dumps(the_card, indent=2) + "\n" if card_path.endswith(".json")
                else tune_text.card_text(the_card))
        _write(card_path, text, "--card")
    if plot_path:
        with output_file(plot_path, "--plot"):
            tune_png.plot(plot_path, the_card)
    if as_json:
        emit_json(doc, TUNE_SCHEMA)
    else:
        tune_text.show(the_card)
    return card.exit_code(result)


def _write(path: str | None, text: str, option: str) -> None:
    if not path:
        return
    with output_file(path, option):
        Path(path).write_text(text, encoding="utf-8")


class ProgressFor:
    """A progress bar on a terminal, a line per step on a pipe, nothing with --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.bar: Any = None

    def __enter__(self) -> Any:
        if self.as_json:
            return NullProgress()
        if sys.stderr.isatty():
            self.bar = RichProgress().__enter__()
            return self.bar
        return LineProgress()

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
