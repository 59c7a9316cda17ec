"""`nodetune collectors` as a table."""

from __future__ import annotations

from typing import Any

from nodetune.views.output import console


def print_collectors(rows: list[dict[str, Any]]) -> None:
    """One row per collector: its name, the facts it gives, the paths it reads, its time
    limit."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("collector", style="cyan", no_wrap=True)
    table.add_column("facts", overflow="fold")
    table.add_column("reads", style="dim", overflow="fold")
    table.add_column("limit", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(str(row["name"]), str(row["description"]),
                      ", ".join(row["requires"]), f"{row['timeout_s']:g} s")
    console().print(table)
