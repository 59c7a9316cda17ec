"""allreduce across nodes: the whole job and every node pair, launched by Slurm or MPI.

`nodetune bench allreduce --nodes a,b,c` (or `--nodes slurm` inside an allocation) launches,
from one node, one rank per GPU on each node: through `srun --nodelist` (Slurm) or
`mpirun --host` (Open MPI). Each rank runs nccl-tests' `all_reduce_perf -g 1` when it is
installed, else the PyTorch runner (`nodetune.bench.torchdist`, which reads its rank from the
launcher: SLURM_PROCID / OMPI_COMM_WORLD_RANK; MASTER_ADDR is the group's first node, its
NodeAddr under Slurm).

Groups: the whole job, then each pair of nodes (every pair up to PAIR_LIMIT nodes, else each
node with the next, as a ring). The whole job's bus bandwidth is compared with what this node's
NICs allow (active RDMA ports x rate, `expect.network_busbw`); a pair below the median of the
pairs by more than the noise is flagged: the slow link, switch port or NIC is on it.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping

from nodetune.bench import expect, nccltests
from nodetune.bench.base import RunContext, run_tool
from nodetune.bench.outliers import flags
from nodetune.bench.results import MIB, Expected, Metric, SuiteResult, size_label
from nodetune.errors import BenchError

PAIR_LIMIT = 8
PORT = 29533
DEFAULT_SIZES = (64 * MIB, 256 * MIB, 1024 * MIB)
EXPECTED_FROM = 512 * MIB  # smaller messages do not reach the network's bandwidth
Execute = Callable[[list[str], Mapping[str, str]], str]


def groups(nodes: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The whole job, then the node pairs to measure."""
    if len(nodes) < 2:
        return [nodes]
    if len(nodes) <= PAIR_LIMIT:
        pairs = list(itertools.combinations(nodes, 2))
    else:
        pairs = [(nodes[i], nodes[(i + 1) % len(nodes)]) for i in range(len(nodes))]
    return [nodes, *pairs] if len(nodes) > 2 else [nodes]


def launch_argv(launcher: str, group: tuple[str, ...], per_node: int,
                inner: list[str]) -> list[str]:
    if launcher == "srun":
        return ["srun", "--nodes", str(len(group)), "--nodelist", ",".join(group),
                "--ntasks-per-node", str(per_node), "--kill-on-bad-exit=1", *inner]
    if launcher == "mpirun":
        return ["mpirun", "-np", str(len(group) * per_node),
                "--host", ",".join(f"{h}:{per_node}" for h in group),
                "--map-by", f"ppr:{per_node}:node", "-x", "NCCL_NVLS_ENABLE", "-x",
                "MASTER_ADDR", "-x", "MASTER_PORT", *inner]
    raise BenchError(f"unknown launcher {launcher!r}", fix="use --launcher srun or mpirun")


def inner_argv(ctx: RunContext, sizes: tuple[int, ...], iters: int, warmup: int) -> list[str]:
    binary = ctx.which("all_reduce_perf")
    if binary:
        return nccltests.build_argv(binary, gpus=1, min_bytes=min(sizes),
                                    max_bytes=max(sizes), iters=iters, warmup=warmup)
    return [sys.executable, "-m", "nodetune.bench.torchdist",
            "--sizes", ",".join(str(s) for s in sizes), "--iters", str(iters),
            "--warmup", str(warmup)]


def slurm_nodes(env: Mapping[str, str]) -> tuple[str, ...]:
    """The nodes of this Slurm allocation (SLURM_JOB_NODELIST through scontrol)."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise BenchError("--nodes slurm needs a Slurm allocation (no SLURM_JOB_NODELIST)",
                         fix="run inside salloc/sbatch, or list the nodes: --nodes a,b")
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"cannot expand the node list {nodelist}: {exc}",
                         fix="list the nodes: --nodes a,b") from exc
    return tuple(out.split())


def node_addr(node: str, launcher: str, env: Mapping[str, str]) -> str:
    """Where the ranks find rank 0: the node's NodeAddr under Slurm (scontrol show node),
    else its name."""
    if launcher != "srun":
        return node
    try:
        out = subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True,
                             timeout=30, check=False, env=dict(env)).stdout
    except (OSError, subprocess.SubprocessError):
        return node
    found = re.search(r"\bNodeAddr=(\S+)", out)
    return found.group(1) if found else node


def run(ctx: RunContext, execute: Execute | None = None,
        address: Callable[[str, str, Mapping[str, str]], str] = node_addr) -> SuiteResult:
    opts = ctx.options
    nodes = opts.nodes or ()
    if nodes == ("slurm",):
        nodes = slurm_nodes(ctx.env)
    if len(nodes) < 2:
        raise BenchError("all-reduce across nodes needs 2 or more nodes",
                         fix="give --nodes a,b[,...]")
    launcher = opts.launcher or ("srun" if ctx.which("srun") else "mpirun")
    if ctx.which(launcher) is None:
        raise BenchError(f"{launcher} is not installed", fix="use --launcher srun or mpirun")
    per_node = len(opts.gpus) if opts.gpus else max(1, ctx.gpu_count())
    sizes = opts.sizes or DEFAULT_SIZES
    iters, warmup = (5, 2) if opts.quick else (20, 5)
    inner = inner_argv(ctx, sizes, iters, warmup)
    todo = groups(nodes)
    repeat = opts.repeats()
    expected = expect.network_busbw(ctx.facts)
    execute = execute or (lambda argv, env: run_tool(argv, 1800, env=env))
    ctx.progress.start(f"all-reduce across {len(nodes)} nodes", len(todo) * repeat)
    start = time.monotonic()
    metrics: list[Metric] = []
    argv: list[str] = []
    for group in todo:
        env = {**ctx.env, "NCCL_NVLS_ENABLE": ctx.env.get("NCCL_NVLS_ENABLE", "0"),
               "MASTER_ADDR": address(group[0], launcher, ctx.env), "MASTER_PORT": str(PORT)}
        argv = launch_argv(launcher, group, per_node, inner)
        per_size: dict[int, list[float]] = {}
        for _ in range(repeat):
            tables = [t for t in nccltests.parse(execute(argv, env)) if t.rows]
            if not tables:
                raise BenchError(f"{launcher} on {','.join(group)} printed no all-reduce table")
            for row in tables[0].rows:
                per_size.setdefault(row.size_bytes, []).append(row.busbw_gbps)
            ctx.progress.advance(what=f"{'+'.join(group)}")
        metrics += _metrics(group, nodes, per_size, expected)
    flagged = flags([m for m in metrics if m.key.startswith("allreduce.pair.")])
    note = "; ".join(f["why"] for f in flagged) or None
    return SuiteResult(suite="allreduce", status="ok", runner=f"{launcher}+{inner[0]}",
                       note=note, argv=argv, seconds=round(time.monotonic() - start, 2),
                       ranks=len(nodes) * per_node, hosts=list(nodes), metrics=metrics,
                       flags=flagged)


def _metrics(group: tuple[str, ...], nodes: tuple[str, ...], per_size: dict[int, list[float]],
             expected: Expected | None) -> list[Metric]:
    if group == nodes:
        return [Metric(key=f"allreduce.job.busbw.{size_label(size)}", suite="allreduce",
                       name=f"busbw {len(nodes)} nodes {size_label(size)}", unit="GB/s",
                       samples=tuple(samples), subject=f"{len(nodes)} nodes", size_bytes=size,
                       expected=expected if size >= EXPECTED_FROM else None)
                for size, samples in sorted(per_size.items())]
    size = max(per_size)
    pair = "+".join(group)
    return [Metric(key=f"allreduce.pair.{pair}", suite="allreduce",
                   name=f"busbw {pair} {size_label(size)}", unit="GB/s",
                   samples=tuple(per_size[size]), subject=pair, size_bytes=size)]
