"""`nodetune facts`: everything nodetune knows about a node, as tables or as JSON.

Only click, the collectors and json are imported on the `--json` path; rich is imported only
for the human view.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from nodetune import exitcodes
from nodetune.cli import node_options
from nodetune.collectors import load_all
from nodetune.commands.params import complete_collectors, format_option, non_empty_items
from nodetune.node.source import open_node
from nodetune.schemas import FACTS_SCHEMA
from nodetune.views.facts_text import render
from nodetune.views.output import console, emit_json, view

if TYPE_CHECKING:
    from nodetune.facts.schema import ProfileLanguage


def _names(only: tuple[str, ...]) -> tuple[str, ...] | None:
    """--only cpu --only numa,memory -> ("cpu", "numa", "memory"), checked against the registry."""
    names = tuple(n.strip() for item in only for n in item.split(",") if n.strip())
    if not names:
        return None

    known = load_all()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.UsageError(f"unknown collector {', '.join(unknown)}; known: "
                               f"{', '.join(known)} (see `nodetune collectors`)")
    return names


def _print_timings(status: dict[str, dict[str, object]]) -> None:
    """Plain per-collector times on stderr (used with --json, so stdout stays JSON)."""
    total = 0.0
    for name, st in status.items():
        seconds = float(st.get("seconds") or 0.0)  # type: ignore[arg-type]
        total += seconds
        sys.stderr.write(f"{name:<12} {seconds * 1000:8.1f} ms  "
                         f"{'ok' if st.get('ok') else 'failed'}"
                         f"{' (no data)' if st.get('no_data') else ''}\n")
    sys.stderr.write(f"{'total':<12} {total * 1000:8.1f} ms\n")


def _print_schema(which: str) -> None:
    # Imported here, as the other views of this command: the profile language pulls in the
    # rule engine and the profile loader (20-40 ms measured), which reading facts never needs.
    import json

    from nodetune.facts import schema  # (the same reason)

    doc = schema.facts_schema() if which == "facts" else schema.profile_schema(_profile_language())
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _profile_language() -> ProfileLanguage:
    # imported here, as in _print_schema: only `--schema profile` needs the profile language
    from nodetune.facts.model import Disruption, Severity
    from nodetune.facts.schema import ProfileLanguage
    from nodetune.profiles.catalog import SECTIONS, SETTING_KEYS, TOP_KEYS
    from nodetune.profiles.tunables import KINDS, QUALIFIERS
    from nodetune.rules.operators import OPERATORS
    from nodetune.rules.schema import AREAS, CONDITION_KEYS, RULE_KEYS

    return ProfileLanguage(
        sections=SECTIONS, top_keys=TOP_KEYS, setting_keys=SETTING_KEYS, rule_keys=RULE_KEYS,
        condition_keys=CONDITION_KEYS, operators=OPERATORS, areas=AREAS,
        severities=[s.value for s in Severity], disruptions=[d.value for d in Disruption],
        tunables={kind: QUALIFIERS.get(kind, ()) for kind in KINDS})


@click.command("facts")
@node_options
@click.option("--json", "as_json", is_flag=True, help="Print the facts document (schema "
              "nodetune.facts/1) instead of tables.")
@click.option("--timings", is_flag=True, help="Show how long each collector took "
              "(on stderr with --json).")
@click.option("--only", multiple=True, callback=non_empty_items, metavar="NAME[,NAME]",
              shell_complete=complete_collectors,
              help="Run only these collectors (repeatable; see `nodetune collectors`).")
@click.option("--schema", type=click.Choice(["facts", "profile"]), is_flag=False,
              flag_value="facts", default=None, metavar="[facts|profile]",
              help="Print a JSON Schema instead of reading the node: the facts contract "
                   "(default), or profile files with completion of fact paths.")
@format_option
def cmd(root: str | None, snapshot: str | None, nvml: str, as_json: bool, timings: bool,
        only: tuple[str, ...], schema: str | None, fmt: str | None) -> int:
    """Show everything nodetune knows about this node (or a --root tree / --from snapshot).

    A collector that fails is reported (in the tables, and under `collectors` in JSON) and the
    other facts are still shown: exit code 0. Exit code 3 when the node cannot be read at all
    (bad --root, bad snapshot, unknown --only name).
    """
    if schema is not None:
        _print_schema(schema)
        return exitcodes.OK

    names = _names(only)
    with open_node(root=root, snapshot=snapshot, nvml=nvml) as node:
        doc = node.facts(names).to_json()
    if as_json:
        emit_json(doc, FACTS_SCHEMA)
        if timings:
            _print_timings(doc["collectors"])
    else:
        v = view(fmt)
        render(doc, console(v=v), timings=timings, v=v)
    return exitcodes.OK
