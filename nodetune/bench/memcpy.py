"""memcpy: host<->GPU, GPU-local and GPU-to-GPU copy bandwidth, timed with CUDA events.

Built-in runner (cuda-bindings, else CuPy): for every NUMA node with CPUs and memory, the
measuring thread is bound to the node's CPUs and its host buffers to the node's memory
(sched_setaffinity + set_mempolicy; the pages' node is verified with move_pages); then for every
GPU: H2D and D2H with pinned (cudaHostAlloc) and pageable (numpy) buffers. Then each GPU's
device-to-device copy (counted as bytes read + bytes written, like CUDA's bandwidthTest) and
the GPU-to-GPU matrix (cudaMemcpyPeerAsync issued on the source GPU, peer access enabled where
the GPUs support it). Each sample is `iters` back-to-back copies between two CUDA events after
one warm-up copy.

With `--nvbandwidth` and nvbandwidth on PATH, nvbandwidth's CE testcases run instead.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from nodetune.bench import cudart, expect, numabind, nvbw
from nodetune.bench.base import RunContext, Runner, run_tool
from nodetune.bench.results import MIB, Binding, Matrix, Metric, SuiteResult, size_label
from nodetune.errors import BenchError
from nodetune.facts import cpulist

DEFAULT_SIZE = 256 * MIB
QUICK_SIZE = 64 * MIB


def has_gpu(ctx: RunContext) -> bool:
    return ctx.gpu_count() > 0 or os.path.exists("/dev/nvidiactl")


def gbps(size: int, iters: int, ms: float) -> float:
    return size * iters / (ms / 1e3) / 1e9


@dataclasses.dataclass
class Gpu:
    ordinal: int
    bus_id: str
    name: str
    numa_node: int | None
    buf: int = 0
    buf2: int = 0
    stream: Any = None
    start: Any = None
    stop: Any = None


class CopyTimer:
    """Times copies on one GPU's stream with CUDA events."""

    def __init__(self, api: cudart.CudaApi, iters: int) -> None:
        self.api = api
        self.iters = iters

    def time(self, gpu: Gpu, copy: Callable[[], None]) -> float:
        """Milliseconds for `iters` copies after one warm-up copy."""
        self.api.set_device(gpu.ordinal)
        copy()
        self.api.record(gpu.start, gpu.stream)
        for _ in range(self.iters):
            copy()
        self.api.record(gpu.stop, gpu.stream)
        return self.api.elapsed_ms(gpu.start, gpu.stop)

    def host(self, gpu: Gpu, host_ptr: int, size: int, kind: int) -> float:
        dst, src = (gpu.buf, host_ptr) if kind == cudart.H2D else (host_ptr, gpu.buf)
        ms = self.time(gpu, lambda: self.api.memcpy_async(dst, src, size, kind, gpu.stream))
        return gbps(size, self.iters, ms)

    def device(self, gpu: Gpu, size: int) -> float:
        ms = self.time(gpu, lambda: self.api.memcpy_async(gpu.buf2, gpu.buf, size, cudart.D2D,
                                                          gpu.stream))
        return 2 * gbps(size, self.iters, ms)  # bytes read + bytes written

    def peer(self, src: Gpu, dst: Gpu, size: int) -> float:
        ms = self.time(src, lambda: self.api.memcpy_peer_async(dst.buf, dst.ordinal, src.buf,
                                                               src.ordinal, size, src.stream))
        return gbps(size, self.iters, ms)


class MemcpyRunner(Runner):
    """Host<->GPU, GPU-local and GPU-to-GPU copy bandwidth."""

    name = "memcpy"
    summary = "host<->GPU (pinned, pageable, per NUMA node), GPU-local and GPU-to-GPU copies"
    gpu = True
    commands = ()
    cmd_timeout = 600

    def check_enabled(self, ctx: RunContext) -> str | None:
        if not has_gpu(ctx):
            return "memcpy: no NVIDIA GPU on this node"
        if ctx.options.nvbandwidth:
            if ctx.which("nvbandwidth") is None:
                return "memcpy: --nvbandwidth given but nvbandwidth is not on PATH; fix: " \
                       "build it from github.com/NVIDIA/nvbandwidth or drop --nvbandwidth"
            return None
        if cudart.available() is None:
            return "memcpy: needs NVIDIA's CUDA Python bindings; fix: pip install " \
                   "'nodetune[gpu]' (or cupy)"
        return None

    # -- nvbandwidth ---------------------------------------------------------------------------
    def build_argv(self, binary: str, size: int, samples: int) -> list[str]:
        return nvbw.build_argv(binary, buffer_mib=max(1, size // MIB), samples=samples)

    def parse(self, stdout: str) -> nvbw.NvbandwidthRun:
        return nvbw.parse(stdout)

    def _run_nvbandwidth(self, ctx: RunContext, size: int, repeat: int) -> SuiteResult:
        binary = ctx.which("nvbandwidth") or "nvbandwidth"
        argv = self.build_argv(binary, size, max(3, repeat))
        env = {**ctx.env, "CUDA_DEVICE_ORDER": ctx.env.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")}
        ctx.progress.start("nvbandwidth", 1)
        start = time.monotonic()
        run = self.parse(run_tool(argv, self.cmd_timeout, env=env))
        ctx.progress.advance()
        if not run.matrices:
            raise BenchError("nvbandwidth printed no bandwidth matrix")
        by_ordinal = _bus_ids_in_pci_order(ctx.facts) if "CUDA_VISIBLE_DEVICES" not in env else []
        metrics = [_with_expected(m, ctx.facts, by_ordinal) for m in nvbw.metrics(run, self.name)]
        return SuiteResult(suite=self.name, status="ok", runner="nvbandwidth",
                           tool_versions=run.versions, argv=argv,
                           seconds=round(time.monotonic() - start, 2), metrics=metrics,
                           matrices=run.matrices)

    # -- built-in ------------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> SuiteResult:
        opts = ctx.options
        sizes = list(opts.sizes) if opts.sizes else [QUICK_SIZE if opts.quick else DEFAULT_SIZE]
        repeat = opts.repeats()
        if opts.nvbandwidth:
            return self._run_nvbandwidth(ctx, max(sizes), repeat)
        return self.run_with(cudart.load(), ctx, sizes, repeat)

    def run_with(self, api: cudart.CudaApi, ctx: RunContext, sizes: list[int],
                 repeat: int) -> SuiteResult:
        # deferred: optional extra [bench]
        import numpy as np

        start_time = time.monotonic()
        iters = 4 if ctx.options.quick else 10
        gpus = self._open_gpus(api, ctx)
        numa = numabind.nodes(ctx.facts)
        timer = CopyTimer(api, iters)
        pairs = [(a, b) for a in gpus for b in gpus if a is not b]
        total = len(sizes) * (len(numa) * len(gpus) * 4 + len(gpus) + len(pairs))
        ctx.progress.start("memcpy", total * repeat)
        metrics: list[Metric] = []
        size_max = max(sizes)
        for gpu in gpus:
            api.set_device(gpu.ordinal)
            gpu.buf, gpu.buf2 = api.malloc(size_max), api.malloc(size_max)
            gpu.stream, gpu.start, gpu.stop = api.stream(), api.event(), api.event()
        try:
            for node in numa:
                with numabind.bound_thread(node.cpus, node.id) as binding:
                    pinned = api.host_alloc(size_max)
                    try:
                        pageable = np.ones(size_max, dtype=np.uint8)  # touched: placed now
                        seen = numabind.page_nodes(pinned, size_max)
                        bound = dataclasses.replace(binding, mem_nodes_seen=seen)
                        for gpu in gpus:
                            local = _is_local(gpu, node.id, len(numa))
                            for size in sizes:
                                buffers = ((True, pinned), (False, pageable.ctypes.data))
                                for pin, host_ptr in buffers:
                                    for kind, label in ((cudart.H2D, "h2d"), (cudart.D2H, "d2h")):
                                        samples = []
                                        for _ in range(repeat):
                                            samples.append(timer.host(gpu, host_ptr, size, kind))
                                            ctx.progress.advance(what=(
                                                f"{label} {'pinned' if pin else 'pageable'} "
                                                f"GPU{gpu.ordinal} node{node.id} "
                                                f"{size_label(size)}"))
                                        metrics.append(self._host_metric(
                                            ctx, gpu, node.id, local, size, label, pin,
                                            samples, bound))
                        del pageable
                    finally:
                        api.free_host(pinned)
            for gpu in gpus:
                for size in sizes:
                    samples = []
                    for _ in range(repeat):
                        samples.append(timer.device(gpu, size))
                        ctx.progress.advance(what=f"d2d GPU{gpu.ordinal} {size_label(size)}")
                    metrics.append(Metric(
                        key=f"memcpy.d2d.GPU{gpu.ordinal}.{size_label(size)}", suite=self.name,
                        name=f"D2D GPU{gpu.ordinal} (read+write)", unit="GB/s",
                        samples=tuple(samples), subject=f"GPU{gpu.ordinal}", size_bytes=size,
                        expected=expect.device_copy(ctx.facts, gpu.bus_id)))
            peer_note = self._enable_peers(api, gpus)
            matrix_cells: dict[tuple[int, int], float] = {}
            for src, dst in pairs:
                for size in sizes:
                    samples = []
                    for _ in range(repeat):
                        samples.append(timer.peer(src, dst, size))
                        ctx.progress.advance(what=f"GPU{src.ordinal}->GPU{dst.ordinal} "
                                                  f"{size_label(size)}")
                    metric = Metric(
                        key=f"memcpy.p2p.GPU{src.ordinal}-GPU{dst.ordinal}.{size_label(size)}",
                        suite=self.name, name=f"GPU{src.ordinal} -> GPU{dst.ordinal}", unit="GB/s",
                        samples=tuple(samples), subject=f"GPU{src.ordinal}->GPU{dst.ordinal}",
                        size_bytes=size,
                        expected=expect.peer_copy(ctx.facts, src.bus_id, dst.bus_id))
                    metrics.append(metric)
                    if size == size_max:
                        matrix_cells[(src.ordinal, dst.ordinal)] = round(metric.value, 2)
        finally:
            for gpu in gpus:
                api.set_device(gpu.ordinal)
                api.free(gpu.buf)
                api.free(gpu.buf2)
        matrices = [_host_matrix(metrics, label) for label in ("h2d_pinned", "d2h_pinned")]
        if pairs:
            ids = tuple(str(g.ordinal) for g in gpus)
            matrices.append(Matrix(
                name="p2p",
                title=f"GPU(row) -> GPU(column) copy bandwidth at {size_label(size_max)}",
                row_kind="GPU", col_kind="GPU", direction="->", unit="GB/s", row_ids=ids,
                col_ids=ids, cells=tuple(tuple(matrix_cells.get((int(r), int(c))) for c in ids)
                                         for r in ids)))
        return SuiteResult(suite=self.name, status="ok", runner=api.name, note=peer_note,
                           tool_versions=api.versions(),
                           seconds=round(time.monotonic() - start_time, 2),
                           metrics=metrics, matrices=[m for m in matrices if m.row_ids])

    def _open_gpus(self, api: cudart.CudaApi, ctx: RunContext) -> list[Gpu]:
        count = api.device_count()
        wanted = ctx.options.gpus if ctx.options.gpus is not None else tuple(range(count))
        missing = [g for g in wanted if g >= count]
        if missing:
            raise BenchError(f"--gpus {cpulist.format(missing)}: this node has {count} GPUs",
                             fix=f"give GPUs between 0 and {count - 1}")
        gpus = []
        for ordinal in wanted:
            bus = expect.normalize_bus_id(api.bus_id(ordinal))
            facts_gpu = expect.gpu_by_address(ctx.facts, bus) or {}
            gpus.append(Gpu(ordinal=ordinal, bus_id=bus, name=api.device_name(ordinal),
                            numa_node=facts_gpu.get("numa_node")))
        return gpus

    def _enable_peers(self, api: cudart.CudaApi, gpus: list[Gpu]) -> str | None:
        without = []
        for src in gpus:
            for dst in gpus:
                if src is dst:
                    continue
                if api.can_access_peer(src.ordinal, dst.ordinal):
                    api.set_device(src.ordinal)
                    api.enable_peer_access(dst.ordinal)
                else:
                    without.append(f"GPU{src.ordinal}->GPU{dst.ordinal}")
        if without:
            return "no peer access (copies staged through host memory): " + ", ".join(without)
        return None

    def _host_metric(self, ctx: RunContext, gpu: Gpu, node: int, local: bool | None, size: int,
                     direction: str, pinned: bool, samples: list[float],
                     binding: Binding) -> Metric:
        kind = f"{direction}_{'pinned' if pinned else 'pageable'}"
        arrow = "<-" if direction == "h2d" else "->"
        where = {True: "local", False: "remote", None: "locality unknown"}[local]
        expected = expect.host_copy(ctx.facts, gpu.bus_id, direction, pinned)
        if expected is not None and not local:
            expected = dataclasses.replace(expected, min_ratio=None)
        key = f"memcpy.{kind}.GPU{gpu.ordinal}.node{node}.{size_label(size)}"
        return Metric(key=key, suite=self.name, unit="GB/s", samples=tuple(samples),
                      name=f"{direction.upper()} {'pinned' if pinned else 'pageable'} "
                           f"GPU{gpu.ordinal} {arrow} node{node} ({where})",
                      subject=f"GPU{gpu.ordinal}{arrow}node{node}", size_bytes=size,
                      binding=binding, expected=expected)


def _is_local(gpu: Gpu, node: int, nodes: int) -> bool | None:
    if gpu.numa_node is not None:
        return gpu.numa_node == node
    return True if nodes == 1 else None


def _host_matrix(metrics: list[Metric], kind: str) -> Matrix:
    """node (row) x GPU (column) bandwidth of one host copy kind, largest size."""
    picked = [m for m in metrics if m.key.startswith(f"memcpy.{kind}.")]
    if not picked:
        return Matrix(name=kind, title=kind, row_kind="node", col_kind="GPU", direction="->",
                      unit="GB/s", row_ids=(), col_ids=(), cells=())
    size = max(m.size_bytes or 0 for m in picked)
    picked = [m for m in picked if m.size_bytes == size]
    cells: dict[tuple[str, str], float] = {}
    for m in picked:
        _, _, gpu, node, _ = m.key.split(".")
        cells[(node.removeprefix("node"), gpu.removeprefix("GPU"))] = round(m.value, 2)
    rows = tuple(sorted({r for r, _ in cells}, key=int))
    cols = tuple(sorted({c for _, c in cells}, key=int))
    direction = "->" if kind.startswith("h2d") else "<-"
    title = f"{kind} node(row) {direction} GPU(column) at {size_label(size)}"
    return Matrix(name=kind, title=title,
                  row_kind="node", col_kind="GPU", direction=direction, unit="GB/s",
                  row_ids=rows, col_ids=cols,
                  cells=tuple(tuple(cells.get((r, c)) for c in cols) for r in rows))


def _bus_ids_in_pci_order(facts: dict[str, Any]) -> list[str]:
    return sorted(expect.normalize_bus_id(str(g.get("pci_address", "")))
                  for g in facts.get("gpus") or [])


def _with_expected(metric: Metric, facts: dict[str, Any], bus_ids: list[str]) -> Metric:
    """Expectations for nvbandwidth's per-GPU host copies and GPU pairs."""
    subject = metric.subject or ""

    def bus(token: str) -> str | None:
        index = int(token.removeprefix("GPU"))
        return bus_ids[index] if index < len(bus_ids) else None

    expected = None
    if subject.startswith("GPU") and "->" not in subject and metric.key.split(".")[1] in (
            "h2d_pinned", "d2h_pinned"):
        expected = expect.host_copy(facts, bus(subject), metric.key.split(".")[1][:3], True)
    elif "->" in subject:
        src, dst = (bus(t) for t in subject.split("->"))
        if src and dst:
            expected = expect.peer_copy(facts, src, dst)
    binding = Binding(method="nvbandwidth")
    return dataclasses.replace(metric, expected=expected, binding=binding)
