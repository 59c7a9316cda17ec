"""`nodetune topo`: the GPU / NIC / NVMe topology matrix, as text, JSON or a drawing."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from nodetune import exitcodes
from nodetune.cli import node_options
from nodetune.errors import RenderError
from nodetune.facts.topology import build_topology
from nodetune.node.source import open_node
from nodetune.schemas import TOPO_SCHEMA
from nodetune.views.ascii import ascii_only, to_ascii
from nodetune.views.output import emit_json
from nodetune.views.topo_image import draw
from nodetune.views.topo_text import render_matrix

# Collectors the topology reads (the others are not run).
TOPO_COLLECTORS = ("cpu", "numa", "memory", "pci", "gpu", "nic", "rdma", "storage")

@click.command("topo")
@node_options
@click.option("--json", "as_json", is_flag=True,
              help="Print the topology document (schema nodetune.topo/1).")
@click.option("--png", "png", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE", help="Draw the topology diagram into a PNG file.")
@click.option("--svg", "svg", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE", help="Draw the topology diagram into an SVG file.")
def cmd(root: str | None, snapshot: str | None, nvml: str, as_json: bool, png: str | None,
        svg: str | None) -> int:
    """Show how GPUs, NICs and NVMe drives connect: NVLink, PCIe switch, host bridge, NUMA node.

    Classes as in `nvidia-smi topo -m`: X, NV# (NVLinks), PIX (one PCIe switch), PXB (several
    switches), PHB (one host bridge), NODE (one NUMA node), SYS (across NUMA nodes).
    --png/--svg also draw sockets, NUMA nodes, PCIe switches and devices into FILE.
    """

    for path in (png, svg):
        if path:
            _check_writable(path)
    with open_node(root=root, snapshot=snapshot, nvml=nvml) as node:
        facts = node.facts(TOPO_COLLECTORS).to_json()
    topo = build_topology(facts)
    for path, fmt in ((png, "png"), (svg, "svg")):
        if path:
            draw(topo, path, fmt, title=_title(facts, topo))
            click.echo(f"nodetune: wrote {path}", err=True)
    if as_json:
        emit_json({"root": facts.get("root"), **topo.to_json()}, TOPO_SCHEMA)
    elif not topo.devices:
        click.echo("no GPUs, NICs or NVMe drives found")
    else:
        text = render_matrix(topo, color=sys.stdout.isatty())
        click.echo(to_ascii(text) if ascii_only() else text)
    return exitcodes.OK


def _check_writable(path: str) -> None:
    """Fail in one line before collecting anything when the diagram cannot be written."""

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        why = "does not exist" if not os.path.isdir(folder) else "is not writable"
        raise RenderError(f"cannot write the topology diagram to {path}: {folder} {why}",
                          fix="choose a writable path for --png/--svg")


def _title(facts: dict[str, Any], topo: Any) -> str:
    """"8x NVIDIA H100 80GB HBM3 · Intel(R) Xeon(R) Platinum 8468 · 2 NUMA nodes"."""
    parts = []
    gpus = topo.of_kind("gpu")
    if gpus:
        parts.append(f"{len(gpus)}x {gpus[0].label}")
    model = (facts.get("cpu") or {}).get("model_name")
    if model:
        parts.append(str(model))
    with_cpus = [n for n in topo.numa if n.get("has_cpus")]
    if with_cpus:
        parts.append(f"{len(with_cpus)} NUMA node{'s' if len(with_cpus) > 1 else ''}")
    return " · ".join(parts) or "node topology"
