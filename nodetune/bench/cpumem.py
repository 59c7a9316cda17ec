"""cpu-mem: memory bandwidth per NUMA node and across nodes (the STREAM triad).

For each pair (CPUs of node C, memory of node M) the triad worker (`nodetune.bench.stream`) runs
on one CPU per physical core of C, bound with `numactl --cpunodebind=C --membind=M` (or, without
numactl, sched_setaffinity + set_mempolicy inside the worker). The kernel is a C triad (OpenMP)
that gcc builds once into the cache directory, as fast as a compiled STREAM; without gcc, a
numpy triad (about 0.7 of it); the suite's `runner` names the one that ran. Each run reports
its best iteration (the first is a warm-up), as STREAM does; `--repeat` runs give the samples.
The remote/local ratio of each cross-node pair is the NUMA penalty.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from nodetune.bench import numabind, stats, stream
from nodetune.bench.base import RunContext, Runner, module_available, run_tool
from nodetune.bench.results import GIB, MIB, Binding, Matrix, Metric, SuiteResult
from nodetune.errors import BenchError
from nodetune.facts import cpulist

QUICK_MAX_PROCS = 16


def build_argv(*, python: str, cpus: tuple[int, ...], elements: int, iters: int,
               cpu_node: int, mem_node: int, numactl: str | None,
               kernel: str | None = None) -> list[str]:
    argv = [python, "-m", "nodetune.bench.stream", "--elements", str(elements),
            "--iters", str(iters), "--cpus", cpulist.format(cpus)]
    if kernel:
        argv += ["--kernel", kernel]
    if numactl:
        return numabind.numactl_argv(numactl, cpu_node, mem_node) + argv
    return [*argv, "--membind", str(mem_node)]


def parse(stdout: str) -> dict[str, Any]:
    """The worker's JSON; `best_gbps` is its best iteration after the warm-up one."""
    try:
        doc = json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise BenchError("cpu-mem worker printed no result") from exc
    if not doc.get("check"):
        raise BenchError("cpu-mem triad produced wrong values", fix="check the node's memory (ECC)")
    gbps = doc["gbps"][1:] or doc["gbps"]
    doc["best_gbps"] = max(gbps)
    result: dict[str, Any] = doc
    return result


def pairs(node_ids: list[int], distances: dict[int, list[int]],
          quick: bool) -> list[tuple[int, int]]:
    """(cpu node, memory node) pairs: every local pair, and remote pairs — all of them on up
    to 4 nodes, else the farthest (--quick: the nearest) other node of each node."""
    out = [(n, n) for n in node_ids]
    for n in node_ids:
        others = [m for m in node_ids if m != n]
        if not others:
            continue
        if len(node_ids) <= 4 and not quick:
            out += [(n, m) for m in others]
            continue
        dist = distances.get(n) or []

        def distance(m: int, dist: list[int] = dist) -> int:
            return dist[m] if m < len(dist) else 0

        pick = min(others, key=distance) if quick else max(others, key=distance)
        out.append((n, pick))
    return out


class CpuMemRunner(Runner):
    """Host memory bandwidth per NUMA node and across nodes."""

    name = "cpu-mem"
    summary = "host memory bandwidth per NUMA node and across nodes (STREAM triad)"
    cmd_timeout = 600

    def check_enabled(self, ctx: RunContext) -> str | None:
        if ctx.which("gcc") is None and not module_available("numpy"):
            return (f"{self.name}: neither gcc (for the C triad) nor the Python module numpy "
                    "is installed; fix: apt-get install gcc, or pip install numpy")
        return None

    def run(self, ctx: RunContext) -> SuiteResult:
        opts = ctx.options
        numa = numabind.nodes(ctx.facts)
        distances = {int(n["id"]): n.get("distances") or []
                     for n in (ctx.facts.get("numa") or {}).get("nodes") or []}
        todo = pairs([n.id for n in numa], distances, opts.quick)
        by_id = {n.id: n for n in numa}
        numactl = ctx.which("numactl")
        array_bytes = opts.sizes[0] if opts.sizes else (256 * MIB if opts.quick else GIB)
        iters = 5 if opts.quick else 10
        repeat = opts.repeats()
        kernel, built = stream.build_kernel(ctx.which("gcc"),
                                            stream.cache_dir(dict(ctx.env)))
        if kernel is None and not module_available("numpy"):
            raise BenchError(f"cpu-mem: {built}, and numpy is not installed",
                             fix="install gcc (apt-get install gcc) or numpy (pip install numpy)")
        ran: set[str] = set()
        ctx.progress.start("cpu-mem triad", len(todo) * repeat)
        start = time.monotonic()
        results: dict[tuple[int, int], list[float]] = {}
        metrics: list[Metric] = []
        for cpu_node, mem_node in todo:
            cpus = numabind.one_cpu_per_core(ctx.facts, by_id[cpu_node].cpus)
            if opts.quick:
                cpus = cpus[:QUICK_MAX_PROCS]
            budget = by_id[mem_node].free_bytes
            per_array = array_bytes if not budget else min(array_bytes, budget // 8)
            elements = max(MIB // 8, per_array // 8 // len(cpus))
            samples: list[float] = []
            seen, bound = None, True
            while len(samples) < repeat:
                argv = build_argv(python=sys.executable, cpus=cpus, elements=elements,
                                  iters=iters, cpu_node=cpu_node, mem_node=mem_node,
                                  numactl=numactl, kernel=kernel)
                try:
                    doc = parse(run_tool(argv, self.cmd_timeout, env=ctx.env))
                except BenchError:
                    if numactl is None:
                        raise
                    numactl = None  # numactl refused (a container without set_mempolicy)
                    continue
                samples.append(doc["best_gbps"])
                ran.add(str(doc.get("kernel") or stream.NUMPY_KERNEL))
                what = f"CPUs node{cpu_node}, memory node{mem_node}, {doc['best_gbps']:.1f} GB/s"
                seen = doc.get("mem_nodes_seen")
                bound = bound and doc.get("membind", mem_node) is not None
                ctx.progress.advance(what=what)
            results[(cpu_node, mem_node)] = samples
            method = "numactl" if numactl else "sched_setaffinity+set_mempolicy"
            binding = Binding(method=method if bound else "sched_setaffinity",
                              cpus=cpulist.format(cpus), mem_node=mem_node if bound else None,
                              mem_nodes_seen=tuple(seen) if seen else None)
            where = "local" if cpu_node == mem_node else "remote"
            metrics.append(Metric(
                key=f"cpu-mem.triad.cpu{cpu_node}.mem{mem_node}", suite=self.name,
                name=f"triad CPUs of node{cpu_node}, memory of node{mem_node} ({where})",
                unit="GB/s", samples=tuple(samples), subject=f"node{cpu_node}<-node{mem_node}",
                size_bytes=elements * 8 * len(cpus), binding=binding))
        metrics += self._penalties(results)
        note = None if len(numa) > 1 else "one NUMA node: no cross-node penalty to measure"
        ids = tuple(str(n.id) for n in numa)
        cells = tuple(tuple(_median_or_none(results.get((int(c), int(m)))) for m in ids)
                      for c in ids)
        matrix = Matrix(name="triad", title="triad: CPUs of node (row), memory of node (column)",
                        row_kind="node", col_kind="node", direction="<-", unit="GB/s",
                        row_ids=ids, col_ids=ids, cells=cells)
        versions = {"python": sys.version.split()[0]}
        if stream.C_KERNEL in ran:
            versions["gcc"] = built.split()[1]  # "gcc VERSION" or "gcc VERSION (cached)"
        if stream.NUMPY_KERNEL in ran:
            # deferred: optional extra [bench]
            import numpy

            versions["numpy"] = numpy.__version__
            if kernel is None:
                why = f"numpy triad: {built}"
                note = f"{note}; {why}" if note else why
        return SuiteResult(suite=self.name, status="ok", runner="+".join(sorted(ran)),
                           note=note, tool_versions=versions, argv=argv,
                           seconds=round(time.monotonic() - start, 2),
                           metrics=metrics, matrices=[matrix])

    def _penalties(self, results: dict[tuple[int, int], list[float]]) -> list[Metric]:
        out = []
        for (cpu_node, mem_node), remote in results.items():
            local = results.get((cpu_node, cpu_node))
            if cpu_node == mem_node or not local:
                continue
            ratio = _median_or_none(remote) / _median_or_none(local)  # type: ignore[operator]
            out.append(Metric(key=f"cpu-mem.remote_fraction.cpu{cpu_node}.mem{mem_node}",
                              suite=self.name, unit="ratio", samples=(ratio,),
                              name=f"node{cpu_node} reading node{mem_node}'s memory / its own",
                              subject=f"node{cpu_node}<-node{mem_node}"))
        return out


def _median_or_none(samples: list[float] | None) -> float | None:
    if not samples:
        return None

    return round(stats.median(samples), 3)
