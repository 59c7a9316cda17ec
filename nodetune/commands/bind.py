"""`nodetune bind -- CMD`: run one launcher rank on its GPU's cores and memory node."""

from __future__ import annotations

import os
import shlex
import sys

import click

from nodetune.cli import node_options
from nodetune.errors import NodetuneError
from nodetune.facts import cpulist
from nodetune.node.source import open_node
from nodetune.placement import binding, inputs
from nodetune.placement import plan as placement
from nodetune.schemas import BIND_SCHEMA
from nodetune.views.output import emit_json

COLLECTORS = ("cpu", "numa", "pci", "gpu")
NIC_COLLECTORS = ("nic", "rdma")


@click.command("bind", context_settings={"ignore_unknown_options": True,
                                         "allow_interspersed_args": False})
@click.option("--local-rank", type=click.IntRange(min=0), default=None, metavar="N",
              help="Local rank (default: LOCAL_RANK, SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK).")
@click.option("--dry-run", is_flag=True, help="Print the plan; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (implies --dry-run).")
@click.option("--nic-env", is_flag=True,
              help="Export NCCL_IB_HCA and UCX_NET_DEVICES naming every rail of the GPU "
                   "(FI_PROVIDER=efa for EFA).")
@click.option("--mem-policy", type=click.Choice(["auto", "bind", "preferred", "none"]),
              default="auto", show_default=True,
              help="Memory policy on the GPU's NUMA node (auto: bind, or preferred where "
                   "GPU memory is a NUMA node).")
@node_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def cmd(ctx: click.Context, local_rank: int | None, dry_run: bool, as_json: bool, nic_env: bool,
        mem_policy: str, root: str | None, snapshot: str | None, nvml: str,
        command: tuple[str, ...]) -> None:
    """Bind a rank to its GPU's cores and NUMA memory, then exec COMMAND.

    For torchrun, srun and mpirun ranks: `nodetune bind -- python train.py`. The rank's GPU is
    CUDA's device LOCAL_RANK (CUDA_VISIBLE_DEVICES is kept as it is).
    """

    if not command and not (dry_run or as_json):
        raise click.UsageError("give the command to run after --, or --dry-run")
    if ctx.get_parameter_source("nvml") == click.core.ParameterSource.DEFAULT:
        nvml = "off"  # sysfs and the driver's /proc files name every GPU; NVML start-up is slow
    only = COLLECTORS + (NIC_COLLECTORS if nic_env else ())
    with open_node(root=root, snapshot=snapshot, nvml=nvml) as node:
        facts = node.facts(only=only).to_json()
        live = node.root.is_live
    topo = inputs.topology_doc(facts) if nic_env else None
    plan = placement.compute(facts, topo, reserve=False)
    index_of = {g.pci_address: g.index for g in plan.gpus}
    index_of_minor = {minor: index_of[address]
                      for address, minor in inputs.device_minors(facts).items()
                      if address in index_of}
    here = live or not (dry_run or as_json)  # the plan will run on this machine's CPUs
    rank_plan = binding.plan_rank(
        plan, os.environ, rank=local_rank, mem_policy=mem_policy, nic_env=nic_env,
        minors=index_of_minor, allowed_cpus=os.sched_getaffinity(0) if here else None,
        allowed_mems=_allowed_mems() if here else None)
    if not live and not (dry_run or as_json):
        rank_plan.notes.append("plan made from another host's tree, applied to this machine")
    argv, method = binding.exec_argv(rank_plan, command)
    if as_json or dry_run:
        _show(rank_plan, argv, method, as_json)
        return
    for warning in rank_plan.warnings:
        click.echo(f"nodetune: warning: {warning}", err=True)
    if method == "in-process":
        for note in binding.apply_in_process(rank_plan):
            click.echo(f"nodetune: note: {note}", err=True)
    env = {**os.environ, **rank_plan.env}
    sys.stdout.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise NodetuneError(f"cannot run {argv[0]}: {exc.strerror}",
                            fix="check the command after --") from exc


def _allowed_mems() -> set[int] | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("Mems_allowed_list:"):
                    return set(cpulist.parse(line.split(":", 1)[1]))
    except OSError:
        return None
    return None


def _show(rank_plan: object, argv: list[str], method: str, as_json: bool) -> None:
    doc = {**rank_plan.to_json(), "method": method, "argv": argv}  # type: ignore[attr-defined]
    if as_json:
        emit_json(doc, BIND_SCHEMA)
        return
    g = doc["gpu"]
    click.echo(f"rank     {doc['rank']} ({doc['rank_source']})")
    click.echo(f"gpu      {g['index']} {g['pci_address']} {g['name'] or ''}".rstrip()
               + (f", NUMA node {g['numa_node']}" if g["numa_node"] is not None else ""))
    cpus = doc["cpus"]
    count = len(cpulist.parse(cpus))
    click.echo(f"cpus     {cpus or 'unchanged'}" + (f" ({count} CPUs)" if cpus else ""))
    memory = (f"{doc['mem_policy']} node {doc['memory_node']}" if doc["mem_policy"] != "none"
              else "unchanged")
    click.echo(f"memory   {memory}")
    rails = [f"{n} ({c})" for n, c in zip(g["nics"], g["nic_paths"], strict=False)]
    nic = ", ".join(rails) if rails else "none found"
    click.echo(f"nic      {nic}")
    for key, value in doc["env"].items():
        click.echo(f"env      {key}={value}")
    click.echo(f"method   {method}")
    click.echo(f"exec     {shlex.join(argv) if argv else '(no command)'}")
    for note in doc["notes"]:
        click.echo(f"note     {note}")
    for warning in doc["warnings"]:
        click.echo(f"warning  {warning}")
