"""`nodetune snapshot -o FILE.tar.gz`: capture a node so any machine can replay it (`--from`)."""

from __future__ import annotations

import click

from nodetune import exitcodes
from nodetune.cli import node_options
from nodetune.node import snapshot as snap
from nodetune.node.source import open_node
from nodetune.schemas import SNAPSHOT_SCHEMA
from nodetune.views.output import emit_json


@click.command("snapshot")
@node_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              metavar="FILE.tar.gz", help="Where to write the snapshot.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a summary (schema nodetune.snapshot/1) instead of a sentence.")
@click.option("--snapshot-limit", "snapshot_limit", default=None, metavar="SIZE",
              envvar="NODETUNE_SNAPSHOT_LIMIT",
              help="With --from: the most the snapshot may unpack to (default 512MiB; env "
                   "NODETUNE_SNAPSHOT_LIMIT, which every command reads).")
def cmd(root: str | None, snapshot: str | None, nvml: str, output: str, as_json: bool,
        snapshot_limit: str | None) -> int:
    """Capture this node (or a --root tree, or another snapshot) into FILE.tar.gz.

    The archive holds the files the collectors read, NVML data as JSON and tool versions, and
    nothing else: no environment, no process command lines, no secrets from /etc. Replay it on
    any machine, with or without a GPU: `nodetune facts --from FILE.tar.gz`.
    """

    snap.check_output(output)
    with open_node(root=root, snapshot=snapshot, nvml=nvml,
                   snapshot_limit=snapshot_limit) as node:
        result = snap.take(output, node)
    failed = {name: st.error for name, st in result.facts.status.items()
              if not st.ok and not st.no_data}
    if as_json:
        emit_json({"path": result.path, "bytes": result.bytes, "files": result.files,
                   "links": result.links, "dirs": result.dirs,
                   "nvml_recorded": result.nvml_recorded, "excluded": result.excluded,
                   "failed_collectors": failed}, SNAPSHOT_SCHEMA)
        return exitcodes.OK
    nvml_text = "with NVML data" if result.nvml_recorded else "without NVML data"
    click.echo(f"wrote {result.path}: {result.files} files, {result.links} links, "
               f"{_size(result.bytes)}, {nvml_text}")
    for name, error in failed.items():
        click.echo(f"  collector {name} failed: {error}", err=True)
    click.echo(f"replay it with: nodetune facts --from {result.path}")
    return exitcodes.OK


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"
