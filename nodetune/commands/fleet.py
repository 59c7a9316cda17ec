"""`nodetune fleet collect` and `nodetune fleet report`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nodetune.commands.params import FiniteFloatRange
from nodetune.schemas import FLEET_COLLECT_SCHEMA, FLEET_SCHEMA, FLEET_TOPOLOGY_SCHEMA
from nodetune.views.output import console, emit_json, view

# Each subcommand imports what only it needs: `fleet report` on 50,000 nodes starts without
# Ansible's or the HTML view's modules.


@click.group("fleet", context_settings={"help_option_names": ["-h", "--help"]})
def cmd() -> None:
    """Collect reports from many nodes through Ansible, then compare them.

    \b
      collect  run nodetune facts/audit/check (and bench) on every inventory host,
               one DIR/<host>.json per host
      report   compliance per setting, worst nodes, drift, benchmark outliers
      topology NVLink domains as Slurm topology.conf or Kubernetes node labels
    """


@cmd.command("collect")
@click.option("--inventory", "-i", "inventory", required=True,
              type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Ansible inventory (INI or YAML). Host variables nodetune_bin, "
                   "nodetune_root, nodetune_nvml, nodetune_profile, nodetune_bench_args.")
@click.option("--limit", "-l", default=None, metavar="PATTERN",
              help="Only hosts matching this Ansible pattern (e.g. 'gpu:!node-7').")
@click.option("--forks", "-f", type=click.IntRange(1, 1000), default=25, show_default=True,
              help="Hosts worked on at the same time.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("fleet"), show_default=True, metavar="DIR",
              help="Directory for DIR/<host>.json and DIR/_failed.json.")
@click.option("--bench", is_flag=True,
              help="Also run `nodetune bench <nodetune_bench_args or all> --quick` on each host.")
@click.option("--timeout", type=click.IntRange(1, 86400), default=300, show_default=True,
              metavar="S", help="Seconds each nodetune command may run on a host.")
@click.option("--full", is_flag=True,
              help="Keep the whole facts, audit and bench documents (reports grow ~30x).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the nodetune.fleet-collect/1 summary as JSON.")
def collect_cmd(inventory: Path, limit: str | None, forks: int, out: Path, bench: bool,
                timeout: int, full: bool, as_json: bool) -> int:
    """Run nodetune facts, audit and check (and bench) on every host of an Ansible inventory.

    Each host's report goes to DIR/<inventory name>.json (schema nodetune.fleet-report/1).
    Hosts that are unreachable, lack nodetune, fail or time out are listed (and written to
    DIR/_failed.json); the others are still collected. Nothing is changed on any host.

    Exit codes: 0 every host collected, 1 some hosts failed, 3 nothing could run (Ansible
    missing, bad inventory, no host matched).
    """
    # deferred (see the module's top): Ansible's runner and the progress view
    from nodetune.fleet import collect
    from nodetune.views.fleet_text import CollectProgress, render_collection

    request = collect.Request(inventory=inventory, out=out, limit=limit, forks=forks,
                              bench=bench, timeout=timeout, full=full)
    hosts = collect.list_hosts(inventory, limit)
    if not as_json and sys.stderr.isatty():
        with CollectProgress(len(hosts), len(collect.stages(bench))) as progress:
            result = collect.run(request, progress, hosts=hosts)
    else:
        result = collect.run(request, hosts=hosts)
    doc = result.to_json()
    if as_json:
        emit_json(doc, FLEET_COLLECT_SCHEMA)
    else:
        v = view()
        render_collection(doc, console(v=v), v)
    return result.exit_code


@cmd.command("report")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print the nodetune.fleet/1 document instead of tables.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, metavar="FILE",
              help="Also write a self-contained HTML report with plots to FILE.")
@click.option("--k", "k", type=FiniteFloatRange(min=0.5), default=3.5, show_default=True,
              metavar="MADS", help="Benchmark outlier threshold: robust z-score (in MADs).")
@click.option("--mad-floor", type=FiniteFloatRange(min=0.0, max=1.0), default=0.01,
              show_default=True, metavar="FRACTION",
              help="Smallest MAD used, as a fraction of the median.")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, metavar="N",
              help="Rows per table in the terminal and HTML views (JSON lists everything).")
def report_cmd(directory: Path, as_json: bool, html_path: Path | None, k: float,
               mad_floor: float, top: int) -> int:
    """Compare the node reports in DIRECTORY (fleet reports and agent /report documents).

    Shows compliance per setting, nodes ranked worst first, configuration drift among nodes
    of the same profile and benchmark outliers (nodes more than k MADs worse than the
    median of their profile).

    Exit codes: 0 every node compliant, no drift, no outliers; 1 warnings, drift, outliers,
    unhealthy, uncollected hosts or unreadable files; 2 some node has critical findings;
    3 nodetune could not run (no such directory, no node reports in it).
    """
    from nodetune.fleet import report  # deferred (see the module's top)

    doc, fleet = report.build(directory, report.Options(k=k, mad_floor=mad_floor))
    if html_path is not None:
        from nodetune.views.fleet_html import write_html  # deferred: only for --html

        write_html(html_path, doc, fleet, top=top)
    if as_json:
        emit_json(doc, FLEET_SCHEMA)
    else:
        from nodetune.views.fleet_text import render_report  # deferred: not for --json

        v = view()
        out: Any = console(v=v)
        render_report(doc, out, top=top, v=v)
        if html_path is not None:
            out.print(f"\nHTML report written to {html_path}")
    exit_code: int = doc["summary"]["exit_code"]
    return exit_code


def _renderer(fmt: str) -> Callable[[Any, int | None], str]:
    from nodetune.views import fleet_topology  # deferred (see the module's top)

    render: dict[str, Callable[[Any, int | None], str]] = {
        "slurm": fleet_topology.slurm_block, "slurm-yaml": fleet_topology.slurm_yaml,
        "slurm-tree": lambda topo, _: fleet_topology.slurm_tree(topo),
        "labels": lambda topo, _: fleet_topology.labels(topo)}
    return render[fmt]


@cmd.command("topology")
@click.argument("target", type=click.Path(path_type=Path), metavar="REPORT_OR_DIR")
@click.option("--format", "fmt",
              type=click.Choice(["slurm", "slurm-yaml", "slurm-tree", "labels", "json"]),
              default="slurm", show_default=True,
              help="slurm: topology.conf BlockSizes= and BlockName= lines (topology/block, "
                   "Slurm 23.11+); slurm-yaml: the same blocks as topology.yaml (Slurm "
                   "25.05+); slurm-tree: SwitchName= lines (topology/tree, any Slurm); "
                   "labels: kubectl label commands; json: the nodetune.fleet-topology/1 "
                   "document.")
@click.option("--block-size", type=click.IntRange(1), default=None, metavar="N",
              help="Base block size of slurm and slurm-yaml: domains with fewer healthy "
                   "nodes are left out (Slurm refuses a smaller block). Default: the "
                   "smallest healthy domain's node count.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def topology_cmd(target: Path, fmt: str, block_size: int | None, as_json: bool) -> int:
    """NVLink domains (GPU fabric cluster UUID + clique id) of the nodes in REPORT_OR_DIR.

    Reads fleet reports and agent /report documents (a `fleet collect` directory or one
    file). Nodes of a domain that fail (critical audit findings, failed health check, GPU
    fabric not registered, fewer GPUs in the clique than their peers) are left out of the
    domain's block and listed in a comment, so no job is placed across a broken tray.

    Exit codes: 0 every domain healthy; 1 a domain is partly healthy or a report could not
    be read or has no GPU facts; 3 nodetune could not run (no such file or directory, no
    node reports).
    """
    from nodetune.fleet import domains  # deferred (see the module's top)

    topo = domains.build(target)
    if as_json or fmt == "json":
        emit_json(topo.to_json(), FLEET_TOPOLOGY_SCHEMA)
    else:
        click.echo(_renderer(fmt)(topo, block_size), nl=False)
    return topo.exit_code
