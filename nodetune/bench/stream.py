"""STREAM triad worker: `python -m nodetune.bench.stream --elements N --iters K --cpus LIST`.

Two kernels, the same measurement. Where gcc exists, `build_kernel()` compiles a small C triad
(OpenMP, -O3 -march=native) once into the nodetune cache directory and the worker calls it
through ctypes (`--kernel LIB`, kernel "c-openmp"): one thread per CPU in LIST, each pinned to
its CPU, first touching its own slice of the three arrays, then `a[i] = b[i] + s*c[i]` over
that slice, as a compiled STREAM does. Otherwise (kernel "numpy") one process per CPU, each
pinned to its CPU, runs the triad on its own arrays in cache-sized blocks, so numpy's
temporary stays in cache: about 0.7 of the compiled kernel's bandwidth.

Either way the pages are first touched where the memory policy says (the caller binds with
numactl, or passes --membind NODE); every iteration starts on a barrier, its time is from the
first start to the last end, and its bandwidth counts 3 arrays of 8-byte doubles per element
(two reads, one write; write-allocate traffic not counted, as in STREAM). Prints one JSON
object, whose `kernel` names the kernel that ran.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import multiprocessing
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from nodetune.bench import numabind
from nodetune.facts import cpulist

BLOCK = 32 * 1024  # elements per block: 256 KiB per array, fits in L2
SCALAR = 3.0
C_KERNEL, NUMPY_KERNEL = "c-openmp", "numpy"
# -ffp-contract=off: no fused multiply-add, so the C triad rounds as numpy's does (the
# bandwidth is the same: the loop waits on memory either way)
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fPIC", "-shared")
BUILD_TIMEOUT = 120

C_SOURCE = r"""
#define _GNU_SOURCE
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* a = b + s*c over n doubles by one thread per CPU of cpus[0..ncpus), each pinned to its CPU
   and working on its own contiguous slice. init: the threads first write their slices
   (a = 0, b = 1, c = 2), which places the pages; else b and c are the caller's. times[2k] and
   times[2k+1]: start and end of iteration k, between barriers. *threads: threads that ran.
   Returns the elements of a that differ from 1 + 2s after an init run (else 0). */
long nt_triad(double *restrict a, double *restrict b, double *restrict c, long n, double s,
              int iters, const int *cpus, int ncpus, int init, double *times, int *threads) {
    long wrong = 0;
    omp_set_dynamic(0);
    #pragma omp parallel num_threads(ncpus) reduction(+:wrong)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpus[t], &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
        long lo = n * t / nt, hi = n * (t + 1) / nt;
        if (init)
            for (long i = lo; i < hi; i++) { a[i] = 0.0; b[i] = 1.0; c[i] = 2.0; }
        for (int k = 0; k < iters; k++) {
            #pragma omp barrier
            #pragma omp master
            times[2 * k] = now();
            for (long i = lo; i < hi; i++)
                a[i] = b[i] + s * c[i];
            #pragma omp barrier
            #pragma omp master
            times[2 * k + 1] = now();
        }
        if (init) {
            double want = 1.0 + s * 2.0;
            for (long i = lo; i < hi; i++)
                wrong += a[i] != want;
        }
        #pragma omp master
        *threads = nt;
    }
    return wrong;
}
"""


def cache_dir(env: dict[str, str] | None = None) -> Path:
    """$NODETUNE_CACHE_DIR, else $XDG_CACHE_HOME/nodetune, else ~/.cache/nodetune."""
    env = dict(os.environ) if env is None else env
    if env.get("NODETUNE_CACHE_DIR"):
        return Path(env["NODETUNE_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nodetune"


def _private(path: Path) -> bool:
    """Ours and writable by nobody else: a library another user could replace is not loaded."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _cpu_signature() -> str:
    """The CPU model and flags: -march=native code is only for CPUs that have them."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    keep = [line for line in text.splitlines()
            if line.startswith(("model name", "flags", "Features", "CPU implementer", "CPU part"))]
    return "\n".join(sorted(set(keep)))


def build_kernel(gcc: str | None, directory: Path | None = None) -> tuple[str | None, str]:
    """(the C triad library, "gcc VERSION"), built with gcc once into the cache directory;
    (None, why not) when there is no gcc or it cannot build the kernel."""
    if gcc is None:
        return None, "no gcc"
    try:
        version = subprocess.run([gcc, "-dumpfullversion", "-dumpversion"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, f"{gcc} does not run"
    directory = directory or cache_dir()
    if not _private(directory):
        return None, f"{directory} is not a private directory"
    key = zlib.crc32("\0".join((C_SOURCE, " ".join(CFLAGS), version,
                                 _cpu_signature())).encode())
    lib = directory / f"triad-{key:08x}.so"
    if lib.is_file():
        return str(lib), f"gcc {version} (cached)"
    source = directory / f"triad-{key:08x}.{os.getpid()}.c"
    partial = directory / f"triad-{key:08x}.{os.getpid()}.so"
    try:
        source.write_text(C_SOURCE, encoding="utf-8")
        done = subprocess.run([gcc, *CFLAGS, "-o", str(partial), str(source)],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["?"])[0]
            return None, f"gcc cannot build the C triad ({first})"
        os.replace(partial, lib)  # atomic: a concurrent run sees the whole library or none
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"gcc cannot build the C triad ({exc})"
    finally:
        for leftover in (source, partial):
            leftover.unlink(missing_ok=True)
    return str(lib), f"gcc {version}"


def _load(lib: str) -> Any:
    triad = ctypes.CDLL(lib).nt_triad
    triad.restype = ctypes.c_long
    triad.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long,
                      ctypes.c_double, ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int,
                      ctypes.c_int, ctypes.POINTER(ctypes.c_double),
                      ctypes.POINTER(ctypes.c_int)]
    return triad


def c_triad(lib: str, b: Any, c: Any, scalar: float = SCALAR,
            cpus: list[int] | None = None) -> list[float]:
    """a = b + scalar*c by the C kernel over the caller's values (sequences of floats)."""
    n = len(b)
    arrays = [(ctypes.c_double * n)(), (ctypes.c_double * n)(*b), (ctypes.c_double * n)(*c)]
    allowed = os.sched_getaffinity(0)
    cpus = cpus or sorted(allowed)[:1]
    times, threads = (ctypes.c_double * 2)(), ctypes.c_int(0)
    try:
        _load(lib)(*arrays, n, scalar, 1, (ctypes.c_int * len(cpus))(*cpus), len(cpus), 0,
                   times, ctypes.byref(threads))
    finally:
        os.sched_setaffinity(0, allowed)  # the calling thread ran as the kernel's thread 0
    return list(arrays[0])


def measure_c(lib: str, cpus: list[int], elements: int, iters: int) -> dict[str, Any]:
    """The C kernel, one thread per CPU, `elements` per thread."""
    triad = _load(lib)
    n = elements * len(cpus)
    # anonymous mappings: untouched pages, placed by the first write of the pinned threads
    maps = [mmap.mmap(-1, n * 8) for _ in range(3)]
    arrays = [(ctypes.c_double * n).from_buffer(m) for m in maps]
    times, threads = (ctypes.c_double * (2 * iters))(), ctypes.c_int(0)
    try:
        wrong = triad(*arrays, n, SCALAR, iters, (ctypes.c_int * len(cpus))(*cpus), len(cpus),
                      1, times, ctypes.byref(threads))
        nodes = numabind.page_nodes(ctypes.addressof(arrays[0]), n * 8)
    finally:
        arrays.clear()  # the mappings close only once nothing points into them
        for m in maps:
            m.close()
    bytes_per_iter = 3 * 8 * n
    gbps = [bytes_per_iter / (times[2 * i + 1] - times[2 * i]) / 1e9 for i in range(iters)]
    return {"kernel": C_KERNEL, "gbps": gbps, "procs": threads.value, "elements": elements,
            "bytes_per_iter": bytes_per_iter, "check": wrong == 0 and threads.value == len(cpus),
            "mem_nodes_seen": list(nodes) if nodes else None}


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
    return {"kernel": NUMPY_KERNEL, "gbps": gbps, "procs": len(cpus), "elements": elements,
            "bytes_per_iter": bytes_per_iter, "check": all(r["ok"] for r in got),
            "mem_nodes_seen": nodes or None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodetune.bench.stream")
    parser.add_argument("--elements", type=int, required=True, help="array elements per process")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--cpus", required=True, help="CPU list, one process per CPU")
    parser.add_argument("--membind", type=int, default=None, help="bind memory to this node")
    parser.add_argument("--kernel", default=None, metavar="LIB",
                        help="the C triad library (build_kernel()); without it, numpy")
    args = parser.parse_args(argv)

    cpus = cpulist.parse(args.cpus)
    bound = None
    if args.membind is not None:
        try:
            numabind.set_mempolicy(numabind.MPOL_BIND, (args.membind,))  # the children inherit it
            bound = args.membind
        except OSError:  # e.g. a container's seccomp profile without CAP_SYS_NICE
            bound = None
    result = None
    if args.kernel:
        try:
            result = measure_c(args.kernel, cpus, args.elements, args.iters)
        except OSError as exc:  # the library does not load here: numpy measures instead
            note = f"C triad not loaded ({exc})"
    if result is None:
        result = measure(cpus, args.elements, args.iters)
        if args.kernel:
            result["kernel_note"] = note
    if args.membind is not None:
        result["membind"] = bound
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
