"""Draw a Topology: NUMA nodes (with their CPUs), PCIe switches and root ports, the GPUs, NICs
and NVMe drives under them, NVLink between GPUs, and the socket interconnect.

matplotlib is imported here only, with the Agg backend (no display needed).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nodetune.errors import RenderError, needs_extra
from nodetune.facts.topology import format_cpus

if TYPE_CHECKING:
    from nodetune.facts.topology import TopoDevice, Topology

COLORS = {"gpu": "#76b900", "nic": "#2f7fc1", "nvme": "#e08a1e", "switch": "#8c8c8c",
          "numa": "#6a51a3", "nvlink": "#3a7d00", "bad": "#c62828", "sys": "#c62828"}
FILL = {"gpu": "#eaf5d3", "nic": "#deebf7", "nvme": "#fdebd3", "switch": "#f0f0f0",
        "numa": "#efedf5"}
KIND_ORDER = {"nic": 0, "nvme": 1, "gpu": 2}  # GPUs at the bottom, next to the NVLink bar

DEV_W, DEV_H, GAP = 3.0, 1.05, 0.3
ROW = DEV_H + 0.35


@dataclass
class _Cluster:
    title: str
    subtitle: str
    devices: list[TopoDevice] = field(default_factory=list)

    @property
    def cols(self) -> int:
        return 1 if len(self.devices) <= 4 else 2

    @property
    def rows(self) -> int:
        return -(-len(self.devices) // self.cols)

    @property
    def width(self) -> float:
        return self.cols * DEV_W + (self.cols - 1) * GAP + 2 * GAP


def _short(address: str | None, strip_domain: bool = True) -> str:
    if not address:
        return "?"
    return address[5:] if strip_domain and address.startswith("0000:") else address


def _clusters(devices: list[TopoDevice]) -> list[_Cluster]:
    """Devices behind one PCIe switch form a cluster; the rest of a NUMA node's devices (on
    CPU root ports, or with an unknown PCI path) form one cluster each kind of attachment."""
    groups: dict[tuple[int, str], _Cluster] = {}
    for dev in devices:
        if dev.switch:
            key, title, sub = (0, dev.switch), "PCIe switch", _short(dev.switch)
        elif dev.host_bridge:
            key, title, sub = (1, "root"), "CPU root ports", "one link per device"
        else:
            key, title, sub = (2, "unknown"), "PCIe path unknown", "parent bridges not in sysfs"
        groups.setdefault(key, _Cluster(title, sub)).devices.append(dev)
    for cluster in groups.values():
        cluster.devices.sort(key=lambda d: (KIND_ORDER.get(d.kind, 3), d.index))
    return [groups[k] for k in sorted(groups, key=lambda k: (
        k[0], min((d.pci_address or "") for d in groups[k].devices)))]


def _link_text(dev: TopoDevice) -> tuple[str, bool]:
    link = dev.link or {}
    gen, width = link.get("current_gen"), link.get("current_width")
    max_gen, max_width = link.get("max_gen"), link.get("max_width")
    if width is None and gen is None:
        return "", False
    text = f"Gen{gen if gen is not None else '?'} x{width if width is not None else '?'}"
    degraded = width is not None and max_width is not None and width < max_width
    if degraded:
        text += f"/{max_width}"
    elif gen is not None and max_gen is not None and gen < max_gen:
        text += f" (max Gen{max_gen})"
    return text, degraded


def _label(dev: TopoDevice) -> str:
    label = dev.label
    if dev.kind == "gpu":
        label = label.removeprefix("NVIDIA ")
    if label == dev.pci_address:
        return ""
    return label if len(label) <= 24 else label[:23] + "…"


def draw(topo: Topology, path: str, fmt: str = "png", title: str | None = None) -> None:
    """Write the diagram of `topo` to `path` as PNG or SVG."""
    matplotlib = needs_extra("plot", "matplotlib")  # optional: text `topo` runs without it
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, smaller
    matplotlib.rcParams["svg.hashsalt"] = "nodetune"  # stable element ids: same node, same SVG
    # deferred: optional extra [plot]
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    nodes = [n for n in topo.numa if n.get("has_cpus")]
    panels: list[tuple[dict[str, Any] | None, list[_Cluster]]] = []
    for numa in nodes:
        members = [d for d in topo.devices if d.numa_node == numa["id"]]
        panels.append((numa, _clusters(members)))
    orphans = [d for d in topo.devices if d.numa_node is None or
               d.numa_node not in {n["id"] for n in nodes}]
    if orphans:
        panels.append((None, _clusters(orphans)))

    # -- layout (x grows right, y grows up; the NUMA headers sit at y = 0) --------------
    boxes: dict[str, tuple[float, float]] = {}  # device name -> (x centre, y centre)
    panel_spans: list[tuple[float, float, float]] = []  # (x0, x1, header centre x)
    x = 0.0
    lowest = -2.0
    drawn: list[tuple[str, Any]] = []
    for _node, clusters in panels:
        x0 = x
        for cluster in clusters:
            cx0 = x
            for i, dev in enumerate(cluster.devices):
                col, row = i % cluster.cols, i // cluster.cols
                bx = cx0 + GAP + col * (DEV_W + GAP) + DEV_W / 2
                by = -2.9 - row * ROW
                boxes[dev.name] = (bx, by)
                lowest = min(lowest, by - DEV_H / 2)
            drawn.append(("cluster", (cluster, cx0, cx0 + cluster.width)))
            x += cluster.width + GAP
        if not clusters:
            x += DEV_W
        x1 = x - GAP
        panel_spans.append((x0, max(x1, x0 + DEV_W), (x0 + max(x1, x0 + DEV_W)) / 2))
        x += 1.0
    width = max(x - 1.0, 2 * DEV_W)
    gpus = topo.of_kind("gpu")
    nv_pairs = {(a.name, b.name): topo.matrix[a.name][b.name] for a in gpus for b in gpus
                if a.name < b.name and topo.matrix[a.name][b.name].startswith("NV")}
    fabric = len(gpus) > 1 and len(nv_pairs) == len(gpus) * (len(gpus) - 1) // 2 and \
        len(set(nv_pairs.values())) == 1
    bottom = lowest - (1.6 if nv_pairs else 0.6)
    notes = topo.notes[:4]
    legend_y = bottom - 0.45 * len(notes) - 0.2
    bottom_text = legend_y - 0.5

    fig_w = min(max(width * 0.6, 7.0), 40.0)
    fig_h = max((2.0 - bottom_text) * 0.6, 4.0)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.set_xlim(-0.4, width + 0.4)
    ax.set_ylim(bottom_text, 1.6)
    ax.axis("off")

    def box(cx: float, cy: float, w: float, h: float, edge: str, fill: str,
            lw: float = 1.4) -> None:
        ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h,
                                    boxstyle="round,pad=0.02,rounding_size=0.12",
                                    linewidth=lw, edgecolor=edge, facecolor=fill, zorder=2))

    # NUMA headers and the socket interconnect
    for (node, _), (x0, x1, hx) in zip(panels, panel_spans, strict=True):
        w = max(x1 - x0, DEV_W)
        box(hx, 0.0, w, 1.1, COLORS["numa"], FILL["numa"], 1.8)
        if node is None:
            head, sub = "NUMA node unknown", "sysfs numa_node is -1"
        else:
            mem = node.get("memory_total_bytes")
            head = f"NUMA {node['id']}" + (f" · {mem / 2**30:.0f} GiB" if mem else "")
            sub = f"CPUs {format_cpus(node.get('cpus'))}"
            gpu_mem = [n for n in topo.numa if not n.get("has_cpus") and n.get("gpu_memory_of")
                       and any(d.name == n["gpu_memory_of"] and d.numa_node == node["id"]
                               for d in topo.devices)]
            if gpu_mem:
                sub += " · GPU memory nodes " + ",".join(str(n["id"]) for n in gpu_mem)
        ax.text(hx, 0.18, head, ha="center", va="center", fontsize=11, fontweight="bold",
                zorder=3)
        ax.text(hx, -0.22, sub, ha="center", va="center", fontsize=8.5, zorder=3)
    for (_, a1, _), (b0, _, _) in itertools.pairwise(panel_spans):
        ax.plot([a1, b0], [0, 0], color=COLORS["sys"], lw=2.5, zorder=1)
        ax.text((a1 + b0) / 2, 0.15, "SYS", color=COLORS["sys"], ha="center", fontsize=8,
                fontweight="bold")

    # clusters: a switch / root-port bar under the header, devices under it
    for _node, clusters in panels:
        for cluster in clusters:
            item = next(c for kind, c in drawn if kind == "cluster" and c[0] is cluster)
            _, cx0, cx1 = item
            ccx = (cx0 + cx1) / 2
            box(ccx, -1.45, cx1 - cx0, 0.7, COLORS["switch"], FILL["switch"])
            ax.text(ccx, -1.35, cluster.title, ha="center", va="center", fontsize=8.5,
                    fontweight="bold", zorder=3)
            ax.text(ccx, -1.62, cluster.subtitle, ha="center", va="center", fontsize=7,
                    color="#555555", zorder=3)
            ax.plot([ccx, ccx], [-0.55, -1.1], color=COLORS["switch"], lw=1.5, zorder=1)
            for dev in cluster.devices:
                bx, by = boxes[dev.name]
                ax.plot([bx, bx], [-1.8, by + DEV_H / 2], color=COLORS["switch"], lw=1,
                        zorder=1)

    # devices (PCI addresses without the domain when every device is in domain 0000)
    strip = all((d.pci_address or "0000:").startswith("0000:") for d in topo.devices)
    for dev in topo.devices:
        bx, by = boxes[dev.name]
        link, degraded = _link_text(dev)
        box(bx, by, DEV_W, DEV_H, COLORS["bad"] if degraded else COLORS[dev.kind],
            FILL[dev.kind], 2.4 if degraded else 1.6)
        label = _label(dev)
        ax.text(bx, by + 0.3, dev.name, ha="center", va="center", fontsize=9,
                fontweight="bold", zorder=3)
        second = label or (dev.driver or "")
        if dev.gpu_numa_id is not None:
            second = (second + " · " if second else "") + f"mem NUMA {dev.gpu_numa_id}"
        if second:
            ax.text(bx, by + 0.02, second, ha="center", va="center", fontsize=7, zorder=3)
        third = _short(dev.pci_address, strip) + (f" · {link}" if link else "")
        ax.text(bx, by - 0.3, third, ha="center", va="center", fontsize=7,
                color=COLORS["bad"] if degraded else "#333333", zorder=3)

    # NVLink
    if fabric:
        label = next(iter(nv_pairs.values()))
        xs = [boxes[g.name][0] for g in gpus]
        bar_y = lowest - 0.8
        box((min(xs) + max(xs)) / 2, bar_y, max(xs) - min(xs) + DEV_W, 0.5, COLORS["nvlink"],
            FILL["gpu"], 2)
        pairs = "GPU0 and GPU1" if len(gpus) == 2 else "every GPU pair"
        ax.text((min(xs) + max(xs)) / 2, bar_y, f"NVLink: {label} between {pairs}",
                ha="center", va="center", fontsize=9, fontweight="bold",
                color=COLORS["nvlink"], zorder=3)
        for g in gpus:
            gx, gy = boxes[g.name]
            ax.plot([gx, gx], [gy - DEV_H / 2, bar_y + 0.25], color=COLORS["nvlink"], lw=2.2,
                    zorder=1)
    else:
        # deferred: optional extra [plot]
        from matplotlib.patches import FancyArrowPatch

        for (a, b), label in nv_pairs.items():
            (ax_, ay), (bx_, by_) = boxes[a], boxes[b]
            start, end = (ax_, ay - DEV_H / 2), (bx_, by_ - DEV_H / 2)
            ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-", lw=2.2,
                                         color=COLORS["nvlink"],
                                         connectionstyle="arc3,rad=0.35", zorder=1))
            ax.text((ax_ + bx_) / 2, min(ay, by_) - DEV_H / 2 - 0.25 - 0.08 * abs(ax_ - bx_),
                    label, ha="center", va="center", fontsize=8, fontweight="bold",
                    color=COLORS["nvlink"])

    for i, note in enumerate(notes):
        ax.text(0, bottom - 0.45 * i, "note: " + note, ha="left", va="center", fontsize=7.5,
                color="#555555")
    kinds = [("gpu", "GPU"), ("nic", "NIC"), ("nvme", "NVMe"), ("switch", "PCIe switch / ports")]
    for i, (kind, text) in enumerate(kinds):
        lx = 2.0 * i
        box(lx + 0.2, legend_y, 0.35, 0.25, COLORS[kind], FILL[kind], 1.2)
        ax.text(lx + 0.5, legend_y, text, va="center", fontsize=8)
    if title:
        ax.text(0, 1.25, title, ha="left", va="center", fontsize=12, fontweight="bold")
    try:
        # No creation date in the file (PNG has none by default), so a drawing depends on
        # the node only.
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(path, format=fmt, dpi=110, bbox_inches="tight", metadata=metadata)
    except OSError as exc:
        raise RenderError(f"cannot write the topology diagram to {path}: {exc.strerror or exc}",
                          fix="choose a writable path for --png/--svg") from None
    finally:
        plt.close(fig)
