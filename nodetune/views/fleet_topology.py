"""NVLink domains as Slurm topology.conf (block or tree), topology.yaml and Kubernetes node
labels.

topology/block refuses a block with fewer nodes than the base block size (the first
BlockSizes value; without one, the first block's node count): slurmctld 24.11 exits with
"Block configuration (...) children count lower than bblock_node_cnt", and topology.yaml(5)
says "Each block must have at least the planning base block size count of nodes"
(https://slurm.schedmd.com/topology.yaml.html). A partly healthy domain has fewer healthy
nodes than its peers, so the block files always name the base size, and leave out a domain
with fewer healthy nodes than it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from nodetune.fleet.domains import Domain, Topology
from nodetune.views.templating import to_yaml

CLIQUE_LABEL = "nvidia.com/gpu.clique"  # the label NVIDIA GPU feature discovery sets
DOMAIN_LABEL = "nodetune.io/nvlink-domain"
DOMAIN_HEALTHY_LABEL = "nodetune.io/nvlink-domain-healthy"  # every member healthy
MEMBER_LABEL = "nodetune.io/nvlink-domain-member"  # in-block | excluded
# Slurm's aggregation levels when BlockSizes is not set: 1, 2, 4, 8 and 16 base blocks.
BLOCK_LEVELS = (1, 2, 4, 8, 16)
NO_BLOCKS = ("# no domain has enough healthy nodes for a block: topology/block would have "
             "none")
YAML_TOPOLOGY = "nvlink"  # the topology's name in topology.yaml (PartitionName ... Topology=)


def _header(topo: Topology, plugin: str, since: str,
            name: str = "topology.conf") -> list[str]:
    return [f"# {name} for TopologyPlugin=topology/{plugin} (Slurm {since}), from",
            "# `nodetune fleet topology`: one entry per multi-node NVLink domain (GPU fabric",
            "# cluster UUID + clique id). Nodes of a partly healthy domain that fail are left",
            "# out, so a job placed within one entry never spans a failing tray.",
            *(f"# not in any NVLink domain: {h}" for h in topo.no_domain),
            *(f"# left out, no GPU facts: {n['host']}: {_one_line(n['reason'])}"
              for n in topo.no_facts),
            *(f"# left out, unreadable: {_one_line(u['file'])}: {_one_line(u['reason'])}"
              for u in topo.unreadable)]


def _one_line(text: str) -> str:
    """A comment stays one line: a file name or reason must not start a line of config."""
    return " ".join(str(text).split())


def _comments(domain: Domain) -> list[str]:
    lines = [f"# {domain.name}: clique {domain.clique_label}, "
             f"{len(domain.members)} nodes"
             + (", PARTLY HEALTHY" if domain.partly_healthy else "")]
    lines += [f"#   excluded {m.host}: {'; '.join(m.problems)}" for m in domain.excluded]
    return lines


@dataclass(frozen=True)
class Block:
    domain: Domain
    listed: bool  # becomes a block; False: only its comments are written
    comments: list[str]


@dataclass(frozen=True)
class Blocks:
    """Every domain, whether it is a block, and the BlockSizes that keep each block valid."""

    entries: list[Block]
    sizes: list[int]  # the base block size first, then the aggregated levels that exist

    def header(self, topo: Topology, since: str, name: str = "topology.conf") -> list[str]:
        lines = _header(topo, "block", since, name)
        if self.sizes:
            lines.append(f"# Base block size {self.sizes[0]} nodes: every block needs at least "
                         "that many (a partly healthy domain lowers it; --block-size sets it).")
        return lines


def blocks(topo: Topology, block_size: int | None = None) -> Blocks:
    """Domains with at least `block_size` healthy nodes become blocks (default: the smallest
    healthy domain's count, so every domain with a healthy node is one)."""
    healthy = [len(d.healthy_hosts) for d in topo.domains if d.healthy_hosts]
    base = block_size or min(healthy, default=0)
    entries = []
    for d in topo.domains:
        count = len(d.healthy_hosts)
        comments = _comments(d)
        if not count:
            comments.append("#   left out: no healthy node")
        elif count < base:
            comments.append(f"#   left out: {count} healthy nodes, fewer than the base block "
                            f"size {base}")
        entries.append(Block(d, bool(count) and count >= base, comments))
    listed = sum(e.listed for e in entries)
    # Slurm stops aggregating at the first level that holds every block.
    sizes = [base * n for n in BLOCK_LEVELS if n == 1 or n // 2 < listed] if listed else []
    return Blocks(entries, sizes)


def slurm_block(topo: Topology, block_size: int | None = None) -> str:
    """`BlockSizes=` and one `BlockName=` line per domain, for topology/block."""
    chosen = blocks(topo, block_size)
    lines = chosen.header(topo, "23.11+")
    if chosen.sizes:
        lines.append("BlockSizes=" + ",".join(map(str, chosen.sizes)))
    else:
        lines.append(NO_BLOCKS)
    for e in chosen.entries:
        lines += e.comments
        if e.listed:
            lines.append(f"BlockName={e.domain.name} Nodes={','.join(e.domain.healthy_hosts)}")
    return "\n".join(lines) + "\n"


def slurm_yaml(topo: Topology, block_size: int | None = None) -> str:
    """topology.yaml (Slurm 25.05+): one block topology, the cluster default, with the same
    blocks and block sizes as `slurm_block` (topology.yaml(5), its EXAMPLE section)."""
    chosen = blocks(topo, block_size)
    lines = chosen.header(topo, "25.05+", "topology.yaml")
    lines += [c for e in chosen.entries for c in e.comments]
    listed = [{"block": e.domain.name, "nodes": ",".join(e.domain.healthy_hosts)}
              for e in chosen.entries if e.listed]
    if not listed:
        lines.append(NO_BLOCKS)
        return "\n".join(lines) + "\n"
    doc = [{"topology": YAML_TOPOLOGY, "cluster_default": True,
            "block": {"block_sizes": chosen.sizes, "blocks": listed}}]
    return "\n".join(lines) + "\n" + to_yaml(doc, indent_sequences=True) + "\n"


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
