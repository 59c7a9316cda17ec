"""`nodetune collectors`: the registered fact collectors and what each reads."""

from __future__ import annotations

import inspect

import click

from nodetune import exitcodes
from nodetune.collectors import limits, load_all
from nodetune.schemas import COLLECTORS_SCHEMA
from nodetune.views.collectors_text import print_collectors
from nodetune.views.output import emit_json


def describe() -> list[dict[str, object]]:
    """Name, one-paragraph description, required paths and time limit of every registered
    collector (the limit as it applies now: --collector-timeout or its env replace them all)."""
    return [{"name": name, "description": " ".join((inspect.getdoc(cls) or "").split()),
             "requires": list(getattr(cls, "requires", ())), "timeout_s": limits.limit(cls)}
            for name, cls in load_all().items()]


@click.command("collectors")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def cmd(as_json: bool) -> int:
    """List the fact collectors `nodetune facts --only` can run, in the order they run."""
    rows = describe()
    if as_json:
        emit_json({"collectors": rows}, COLLECTORS_SCHEMA)
        return exitcodes.OK
    print_collectors(rows)
    return exitcodes.OK
