"""Benchmark: `nodetune fleet report` over 10,000 synthetic node reports.

    .venv/bin/python tests/bench/fleet_report.py [--nodes 10000] [--clean-nodes 10000]
                                                 [--no-summaries] [--keep DIR]

Generates (tests/bench/fleet_synth.py) a fleet with planted drift and benchmark outliers and a
clean fleet with natural noise only, each report with the footer `fleet collect` writes
(--no-summaries: without, so that every report is read whole, as agent /report documents
are), then runs `nodetune fleet report DIR --json` on each as a new process (interpreter
start included) and checks the answer against what was planted:
every planted drift and outlier found (recall), nothing else reported (precision), nothing at
all on the clean fleet. Then the same run with `--html` is timed.

Figures: wall time, CPU time, peak RSS (resource.getrusage RUSAGE_CHILDREN: the largest of the
processes) and the peak of the summed RSS of the process and its worker processes (sampled
with psutil every 20 ms). Targets on 2 cores (`taskset -c 0,1`): 10,000 nodes under 1.5 s,
50,000 under 6 s (in between: linear), under 500 MB. Exit status 1 when a target is missed or
the answer is wrong. BEFORE holds the figures of the code before the parallel typed decoding
(nodetune c97efab), printed next to the new ones.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET_BYTES = 500 * 10**6
# before (c97efab, stdlib json, 2 CPUs of the 2-core machine): 10,000 nodes, 31.6 KiB each
BEFORE = {"fleet report --json": (7.88, 9.79, 125),  # wall s, cpu s, tree rss MiB
          "fleet report --json (clean)": (7.29, 10.85, 119),
          "fleet report --json --html": (15.76, 17.68, 150)}


def target_s(nodes: int) -> float:
    """1.5 s for 10,000 nodes, 6 s for 50,000; linear in between and beyond."""
    return 1.5 + (nodes - 10_000) * (6.0 - 1.5) / 40_000 if nodes > 10_000 else 1.5


def _synth() -> Any:
    spec = importlib.util.spec_from_file_location("fleet_synth", HERE / "fleet_synth.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleet_synth"] = module
    spec.loader.exec_module(module)
    return module


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_report(directory: Path, *extra: str) -> dict[str, Any]:
    """Run `nodetune fleet report DIR --json` in a new process; figures and its document."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [sys.executable, "-m", "nodetune", "fleet", "report", str(directory), "--json",
            *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1, 2):
        raise SystemExit(f"fleet report failed (exit {proc.returncode}): {err.decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime)
            + (after.ru_stime - before.ru_stime),
            "maxrss_bytes": after.ru_maxrss * 1024, "tree_rss_bytes": peak[0],
            "exit_code": proc.returncode, "doc": json.loads(out)}


def found(doc: dict[str, Any]) -> tuple[dict[str, set[str]], dict[str, set[str]],
                                        dict[str, set[str]]]:
    """(drift fact -> minority hosts, metric key -> outlier hosts, critical setting -> hosts)."""
    drift: dict[str, set[str]] = {}
    for group in doc["drift"]:
        for fact in group["facts"]:
            hosts = {h for m in fact["minority"] for h in m["nodes"]}
            drift.setdefault(fact["fact"], set()).update(hosts)
    outliers: dict[str, set[str]] = {}
    for m in doc["outliers"]["metrics"]:
        if m["outliers"]:
            outliers[m["key"]] = {o["host"] for o in m["outliers"]}
    critical = {s["id"]: set(s["failed_nodes"]) for s in doc["settings"]
                if s["severity"] == "critical" and s["nodes_failed"]}
    return drift, outliers, critical


def check(doc: dict[str, Any], truth: Any) -> list[str]:
    """What the report got wrong about the planted truth (empty: all found, nothing else)."""
    problems = []
    drift, outliers, critical = found(doc)
    for fact in sorted(set(drift) | set(truth.drift)):
        want, got = truth.drift.get(fact, set()), drift.get(fact, set())
        if want != got:
            problems.append(f"drift {fact}: missed {sorted(want - got)}, "
                            f"not planted {sorted(got - want)}")
    for prefix, want in sorted(truth.outliers.items()):
        got = {h for key, hosts in outliers.items() if key.startswith(prefix) for h in hosts}
        if want != got:
            problems.append(f"outliers {prefix}: missed {sorted(want - got)}, "
                            f"not planted {sorted(got - want)}")
    stray = {key for key in outliers if not key.startswith(tuple(truth.outliers))}
    if stray:
        problems.append(f"outliers in metrics nothing was planted in: {sorted(stray)[:10]}")
    if critical != truth.critical:
        problems.append(f"critical settings: planted {truth.critical}, found {critical}")
    return problems


def _print(label: str, n: int, r: dict[str, Any]) -> None:
    s = r["doc"]["summary"]
    print(f"{label:<28} {n:>6} nodes  wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s  "
          f"maxrss {r['maxrss_bytes'] / 2**20:6.0f} MiB  "
          f"tree rss {r['tree_rss_bytes'] / 2**20:6.0f} MiB  | drift facts {s['drift_facts']}, "
          f"outliers {s['outliers']} on {s['outlier_nodes']} nodes, exit {r['exit_code']}")
    if n == 10_000 and label in BEFORE:
        wall, cpu, tree = BEFORE[label]
        print(f"{'  before (c97efab)':<28} {n:>6} nodes  wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
              f"{'':18}tree rss {tree:6.0f} MiB  | x{wall / r['wall_s']:.1f} faster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--clean-nodes", type=int, default=10_000)
    parser.add_argument("--no-summaries", action="store_true",
                        help="reports without their fleet summary: every file read whole")
    parser.add_argument("--keep", type=Path, default=None,
                        help="generate into (and keep) this directory")
    args = parser.parse_args(argv)
    synth = _synth()
    ram = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    base = args.keep or Path(tempfile.mkdtemp(prefix="nodetune-fleet-bench-", dir=ram))
    try:
        start = time.perf_counter()
        seeds = synth.build_seeds(base / "seeds")
        planted_dir, clean_dir = base / "planted", base / "clean"
        summaries = not args.no_summaries
        truth = synth.generate(seeds, planted_dir, args.nodes, inject=True, seed=1,
                               summaries=summaries)
        clean_truth = synth.generate(seeds, clean_dir, args.clean_nodes, inject=False, seed=2,
                                     summaries=summaries)
        size = sum(p.stat().st_size for p in planted_dir.iterdir())
        print(f"generated {args.nodes} + {args.clean_nodes} reports in "
              f"{time.perf_counter() - start:.1f} s ({size / args.nodes / 1024:.1f} KiB a node)")
        print(f"planted: drift {({k: len(v) for k, v in truth.drift.items()})}, outliers "
              f"{({k: len(v) for k, v in truth.outliers.items()})}, critical "
              f"{({k: len(v) for k, v in truth.critical.items()})}")
        from nodetune.fleet import load

        print(f"decoder: {'msgspec' if load.HAVE_MSGSPEC else 'json (msgspec not installed)'}; "
              f"{'reports with' if summaries else 'reports without'} fleet summaries")
        planted = run_report(planted_dir)
        _print("fleet report --json", args.nodes, planted)
        clean = run_report(clean_dir)
        _print("fleet report --json (clean)", args.clean_nodes, clean)
        html_path = base / "fleet.html"
        html = run_report(planted_dir, "--html", str(html_path))
        _print("fleet report --json --html", args.nodes, html)
        print(f"HTML report: {html_path.stat().st_size / 1024:.0f} KiB")
        problems = check(planted["doc"], truth) + \
            [f"clean fleet: {p}" for p in check(clean["doc"], clean_truth)]
        for r, n in ((planted, args.nodes), (clean, args.clean_nodes)):
            if r["wall_s"] > target_s(n):
                problems.append(f"{r['wall_s']:.2f} s is over the {target_s(n):g} s target "
                                f"for {n} nodes")
            if max(r["maxrss_bytes"], r["tree_rss_bytes"]) > TARGET_BYTES:
                problems.append("memory over the 500 MB target")
        for p in problems:
            print(f"FAIL {p}")
        if not problems:
            print("OK: every planted drift, outlier and critical finding found, nothing else; "
                  f"targets < {target_s(args.nodes):g} s, < 500 MB met")
        return 1 if problems else 0
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
