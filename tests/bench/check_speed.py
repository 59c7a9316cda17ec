"""Wall time of `nodetune check --tier quick`, interpreter start included (median of 20 runs).

    .venv/bin/python tests/bench/check_speed.py [--runs 20] [--nodetune PATH]

Measures, each as a fresh process exactly as Slurm or kubelet would start it:
- `python -c pass` (the floor any Python tool pays),
- `nodetune check --tier quick` on the live host,
- the same on the real 2x H200 VM tree (tests/fixtures) with its recorded NVML,
- the same with `--max-age 60` (a cached result, as back-to-back job starts get).
Prints median / min / 90th percentile wall time and the median CPU time (user+sys) per case;
CPU time is the steadier figure on a busy machine. The target: < 0.3 s on a 2-core machine.
nodetune's modules are byte-compiled first, as an installed package is (with
PYTHONDONTWRITEBYTECODE set, Python would otherwise compile every module on every start).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "tests/fixtures/hosts/h200x2-vm-gather.tar.gz"
NVML = REPO / "tests/fixtures/nvml/h200x2-vm.json"


def measure(argv: list[str], runs: int) -> tuple[list[float], list[float], set[int]]:
    walls, cpus, codes = [], [], set()
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        codes.add(proc.returncode)
        if proc.returncode == 3:
            sys.exit(f"{' '.join(argv)} failed: {proc.stderr.decode().strip()}")
    return walls, cpus, codes


def report(label: str, walls: list[float], cpus: list[float], codes: set[int]) -> None:
    walls = sorted(walls)
    p90 = walls[int(0.9 * (len(walls) - 1))]
    print(f"{label:<44} median {statistics.median(walls) * 1000:6.0f} ms  "
          f"min {walls[0] * 1000:5.0f} ms  p90 {p90 * 1000:5.0f} ms  "
          f"cpu {statistics.median(cpus) * 1000:5.0f} ms  exit {sorted(codes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nodetune", default=str(Path(sys.executable).parent / "nodetune"))
    args = parser.parse_args()
    import compileall

    import nodetune

    compileall.compile_dir(os.path.dirname(nodetune.__file__), quiet=1)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"Python {sys.version.split()[0]}, {args.runs} runs each")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(TREE) as tar:
            tar.extractall(tmp, filter="fully_trusted")
        tree = next(p for p in Path(tmp).iterdir() if p.is_dir())
        cache = os.path.join(tmp, "cache.json")
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("check --tier quick (live host)", [args.nodetune, "check", "--tier", "quick"]),
            ("check --tier quick (h200x2 tree + NVML)",
             [args.nodetune, "check", "--tier", "quick", "--root", str(tree), "--nvml", str(NVML)]),
            ("check --tier quick --max-age 60 (cached)",
             [args.nodetune, "check", "--tier", "quick", "--root", str(tree), "--nvml", str(NVML),
              "--max-age", "60", "--cache-file", cache]),
        ]
        for label, argv in cases:
            measure(argv, 2)  # warm the page cache and nodetune's suite cache
            report(label, *measure(argv, args.runs))


if __name__ == "__main__":
    main()
