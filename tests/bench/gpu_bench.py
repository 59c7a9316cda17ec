"""Accuracy of `nodetune bench memcpy allreduce` against PyTorch/CuPy measured in the same run.

    python3 tests/bench/gpu_bench.py OUTDIR

For a machine with 2+ NVIDIA GPUs, python3 with torch, cupy, cuda-bindings and an nvidia-nccl
wheel (no nccl-tests needed, no network). Runs, each part in its own process so one failing
never stops the others (about 3-5 minutes in all):

1. `nodetune bench memcpy allreduce --json --save OUTDIR/nodetune-bench.json` (the Python API
   when click is not installed), and `nodetune bench memcpy allreduce cpu-mem --quick`, timed.
2. Reference all-reduce: torch.distributed, one process per GPU, NCCL, 1 GiB float32, CUDA events
   around 20 back-to-back all-reduces (slowest rank), 3 repeats, NVLink SHARP off as nodetune.
3. Reference H2D/D2H pinned copies, 256 MiB, CUDA events around 10 copies after 3 warm-up
   copies, 9 repeats, the thread on the GPU's local CPUs: PyTorch (`copy_(non_blocking=True)`
   from pin_memory) and
   CuPy (`ndarray.set` from alloc_pinned_memory).

Prints and writes OUTDIR/comparison.txt and OUTDIR/summary.json. Targets: all-reduce busbw at
1 GiB within 3% of PyTorch; H2D pinned within 3% of the reference and >= 85% of the link rate.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SIZE_ALLREDUCE = 1 << 30
SIZE_COPY = 256 << 20
TIMEOUT = 280
REPEAT = 9  # samples per metric on both sides; medians are compared (shared VMs are noisy)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + extra if extra else "")
    env.setdefault("NCCL_NVLS_ENABLE", "0")
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return env


def run_part(name: str, argv: list[str], out: Path, timeout: int = TIMEOUT) -> dict[str, Any]:
    """Run one part as a process; its output goes to OUTDIR/<name>.log."""
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(),
                              cwd=REPO, check=False)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = 124, str(exc.stdout or ""), f"timed out after {timeout} s"
    except OSError as exc:
        rc, stdout, stderr = 127, "", str(exc)
    seconds = round(time.monotonic() - start, 1)
    (out / f"{name}.log").write_text(f"$ {' '.join(argv)}\n# rc={rc} {seconds}s\n{stdout}\n"
                                     f"# stderr\n{stderr}")
    print(f"[{name}] rc={rc} in {seconds} s", flush=True)
    return {"rc": rc, "seconds": seconds, "stdout": stdout, "stderr": stderr}


# -- references (run in child processes: `gpu_bench.py --ref-allreduce OUT` etc.) ---------------
def _local_cpus(torch: Any, dev: int) -> set[int] | None:
    props = torch.cuda.get_device_properties(dev)
    bus = getattr(props, "pci_bus_id", None)
    if bus is None:
        return None
    domain, device = getattr(props, "pci_domain_id", 0), getattr(props, "pci_device_id", 0)
    path = Path(f"/sys/bus/pci/devices/{domain:04x}:{bus:02x}:{device:02x}.0/local_cpulist")
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus & os.sched_getaffinity(0) or None


def _allreduce_rank(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    data = torch.zeros(SIZE_ALLREDUCE // 4, dtype=torch.float32, device=f"cuda:{rank}")
    for _ in range(5):
        dist.all_reduce(data)
    torch.cuda.synchronize()
    times = []
    for _ in range(3):
        dist.barrier()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            dist.all_reduce(data)
        stop.record()
        stop.synchronize()
        ms = torch.tensor([start.elapsed_time(stop) / 20], device=f"cuda:{rank}")
        dist.all_reduce(ms, op=dist.ReduceOp.MAX)
        times.append(ms.item())
    if rank == 0:
        factor = 2 * (world - 1) / world
        busbw = [SIZE_ALLREDUCE / (t / 1e3) / 1e9 * factor for t in times]
        nccl = torch.cuda.nccl.version()
        Path(out).write_text(json.dumps({
            "busbw_gbps": busbw, "median_gbps": statistics.median(busbw), "ranks": world,
            "torch": torch.__version__,
            "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)}))
    dist.destroy_process_group()


def ref_allreduce(out: str) -> None:
    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = torch.cuda.device_count()
    mp.spawn(_allreduce_rank, args=(world, port, out), nprocs=world, join=True)


def _events_gbps(record: Any, size: int, iters: int = 10, repeat: int = REPEAT) -> list[float]:
    """record(n) runs n copies between two events and returns the milliseconds."""
    record(3)
    return [size * iters / (record(iters) / 1e3) / 1e9 for _ in range(repeat)]


def ref_copies(out: str) -> None:
    import torch

    results: dict[str, Any] = {"torch": torch.__version__, "gpus": {}}
    try:
        import cupy
        import numpy

        results["cupy"] = cupy.__version__
    except ImportError as exc:
        cupy = None
        results["cupy_error"] = str(exc)
    before = os.sched_getaffinity(0)
    for dev in range(torch.cuda.device_count()):
        cpus = _local_cpus(torch, dev)
        os.sched_setaffinity(0, cpus or before)
        torch.cuda.set_device(dev)
        host = torch.empty(SIZE_COPY, dtype=torch.uint8, pin_memory=True)
        gpu = torch.empty(SIZE_COPY, dtype=torch.uint8, device=f"cuda:{dev}")
        stream = torch.cuda.Stream(device=dev)
        row: dict[str, Any] = {"cpus": sorted(cpus) if cpus else None}
        for direction, dst, src in (("h2d", gpu, host), ("d2h", host, gpu)):
            def record(n: int, dst: Any = dst, src: Any = src, stream: Any = stream) -> float:
                start = torch.cuda.Event(enable_timing=True)
                stop = torch.cuda.Event(enable_timing=True)
                with torch.cuda.stream(stream):
                    start.record(stream)
                    for _ in range(n):
                        dst.copy_(src, non_blocking=True)
                    stop.record(stream)
                stop.synchronize()
                return float(start.elapsed_time(stop))

            row[f"torch_{direction}_gbps"] = _events_gbps(record, SIZE_COPY)
        del host, gpu
        if cupy is not None:
            with cupy.cuda.Device(dev):
                mem = cupy.cuda.alloc_pinned_memory(SIZE_COPY)
                pinned = numpy.frombuffer(mem, numpy.uint8, SIZE_COPY)
                array = cupy.empty(SIZE_COPY, dtype=cupy.uint8)
                cstream = cupy.cuda.Stream(non_blocking=True)

                def crecord(n: int, array: Any = array, pinned: Any = pinned,
                            cstream: Any = cstream) -> float:
                    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
                    start.record(cstream)
                    for _ in range(n):
                        array.set(pinned, stream=cstream)
                    stop.record(cstream)
                    stop.synchronize()
                    return float(cupy.cuda.get_elapsed_time(start, stop))

                row["cupy_h2d_gbps"] = _events_gbps(crecord, SIZE_COPY)
                del array, pinned, mem
        results["gpus"][str(dev)] = row
    os.sched_setaffinity(0, before)
    Path(out).write_text(json.dumps(results, indent=1))


# -- comparison ------------------------------------------------------------------------------
def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _metric(doc: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    for suite in (doc or {}).get("suites") or []:
        for m in suite.get("metrics") or []:
            if m["key"] == key:
                return m
    return None


def _local_h2d(doc: dict[str, Any] | None, gpu: str) -> dict[str, Any] | None:
    """nodetune's H2D pinned metric of this GPU from its local NUMA node, largest size."""
    found = [m for s in (doc or {}).get("suites") or [] for m in s.get("metrics") or []
             if m["key"].startswith(f"memcpy.h2d_pinned.GPU{gpu}.") and "(local" in m["name"]]
    return max(found, key=lambda m: m.get("size_bytes") or 0) if found else None


def compare(out: Path, parts: dict[str, Any]) -> dict[str, Any]:
    bench = _load(out / "nodetune-bench.json")
    torch_ar = _load(out / "ref-allreduce.json")
    copies = _load(out / "ref-copies.json")
    lines = [f"{'check':44} {'nodetune':>10} {'reference':>10} {'diff':>7} {'link':>7}  result"]
    checks: list[dict[str, Any]] = []

    def add(name: str, ours: float | None, ref: float | None, link: float | None,
            need_link: bool) -> None:
        diff = None if ours is None or not ref else (ours - ref) / ref
        of_link = None if ours is None or not link else ours / link
        ok = diff is not None and abs(diff) <= 0.03 and (not need_link or (
            of_link is not None and of_link >= 0.85))
        checks.append({"check": name, "nodetune": ours, "reference": ref, "diff": diff,
                       "of_link": of_link, "pass": ok})
        lines.append(f"{name:44} {_f(ours):>10} {_f(ref):>10} "
                     f"{'-' if diff is None else f'{diff * 100:+.1f}%':>7} "
                     f"{'-' if of_link is None else f'{of_link * 100:.0f}%':>7}  "
                     f"{'PASS' if ok else 'FAIL'}")

    ar = _metric(bench, "allreduce.busbw.1GiB")
    add("all-reduce busbw 1 GiB (GB/s) vs PyTorch", ar["value"] if ar else None,
        torch_ar["median_gbps"] if torch_ar else None, None, need_link=False)
    for gpu, row in sorted(((copies or {}).get("gpus") or {}).items()):
        ours = _local_h2d(bench, gpu)
        link = (ours or {}).get("expected", {}) or {}
        value = ours["value"] if ours else None
        add(f"H2D pinned GPU{gpu} (GB/s) vs PyTorch", value,
            statistics.median(row["torch_h2d_gbps"]), link.get("value"), need_link=True)
        if "cupy_h2d_gbps" in row:
            add(f"H2D pinned GPU{gpu} (GB/s) vs CuPy", value,
                statistics.median(row["cupy_h2d_gbps"]), link.get("value"), need_link=True)
        d2h = _metric(bench, (ours or {}).get("key", "").replace("h2d_pinned", "d2h_pinned"))
        lines.append(f"{f'  (info) D2H pinned GPU{gpu} vs PyTorch':44} "
                     f"{_f(d2h['value'] if d2h else None):>10} "
                     f"{_f(statistics.median(row['torch_d2h_gbps'])):>10}")
    lines.append("")
    for name, part in parts.items():
        lines.append(f"part {name}: rc={part['rc']} in {part['seconds']} s")
    if bench is not None:
        for suite in bench.get("suites") or []:
            lines.append(f"nodetune {suite['suite']}: {suite['status']} via {suite.get('runner')}"
                         f"{' - ' + suite['note'] if suite.get('note') else ''}")
    text = "\n".join(lines)
    (out / "comparison.txt").write_text(text + "\n")
    print(text)
    summary = {"checks": checks, "parts": {k: {"rc": v["rc"], "seconds": v["seconds"]}
                                           for k, v in parts.items()},
               "all_pass": bool(checks) and all(c["pass"] for c in checks)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--ref-allreduce":
        ref_allreduce(argv[2])
        return 0
    if len(argv) == 3 and argv[1] == "--ref-copies":
        ref_copies(argv[2])
        return 0
    if len(argv) == 3 and argv[1] == "--api":
        return run_api(Path(argv[2]))
    if len(argv) != 2:
        print(__doc__)
        return 2
    out = Path(argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    parts: dict[str, Any] = {}
    if _importable("click"):
        bench = [py, "-m", "nodetune", "bench", "memcpy", "allreduce", "--json", "--save",
                 str(out / "nodetune-bench.json"), "--repeat", str(REPEAT)]
        if _importable("matplotlib"):
            bench += ["--plot", str(out / "nodetune-bench.png")]
    else:
        bench = [py, __file__, "--api", str(out)]
    parts["nodetune-bench"] = run_part("nodetune-bench", bench, out)
    if "bench" in bench:
        parts["nodetune-quick"] = run_part("nodetune-quick", [
            py, "-m", "nodetune", "bench", "memcpy", "allreduce", "cpu-mem", "--quick",
            "--save", str(out / "nodetune-quick.json")], out, timeout=120)
    parts["ref-allreduce"] = run_part("ref-allreduce", [py, __file__, "--ref-allreduce",
                                                        str(out / "ref-allreduce.json")], out)
    parts["ref-copies"] = run_part("ref-copies", [py, __file__, "--ref-copies",
                                                  str(out / "ref-copies.json")], out)
    for name in ("nvidia-smi-topo", "nvidia-smi-q"):
        run_part(name, ["nvidia-smi", *(["topo", "-m"] if name.endswith("topo") else ["-q"])],
                 out, timeout=60)
    summary = compare(out, parts)
    return 0 if summary["all_pass"] else 1


def run_api(out: Path) -> int:
    """nodetune bench memcpy allreduce through the Python API (no click needed)."""
    sys.path.insert(0, str(REPO))
    from nodetune.bench import session
    from nodetune.bench.base import RunContext, RunOptions
    from nodetune.errors import NodetuneError
    from nodetune.node.source import open_node

    with open_node() as node:
        facts = node.facts().to_json()
    options = RunOptions()
    try:
        suites = session.run_suites(["memcpy", "allreduce"],
                                    RunContext(facts=facts, options=options))
    except NodetuneError as exc:
        print(f"nodetune: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    doc = session.document(suites, facts, options)
    (out / "nodetune-bench.json").write_text(json.dumps(doc, indent=2, default=str))
    print(json.dumps(doc, indent=2, default=str))
    return session.exit_code(suites, None)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
