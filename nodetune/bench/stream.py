"""STREAM-like triad worker: `python -m nodetune.bench.stream --elements N --iters K --cpus LIST`.

One process per CPU in LIST, each pinned to its CPU and working on its own arrays (first touched
by itself, so they land where its memory policy says: the caller binds with numactl, or passes
--membind NODE). Every iteration starts on a barrier; its time is from the first start to the
last end, and its bandwidth counts 3 arrays of 8-byte doubles per element (a = b + s*c: two
reads, one write; write-allocate traffic not counted, as in STREAM). The triad runs in
cache-sized blocks so numpy's temporary stays in cache. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from typing import Any

from nodetune.bench import numabind
from nodetune.facts import cpulist

BLOCK = 32 * 1024  # elements per block: 256 KiB per array, fits in L2
SCALAR = 3.0


def _triad(a: Any, b: Any, c: Any, tmp: Any) -> None:
    # deferred: optional extra [bench]
    import numpy as np

    n = a.shape[0]
    for start in range(0, n, BLOCK):
        end = min(start + BLOCK, n)
        t = tmp[: end - start]
        np.multiply(c[start:end], SCALAR, out=t)
        np.add(b[start:end], t, out=a[start:end])


def _child(cpu: int, elements: int, iters: int, barrier: Any, results: Any) -> None:
    # deferred: optional extra [bench]
    import numpy as np

    os.sched_setaffinity(0, {cpu})
    a = np.zeros(elements)
    b = np.full(elements, 1.0)
    c = np.full(elements, 2.0)
    tmp = np.empty(BLOCK)
    times = []
    barrier.wait()
    for _ in range(iters):
        barrier.wait()
        t0 = time.perf_counter()
        _triad(a, b, c, tmp)
        times.append((t0, time.perf_counter()))
    ok = bool(np.all(a == 1.0 + SCALAR * 2.0))
    results.put({"cpu": cpu, "times": times, "ok": ok,
                 "nodes": numabind.page_nodes(a.ctypes.data, a.nbytes)})


def measure(cpus: list[int], elements: int, iters: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(cpus))
    results = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(cpu, elements, iters, barrier, results))
             for cpu in cpus]
    for p in procs:
        p.start()
    got = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    bytes_per_iter = 3 * 8 * elements * len(cpus)
    gbps = []
    for i in range(iters):
        span = max(r["times"][i][1] for r in got) - min(r["times"][i][0] for r in got)
        gbps.append(bytes_per_iter / span / 1e9)
    nodes = sorted({n for r in got for n in (r["nodes"] or [])})
    return {"gbps": gbps, "procs": len(cpus), "elements": elements,
            "bytes_per_iter": bytes_per_iter, "check": all(r["ok"] for r in got),
            "mem_nodes_seen": nodes or None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodetune.bench.stream")
    parser.add_argument("--elements", type=int, required=True, help="array elements per process")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--cpus", required=True, help="CPU list, one process per CPU")
    parser.add_argument("--membind", type=int, default=None, help="bind memory to this node")
    args = parser.parse_args(argv)

    cpus = cpulist.parse(args.cpus)
    bound = None
    if args.membind is not None:
        try:
            numabind.set_mempolicy(numabind.MPOL_BIND, (args.membind,))  # the children inherit it
            bound = args.membind
        except OSError:  # e.g. a container's seccomp profile without CAP_SYS_NICE
            bound = None
    result = measure(cpus, args.elements, args.iters)
    if args.membind is not None:
        result["membind"] = bound
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
