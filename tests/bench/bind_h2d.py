"""Host-to-device copy bandwidth with and without `nodetune bind`, and the affinity it sets.

Run on a GPU node from the repository root (python3 with torch, or cuda-bindings):

    python3 tests/bench/bind_h2d.py --out DIR [--size-mib 512] [--repeats 30] [--gpus 0,1]

For each GPU it runs one child process per mode:
  unbound  plain `python3 bind_h2d.py --child ...` (the kernel places threads and memory);
  bound    `nodetune bind --local-rank I --json` for the plan, then
           `nodetune bind --local-rank I -- python3 bind_h2d.py --child ...`;
  far      (hosts with 2+ CPU NUMA nodes) numactl onto another node's CPUs and memory: the
           cost of a wrong placement.
Each child allocates pinned host memory after the binding took effect (so its pages land on
the bound node), copies SIZE MiB host->device and device->host REPEATS times timed with CUDA
events, and reports the median GB/s with its own Cpus_allowed_list and memory policy (read
back from /proc/self/status and /proc/self/numa_maps). Prints a table; writes
DIR/bind_h2d.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GB = 1e9


# -- child: one measurement in this process ---------------------------------------------------

def _placement() -> dict[str, str]:
    status = Path("/proc/self/status").read_text()
    cpus = next((line.split(":", 1)[1].strip() for line in status.splitlines()
                 if line.startswith("Cpus_allowed_list:")), "?")
    policy = "?"
    try:
        with open("/proc/self/numa_maps", encoding="utf-8") as fh:
            policy = fh.readline().split()[1]
    except (OSError, IndexError):
        pass
    return {"cpus_allowed": cpus, "mem_policy": policy}


def _measure_torch(device: int, size: int, repeats: int) -> dict[str, list[float]]:
    import torch

    torch.cuda.set_device(device)
    host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
    host.fill_(1)
    dev = torch.empty(size, dtype=torch.uint8, device=f"cuda:{device}")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out: dict[str, list[float]] = {"h2d": [], "d2h": []}
    for direction in ("h2d", "d2h"):
        dst, src = (dev, host) if direction == "h2d" else (host, dev)
        for i in range(repeats + 3):
            start.record()
            dst.copy_(src, non_blocking=True)
            end.record()
            end.synchronize()
            if i >= 3:  # warm-up copies are not counted
                out[direction].append(size / (start.elapsed_time(end) / 1e3) / GB)
    return out


def _measure_cudart(device: int, size: int, repeats: int) -> dict[str, list[float]]:
    from cuda.bindings import runtime as rt

    def ok(result: tuple) -> object:
        if result[0] != rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA runtime error {result[0]}")
        return result[1] if len(result) > 1 else None

    ok(rt.cudaSetDevice(device))
    host = ok(rt.cudaMallocHost(size))
    ok(rt.cudaMemset(dev := ok(rt.cudaMalloc(size)), 1, size))
    start, end = ok(rt.cudaEventCreate()), ok(rt.cudaEventCreate())
    kinds = {"h2d": rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
             "d2h": rt.cudaMemcpyKind.cudaMemcpyDeviceToHost}
    out: dict[str, list[float]] = {"h2d": [], "d2h": []}
    for direction, kind in kinds.items():
        dst, src = (dev, host) if direction == "h2d" else (host, dev)
        for i in range(repeats + 3):
            ok(rt.cudaEventRecord(start, 0))
            ok(rt.cudaMemcpyAsync(dst, src, size, kind, 0))
            ok(rt.cudaEventRecord(end, 0))
            ok(rt.cudaEventSynchronize(end))
            if i >= 3:
                ms = ok(rt.cudaEventElapsedTime(start, end))
                out[direction].append(size / (ms / 1e3) / GB)
    ok(rt.cudaFreeHost(host))
    ok(rt.cudaFree(dev))
    return out


def child(device: int, size_mib: int, repeats: int) -> None:
    placement = _placement()  # before CUDA starts its own threads
    size = size_mib << 20
    try:
        samples, api = _measure_torch(device, size, repeats), "torch"
    except ImportError:
        samples, api = _measure_cudart(device, size, repeats), "cuda-bindings"
    print(json.dumps({**placement, "api": api,
                      "h2d_gbps": statistics.median(samples["h2d"]),
                      "d2h_gbps": statistics.median(samples["d2h"]),
                      "h2d_samples": samples["h2d"], "d2h_samples": samples["d2h"]}))


# -- parent: run the modes and report ---------------------------------------------------------

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")}
    extra = [str(REPO)] + [str(p) for p in REPO.glob(".venv/lib/python3*/site-packages")]
    env["PYTHONPATH"] = os.pathsep.join([*extra, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(argv: list[str]) -> dict:
    proc = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    text = proc.stdout.strip()
    try:
        doc = json.loads(text)  # `nodetune bind --json` prints an indented document
    except ValueError:
        doc = json.loads(text.splitlines()[-1])  # the child prints one line after its own output
    return {**doc, "stderr": proc.stderr.strip()}


def _cpu_nodes() -> dict[int, str]:
    base = Path("/sys/devices/system/node")
    nodes = {}
    for d in sorted(base.glob("node[0-9]*")):
        cpus = (d / "cpulist").read_text().strip()
        if cpus:
            nodes[int(d.name[4:])] = cpus
    return nodes


def _visible_gpus() -> int:
    probe = ("import torch; print(torch.cuda.device_count())" if _has("torch") else
             "from cuda.bindings import runtime as r; print(r.cudaGetDeviceCount()[1])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


def _has(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="directory for bind_h2d.json")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--gpus", default=None, help="GPU indices (default: all visible, at most 2)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.size_mib, args.repeats)
        return 0
    if not args.out:
        ap.error("--out DIR is required")
    gpus = ([int(g) for g in args.gpus.split(",")] if args.gpus
            else list(range(min(_visible_gpus(), 2))))
    me = [sys.executable, str(Path(__file__).resolve())]
    nodetune = [sys.executable, "-m", "nodetune"]
    nodes = _cpu_nodes()
    rows = []
    for gpu in gpus:
        measure = [*me, "--child", str(gpu), "--size-mib", str(args.size_mib),
                   "--repeats", str(args.repeats)]
        bind = [*nodetune, "bind", "--local-rank", str(gpu)]
        started = time.perf_counter()
        plan = _run([*bind, "--json"])
        plan_seconds = time.perf_counter() - started
        rows.append({"gpu": gpu, "mode": "unbound", **_run(measure)})
        bound = _run([*bind, "--", *measure])
        rows.append({"gpu": gpu, "mode": "bound", "plan": plan, "plan_seconds": plan_seconds,
                     "affinity_matches_plan": bound["cpus_allowed"] == plan["cpus"]
                     if plan["cpus"] else None, **bound})
        far = [n for n in nodes if n != plan.get("memory_node")]
        if len(nodes) > 1 and far and shutil.which("numactl"):
            rows.append({"gpu": gpu, "mode": f"far (node {far[0]})", **_run(
                ["numactl", f"--cpunodebind={far[0]}", f"--membind={far[0]}", "--", *measure])})
    print(f"{'GPU':>3}  {'mode':<12} {'CPUs allowed':<24} {'mem policy':<11} "
          f"{'H2D GB/s':>9} {'D2H GB/s':>9}  plan match")
    for r in rows:
        match = {True: "yes", False: "NO", None: "-"}[r.get("affinity_matches_plan")]
        print(f"{r['gpu']:>3}  {r['mode']:<12} {r['cpus_allowed']:<24} {r['mem_policy']:<11} "
              f"{r['h2d_gbps']:>9.1f} {r['d2h_gbps']:>9.1f}  {match}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"host": platform.node(), "numa_cpu_nodes": nodes, "size_mib": args.size_mib,
           "repeats": args.repeats, "numactl": shutil.which("numactl"), "rows": rows}
    (out / "bind_h2d.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out / 'bind_h2d.json'}")
    return 0 if all(r.get("affinity_matches_plan") is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
