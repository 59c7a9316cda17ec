"""`nodetune manifests`: kubelet, pod, DaemonSet, docker and Slurm pinning configuration."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import click

from nodetune.cli import node_options
from nodetune.errors import NoData
from nodetune.manifests import TARGETS, Options, render, values
from nodetune.node.source import open_node
from nodetune.placement import inputs
from nodetune.placement import plan as placement
from nodetune.schemas import MANIFESTS_SCHEMA
from nodetune.views.output import emit_json

GPU_TARGETS = ("k8s-pod", "docker", "slurm", "dra", "nccl-topo")


@click.command("manifests")
@click.option("--target", "target", type=click.Choice([*TARGETS, "all"]), default="all",
              show_default=True, help="What to generate.")
@click.option("-o", "--output-dir", "output_dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="Write the files into DIR instead of printing them.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and every file as JSON.")
@click.option("--node-name", default=None, metavar="NAME",
              help="Node name for Slurm (default: the host's name).")
@click.option("--reserve-cores", type=click.IntRange(min=0), default=None, metavar="N",
              help="System cores to reserve per CPU NUMA node (default: 1 per 32 cores).")
@click.option("--image", default=None, metavar="IMAGE",
              help="The nodetune agent image for the DaemonSet.")
@click.option("--workload-image", default=None, metavar="IMAGE",
              help="Image of the example pods and containers.")
@click.option("--namespace", default="nodetune", show_default=True,
              help="Namespace of the agent DaemonSet.")
@click.option("--rdma-resource", default="rdma/rdma_shared_device_a", show_default=True,
              metavar="NAME", help="Extended resource that gives pods RDMA devices.")
@click.option("--kubernetes-version", "kubernetes_version", default=None, metavar="X.Y",
              help="The kubelet version the config is for: policy options that version has "
                   "(prefer-closest-numa-nodes 1.32+, distribute-cpus-across-numa and "
                   "strict-cpu-reservation 1.33+) are written where they help. Default: only "
                   "options every supported kubelet has.")
@click.option("--interval", type=click.IntRange(min=1), default=300, show_default=True,
              metavar="SECONDS", help="The agent's audit/check interval.")
@click.option("--taint-unhealthy", is_flag=True,
              help="Let the agent taint nodes that fail health checks.")
@node_options
def cmd(target: str, output_dir: str | None, as_json: bool, node_name: str | None,
        reserve_cores: int | None, image: str | None, workload_image: str | None,
        namespace: str, rdma_resource: str, kubernetes_version: str | None, interval: int,
        taint_unhealthy: bool,
        root: str | None, snapshot: str | None, nvml: str) -> None:
    """Generate the configuration that pins each GPU's work to its NUMA node.

    Targets: kubelet (KubeletConfiguration fragment), k8s-pod (example Guaranteed pods),
    daemonset (the nodetune agent), docker (docker run lines and compose.yaml), slurm
    (gres.conf and slurm.conf/cgroup.conf settings), dra (ResourceClaimTemplates pairing each
    GPU with the RDMA NICs on its PCIe root), nccl-topo (an NCCL_TOPO_FILE placing each GPU
    and its rails under one PCIe switch, for VMs whose sysfs hides the real tree), or all.
    """

    # Every user string is checked before any fact is read or any file written.
    if node_name is not None:
        values.node_name(node_name)
    values.namespace(namespace)
    values.resource_name(rdma_resource)
    kubelet_version = values.kubernetes_version(kubernetes_version) \
        if kubernetes_version is not None else None
    if image is not None:
        values.image(image, "--image")
    if workload_image is not None:
        values.image(workload_image, "--workload-image")
    with open_node(root=root, snapshot=snapshot, nvml=nvml) as node:
        facts = node.facts().to_json()
    name = node_name or inputs.node_name(facts)
    if name is not None and node_name is None:
        values.node_name(name)  # the tree's own host name lands in slurm.conf too
    minors = inputs.device_minors(facts)
    plan = placement.compute(facts, inputs.topology_doc(facts), reserve_cores=reserve_cores)
    targets = list(TARGETS) if target == "all" else [target]
    if not plan.gpus and target in GPU_TARGETS:
        raise NoData(f"no GPUs found on this node, so there is nothing to pin for {target}",
                     fix="run on a GPU node (or --root/--from one); check `nodetune facts` gpus")
    cpu = facts.get("cpu") or {}
    options = Options(
        node_name=name or "node", namespace=namespace, rdma_resource=rdma_resource,
        interval=interval, taint_unhealthy=taint_unhealthy,
        gpu_minors={g.index: minors[g.pci_address] for g in plan.gpus
                    if g.pci_address is not None and g.pci_address in minors},
        memory_total_bytes=int((facts.get("memory") or {}).get("total_bytes") or 0),
        sockets=cpu.get("sockets"), pcie_roots=inputs.pcie_roots(facts),
        rdma_addresses=inputs.rdma_addresses(facts), nvlink_cluster=inputs.nvlink_cluster(facts),
        pci_ids=inputs.pci_ids(facts), virtual_machine=inputs.virtual_machine(facts),
        kubelet_version=kubelet_version)
    if image:
        options = replace(options, image=image)
    if workload_image:
        options = replace(options, workload_image=workload_image)
    results = [render(t, plan, options) for t in targets]
    notes = [] if name or "slurm" not in targets else \
        ["host name unknown: Slurm lines use NodeName=node (pass --node-name)"]
    if output_dir:
        _write(output_dir, results)
    if as_json:
        emit_json({"node_name": options.node_name, "placement": plan.to_json(), "notes": notes,
                   "targets": {r.target: {"files": r.files, "notes": r.notes} for r in results}},
                  MANIFESTS_SCHEMA)
        return
    _print(results, output_dir, plan.warnings, notes)


def _write(output_dir: str, results: list[Any]) -> None:
    os.makedirs(output_dir, exist_ok=True)
    for result in results:
        for filename, text in result.files.items():
            path = os.path.join(output_dir, filename)
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            if filename.endswith(".sh"):
                os.chmod(tmp, 0o755)
            os.replace(tmp, path)


def _print(results: list[Any], output_dir: str | None, warnings: tuple[str, ...],
           notes: list[str]) -> None:
    files = [(name, text) for r in results for name, text in r.files.items()]
    for line in [*warnings, *notes]:
        click.echo(f"nodetune: warning: {line}", err=True)
    if output_dir:
        for name, _ in files:
            click.echo(os.path.join(output_dir, name))
        return
    for name, text in files:
        if len(files) > 1:
            click.echo(f"# ==> {name} <==")
        click.echo(text, nl=not text.endswith("\n"))
