"""Terminal views of `fleet collect` and `fleet report` (rich tables; progress on stderr)."""

from __future__ import annotations

from typing import Any

from nodetune.views.output import View, console, print_table, view

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
HOSTS_SHOWN = 6


def hosts_text(hosts: list[str], limit: int = HOSTS_SHOWN) -> str:
    """"a, b, c" or "a, b, c ... +7 more"."""
    shown = ", ".join(hosts[:limit])
    return f"{shown} ... +{len(hosts) - limit} more" if len(hosts) > limit else shown


def num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


class CollectProgress:
    """Hosts done out of hosts asked, on stderr; the bar moves with each command's answer."""

    def __init__(self, total: int, stages: int) -> None:
        # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("collecting"), BarColumn(),
                            TextColumn("{task.fields[done]}/{task.fields[hosts]} hosts"),
                            TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                            console=console(stderr=True), transient=True)
        self.stages = stages
        self.task = self.bar.add_task("hosts", total=total * stages, done=0, hosts=total,
                                      failed=0)
        self.steps: dict[str, int] = {}  # host -> commands answered
        self.done = 0
        self.failed = 0

    def __enter__(self) -> CollectProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def step(self, host: str, stage: str) -> None:
        self.steps[host] = self.steps.get(host, 0) + 1
        self.bar.update(self.task, advance=1)

    def host_done(self, host: str, collected: bool) -> None:
        self.done += 1
        self.failed += 0 if collected else 1
        left = max(0, self.stages - self.steps.get(host, 0))  # commands it will not run
        self.bar.update(self.task, advance=left, done=self.done, failed=self.failed)


def render_collection(doc: dict[str, Any], out: Any, v: View | None = None) -> None:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    out.print(f"[bold]Collected {len(doc['collected'])} of {doc['hosts']} hosts[/] into "
              f"{doc['out']} in {doc['seconds']:.1f} s")
    if doc["failed"]:
        table = Table(title=f"{len(doc['failed'])} hosts failed", title_justify="left",
                      box=None, pad_edge=False)
        for col in ("host", "stage", "reason"):
            table.add_column(col)
        for f in doc["failed"]:
            table.add_row(f["host"], f["stage"], f["reason"])
        print_table(out, table, v or view(), prose=("reason",), stack=1)
    for host, problems in doc["warnings"].items():
        for stage, why in problems.items():
            out.print(f"[yellow]{host}: {stage}: {why}[/]")
    if doc["collected"]:
        out.print(f"next: nodetune fleet report {doc['out']}")


def render_report(doc: dict[str, Any], out: Any, top: int = 20, v: View | None = None) -> None:
    """The fleet's tables; one too wide for the terminal becomes a record per row, so that
    no host, value or note is split."""
    v = v or view()
    _summary(doc, out)
    _settings(doc, out, top, v)
    _nodes(doc, out, top, v)
    _drift(doc, out, top, v)
    _outliers(doc, out, top, v)
    _problems(doc, out)


def _summary(doc: dict[str, Any], out: Any) -> None:
    s = doc["summary"]
    profiles = ", ".join(f"{p} {n}" for p, n in s["profiles"].items())
    nodes = f"{s['nodes']} node{'' if s['nodes'] == 1 else 's'}"
    out.print(f"[bold]Fleet: {nodes}[/] ({profiles}) from {doc['directory']}")
    failing = s["nodes_failing"]
    out.print(f"nodes failing: [bold red]{failing['critical']} critical[/], "
              f"[yellow]{failing['warning']} warning[/], {failing['info']} info; "
              f"drift: {s['drift_facts']} facts on {s['drifted_nodes']} nodes; "
              f"benchmark outliers: {s['outliers']} on {s['outlier_nodes']} nodes"
              + (f"; unhealthy: {s['unhealthy']}" if s["unhealthy"] else "")
              + (f"; not collected: {s['not_collected']}" if s["not_collected"] else "")
              + (f"; unreadable files: {s['unreadable']}" if s["unreadable"] else ""))


def _settings(doc: dict[str, Any], out: Any, top: int, v: View) -> None:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    failing = [s for s in doc["settings"] if s["nodes_failed"]]
    if not failing:
        out.print("\n[green]Every setting passes on every node that checks it.[/]")
        return
    table = Table(title=f"Settings failing ({len(failing)})", title_justify="left")
    for col, justify in (("setting", "left"), ("severity", "left"), ("nodes failing", "right"),
                         ("compliance", "right"), ("common values", "left"),
                         ("nodes", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in failing[:top]:
        style = SEVERITY_STYLE.get(s["severity"], "")
        values = ", ".join(f"{v['actual']} ({v['nodes']})" for v in s["failing_values"])
        table.add_row(s["id"], f"[{style}]{s['severity']}[/]",
                      f"{s['nodes_failed']}/{s['nodes_checked']}",
                      "-" if s["compliance"] is None else f"{s['compliance']:.1f}%",
                      values, hosts_text(s["failed_nodes"], 4))
    print_table(out, table, v, stack=1)
    if len(failing) > top:
        out.print(f"... {len(failing) - top} more settings fail (--top, --json)")


def _nodes(doc: dict[str, Any], out: Any, top: int, v: View) -> None:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    table = Table(title="Nodes, worst first", title_justify="left")
    for col in ("#", "host", "profile", "critical", "warning", "info", "compliance", "drift",
                "outliers", "notes"):
        table.add_column(col, justify="left" if col in ("host", "profile", "notes")
                         else "right")
    for n in doc["nodes"][:top]:
        notes = list(n["errors"])
        if n["healthy"] is False:
            summary = (n.get("health_summary") or "").removeprefix("nodetune: ")
            notes.insert(0, f"unhealthy ({n['health_faults']} faults): {summary}"
                         if summary else f"unhealthy ({n['health_faults']} faults)")
        table.add_row(str(n["rank"]), n["host"], n["profile"],
                      f"[bold red]{n['critical']}[/]" if n["critical"] else "0",
                      f"[yellow]{n['warning']}[/]" if n["warning"] else "0", str(n["info"]),
                      "-" if n["compliance_score"] is None else f"{n['compliance_score']:.1f}%",
                      str(n["drift"]), str(n["outliers"]), "; ".join(notes))
    print_table(out, table, v, prose=("notes",), stack=2)


def _drift(doc: dict[str, Any], out: Any, top: int, v: View) -> None:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    for group in doc["drift"]:
        if not group["facts"]:
            continue
        table = Table(title=f"Drift among {group['nodes']} {group['profile']} nodes",
                      title_justify="left")
        for col in ("fact", "majority", "differs", "nodes"):
            table.add_column(col)
        for fact in group["facts"][:top]:
            majority = f"{fact['majority']} ({fact['majority_nodes']})" + \
                (" [dim](no majority)[/]" if fact["tie"] else "")
            differs = "\n".join(f"{m['diff'] or m['value']} ({len(m['nodes'])})"
                                for m in fact["minority"])
            hosts = "\n".join(hosts_text(m["nodes"]) for m in fact["minority"])
            table.add_row(fact["label"], majority, differs, hosts)
        print_table(out, table, v, stack=1)
    if not any(g["facts"] for g in doc["drift"]):
        out.print("\n[green]No configuration drift among nodes of the same profile.[/]")


def _outliers(doc: dict[str, Any], out: Any, top: int, v: View) -> None:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.table import Table

    rows = [(m, o) for m in doc["outliers"]["metrics"] for o in m["outliers"]]
    if not doc["outliers"]["metrics"]:
        return
    if not rows:
        out.print(f"\n[green]No benchmark outliers[/] ({len(doc['outliers']['metrics'])} "
                  f"metrics, k={doc['outliers']['k']})")
        return
    rows.sort(key=lambda r: -abs(r[1]["z"]))
    table = Table(title=f"Benchmark outliers ({len(rows)}; k={doc['outliers']['k']} MADs)",
                  title_justify="left")
    for col in ("metric", "profile", "host", "value", "median", "vs median", "robust z"):
        table.add_column(col, justify="left" if col in ("metric", "profile", "host")
                         else "right")
    for m, o in rows[:top]:
        table.add_row(m["name"], m["profile"], o["host"], f"{num(o['value'])} {m['unit']}",
                      f"{num(m['median'])} {m['unit']}", f"{o['relative'] * 100:+.1f}%",
                      f"{o['z']:.1f}")
    print_table(out, table, v, stack=1)
    if len(rows) > top:
        out.print(f"... {len(rows) - top} more outliers (--top, --json)")


def _problems(doc: dict[str, Any], out: Any) -> None:
    for h in doc["not_collected"]:
        stale = " (an older report of it is included)" if h.get("stale_report") else ""
        out.print(f"[yellow]not collected: {h['host']} ({h.get('stage')}): "
                  f"{h.get('reason')}{stale}[/]")
    for u in doc["unreadable"]:
        out.print(f"[yellow]unreadable: {u['file']}: {u['reason']}[/]")
