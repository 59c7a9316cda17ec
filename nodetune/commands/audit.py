"""`nodetune audit`: compare the node with its hardware profile, worst findings first."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from nodetune.audit.operation import run_audit
from nodetune.cli import node_options
from nodetune.commands.params import PROFILE_NAME, format_option, non_empty_items
from nodetune.node.source import open_node
from nodetune.profiles.catalog import Library
from nodetune.schemas import AUDIT_SCHEMA
from nodetune.views import junit as junit_report
from nodetune.views.audit_text import render
from nodetune.views.output import console, emit_json, view

SEVERITIES = ("info", "warning", "critical")


F = TypeVar("F", bound=Callable[..., Any])


def profile_options(func: F) -> F:
    """--profiles-dir and --overrides, shared by `audit` and `profiles show`."""
    func = click.option("--overrides", type=click.Path(dir_okay=False), default=None,
                        metavar="FILE", help="Site YAML overriding single settings "
                        "(severity, expectation, disable).")(func)
    func = click.option("--profiles-dir", "profiles_dirs", multiple=True,
                        type=click.Path(file_okay=False), envvar="NODETUNE_PROFILES_DIR",
                        metavar="DIR", help="Extra profile directory, searched before the "
                        "shipped profiles (repeatable; env NODETUNE_PROFILES_DIR).")(func)
    return func


@click.command("audit")
@node_options
@click.option("--profile", "profile", type=PROFILE_NAME, default=None, metavar="NAME",
              help="Audit against this profile instead of the one the node matches.")
@profile_options
@click.option("--json", "as_json", is_flag=True,
              help="Print the audit as JSON (schema nodetune.audit/1).")
@click.option("--junit", "junit", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Also write a JUnit XML report to FILE.")
@click.option("--only", multiple=True, callback=non_empty_items, metavar="ID[,ID]",
              help="Audit only these settings (ids or globs like 'gpu.*'; repeatable).")
@click.option("--skip", multiple=True, metavar="ID[,ID]",
              help="Skip these settings (ids or globs; repeatable).")
@click.option("--severity", type=click.Choice(SEVERITIES), default="info", show_default=True,
              help="Report only findings of this severity or worse.")
@click.option("-v", "--verbose", is_flag=True,
              help="Explain each finding: why it matters, how to fix it, the sources cited.")
@format_option
def cmd(root: str | None, snapshot: str | None, nvml: str, profile: str | None,
        profiles_dirs: tuple[str, ...], overrides: str | None, as_json: bool,
        junit: str | None, only: tuple[str, ...], skip: tuple[str, ...], severity: str,
        verbose: bool, fmt: str | None) -> int:
    """Compare this node (or a --root tree / --from snapshot) with its hardware profile.

    One line per failing or unknown setting, worst first: what the profile wants and what
    is in effect now (and persisted), then a summary line. -v adds why each finding matters,
    how to fix it and a legend of the sources cited.

    Exit codes: 0 compliant, 1 warnings only, 2 critical findings, 3 nodetune could not run
    (bad profile, bad snapshot or --root, usage error).
    """

    start = time.perf_counter()
    library = Library(profiles_dirs)
    if profile:  # a bad profile or overrides file fails before the node is read
        library.load(profile, overrides)
    with open_node(root=root, snapshot=snapshot, nvml=nvml) as node:
        facts = node.facts().to_json()
        origin = node.origin
    result = run_audit(facts, profile=profile, library=library, overrides=overrides,
                       only=only, skip=skip, severity=severity, source=origin)
    if junit:
        junit_report.write(junit, f"nodetune.audit.{result.profile.name}", result.findings,
                           time.perf_counter() - start)
    if as_json:
        emit_json(result.to_json(), AUDIT_SCHEMA)
    else:
        v = view(fmt)
        render(result, console(v=v), v, verbose=verbose)
    return result.exit_code
