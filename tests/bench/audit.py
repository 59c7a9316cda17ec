"""Benchmark: how fast `nodetune audit --json` runs on a snapshot. Prints figures, asserts nothing.

    .venv/bin/python tests/bench/audit.py [--repeat 15] [--snapshot FILE.tar.gz]

Without --snapshot it builds the synthetic DGX H100 tree (tests/fixtures/synth.py: 8 GPUs,
8 ConnectX-7, 10 NVMe, 4 NVSwitches, 192 CPUs) and snapshots it with `nodetune snapshot`.
Then:
1. wall time of `nodetune audit --from SNAPSHOT --json` as a new process, interpreter start
   included (min, median, max of --repeat runs), and the same with --root on the tree;
2. inside one process, the median time of each stage: collect facts, derive, match the
   profile, load and validate it, evaluate the rules.

Target (2-core CI machine): `nodetune audit --json` on a snapshot < 0.5 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODETUNE = [sys.executable, "-m", "nodetune"]


def _synth_tree(dest: Path) -> tuple[Path, Path]:
    spec = importlib.util.spec_from_file_location("synth", REPO / "tests/fixtures/synth.py")
    assert spec and spec.loader
    synth = importlib.util.module_from_spec(spec)
    sys.modules["synth"] = synth
    spec.loader.exec_module(synth)
    host = synth.build_dgx_h100(dest)
    return host.root, host.nvml


def _wall(argv: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, check=False, cwd=REPO)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1, 2):
            sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()}")
    return times


def _row(label: str, times: list[float]) -> str:
    return (f"{label:<44} min {min(times) * 1000:7.1f} ms   median "
            f"{statistics.median(times) * 1000:7.1f} ms   max {max(times) * 1000:7.1f} ms")


def _stages(snapshot: Path, repeat: int) -> dict[str, list[float]]:
    from nodetune.audit.operation import run_audit
    from nodetune.facts.derived import derive
    from nodetune.node.source import open_node
    from nodetune.profiles.catalog import Library
    from nodetune.rules.evaluation import evaluate

    out: dict[str, list[float]] = {k: [] for k in ("collect facts", "derive", "match profile",
                                                   "load + validate profile",
                                                   "evaluate rules", "run_audit (all)")}
    for _ in range(repeat):
        t0 = time.perf_counter()
        with open_node(snapshot=str(snapshot)) as node:
            facts = node.facts().to_json()
        t1 = time.perf_counter()
        doc = {**facts, "derived": derive(facts)}
        t2 = time.perf_counter()
        library = Library()
        match = library.match(doc)
        t3 = time.perf_counter()
        profile = library.load(match.profile)
        t4 = time.perf_counter()
        evaluate(profile.rules, doc, profile.variables)
        t5 = time.perf_counter()
        run_audit(facts)
        t6 = time.perf_counter()
        stages = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)
        for key, value in zip(out, stages, strict=True):
            out[key].append(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--snapshot", type=Path, default=None,
                        help="audit this snapshot instead of the synthetic DGX H100")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = None
        if args.snapshot is None:
            tree, nvml = _synth_tree(Path(tmp) / "tree")
            args.snapshot = Path(tmp) / "dgx.tar.gz"
            subprocess.run([*NODETUNE, "snapshot", "--root", str(tree), "--nvml", str(nvml),
                            "-o", str(args.snapshot)], check=True, capture_output=True,
                           cwd=REPO)
        print(f"snapshot: {args.snapshot} ({args.snapshot.stat().st_size // 1024} KiB), "
              f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
        print(_row("nodetune audit --from SNAPSHOT --json",
                   _wall([*NODETUNE, "audit", "--from", str(args.snapshot), "--json"],
                         args.repeat)))
        if tree is not None:
            print(_row("nodetune audit --root TREE --json",
                       _wall([*NODETUNE, "audit", "--root", str(tree), "--nvml", str(nvml),
                              "--json"], args.repeat)))
        print(_row("python -c pass (interpreter start)",
                   _wall([sys.executable, "-c", "pass"], args.repeat)))
        print("stages in one process (median of warm runs):")
        for name, times in _stages(args.snapshot, max(3, args.repeat // 3)).items():
            print(f"  {name:<28} {statistics.median(times[1:] or times) * 1000:7.1f} ms")
    print("target: nodetune audit --json on a snapshot < 500 ms on the 2-core CI machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
