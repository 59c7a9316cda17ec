"""`nodetune bench SUITE...` and `nodetune bench import FILE...`."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import click

from nodetune import exitcodes
from nodetune.bench import SUITES, compare, explain, identity, session
from nodetune.bench.base import RunContext, RunOptions
from nodetune.bench.compare import load_baseline
from nodetune.bench.importer import import_file
from nodetune.bench.session import run_suites
from nodetune.errors import BenchError
from nodetune.facts import cpulist
from nodetune.facts.model import to_jsonable
from nodetune.node.source import open_node
from nodetune.schemas import BENCH_SCHEMA
from nodetune.views.bench_png import plot
from nodetune.views.bench_text import (
    LineProgress,
    RichProgress,
    print_comparison,
    print_explanations,
    print_suites,
)
from nodetune.views.output import emit_json

SUITE_CHOICES = [*SUITES, "all"]
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<u>[KMGT]?)(?:I?B)?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    m = _SIZE.match(text.strip())
    if m is None:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 4K, 256M, 1G, 1GiB)")
    return int(float(m["n"]) * _UNITS[m["u"].upper()])


def parse_sizes(text: str) -> tuple[int, ...]:
    """"1M,64M,1G" or a doubling range "1M:1G"."""
    if ":" in text:
        low, _, high = text.partition(":")
        lo, hi = parse_size(low), parse_size(high)
        if lo <= 0 or hi < lo:
            raise click.BadParameter(f"{text!r}: give MIN:MAX with 0 < MIN <= MAX")
        doubling: list[int] = []
        while lo <= hi:
            doubling.append(lo)
            lo *= 2
        return tuple(doubling)
    sizes = tuple(parse_size(part) for part in text.split(",") if part.strip())
    if not sizes or min(sizes) <= 0:
        raise click.BadParameter(f"{text!r}: give positive sizes")
    return sizes


def _sizes_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    return parse_sizes(value) if value else None


def _gpus_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if not value:
        return None

    try:
        gpus = cpulist.parse(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a GPU list (e.g. 0-3,6)") from exc
    if not gpus:
        raise click.BadParameter("give at least one GPU")
    return tuple(gpus)


class BenchGroup(click.Group):
    """`nodetune bench SUITE...` runs suites; `run` is implied unless `import` is named."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _facts() -> dict[str, Any]:
    """This node's facts document (expectations and fingerprint come from it)."""
    try:
        with open_node() as node:
            facts: dict[str, Any] = node.facts().to_json()
            return facts
    except ImportError:  # a collector module is missing: no expectations, empty fingerprint
        return {}


def _output_options(func: Any) -> Any:
    func = click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE.png",
                        help="Draw bandwidth-vs-size curves and a before/after chart.")(func)
    func = click.option("--compare", "compare_path", type=click.Path(dir_okay=False),
                        metavar="FILE", help="Compare with a result saved by --save.")(func)
    func = click.option("--save", "save_path", type=click.Path(dir_okay=False), metavar="FILE",
                        help="Write the results (JSON) to FILE for a later --compare.")(func)
    func = click.option("--json", "as_json", is_flag=True,
                        help="Print the nodetune.bench/1 JSON document.")(func)
    return func



@contextlib.contextmanager
def output_file(path: str, option: str) -> Iterator[None]:
    """Turn a failure to write `path` (given with `option`) into one line and exit 3."""
    try:
        yield
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror}",
                         fix=f"give a writable path to {option}") from exc


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cmd() -> None:
    """Run micro-benchmarks that verify tuning, or import results produced elsewhere.

    \b
    Suites:
      memcpy     host<->GPU (pinned/pageable, from each NUMA node), GPU-local, GPU-to-GPU
      allreduce  NCCL all-reduce bus bandwidth, 1 MiB .. 1 GiB
      fio        storage: seq read/write 1 MiB, random read 4 KiB (needs --dir or --device)
      cpu-mem    host memory bandwidth per NUMA node and across nodes
      gpu        per GPU: dense GEMM (bf16, fp8) and HBM copy/triad, clocks and power
      all        every suite that can run here

    Exit codes: 0 results fine; 1 a suite failed, a result is below its expected minimum,
    a GPU is flagged slow, or --compare found a regression beyond noise; 3 nothing could
    run, or --compare met runs measured differently.
    """


@cmd.command("run")
@click.argument("suites", nargs=-1, type=click.Choice(SUITE_CHOICES), metavar="SUITE...")
@_output_options
@click.option("--quick", is_flag=True, help="Fewer sizes and iterations: under 30 s.")
@click.option("--repeat", type=click.IntRange(1, 100), default=None,
              help="Runs per measurement for median and spread [default: 3, --quick: 1].")
@click.option("--gpus", callback=_gpus_option, metavar="LIST", help="GPUs to use, e.g. 0-3,6.")
@click.option("--sizes", callback=_sizes_option, metavar="LIST|MIN:MAX",
              help="Message/buffer sizes (1M,64M,1G or 1M:1G doubling); cpu-mem: array size, "
                   "fio: file size.")
@click.option("--dir", "fio_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="fio: run on a temporary file in DIR.")
@click.option("--device", "fio_device", type=click.Path(dir_okay=False), metavar="/dev/X",
              help="fio: run on a block device (read-only unless --destructive).")
@click.option("--destructive", is_flag=True,
              help="fio: also write to --device, destroying its data.")
@click.option("--nvbandwidth", "use_nvbandwidth", is_flag=True,
              help="memcpy: run nvbandwidth (when on PATH) instead of the built-in runner.")
@click.option("--nodes", "nodes_text", metavar="LIST|slurm",
              help="allreduce: across these nodes (a,b,c), or `slurm`: the allocation's; the "
                   "whole job and every node pair.")
@click.option("--launcher", type=click.Choice(["srun", "mpirun"]),
              help="allreduce --nodes: how to start the ranks [default: srun when installed].")
def run_cmd(suites: tuple[str, ...], as_json: bool, save_path: str | None,
            compare_path: str | None, plot_path: str | None, quick: bool, repeat: int | None,
            gpus: tuple[int, ...] | None, sizes: tuple[int, ...] | None, fio_dir: str | None,
            fio_device: str | None, destructive: bool, use_nvbandwidth: bool,
            nodes_text: str | None, launcher: str | None) -> int:
    """Run SUITE... (memcpy, allreduce, fio, cpu-mem, gpu, all)."""
    if not suites:
        raise BenchError("no suite given", fix=f"name one or more of {', '.join(SUITE_CHOICES)}")
    if fio_dir and fio_device:
        raise BenchError("--dir and --device cannot be used together", fix="give one fio target")
    if destructive and not fio_device:
        raise BenchError("--destructive only applies to --device", fix="give --device /dev/X")
    names = list(SUITES) if "all" in suites else list(dict.fromkeys(suites))
    baseline = _baseline(compare_path)
    nodes = tuple(n.strip() for n in nodes_text.split(",") if n.strip()) if nodes_text else None
    if launcher and not nodes:
        raise BenchError("--launcher only applies to --nodes", fix="give --nodes a,b")
    options = RunOptions(quick=quick, repeat=repeat or 0, gpus=gpus, sizes=sizes,
                         fio_dir=fio_dir, fio_device=fio_device, destructive=destructive,
                         nvbandwidth=use_nvbandwidth, nodes=nodes, launcher=launcher)
    facts = _facts()
    ctx = RunContext(facts=facts, options=options)

    if sys.stdout.isatty() and sys.stderr.isatty():
        if as_json:
            results = run_suites(names, ctx)
        else:
            with RichProgress() as progress:
                ctx.progress = progress
                results = run_suites(names, ctx)
    else:  # piped or logged (--json too): a line on stderr per suite and per finished step
        ctx.progress = LineProgress()
        results = run_suites(names, ctx)
    return _finish(results, facts, options, as_json, save_path, compare_path, baseline,
                   plot_path, kind="run")


@cmd.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_output_options
def import_cmd(files: tuple[str, ...], as_json: bool, save_path: str | None,
               compare_path: str | None, plot_path: str | None) -> int:
    """Read results produced elsewhere: nccl-tests output (any collective, MPI/srun-prefixed
    lines too), fio JSON (2.x, 3.x), nvbandwidth output, or a saved nodetune result."""
    baseline = _baseline(compare_path)
    facts = _facts()
    results = [r for path in files for r in import_file(path, facts)]
    return _finish(results, facts, {"files": list(files)}, as_json, save_path, compare_path,
                   baseline, plot_path, kind="import")


@cmd.command("explain")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--root", type=click.Path(file_okay=False, exists=True), metavar="DIR",
              help="Read the path from the host tree in DIR instead of this host.")
@click.option("--from", "snapshot", type=click.Path(dir_okay=False, exists=True),
              metavar="SNAPSHOT", help="Read the path from a nodetune snapshot.")
@click.option("--nvml", default="auto", show_default=True, metavar="auto|live|off|FILE",
              help="NVML source for the GPU facts.")
@click.option("--all", "everything", is_flag=True,
              help="Explain every metric with an expectation, not only those below it.")
@click.option("--json", "as_json", is_flag=True, help="Print nodetune.bench-explain/1 JSON.")
def explain_cmd(file: str, root: str | None, snapshot: str | None, nvml: str,
                everything: bool, as_json: bool) -> int:
    """For each result in FILE (saved by --save) below its expectation or flagged slow, walk
    the path its bytes took and name the likely cause, the setting that fixes it and the
    expected gain. Exit 0 when nothing is below expectation, 1 when something is."""

    suites = compare.baseline_suites(compare.load_baseline(file))
    with open_node(root=root, snapshot=snapshot, nvml=nvml) as node:
        facts = node.facts().to_json()
    items = explain.explain(suites, facts, everything=everything)
    if as_json:
        emit_json({"source": file, "explanations": [i.to_json() for i in items]},
                  explain.EXPLAIN_SCHEMA)
    else:
        print_explanations(items)
    below = any(i.metric.status == "low" or i.flag for i in items)
    return exitcodes.WARNINGS if below else exitcodes.OK


def _baseline(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None

    return load_baseline(path)


def _finish(results: list[Any], facts: dict[str, Any], options: Any, as_json: bool,
            save_path: str | None, compare_path: str | None, baseline: dict[str, Any] | None,
            plot_path: str | None, kind: str) -> int:

    comparison = None
    before = None
    if baseline is not None and compare_path:
        before = compare.baseline_suites(baseline)
        after_options = options if isinstance(options, dict) else to_jsonable(options)
        comparison = compare.to_json(
            compare.compare(before, results, before_options=baseline.get("options"),
                            after_options=after_options),
            compare_path, baseline, identity.fingerprint(facts))
    doc = session.document(results, facts, options, comparison, kind=kind)
    if save_path:
        with output_file(save_path, "--save"), open(save_path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, default=str)
            fh.write("\n")
    if plot_path:
        with output_file(plot_path, "--plot"):
            plot(plot_path, results, before)
    if as_json:
        emit_json(doc, BENCH_SCHEMA)
    else:
        print_suites(results, doc["node"])
        if comparison is not None:
            print_comparison(comparison)
        if save_path:
            click.echo(f"\nsaved to {save_path}")
        if plot_path:
            click.echo(f"plot written to {plot_path}")
    mismatch = compare.mismatch_summary(comparison) if comparison else None
    if mismatch:
        click.echo(f"nodetune: {mismatch}; fix: rerun with the baseline's options "
                   "(--quick, --repeat, --sizes, --gpus) and tools", err=True)
    return session.exit_code(results, comparison)
