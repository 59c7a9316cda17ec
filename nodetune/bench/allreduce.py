"""allreduce: NCCL all-reduce bus bandwidth across the node's GPUs, message sizes 1 MiB .. 1 GiB.

Runs, in order of preference: nccl-tests' `all_reduce_perf` when on PATH; the built-in runner on
NCCL's own library (libnccl.so.2 from the nvidia-nccl wheel or the system; one process,
ncclCommInitAll with one communicator per GPU, each iteration one ncclGroupStart/End around an
ncclAllReduce per GPU, timed with CUDA events on every GPU's stream, the slowest counting);
else torch.distributed (one process per GPU, `nodetune.bench.torchdist`).

Bandwidths follow nccl-tests: algbw = bytes / time, busbw = algbw x 2(n-1)/n (GB = 1e9 bytes).
Results are checked: each rank contributes (k % 64) + rank + 1 at element k, and the first and
last MiB of every GPU's result are compared with the exact sum after the timed iterations.

NVLink SHARP (NCCL_NVLS_ENABLE) is turned off unless the environment sets it: it needs multicast
support from the fabric that VMs and many hosts lack, and changes what busbw means.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import sys
import time
from typing import Any

from nodetune.bench import cudart, expect, multinode, ncclib, nccltests, stats
from nodetune.bench.base import RunContext, Runner, module_available, run_tool
from nodetune.bench.memcpy import has_gpu
from nodetune.bench.results import MIB, Binding, Metric, NcclRow, SuiteResult, size_label
from nodetune.errors import BenchError

DEFAULT_SIZES = tuple(MIB << i for i in range(11))  # 1 MiB .. 1 GiB
EXPECTED_FROM = 512 * MIB  # smaller messages do not reach link bandwidth
PATTERN = 64
CHECK_ELEMENTS = MIB // 4


def nccl_env(env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    out.setdefault("NCCL_NVLS_ENABLE", "0")
    out.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return out


def busbw(size: int, time_us: float, ranks: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s for an all-reduce of `size` bytes taking `time_us`."""
    algbw = size / time_us / 1e3
    return algbw, algbw * 2 * (ranks - 1) / ranks


class AllReduceRunner(Runner):
    """NCCL all-reduce bus bandwidth over message sizes."""

    name = "allreduce"
    summary = "NCCL all-reduce bus bandwidth, 1 MiB .. 1 GiB (nccl-tests, NCCL, or PyTorch)"
    gpu = True
    commands = ("all_reduce_perf",)
    cmd_timeout = 600

    def backend(self, ctx: RunContext) -> str | None:
        if ctx.which("all_reduce_perf"):
            return "nccl-tests"
        if ncclib.find_library(ctx.env) and cudart.available():
            return "nccl"
        if module_available("torch"):
            return "torch.distributed"
        return None

    def check_enabled(self, ctx: RunContext) -> str | None:
        if ctx.options.nodes:  # the ranks run on the nodes named; this one only launches
            launcher = ctx.options.launcher or ("srun" if ctx.which("srun") else "mpirun")
            if ctx.which(launcher) is None:
                return f"allreduce: --nodes needs {launcher}; fix: install Slurm or Open MPI, " \
                       "or pass --launcher"
            return None
        if not has_gpu(ctx):
            return "allreduce: no NVIDIA GPU on this node"
        count = len(ctx.options.gpus) if ctx.options.gpus is not None else ctx.gpu_count()
        if 0 < count < 2:
            return f"allreduce: needs 2 or more GPUs, {count} selected"
        if self.backend(ctx) is None:
            return "allreduce: no NCCL runner; fix: put nccl-tests' all_reduce_perf on PATH, or " \
                   "pip install 'nodetune[gpu]' nvidia-nccl-cu12 (or PyTorch)"
        return None

    def build_argv(self, binary: str, sizes: tuple[int, ...], gpus: int, quick: bool) -> list[str]:
        return nccltests.build_argv(binary, gpus=gpus, min_bytes=min(sizes), max_bytes=max(sizes),
                                    iters=5 if quick else 20, warmup=2 if quick else 5)

    def parse(self, stdout: str) -> list[nccltests.NcclTable]:
        return nccltests.parse(stdout, name_hint="all_reduce")

    def run(self, ctx: RunContext) -> SuiteResult:
        opts = ctx.options
        if opts.nodes:
            return multinode.run(ctx)
        sizes = tuple(opts.sizes) if opts.sizes else DEFAULT_SIZES
        repeat = opts.repeats()
        backend = self.backend(ctx)
        env = nccl_env(dict(ctx.env))
        start = time.monotonic()
        if backend == "nccl":
            result = self._run_builtin(ctx, sizes, repeat, env)
        else:
            result = self._run_external(ctx, backend or "", sizes, repeat, env)
        result.seconds = round(time.monotonic() - start, 2)
        result.env = {k: v for k, v in env.items() if k.startswith("NCCL_")}
        return result

    # -- nccl-tests and torch.distributed: an nccl-tests table on stdout -----------------------
    def _run_external(self, ctx: RunContext, backend: str, sizes: tuple[int, ...], repeat: int,
                      env: dict[str, str]) -> SuiteResult:
        gpus = ctx.options.gpus
        count = len(gpus) if gpus is not None else (ctx.gpu_count() or _cuda_device_count())
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        if backend == "nccl-tests":
            argv = self.build_argv(ctx.which("all_reduce_perf") or "all_reduce_perf", sizes,
                                   count, ctx.options.quick)
            runs = repeat
        else:
            argv = [sys.executable, "-m", "nodetune.bench.torchdist",
                    "--sizes", ",".join(str(s) for s in sizes), "--repeat", str(repeat),
                    "--iters", "5" if ctx.options.quick else "20",
                    "--warmup", "2" if ctx.options.quick else "5"]
            runs = 1
        ctx.progress.start(f"all-reduce ({backend})", runs)
        tables: list[nccltests.NcclTable] = []
        for _ in range(runs):
            tables += self.parse(run_tool(argv, self.cmd_timeout, env=env))
            ctx.progress.advance()
        if not tables:
            raise BenchError(f"{backend} printed no all-reduce table")
        samples: dict[int, list[NcclRow]] = {}
        for table in tables:
            for row in table.rows:
                if row.size_bytes in sizes or not ctx.options.sizes:
                    samples.setdefault(row.size_bytes, []).append(row)
        first = tables[0]
        versions = dict(first.versions)
        if backend == "torch.distributed":
            versions["torch"] = importlib.metadata.version("torch")
        buses = _selected_buses(ctx)
        return self._result(ctx, backend, samples, first.ranks or count, buses, versions, argv,
                            hosts=sorted(set(first.hosts)))

    # -- built-in: NCCL through ctypes ---------------------------------------------------------
    def _run_builtin(self, ctx: RunContext, sizes: tuple[int, ...], repeat: int,
                     env: dict[str, str]) -> SuiteResult:
        for key in ("NCCL_NVLS_ENABLE", "CUDA_DEVICE_ORDER"):
            os.environ.setdefault(key, env[key])  # read by NCCL and CUDA at initialisation
        path = ncclib.find_library(ctx.env)
        if path is None:
            raise BenchError("libnccl.so.2 not found", fix="pip install nvidia-nccl-cu12")
        return self.run_builtin_with(cudart.load(), ncclib.Nccl(path), ctx, sizes, repeat)

    def run_builtin_with(self, api: cudart.CudaApi, nccl: Any, ctx: RunContext,
                         sizes: tuple[int, ...], repeat: int) -> SuiteResult:
        count = api.device_count()
        devices = list(ctx.options.gpus) if ctx.options.gpus is not None else list(range(count))
        if len(devices) < 2:
            raise BenchError(f"all-reduce needs 2 or more GPUs, {len(devices)} available")
        runner = _BuiltinAllReduce(api, nccl, devices, max(sizes),
                                   iters=5 if ctx.options.quick else 20,
                                   warmup=2 if ctx.options.quick else 5)
        ctx.progress.start("all-reduce (NCCL)", len(sizes) * repeat)
        samples: dict[int, list[NcclRow]] = {}
        try:
            for size in sizes:
                for r in range(repeat):
                    samples.setdefault(size, []).append(runner.measure(size, check=r == 0))
                    ctx.progress.advance(what=size_label(size))
        finally:
            runner.close()
        buses = [expect.normalize_bus_id(api.bus_id(d)) for d in devices]
        versions = {"nccl": nccl.version(), "libnccl": nccl.path, **api.versions()}
        return self._result(ctx, "nccl", samples, len(devices), buses, versions, None, hosts=None)

    def _result(self, ctx: RunContext, backend: str, samples: dict[int, list[NcclRow]],
                ranks: int, buses: list[str], versions: dict[str, str], argv: list[str] | None,
                hosts: list[str] | None) -> SuiteResult:
        expected = expect.allreduce_busbw(ctx.facts, buses) if buses else None
        metrics, rows = [], []
        wrong = 0
        for size in sorted(samples):
            runs = samples[size]
            values = tuple(r.busbw_gbps for r in runs)
            mid = stats.median(values)
            rows.append(min(runs, key=lambda r: abs(r.busbw_gbps - mid)))
            wrong += sum(r.wrong or 0 for r in runs)
            metrics.append(Metric(
                key=f"allreduce.busbw.{size_label(size)}", suite=self.name,
                name=f"allreduce busbw {size_label(size)}", unit="GB/s", samples=values,
                subject=f"{ranks} GPUs", size_bytes=size, binding=Binding(method="none"),
                expected=expected if size >= EXPECTED_FROM else None))
        status, note = "ok", None
        if wrong:
            status, note = "failed", f"result check: {wrong} elements wrong"
        return SuiteResult(suite=self.name, status=status, runner=backend, note=note,
                           tool_versions=versions, argv=argv, collective="all_reduce",
                           ranks=ranks, hosts=hosts, metrics=metrics, rows=rows)


def _cuda_device_count() -> int:
    """GPUs CUDA sees, when the facts know none (no NVML, no sysfs view)."""
    if cudart.available() is not None:
        return cudart.load().device_count()
    raise BenchError("cannot tell how many GPUs this node has (no GPU facts, no CUDA bindings)",
                     fix="give --gpus LIST")


def _selected_buses(ctx: RunContext) -> list[str]:
    """Bus ids of the GPUs in PCI order (CUDA_DEVICE_ORDER=PCI_BUS_ID), filtered by --gpus."""
    buses = sorted(expect.normalize_bus_id(str(g.get("pci_address", "")))
                   for g in ctx.facts.get("gpus") or [] if g.get("pci_address"))
    if ctx.options.gpus is None:
        return buses
    return [buses[i] for i in ctx.options.gpus if i < len(buses)]


@dataclasses.dataclass
class _Rank:
    device: int
    comm: int
    send: int
    recv: int
    stream: Any
    start: Any
    stop: Any


class _BuiltinAllReduce:
    """One process, one NCCL communicator per GPU (ncclCommInitAll)."""

    def __init__(self, api: cudart.CudaApi, nccl: Any, devices: list[int], max_size: int,
                 iters: int, warmup: int) -> None:
        self.api, self.nccl, self.iters, self.warmup = api, nccl, iters, warmup
        comms = nccl.comm_init_all(devices)
        self.ranks: list[_Rank] = []
        for index, (device, comm) in enumerate(zip(devices, comms, strict=True)):
            api.set_device(device)
            rank = _Rank(device, comm, api.malloc(max_size), api.malloc(max_size), api.stream(),
                         api.event(), api.event())
            self.ranks.append(rank)
            self._fill(rank, index, max_size)
        for rank in self.ranks:
            api.stream_synchronize(rank.stream)

    def _fill(self, rank: _Rank, index: int, size: int) -> None:
        """send[k] = (k % 64) + index + 1 as float32, copied from a host tile."""
        # deferred: optional extra [bench]
        import numpy as np

        tile = ((np.arange(min(size // 4, 1 << 20)) % PATTERN) + index + 1).astype(np.float32)
        for offset in range(0, size, tile.nbytes):
            n = min(tile.nbytes, size - offset)
            self.api.memcpy_async(rank.send + offset, tile.ctypes.data, n, cudart.H2D, rank.stream)
        self.api.stream_synchronize(rank.stream)

    def _launch(self, count: int) -> None:
        self.nccl.group_start()
        for rank in self.ranks:
            self.nccl.all_reduce(rank.send, rank.recv, count, rank.comm, int(rank.stream))
        self.nccl.group_end()

    def measure(self, size: int, check: bool) -> NcclRow:
        count = size // 4
        for _ in range(self.warmup):
            self._launch(count)
        for rank in self.ranks:
            self.api.set_device(rank.device)
            self.api.record(rank.start, rank.stream)
        for _ in range(self.iters):
            self._launch(count)
        for rank in self.ranks:
            self.api.set_device(rank.device)
            self.api.record(rank.stop, rank.stream)
        ms = max(self.api.elapsed_ms(r.start, r.stop) for r in self.ranks)
        time_us = ms * 1000 / self.iters
        algbw, bus = busbw(count * 4, time_us, len(self.ranks))
        wrong = self._check(count) if check else None
        return NcclRow(size_bytes=count * 4, count=count, type="float", redop="sum", root=None,
                       time_us=round(time_us, 2), algbw_gbps=round(algbw, 2),
                       busbw_gbps=round(bus, 2), wrong=wrong)

    def _check(self, count: int) -> int:
        # deferred: optional extra [bench]
        import numpy as np

        n = len(self.ranks)
        m = min(count, CHECK_ELEMENTS)
        wrong = 0
        host = np.empty(m, dtype=np.float32)
        for first in sorted({0, count - m}):
            want = (np.arange(first, first + m) % PATTERN) * n + n * (n + 1) // 2
            for rank in self.ranks:
                self.api.set_device(rank.device)
                self.api.memcpy_async(host.ctypes.data, rank.recv + first * 4, m * 4, cudart.D2H,
                                      rank.stream)
                self.api.stream_synchronize(rank.stream)
                wrong += int(np.count_nonzero(host != want.astype(np.float32)))
        return wrong

    def close(self) -> None:
        for rank in self.ranks:
            self.api.set_device(rank.device)
            self.api.stream_synchronize(rank.stream)
            self.nccl.comm_destroy(rank.comm)
            self.api.free(rank.send)
            self.api.free(rank.recv)

