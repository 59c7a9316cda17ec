"""`nodetune explain ID|FAULT_CODE`: what a profile setting or health check does, why, its
sources, its fix and which profiles and check tiers use it."""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

from nodetune import exitcodes
from nodetune.errors import NodetuneError
from nodetune.explain.operation import explain, load_catalog
from nodetune.schemas import EXPLAIN_SCHEMA
from nodetune.views.explain_text import render, render_list
from nodetune.views.output import emit_json


def _complete_ids(ctx: click.Context, param: click.Parameter,
                  incomplete: str) -> list[CompletionItem]:
    try:
        catalog = load_catalog(ctx.params.get("profiles_dirs") or ())
    except NodetuneError:
        return []
    wanted = incomplete.upper() if incomplete[:2].lower() == "nt" else incomplete
    return [CompletionItem(i, help=kind) for i, kind in catalog.ids() if i.startswith(wanted)]


@click.command("explain")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              envvar="NODETUNE_PROFILES_DIR", metavar="DIR", is_eager=True,
              help="Extra profile directory, searched before the shipped profiles "
                   "(repeatable; env NODETUNE_PROFILES_DIR).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the nodetune.explain/1 document instead of text.")
@click.option("--list", "list_ids", is_flag=True,
              help="List every setting id, check id and fault code instead.")
@click.argument("ident", metavar="ID|FAULT_CODE", required=False, shell_complete=_complete_ids)
def cmd(profiles_dirs: tuple[str, ...], as_json: bool, list_ids: bool,
        ident: str | None) -> int:
    """Explain a profile setting (gpu.nvlink_inactive), a health check (nvlink.inactive) or a
    fault code (NT3001): what it checks, why, its sources, its fix and the profiles and check
    tiers that use it.

    Exit 0 explained (or listed), 3 an unknown id (the line names the closest ones) or no id.
    """
    catalog = load_catalog(profiles_dirs)
    if list_ids:
        rows = catalog.ids()
        if as_json:
            emit_json({"ids": [{"id": i, "kind": k} for i, k in rows]}, EXPLAIN_SCHEMA)
        else:
            click.echo(render_list(rows), nl=False)
        return exitcodes.OK
    if ident is None:
        raise click.UsageError("missing ID|FAULT_CODE (or --list)")
    result = explain(ident, catalog)
    if as_json:
        emit_json(result.to_json(), EXPLAIN_SCHEMA)
    else:
        click.echo(render(result.to_json()), nl=False)
    return exitcodes.OK
