"""`nodetune profiles list|show|recommend`: the hardware profiles, after inheritance is resolved."""

from __future__ import annotations

from typing import Any

import click

from nodetune import exitcodes
from nodetune.cli import node_options
from nodetune.commands.audit import profile_options
from nodetune.commands.params import complete_profiles, format_option
from nodetune.node.source import open_node
from nodetune.profiles.catalog import Library, describe_rules, load_all
from nodetune.schemas import PROFILE_SCHEMA
from nodetune.views.output import emit_json, view
from nodetune.views.profiles_text import print_profile, print_profile_list


@click.group("profiles")
def cmd() -> None:
    """List or show hardware profiles (shipped ones and those in --profiles-dir)."""


@cmd.command("list", short_help="List the profiles.")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              envvar="NODETUNE_PROFILES_DIR", metavar="DIR",
              help="Extra profile directory, searched first (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema nodetune.profile/1).")
@format_option
def list_cmd(profiles_dirs: tuple[str, ...], as_json: bool, fmt: str | None) -> int:
    """List every profile with what it extends and how many settings it has."""
    profiles = load_all(Library(profiles_dirs))
    rows: list[dict[str, Any]] = [{"name": p.name, "summary": p.summary, "extends": list(p.extends),
             "settings": len(p.rules), "path": p.path, "user": p.user} for p in profiles]
    if as_json:
        emit_json({"profiles": rows}, PROFILE_SCHEMA)
        return exitcodes.OK
    print_profile_list(rows, view(fmt))
    return exitcodes.OK


@cmd.command("show", short_help="Show one profile, inheritance resolved.")
@click.argument("name", shell_complete=complete_profiles)
@profile_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema nodetune.profile/1).")
@format_option
def show_cmd(name: str, profiles_dirs: tuple[str, ...], overrides: str | None,
             as_json: bool, fmt: str | None) -> int:
    """Show profile NAME with inheritance resolved (and --overrides applied), with a legend
    of the sources its settings cite."""
    prof = Library(profiles_dirs).load(name, overrides)
    doc: dict[str, Any] = {"name": prof.name, "summary": prof.summary,
                           "extends": list(prof.extends), "chain": list(prof.chain),
                           "path": prof.path, "user": prof.user, "variables": prof.variables,
                           "settings": describe_rules(prof.rules)}
    if as_json:
        emit_json({"profiles": [doc]}, PROFILE_SCHEMA)
        return exitcodes.OK
    print_profile(doc, view(fmt))
    return exitcodes.OK


@cmd.command("recommend", short_help="Print the name of the profile this node matches.")
@node_options
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              envvar="NODETUNE_PROFILES_DIR", metavar="DIR",
              help="Extra profile directory, searched first (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema nodetune.profile/1).")
def recommend_cmd(root: str | None, snapshot: str | None, nvml: str,
                  profiles_dirs: tuple[str, ...], as_json: bool) -> int:
    """Print one word, the profile `audit` would pick for this node (as `tuned-adm recommend`).

    Exit codes: 0 a profile matched, 3 none matched or the node could not be read.
    """
    with open_node(root=root, snapshot=snapshot, nvml=nvml) as node:
        facts = node.facts().to_json()
    match = Library(profiles_dirs).match(facts)
    if as_json:
        emit_json({"recommended": match.profile, "reason": match.reason}, PROFILE_SCHEMA)
        return exitcodes.OK
    click.echo(match.profile)
    return exitcodes.OK
