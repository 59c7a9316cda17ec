"""The topology matrix as text, laid out as `nvidia-smi topo -m` lays it out."""

from __future__ import annotations

import click

from nodetune.facts.topology import LEGEND, format_cpus

CLASS_COLORS = {"X": None, "PIX": "green", "PXB": "cyan", "PHB": "yellow", "NODE": "yellow",
                "SYS": "red"}


def render_matrix(topo: object, color: bool = False) -> str:
    """The matrix as `nvidia-smi topo -m` lays it out, plus affinity columns and legends."""
    devices = topo.devices  # type: ignore[attr-defined]
    matrix = topo.matrix  # type: ignore[attr-defined]
    names = [d.name for d in devices]
    width = max([len(n) for n in names] + [4]) + 2
    affinity = [format_cpus(d.cpus) for d in devices]
    cpu_w = max([len(a) for a in affinity] + [len("CPU Affinity")]) + 2
    header = " " * width + "".join(f"{n:<{width}}" for n in names)
    header += f"{'CPU Affinity':<{cpu_w}}{'NUMA Affinity':<15}GPU NUMA ID"
    lines = [header.rstrip()]
    for dev, cpus in zip(devices, affinity, strict=True):
        cells = []
        for other in names:
            value = matrix[dev.name][other]
            text = f"{value:<{width}}"
            style = CLASS_COLORS.get("NV" if value.startswith("NV") else value, "magenta")
            if value.startswith("NV"):
                style = "bright_green"
            cells.append(click.style(text, fg=style) if color and style else text)
        numa = "N/A" if dev.numa_node is None else str(dev.numa_node)
        gpu_numa = "N/A" if dev.gpu_numa_id is None else str(dev.gpu_numa_id)
        row = f"{dev.name:<{width}}" + "".join(cells) + f"{cpus:<{cpu_w}}{numa:<15}"
        row += gpu_numa if dev.kind == "gpu" else ""
        lines.append(row.rstrip())
    for kind, title in (("nic", "NIC Legend"), ("nvme", "NVMe Legend")):
        members = [d for d in devices if d.kind == kind]
        if members:
            lines += ["", f"{title}:", ""] + [f"  {d.name}: {d.label}" for d in members]
    lines += ["", "Legend:", ""] + [f"  {k:<4} = {v}" for k, v in LEGEND]
    notes = topo.notes  # type: ignore[attr-defined]
    if notes:
        lines += ["", "Notes:", ""] + [f"  - {n}" for n in notes]
    return "\n".join(lines)
