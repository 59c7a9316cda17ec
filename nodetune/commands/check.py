"""`nodetune check`: pre-job health check for Slurm and Kubernetes.

Stdout's first line is the one-line summary ("nodetune: GPU3 PCIe x8 (expected x16)"), usable as
a Slurm drain reason; details follow on the next lines. `--json` prints the nodetune.check/2
document instead. Exit 0 healthy, 1 unhealthy, 3 nodetune could not run.

`nodetune check` usually starts through `nodetune.check.fastpath.fast_main` without click; this
command serves --help and the command lines the fast path leaves to click. Both take their
options from one table, `nodetune.check.options.OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from nodetune.check.fastpath import Emitter, error, run_fields, stored_answer
from nodetune.check.operation import CheckRequest, run
from nodetune.check.options import OPTIONS, TIERS, Option, request_fields
from nodetune.cli import node_source_options
from nodetune.commands.audit import profile_options
from nodetune.commands.params import PROFILE_NAME, FiniteFloatRange
from nodetune.errors import NodetuneError


def _click_type(opt: Option) -> Any:
    if opt.kind == "tier":
        return click.Choice(TIERS)
    if opt.kind == "float":
        return FiniteFloatRange(min=opt.minimum)
    if opt.kind == "int":
        return click.IntRange(min=None if opt.minimum is None else int(opt.minimum))
    if opt.kind == "profile":
        return PROFILE_NAME
    if opt.kind == "file":
        return click.Path(dir_okay=False)
    if opt.kind == "dir":
        return click.Path(file_okay=False)
    return None


def table_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of the table, in its order: those of the `node` and `profile` groups
    through the decorators every command shares, the rest declared from the table."""
    shared: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
        "node": node_source_options, "profile": profile_options}
    applied: set[str] = set()
    for opt in reversed(OPTIONS):
        if opt.group in shared:
            if opt.group not in applied:
                func = shared[opt.group](func)
                applied.add(opt.group)
            continue
        if opt.kind == "flag":
            func = click.option(*opt.flags, opt.dest, is_flag=True, help=opt.help)(func)
            continue
        func = click.option(*opt.flags, opt.dest, type=_click_type(opt), multiple=opt.multiple,
                            default=None if opt.multiple else opt.default,
                            show_default=opt.default is not None and not opt.multiple,
                            metavar=opt.metavar, envvar=opt.envvar, help=opt.help)(func)
    return func


@click.command("check")
@table_options
def cmd(**values: Any) -> int:
    """Pre-job health check: is this node fit to run a job now?

    Exit 0 healthy (warnings may be printed), 1 unhealthy (a drain check failed or timed
    out), 3 nodetune could not run. The first stdout line is a one-line summary suitable as a
    Slurm drain reason. With --npd: exit 2 instead of 3, and also when no drain check could be
    evaluated or none passed and some were unknown (NPD's Unknown).
    """
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, (list, tuple)) else v
                              for k, v in request_fields(values).items()}
    as_npd = bool(values["npd"])
    emit = Emitter(bool(values["as_json"]), bool(values["verbose"]), as_npd)
    try:
        stored = stored_answer(values, fields)
        if stored is not None:
            emit(stored)
            code = int(stored["exit_code"])
        else:
            code = run(CheckRequest(**run_fields(values, fields)), emit=emit).exit_code
    except NodetuneError as exc:
        if not as_npd:
            raise
        return error(exc, as_npd)
    return emit.npd_status if as_npd else code
