"""NVLink domains of a fleet: which nodes share a GPU fabric clique, and whether all of them
are healthy.

NVML reports, per GPU of a multi-node NVLink system (GB200 NVL72 compute trays), the fabric
cluster UUID and clique id the fabric manager assigned (`nvmlDeviceGetGpuFabricInfoV`); GPUs
with the same pair reach each other over NVLink. A node belongs to the domain of its GPUs.
A GPU with an all-zero cluster UUID (single-node NVLink, PCIe GPUs, VMs) is in no domain.

A domain is *partly healthy* when one of its nodes is unhealthy (critical audit findings, a
failing agent health check, a GPU whose fabric registration did not complete, fewer GPUs in
the clique than its other nodes). Such nodes are *excluded*: the schedulers' files list only
the healthy members of a domain, so a job placed within one block never spans a broken tray.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune.errors import NodetuneError
from nodetune.fleet import load

_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")  # lands as is in topology.conf


@dataclass
class Member:
    """One node of a domain."""

    host: str
    gpus: int  # GPUs of this node in the domain's clique
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


@dataclass
class Domain:
    cluster_uuid: str
    clique_id: int
    members: list[Member] = field(default_factory=list)

    @property
    def name(self) -> str:
        """A Slurm block / switch name: `nvl-` + the first 8 hex digits of the cluster UUID +
        the clique id (unique within a fleet, stable between runs)."""
        return f"nvl-{self.cluster_uuid.replace('-', '')[:8]}-{self.clique_id}"

    @property
    def clique_label(self) -> str:
        """The value NVIDIA GPU feature discovery gives the `nvidia.com/gpu.clique` label."""
        return f"{self.cluster_uuid}.{self.clique_id}"

    @property
    def healthy_hosts(self) -> list[str]:
        return [m.host for m in self.members if m.healthy]

    @property
    def excluded(self) -> list[Member]:
        return [m for m in self.members if not m.healthy]

    @property
    def partly_healthy(self) -> bool:
        return bool(self.excluded)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "cluster_uuid": self.cluster_uuid,
                "clique_id": self.clique_id, "clique_label": self.clique_label,
                "healthy": not self.partly_healthy,
                "nodes": [m.host for m in self.members], "healthy_nodes": self.healthy_hosts,
                "excluded": [{"host": m.host, "gpus": m.gpus, "problems": m.problems}
                             for m in self.excluded]}


@dataclass
class Topology:
    domains: list[Domain]
    no_domain: list[str]  # nodes whose GPUs are in no multi-node NVLink domain
    no_facts: list[dict[str, str]]  # {"host", "reason"}: reports without GPU facts
    unreadable: list[dict[str, str]]

    @property
    def exit_code(self) -> int:
        """0 every domain healthy and every report read; 1 otherwise."""
        bad = any(d.partly_healthy for d in self.domains) or self.no_facts or self.unreadable
        return 1 if bad else 0

    def to_json(self) -> dict[str, Any]:
        return {"domains": [d.to_json() for d in self.domains], "no_domain": self.no_domain,
                "no_facts": self.no_facts, "unreadable": self.unreadable,
                "summary": {"domains": len(self.domains),
                            "partly_healthy": sum(d.partly_healthy for d in self.domains),
                            "excluded_nodes": sum(len(d.excluded) for d in self.domains),
                            "exit_code": self.exit_code}}


def report_paths(target: Path) -> list[Path]:
    """A single report file, or every node report of a `fleet collect` directory."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise NodetuneError(f"{target} is neither a node report nor a directory",
                            fix="pass a fleet collect --out directory or one DIR/<host>.json")
    paths = list(load.report_files(target))
    if not paths:
        raise NodetuneError(f"no node reports in {target}",
                            fix="run `nodetune fleet collect --out DIR` first")
    return paths


def build(target: Path) -> Topology:
    topo = Topology([], [], [], [])
    domains: dict[tuple[str, int], Domain] = {}
    for path in report_paths(target):
        doc = _read(path)
        if isinstance(doc, str):
            topo.unreadable.append({"file": path.name, "reason": doc})
            continue
        host = path.stem
        if not _HOST.fullmatch(host):
            topo.unreadable.append({"file": path.name, "reason": "the file name is not a "
                                    "host name (letters, digits, '.', '_', '-')"})
            continue
        facts = doc.get("facts") if isinstance(doc.get("facts"), dict) else None
        gpus = [g for g in (facts or {}).get("gpus") or [] if isinstance(g, dict)]
        if facts is None or not gpus:
            topo.no_facts.append({"host": host, "reason": "no GPUs in the report's facts"
                                  if facts is not None else "the report has no facts"})
            continue
        cliques = Counter(_clique(g) for g in gpus)
        cliques.pop(None, None)
        if not cliques:
            topo.no_domain.append(host)
            continue
        key, count = cliques.most_common(1)[0]
        assert key is not None
        member = Member(host, count, _problems(doc, facts, gpus, key, cliques))
        domains.setdefault(key, Domain(*key)).members.append(member)
    for domain in domains.values():
        most = max(m.gpus for m in domain.members)
        for m in domain.members:
            if m.gpus < most:
                m.problems.append(f"{m.gpus} GPUs in the clique where other nodes have {most}")
    topo.domains = sorted(domains.values(), key=lambda d: (d.cluster_uuid, d.clique_id))
    return topo


def _read(path: Path) -> dict[str, Any] | str:
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(doc, dict) or doc.get("schema") not in load.NODE_SCHEMAS:
        return f"not a node report (expected {' or '.join(load.NODE_SCHEMAS)})"
    return doc


def _clique(gpu: dict[str, Any]) -> tuple[str, int] | None:
    fabric = gpu.get("fabric")
    if not isinstance(fabric, dict):
        return None
    uuid = str(fabric.get("cluster_uuid") or "").lower()
    clique = fabric.get("clique_id")
    if not uuid.strip("0-") or not isinstance(clique, int):
        return None
    return uuid, clique


def _problems(doc: dict[str, Any], facts: dict[str, Any], gpus: list[dict[str, Any]],
              key: tuple[str, int], cliques: Counter[tuple[str, int] | None]) -> list[str]:
    problems = []
    if len(cliques) > 1:
        problems.append(f"GPUs in {len(cliques)} cliques")
    for g in gpus:
        fabric = g.get("fabric") or {}
        if _clique(g) == key and (fabric.get("state") != "completed"
                                  or fabric.get("status") != "success"):
            problems.append(f"GPU {g.get('index')} fabric {fabric.get('state')}/"
                            f"{fabric.get('status')}")
    expected = (facts.get("gpu") or {}).get("count")
    if isinstance(expected, int) and expected > len(gpus):
        problems.append(f"{len(gpus)} of {expected} GPUs visible")
    audit: dict[str, Any] = doc["audit"] if isinstance(doc.get("audit"), dict) else {}
    critical = int(((audit.get("summary") or {}).get("failed") or {}).get("critical") or 0)
    if critical:
        problems.append(f"{critical} critical audit findings")
    check: dict[str, Any] = doc["check"] if isinstance(doc.get("check"), dict) else {}
    if check.get("healthy") is False:
        problems.append(f"health check failed: {check.get('summary') or 'unhealthy'}")
    return problems
