"""`nodetune collectors`: the registered fact collectors and what each reads."""

from __future__ import annotations

import inspect

import click

from nodetune import exitcodes
from nodetune.collectors import load_all
from nodetune.schemas import COLLECTORS_SCHEMA
from nodetune.views.output import console, emit_json


def describe() -> list[dict[str, object]]:
    """Name, one-paragraph description and required paths of every registered collector."""
    return [{"name": name, "description": " ".join((inspect.getdoc(cls) or "").split()),
             "requires": list(getattr(cls, "requires", ()))}
            for name, cls in load_all().items()]


@click.command("collectors")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def cmd(as_json: bool) -> int:
    """List the fact collectors `nodetune facts --only` can run, in the order they run."""
    rows = describe()
    if as_json:
        emit_json({"collectors": rows}, COLLECTORS_SCHEMA)
        return exitcodes.OK
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("collector", style="cyan", no_wrap=True)
    table.add_column("facts", overflow="fold")
    table.add_column("reads", style="dim", overflow="fold")
    for row in rows:
        table.add_row(str(row["name"]), str(row["description"]),
                      ", ".join(row["requires"]))  # type: ignore[arg-type]
    console().print(table)
    return exitcodes.OK
