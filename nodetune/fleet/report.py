"""`nodetune fleet report` as an operation: a directory of node reports -> the fleet document.

The document (schema nodetune.fleet/1) holds compliance per setting, the nodes ranked worst
first, configuration drift per profile and benchmark outliers per profile and metric. The
`Fleet` it was computed from is returned too: the HTML report plots its per-node values.
"""

from __future__ import annotations

import os
import re
import time
from array import array
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodetune import __version__, exitcodes
from nodetune.errors import NodetuneError
from nodetune.fleet import drift, load, outliers
from nodetune.fleet.aggregate import SEVERITY_RANK, Fleet, Setting
from nodetune.schemas import utc_timestamp

COMMON_VALUES = 3  # failing values listed per setting
FILES_PER_WORKER = 400  # below this many files per process, one process reads them all
CHUNKS_PER_WORKER = 4
# a reading process's memory grows with its chunk (a node's values are Python floats until the
# chunk ends): more, smaller chunks on a large fleet
MAX_CHUNK = 1000


@dataclass(frozen=True)
class Options:
    k: float = outliers.K_DEFAULT
    mad_floor: float = outliers.MAD_FLOOR_DEFAULT


def _read_part(paths: list[Path]) -> Fleet:
    fleet = Fleet()
    for path in paths:
        fleet.add(load.read(path))
    fleet.finish()
    return fleet


def read_fleet(directory: Path, workers: int | None = None) -> Fleet:
    """Every report in DIR, read by up to `workers` processes (default: one per CPU) in
    chunks of files; the chunks' counts are merged in file order."""
    if not directory.is_dir():
        raise NodetuneError(f"{directory} is not a directory",
                            fix="give the directory `nodetune fleet collect --out` wrote")
    files = list(load.report_files(directory))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(workers or cpus or 1, len(files) // FILES_PER_WORKER)
    if workers <= 1:
        fleet = _read_part(files)
    else:
        size = min(-(-len(files) // (workers * CHUNKS_PER_WORKER)), MAX_CHUNK)
        chunks = [files[i:i + size] for i in range(0, len(files), size)]
        fleet = Fleet()
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_read_part, chunks):
                fleet.merge(part)
    if not fleet.nodes:
        failed = load.failed_hosts(directory)
        if failed:
            why = f"{len(failed)} hosts failed to collect (see {directory / load.FAILED_FILE})"
        elif fleet.unreadable:
            why = f"{len(fleet.unreadable)} files are not node reports"
        else:
            why = "it holds no *.json files"
        raise NodetuneError(f"no node reports in {directory}: {why}",
                            fix="run `nodetune fleet collect --out DIR` or copy agent /report "
                                "documents there as <host>.json")
    return fleet


def build(directory: Path, options: Options = Options(),
          workers: int | None = None) -> tuple[dict[str, Any], Fleet]:
    fleet = read_fleet(directory, workers)
    drift_groups = _drift(fleet)
    outlier_metrics = _outliers(fleet, options)
    drifted: dict[str, int] = {}
    for group in drift_groups:
        for fact in group["facts"]:
            if fact["tie"]:  # no majority: no node is the odd one out
                continue
            for minority in fact["minority"]:
                for host in minority["nodes"]:
                    drifted[host] = drifted.get(host, 0) + 1
    outlying: dict[str, int] = {}
    for metric in outlier_metrics:
        for o in metric["outliers"]:
            outlying[o["host"]] = outlying.get(o["host"], 0) + 1
    collected = {n.host for n in fleet.nodes}
    not_collected = [{**h, "stale_report": h["host"] in collected}
                     for h in load.failed_hosts(directory)]
    nodes = _ranked(fleet, drifted, outlying)
    settings = [_setting_json(s) for s in sorted(
        fleet.settings.values(),
        key=lambda s: (not s.failed, -SEVERITY_RANK.get(s.severity, 0) if s.failed else 0,
                       -s.failed, -s.unknown, s.id))]
    summary = {
        "nodes": len(fleet.nodes),
        "by_kind": _count(n.kind for n in fleet.nodes),
        "profiles": _count(n.profile for n in fleet.nodes),
        "not_collected": len(not_collected),
        "unreadable": len(fleet.unreadable),
        "nodes_failing": {s: sum(1 for n in fleet.nodes if n.failed.get(s))
                          for s in ("critical", "warning", "info")},
        "settings_failing": {s: sum(1 for x in fleet.settings.values()
                                    if x.failed and x.severity == s)
                             for s in ("critical", "warning", "info")},
        "unhealthy": sum(1 for n in fleet.nodes if n.healthy is False),
        "drift_facts": sum(len(g["facts"]) for g in drift_groups),
        "drifted_nodes": len(drifted),
        "outliers": sum(len(m["outliers"]) for m in outlier_metrics),
        "outlier_nodes": len(outlying),
    }
    summary["exit_code"] = _exit_code(summary)
    doc = {
        "nodetune_version": __version__,
        "directory": str(directory),
        "generated_at": utc_timestamp(time.time()),
        "options": {"k": options.k, "mad_floor": options.mad_floor},
        "summary": summary,
        "not_collected": not_collected,
        "unreadable": [{"file": u.file, "reason": u.reason} for u in fleet.unreadable],
        "settings": settings,
        "nodes": nodes,
        "drift": drift_groups,
        "outliers": {"k": options.k, "mad_floor": options.mad_floor,
                     "metrics": outlier_metrics},
    }
    return doc, fleet


_SIZE = re.compile(r"^(\d+)(B|KiB|MiB|GiB|TiB)$")
_SCALE = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def natural(key: str) -> tuple[Any, ...]:
    """Sort key of a metric key: sizes by bytes ("1MiB" < "64MiB" < "1GiB"), numbers in
    names by value ("GPU2" < "GPU10")."""
    out: list[Any] = []
    for part in key.split("."):
        size = _SIZE.match(part)
        if size:
            out.append((1, int(size[1]) * _SCALE[size[2]], ""))
        else:
            out.append((0, 0, tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                                    for t in re.split(r"(\d+)", part) if t)))
    return tuple(out)


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _exit_code(summary: dict[str, Any]) -> int:
    if summary["nodes_failing"]["critical"]:
        return exitcodes.CRITICAL
    if (summary["nodes_failing"]["warning"] or summary["unhealthy"] or summary["drift_facts"]
            or summary["outliers"] or summary["not_collected"] or summary["unreadable"]):
        return exitcodes.WARNINGS
    return exitcodes.OK


def _setting_json(s: Setting) -> dict[str, Any]:
    checked = s.passed + s.failed
    return {
        "id": s.id, "area": s.area, "severity": s.severity, "profiles": sorted(s.profiles),
        "nodes_checked": checked, "nodes_passed": s.passed, "nodes_failed": s.failed,
        "nodes_unknown": s.unknown, "nodes_skipped": s.skipped,
        "compliance": round(100.0 * s.passed / checked, 1) if checked else None,
        "failed_subjects": s.failed_subjects,
        "failing_values": [{"actual": v, "nodes": n}
                           for v, n in s.actual.most_common(COMMON_VALUES)],
        "failed_nodes": sorted(s.failed_hosts),
    }


def _ranked(fleet: Fleet, drifted: dict[str, int],
            outlying: dict[str, int]) -> list[dict[str, Any]]:
    def key(n: Any) -> tuple[Any, ...]:
        return (-n.failed["critical"], -n.failed["warning"], -n.health_faults,
                -outlying.get(n.host, 0), -drifted.get(n.host, 0),
                100.0 if n.compliance is None else n.compliance, -n.failed["info"], n.host)

    out = []
    for rank, n in enumerate(sorted(fleet.nodes, key=key), start=1):
        out.append({
            "rank": rank, "host": n.host, "profile": n.profile, "kind": n.kind,
            "collected_at": n.collected_at, "critical": n.failed["critical"],
            "warning": n.failed["warning"], "info": n.failed["info"],
            "compliance_score": n.compliance, "healthy": n.healthy,
            "health_faults": n.health_faults, "health_summary": n.health_summary,
            "drift": drifted.get(n.host, 0),
            "outliers": outlying.get(n.host, 0), "errors": n.errors,
        })
    return out


def _drift(fleet: Fleet) -> list[dict[str, Any]]:
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(fleet.nodes):
        groups.setdefault(n.profile, []).append(i)
    out = []
    for profile in sorted(groups):
        members = groups[profile]
        if len(members) < 2:
            continue
        facts = drift.find_drift([fleet.nodes[i].host for i in members],
                                 [fleet.nodes[i].drift for i in members])
        out.append({"profile": profile, "nodes": len(members), "facts": facts})
    return out


def _outliers(fleet: Fleet, options: Options) -> list[dict[str, Any]]:
    out = []
    for (profile, key) in sorted(fleet.metrics, key=lambda slot: (slot[0], natural(slot[1]))):
        m = fleet.metrics[(profile, key)]
        runs, m.ordered = m.ordered, array("d")  # only the sort needs them: freed after it
        stats = outliers.analyse(m.values, runs=runs, higher_is_better=m.higher_is_better,
                                 k=options.k, mad_floor=options.mad_floor)
        del runs
        out.append({
            "profile": profile, "key": key, "name": m.name, "unit": m.unit,
            "higher_is_better": m.higher_is_better, "nodes": stats.count,
            "median": round(stats.median, 4), "mad": round(stats.mad, 4),
            "mad_used": round(stats.mad_used, 4),
            "threshold": None if stats.threshold is None else round(stats.threshold, 4),
            "outliers": [{"host": fleet.nodes[m.nodes[o.index]].host, "value": o.value,
                          "z": o.z, "relative": o.relative} for o in stats.outliers],
        })
    return out
