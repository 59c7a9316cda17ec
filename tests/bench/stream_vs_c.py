"""Benchmark: nodetune's cpu-mem triad against a compiled STREAM triad on the same CPUs.

    .venv/bin/python tests/bench/stream_vs_c.py [--elements N] [--rounds R] [--cpus LIST ...]

Builds a reference STREAM triad of its own (the textbook OpenMP loop over static arrays,
`gcc -O3 -march=native -fopenmp`, best of 10 iterations after the first, as STREAM reports
it) and runs it pinned to each CPU set (OMP_PLACES, one thread per CPU, under taskset). On the
same CPUs and with the same total array size it runs nodetune's triad worker with the C
kernel (built by `nodetune.bench.stream.build_kernel`) and with the numpy fallback, and prints
each one's best GB/s and its ratio to the reference. The rounds alternate the three, so a
noisy neighbour slows each alike; the best of each is compared.

CPU sets: the first two CPUs this process may use ("2 cores") and all of them. Target: the C
kernel within 5% of the reference (ratio >= 0.95); exit status 1 when it is not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodetune.bench import stream  # noqa: E402
from nodetune.facts import cpulist  # noqa: E402

TARGET = 0.95
ITERS = 10
REFERENCE = r"""
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef N
#define N 80000000
#endif
#define NTIMES 10

static double a[N], b[N], c[N];

int main(void) {
    double s = 3.0, best = 1e30;
    long j;
    #pragma omp parallel for schedule(static)
    for (j = 0; j < N; j++) { a[j] = 0.0; b[j] = 1.0; c[j] = 2.0; }
    for (int k = 0; k < NTIMES; k++) {
        double t = omp_get_wtime();
        #pragma omp parallel for schedule(static)
        for (j = 0; j < N; j++)
            a[j] = b[j] + s * c[j];
        t = omp_get_wtime() - t;
        if (k > 0 && t < best)
            best = t;
    }
    for (j = 0; j < N; j++)
        if (a[j] != b[j] + s * c[j]) { fprintf(stderr, "wrong result at %ld\n", j); return 1; }
    printf("%.6f\n", 3.0 * sizeof(double) * N / best / 1e9);
    return 0;
}
"""


def build_reference(gcc: str, elements: int, workdir: Path) -> Path:
    source, binary = workdir / "stream_triad.c", workdir / f"stream_triad_{elements}"
    source.write_text(REFERENCE, encoding="utf-8")
    subprocess.run([gcc, "-O3", "-march=native", "-fopenmp", "-mcmodel=medium",
                    f"-DN={elements}", "-o", str(binary), str(source)], check=True)
    return binary


def reference(binary: Path, cpus: list[int]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(len(cpus)), "OMP_PROC_BIND": "true",
           "OMP_PLACES": ",".join(f"{{{c}}}" for c in cpus)}
    out = subprocess.run(["taskset", "-c", cpulist.format(tuple(cpus)), str(binary)],
                         capture_output=True, text=True, check=True, env=env).stdout
    return float(out.strip())


def nodetune(cpus: list[int], elements: int, kernel: str | None) -> tuple[float, str]:
    argv = [sys.executable, "-m", "nodetune.bench.stream", "--elements",
            str(elements // len(cpus)), "--iters", str(ITERS), "--cpus",
            cpulist.format(tuple(cpus))]
    if kernel:
        argv += ["--kernel", kernel]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    if not doc["check"]:
        raise SystemExit(f"nodetune's {doc['kernel']} triad computed wrong values")
    return max(doc["gbps"][1:]), doc["kernel"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=80_000_000,
                        help="elements per array in all (default 80M: 640 MB an array, "
                             "STREAM's rule of 4x the last-level cache on most servers)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", action="append", default=None, metavar="LIST",
                        help="CPU set to compare on (repeatable; default: 2 CPUs, then all)")
    parser.add_argument("--no-numpy", action="store_true", help="skip the numpy fallback")
    args = parser.parse_args(argv)
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit("no gcc: nothing to compare against")
    mine = sorted(os.sched_getaffinity(0))
    sets = [cpulist.parse(c) for c in args.cpus] if args.cpus else \
        [c for c in (mine[:2], mine) if c][: 1 if len(mine) <= 2 else 2]
    with tempfile.TemporaryDirectory(prefix="nodetune-stream-") as work:
        workdir = Path(work)
        binary = build_reference(gcc, args.elements, workdir)
        lib, built = stream.build_kernel(gcc, workdir / "cache")
        if lib is None:
            raise SystemExit(f"nodetune's C triad was not built: {built}")
        print(f"reference: STREAM triad, gcc -O3 -march=native -fopenmp; nodetune: {built}; "
              f"{args.elements} elements ({args.elements * 8 / 1e6:.0f} MB) an array, "
              f"best of {args.rounds} rounds")
        failed = False
        for cpus in sets:
            best = {"reference": 0.0, "c-openmp": 0.0, "numpy": 0.0}
            for _ in range(args.rounds):
                best["reference"] = max(best["reference"], reference(binary, cpus))
                gbps, ran = nodetune(cpus, args.elements, lib)
                best[ran] = max(best[ran], gbps)
                if not args.no_numpy:
                    gbps, ran = nodetune(cpus, args.elements, None)
                    best[ran] = max(best[ran], gbps)
            ref = best["reference"]
            ratio = best["c-openmp"] / ref
            line = (f"CPUs {cpulist.format(tuple(cpus)):<10} reference {ref:7.2f} GB/s  "
                    f"nodetune c-openmp {best['c-openmp']:7.2f} GB/s (ratio {ratio:.3f})")
            if not args.no_numpy:
                line += f"  numpy {best['numpy']:7.2f} GB/s (ratio {best['numpy'] / ref:.3f})"
            print(line)
            failed = failed or ratio < TARGET
        print("FAIL: the C kernel is more than 5% below the reference" if failed
              else f"OK: the C kernel is within 5% of the reference (ratio >= {TARGET})")
        return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
