"""NVLink domains as Slurm topology.conf (block or tree) and Kubernetes node labels."""

from __future__ import annotations

import shlex

from nodetune.fleet.domains import Domain, Topology

CLIQUE_LABEL = "nvidia.com/gpu.clique"  # the label NVIDIA GPU feature discovery sets
DOMAIN_LABEL = "nodetune.io/nvlink-domain"
DOMAIN_HEALTHY_LABEL = "nodetune.io/nvlink-domain-healthy"  # every member healthy
MEMBER_LABEL = "nodetune.io/nvlink-domain-member"  # in-block | excluded


def _header(topo: Topology, plugin: str, since: str) -> list[str]:
    return [f"# topology.conf for TopologyPlugin=topology/{plugin} (Slurm {since}), from",
            "# `nodetune fleet topology`: one entry per multi-node NVLink domain (GPU fabric",
            "# cluster UUID + clique id). Nodes of a partly healthy domain that fail are left",
            "# out, so a job placed within one entry never spans a failing tray.",
            *(f"# not in any NVLink domain: {h}" for h in topo.no_domain)]


def _comments(domain: Domain) -> list[str]:
    lines = [f"# {domain.name}: clique {domain.clique_label}, "
             f"{len(domain.members)} nodes"
             + (", PARTLY HEALTHY" if domain.partly_healthy else "")]
    lines += [f"#   excluded {m.host}: {'; '.join(m.problems)}" for m in domain.excluded]
    return lines


def slurm_block(topo: Topology) -> str:
    """`BlockName=` lines for topology/block. A domain with no healthy node keeps only its
    comment (a block needs nodes)."""
    lines = _header(topo, "block", "23.11+")
    for d in topo.domains:
        lines += _comments(d)
        if d.healthy_hosts:
            lines.append(f"BlockName={d.name} Nodes={','.join(d.healthy_hosts)}")
    return "\n".join(lines) + "\n"


def slurm_tree(topo: Topology) -> str:
    """One leaf switch per domain and a top switch over them, for topology/tree (Slurm before
    23.11, e.g. Debian 12's 22.05): `--switches=1` keeps a job inside one NVLink domain."""
    lines = _header(topo, "tree", "any version")
    leaves = []
    for d in topo.domains:
        lines += _comments(d)
        if d.healthy_hosts:
            lines.append(f"SwitchName={d.name} Nodes={','.join(d.healthy_hosts)}")
            leaves.append(d.name)
    if len(leaves) > 1:
        lines.append(f"SwitchName=nvl-all Switches={','.join(leaves)}")
    return "\n".join(lines) + "\n"


def labels(topo: Topology) -> str:
    """`kubectl label` commands: the clique label GPU feature discovery would set, the domain
    name, whether the whole domain is healthy, and whether this node is in the block."""
    lines = ["#!/bin/sh", "# Kubernetes node labels for the NVLink domains, from "
             "`nodetune fleet topology --format labels`.", "set -e"]
    for d in topo.domains:
        lines += _comments(d)
        excluded = {m.host for m in d.excluded}
        for m in d.members:
            pairs = [f"{CLIQUE_LABEL}={d.clique_label}", f"{DOMAIN_LABEL}={d.name}",
                     f"{DOMAIN_HEALTHY_LABEL}={str(not d.partly_healthy).lower()}",
                     f"{MEMBER_LABEL}={'excluded' if m.host in excluded else 'in-block'}"]
            lines.append(f"kubectl label node --overwrite {shlex.quote(m.host)} "
                         + " ".join(pairs))
    return "\n".join(lines) + "\n"
