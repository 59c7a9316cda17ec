"""The human view of `nodetune facts`: one compact rich table per section of the facts document.

Works from the JSON document only (`NodeFacts.to_json()`), so a snapshot, a --root tree and the
live host look the same. Sections nodetune does not know are shown as key/value tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodetune.facts import cpulist
from nodetune.views.output import View, print_table, view

UNKNOWN = "[dim]?[/dim]"
MAX_UNKNOWN_LINES = 4


def human_bytes(value: int | None) -> str:
    if value is None:
        return UNKNOWN
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def show(value: Any) -> str:
    """One cell: None as a dim '?', booleans as yes/no, lists of ints as a CPU list."""
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return cpulist.format(value)
        return ", ".join(show(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={show(v)}" for k, v in value.items()) or "-"
    return str(value)


def _table(title: str, *columns: str, wrap: tuple[str, ...] = ()) -> Any:
    """A compact table; columns not named in `wrap` never wrap (the first names the row).
    Columns named in `wrap` wrap at spaces only: no value is cut or broken in two."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1, 0, 0), show_header=bool(columns),
                  expand=False)
    if not columns:
        table.add_column("", no_wrap=True)
        table.add_column("")
    for column in columns:
        table.add_column(column, no_wrap=column not in wrap)
    return table


def _pairs(title: str, rows: list[tuple[str, Any]]) -> Any:
    table = _table(title)
    for key, value in rows:
        table.add_row(f"[cyan]{key}[/cyan]", value if isinstance(value, str) else show(value))
    return table


def _cpu(s: dict[str, Any]) -> Any:
    freq = (f"{show(s.get('min_freq_khz'))}-{show(s.get('max_freq_khz'))} kHz"
            if s.get("max_freq_khz") else UNKNOWN)
    return _pairs("CPU", [
        ("model", f"{show(s.get('model_name'))} ({show(s.get('vendor'))}, "
                  f"{show(s.get('architecture'))})"),
        ("topology", f"{show(s.get('sockets'))} sockets, {show(s.get('cores'))} cores, "
                     f"{show(s.get('threads_per_core'))} threads/core, "
                     f"SMT {show(s.get('smt_active'))}"),
        ("online", s.get("online")), ("offline", s.get("offline")),
        ("isolated", s.get("isolated")), ("nohz_full", s.get("nohz_full")),
        ("frequency", f"driver {show(s.get('frequency_driver'))}, governor "
                      f"{show(s.get('governor'))}, boost {show(s.get('boost'))}, {freq}"),
        ("energy", f"EPP {show(s.get('energy_performance_preference'))}, "
                   f"EPB {show(s.get('energy_perf_bias'))}"),
        ("frequency limits", "; ".join(
            f"{f['cpus']}: {show(f.get('min_khz'))}-{show(f.get('max_khz'))} kHz"
            for f in s.get("freq_limits") or []) or UNKNOWN),
        ("core kinds", "; ".join(f"{k['name']} {k['cpus']}" for k in s.get("kinds") or [])
         or UNKNOWN),
        ("thermal throttling", UNKNOWN if not s.get("thermal_throttle") else
         f"{show(s['thermal_throttle'].get('core_events'))} core, "
         f"{show(s['thermal_throttle'].get('package_events'))} package events"),
        ("C-states enabled", s.get("cstates_enabled")),
        ("hypervisor", s.get("hypervisor")),
    ])


def _numa(s: dict[str, Any]) -> Any:
    table = _table(f"NUMA (balancing {show(s.get('balancing'))})", "node", "CPUs", "memory",
                   "free", "hugepages (total/free)", "distances",
                   wrap=("CPUs", "hugepages (total/free)", "distances"))
    for node in s.get("nodes", []):
        pages = ", ".join(f"{int(size) // 1024 if int(size) >= 1024 else size}"
                          f"{'M' if int(size) >= 1024 else 'K'}: {p.get('total')}/{p.get('free')}"
                          for size, p in node.get("hugepages", {}).items()) or "-"
        table.add_row(str(node["id"]), show(node.get("cpus")) if node.get("cpus") else "none",
                      human_bytes(node.get("memory_total_bytes")),
                      human_bytes(node.get("memory_free_bytes")), pages,
                      " ".join(str(d) for d in node.get("distances", [])))
    return table


def _memory(s: dict[str, Any]) -> Any:
    thp = s.get("thp") or {}
    pools = ", ".join(f"{p['size_kb']} kB: {show(p.get('total'))} total, {show(p.get('free'))} free"
                      for p in s.get("hugepages", [])) or "-"
    return _pairs("Memory", [
        ("total / available", f"{human_bytes(s.get('total_bytes'))} / "
                              f"{human_bytes(s.get('available_bytes'))}"),
        ("swap", human_bytes(s.get("swap_total_bytes"))),
        ("page size", human_bytes(s.get("page_size_bytes"))),
        ("THP", f"enabled {show(thp.get('enabled'))}, defrag {show(thp.get('defrag'))}"),
        ("hugepages", pools),
        ("vm", f"swappiness {show(s.get('swappiness'))}, zone_reclaim_mode "
               f"{show(s.get('zone_reclaim_mode'))}, dirty_ratio {show(s.get('dirty_ratio'))}, "
               f"dirty_background_ratio {show(s.get('dirty_background_ratio'))}"),
        ("EDAC (ECC)", _edac(s.get("edac"))),
    ])


def _edac(edac: dict[str, Any] | None) -> str:
    if not edac:
        return UNKNOWN
    return (f"{show(edac.get('corrected'))} corrected, {show(edac.get('uncorrected'))} "
            f"uncorrected on {len(edac.get('controllers') or [])} memory controllers")


def _system(s: dict[str, Any]) -> Any:
    dmi = s.get("dmi") or {}
    osr = s.get("os") or {}

    def joined(*values: Any) -> str:
        return " ".join(str(v) for v in values if v) or UNKNOWN

    return _pairs("System", [
        ("product", joined(dmi.get("sys_vendor"), dmi.get("product_name"),
                           dmi.get("product_version"))),
        ("board", joined(dmi.get("board_vendor"), dmi.get("board_name"))),
        ("BIOS", joined(dmi.get("bios_vendor"), dmi.get("bios_version"),
                        f"({dmi['bios_date']})" if dmi.get("bios_date") else None)),
        ("OS", osr.get("pretty_name") or joined(osr.get("id"), osr.get("version_id"))),
    ])


GPU_STACK_MODULES = ("nvidia", "nvidia_uvm", "nvidia_peermem", "nvidia_fs", "nvidia_drm",
                     "gdrdrv", "mlx5_core", "mlx5_ib", "ib_core", "ib_uverbs", "rdma_ucm")


def _kernel(s: dict[str, Any]) -> Any:
    modules = s.get("modules")
    if modules is None:
        mods = UNKNOWN
    else:
        present = [m for m in GPU_STACK_MODULES if m in modules]
        mods = f"{len(modules)} loaded; GPU/RDMA: {', '.join(present) or 'none'}"
    persisted = s.get("persisted") or {}
    iommu = s.get("iommu") or {}
    return _pairs("Kernel", [
        ("release", s.get("release")), ("cmdline", s.get("cmdline")), ("modules", mods),
        ("cgroup", s.get("cgroup_version")),
        ("IOMMU", f"{iommu.get('mode')}, {show(iommu.get('groups'))} groups"),
        ("virtualization", s.get("virtualization") or "none seen"),
        ("clocksource", f"{show((s.get('clocksource') or {}).get('current'))} (available: "
                        f"{show((s.get('clocksource') or {}).get('available'))})"),
        ("sysctl", f"{len(s.get('sysctl', {}))} read, "
                   f"{len(persisted.get('sysctl', {}))} persisted"),
        ("boot cmdline", persisted.get("cmdline")),
    ])


def _pci(s: dict[str, Any]) -> Any:
    table = _table("PCI devices (bridges and others left out)", "address", "kind", "id",
                   "driver", "NUMA", "link (now/max)")
    for dev in s.get("devices", []):
        if dev.get("kind") in ("bridge", "other"):
            continue
        link = dev.get("link") or {}
        speed = (f"Gen{show(link.get('current_gen'))} x{show(link.get('current_width'))} / "
                 f"Gen{show(link.get('max_gen'))} x{show(link.get('max_width'))}"
                 if link.get("current_width") or link.get("max_width") else UNKNOWN)
        table.add_row(dev.get("address", "?"), show(dev.get("kind")),
                      f"{show(dev.get('vendor'))}:{show(dev.get('device'))}",
                      show(dev.get("driver")), show(dev.get("numa_node")), speed)
    return table


def _gpus(gpus: list[dict[str, Any]]) -> Any:
    table = _table("GPUs", "#", "name", "PCI", "NUMA", "CPUs", "PCIe", "persistence", "source",
                   wrap=("name", "CPUs"))
    for gpu in gpus:
        pcie = gpu.get("pcie") or {}
        table.add_row(show(gpu.get("index")), show(gpu.get("name")), show(gpu.get("pci_address")),
                      show(gpu.get("numa_node")), show(gpu.get("local_cpus")),
                      f"Gen{show(pcie.get('current_gen'))} x{show(pcie.get('current_width'))}",
                      show(gpu.get("persistence_mode")), show(gpu.get("source")))
    vbios = sorted({str(g["vbios_version"]) for g in gpus if g.get("vbios_version")})
    if vbios:
        table.caption = f"VBIOS {', '.join(vbios)}"
        table.caption_justify = "left"
    return table


def _nic(s: dict[str, Any]) -> Any:
    table = _table("Network interfaces", "name", "driver", "Gb/s", "MTU", "state", "PCI",
                   "NUMA", "IRQ CPUs", "RDMA", "flaps", "VFs", wrap=("IRQ CPUs",))
    virtual = [n["name"] for n in s.get("interfaces", []) if n.get("virtual")]
    for nic in s.get("interfaces", []):
        if nic.get("virtual"):
            continue
        speed = f"{nic['speed_mbps'] / 1000:g}" if nic.get("speed_mbps") else UNKNOWN
        table.add_row(nic["name"], show(nic.get("driver")), speed, show(nic.get("mtu")),
                      show(nic.get("operstate")), show(nic.get("pci_address")),
                      show(nic.get("numa_node")), show(nic.get("irq_cpus")),
                      show(nic.get("rdma_device")), show(nic.get("carrier_changes")),
                      show(nic.get("sriov_numvfs")))
    bonds = [f"{n['name']}: {' '.join(n['bond_slaves'])}" for n in s.get("interfaces", [])
             if n.get("bond_slaves") is not None]
    if virtual:
        table.caption = f"virtual: {', '.join(virtual[:10])}" + (
            f" and {len(virtual) - 10} more" if len(virtual) > 10 else "") + (
            f"; bonds: {'; '.join(bonds)}" if bonds else "")
        table.caption_justify = "left"
    return table


def _rdma(s: dict[str, Any]) -> Any:
    table = _table("RDMA devices", "device", "port", "state", "rate", "link layer", "MTU",
                   "LID", "SM LID", "PCI", "NUMA", "netdevs", "firmware", "link downed",
                   "symbol errors", wrap=("netdevs", "rate"))
    for dev in s.get("devices", []):
        for port in dev.get("ports", []) or [{}]:
            table.add_row(dev["name"], show(port.get("port")),
                          f"{show(port.get('state'))}/{show(port.get('phys_state'))}",
                          show(port.get("rate")), show(port.get("link_layer")),
                          show(port.get("active_mtu")), show(port.get("lid")),
                          show(port.get("sm_lid")), show(dev.get("pci_address")),
                          show(dev.get("numa_node")), show(dev.get("netdevs")),
                          show(dev.get("fw_ver")),
                          show((port.get("counters") or {}).get("link_downed")),
                          show((port.get("counters") or {}).get("symbol_error")))
    return table


def _storage(s: dict[str, Any]) -> Any:
    table = _table("Block devices", "name", "kind", "size", "rotational", "scheduler",
                   "read-ahead", "queue", "PCI", "NUMA")
    for dev in s.get("block", []):
        table.add_row(dev["name"], dev["kind"], human_bytes(dev.get("size_bytes")),
                      show(dev.get("rotational")), show(dev.get("scheduler")),
                      f"{show(dev.get('read_ahead_kb'))} kB", show(dev.get("nr_requests")),
                      show(dev.get("pci_address")), show(dev.get("numa_node")))
    mounts = s.get("mounts")
    if mounts:
        disk = [m for m in mounts if m["device"].startswith("/dev/")]
        table.caption = ("mounts: " + "; ".join(f"{m['mountpoint']} ({m['fstype']}"
                                                f"{', ro' if m.get('read_only') else ''})"
                                                for m in disk[:8])
                         + (f"; +{len(disk) - 8} more" if len(disk) > 8 else "")
                         + f" [{len(mounts)} mounts in all]")
        table.caption_justify = "left"
    if not s.get("nvme"):
        return table
    nvme = _table("NVMe controllers", "name", "model", "firmware", "state", "transport", "PCI",
                  "NUMA", wrap=("model",))
    for ctrl in s["nvme"]:
        nvme.add_row(ctrl["name"], show(ctrl.get("model")), show(ctrl.get("firmware_rev")),
                     show(ctrl.get("state")), show(ctrl.get("transport")),
                     show(ctrl.get("pci_address")), show(ctrl.get("numa_node")))
    from rich.console import Group  # deferred, as in _table
    return Group(table, nvme)


def _services(s: dict[str, Any]) -> Any:
    table = _table("Services", "unit", "state", "enabled")
    for name, unit in s.get("units", {}).items():
        table.add_row(name, unit.get("state", "?"), show(unit.get("enabled")))
    tuned = s.get("tuned")
    if tuned:
        mode = f" ({tuned['mode']})" if tuned.get("mode") else ""
        plugins = ", ".join(f"[{p}] {len(o)}" for p, o in (tuned.get("settings") or {}).items())
        table.caption = (f"TuneD profile {show(tuned.get('active'))}{mode}"
                         f"{': ' + plugins + ' option(s)' if plugins else ''}")
        table.caption_justify = "left"
    return table


def _generic(name: str, s: Any) -> Any:
    if not isinstance(s, dict):
        return _pairs(name, [("value", show(s) if not isinstance(s, list)
                              else f"{len(s)} items")])
    rows = []
    for key, value in s.items():
        if key in ("sources", "unknown"):
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = f"{len(value)} items"
        rows.append((key, value if isinstance(value, str) else show(value)))
    return _pairs(name, rows)


RENDERERS: dict[str, Callable[[Any], Any]] = {
    "cpu": _cpu, "numa": _numa, "memory": _memory, "kernel": _kernel, "system": _system,
    "pci": _pci,
    "gpus": _gpus, "nic": _nic, "rdma": _rdma, "storage": _storage, "services": _services,
}
SKIP = {"schema", "nodetune_version", "root", "collectors"}


def _unknown_lines(section: Any) -> list[str]:
    """Dim lines naming the unknown facts of a section, grouped by reason."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.markup import escape

    unknown = section.get("unknown") if isinstance(section, dict) else None
    if not unknown:
        return []
    by_reason: dict[str, list[str]] = {}
    for fact, reason in unknown.items():
        by_reason.setdefault(reason, []).append(fact)
    items = list(by_reason.items())
    lines = [f"  [dim]unknown {escape(', '.join(facts))}: {escape(reason)}[/dim]"
             for reason, facts in items[:MAX_UNKNOWN_LINES]]
    if len(items) > MAX_UNKNOWN_LINES:
        rest = sum(len(f) for _, f in items[MAX_UNKNOWN_LINES:])
        lines.append(f"  [dim]... and {rest} more unknown facts (see --json)[/dim]")
    return lines


def collectors_table(status: dict[str, dict[str, Any]], timings: bool) -> Any | None:
    """Failed and absent collectors (and with `timings`, every collector's time)."""
    rows = [(n, s) for n, s in status.items() if timings or not s.get("ok") or s.get("no_data")]
    if not rows:
        return None
    columns = ("collector", "ms", "result") if timings else ("collector", "result")
    table = _table("Collectors", *columns, wrap=("result",))
    for name, st in rows:
        if not st.get("ok"):
            result = f"[red]failed: {st.get('error')}[/red]"
        elif st.get("no_data"):
            result = f"[dim]no data: {st.get('error')}[/dim]"
        else:
            result = "ok"
        ms = f"{st.get('seconds', 0) * 1000:.1f}"
        table.add_row(*([name, ms, result] if timings else [name, result]))
    if timings:
        total = sum(s.get("seconds", 0) for s in status.values()) * 1000
        table.caption = f"total {total:.1f} ms"
        table.caption_justify = "left"
    return table


def render(doc: dict[str, Any], console: Any, timings: bool = False,
           v: View | None = None) -> None:
    """Print every section of a facts document, each table laid out by `print_table`."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.markup import escape

    v = v or view()
    console.print(f"[bold]nodetune facts[/bold] of {escape(str(doc.get('root')))} "
                  f"[dim](schema {doc.get('schema')})[/dim]")
    for name, section in doc.items():
        if name in SKIP:
            continue
        renderer = RENDERERS.get(name)
        if v.plain:
            console.print()  # no box: a blank line between sections instead
        print_table(console, renderer(section) if renderer else _generic(name, section), v,
                    stack=1)
        for line in _unknown_lines(section):
            console.print(line)
    table = collectors_table(doc.get("collectors", {}), timings)
    if table is not None:
        if v.plain:
            console.print()
        print_table(console, table, v, stack=1)
