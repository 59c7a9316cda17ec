"""`nodetune profiles list|show`: the hardware profiles, after inheritance is resolved."""

from __future__ import annotations

from typing import Any

import click

from nodetune import exitcodes
from nodetune.audit.operation import AREA_TITLES
from nodetune.commands.audit import profile_options
from nodetune.facts.model import Severity
from nodetune.profiles.catalog import Library, describe_rules, load_all
from nodetune.rules.operators import OPERATORS, describe
from nodetune.schemas import PROFILE_SCHEMA
from nodetune.views.audit_text import SEVERITY_STYLE
from nodetune.views.output import console, emit_json


@click.group("profiles")
def cmd() -> None:
    """List or show hardware profiles (shipped ones and those in --profiles-dir)."""


@cmd.command("list", short_help="List the profiles.")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              envvar="NODETUNE_PROFILES_DIR", metavar="DIR",
              help="Extra profile directory, searched first (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema nodetune.profile/1).")
def list_cmd(profiles_dirs: tuple[str, ...], as_json: bool) -> int:
    """List every profile with what it extends and how many settings it has."""
    profiles = load_all(Library(profiles_dirs))
    rows: list[dict[str, Any]] = [{"name": p.name, "summary": p.summary, "extends": list(p.extends),
             "settings": len(p.rules), "path": p.path, "user": p.user} for p in profiles]
    if as_json:
        emit_json({"profiles": rows}, PROFILE_SCHEMA)
        return exitcodes.OK
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    table = Table(title="Profiles", title_justify="left")
    for col in ("name", "extends", "settings", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"] + (" (user)" if r["user"] else ""), " > ".join(r["extends"]),
                      str(r["settings"]), r["summary"])
    console().print(table)
    return exitcodes.OK


@cmd.command("show", short_help="Show one profile, inheritance resolved.")
@click.argument("name")
@profile_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema nodetune.profile/1).")
def show_cmd(name: str, profiles_dirs: tuple[str, ...], overrides: str | None,
             as_json: bool) -> int:
    """Show profile NAME with inheritance resolved (and --overrides applied)."""
    prof = Library(profiles_dirs).load(name, overrides)
    doc: dict[str, Any] = {"name": prof.name, "summary": prof.summary,
                           "extends": list(prof.extends), "chain": list(prof.chain),
                           "path": prof.path, "user": prof.user, "variables": prof.variables,
                           "settings": describe_rules(prof.rules)}
    if as_json:
        emit_json({"profiles": [doc]}, PROFILE_SCHEMA)
        return exitcodes.OK
    _render_profile(doc)
    return exitcodes.OK


def _render_profile(doc: dict[str, Any]) -> None:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table
    from rich.text import Text

    out = console()
    out.print(Text.assemble(("Profile ", "bold"), (doc["name"], "bold magenta"),
                            f": {doc['summary']}"))
    out.print(f"inherits: {' > '.join(doc['chain'])}   file: {doc['path']}")
    if doc["variables"]:
        out.print("variables: " + ", ".join(f"{k}={v}" for k, v in doc["variables"].items()))
    table = Table(expand=True, show_lines=False)
    for col, ratio in (("setting", 3), ("severity", 1), ("fact", 4), ("want", 3),
                       ("applies when", 3), ("fix by", 2)):
        table.add_column(col, ratio=ratio, overflow="fold")
    areas = list(AREA_TITLES)
    for s in sorted(doc["settings"], key=lambda s: (areas.index(s["area"]), s["id"])):
        when = "; ".join(f"{c['fact']} {_cond_text(c)}" for c in s["when"]) or "always"
        role = (s["remediation"] or {}).get("role")
        fix_by = f"apply: {role}" if role else "by hand"
        if s["disruption"] != "none":
            fix_by += f" ({s['disruption']})"
        table.add_row(s["id"], Text(s["severity"], style=SEVERITY_STYLE[Severity(s["severity"])]),
                      s["fact"], s["expected"], when, fix_by)
    out.print(table)


def _cond_text(cond: dict[str, Any]) -> str:
    return describe({k: v for k, v in cond.items() if k in OPERATORS})
