"""Wall time of `nodetune check --tier quick`, interpreter start included (median of 20 runs).

    .venv/bin/python tests/bench/check_speed.py [--runs 20] [--against PATH]

Measures, each as a fresh process exactly as Slurm or kubelet would start it
(`python -m nodetune check ...`):
- `python -c pass` (the floor any Python tool pays),
- `nodetune check --tier quick` on the live host,
- the same on the real 2x H200 VM tree (tests/fixtures) with its recorded NVML,
- the same with `--max-age 60` (a cached result, as back-to-back job starts get),
- `--from-agent --profile auto` answered from a fresh agent answer file, written first by one
  real `nodetune agent --once --check-file` cycle on the tree (which gets a synthetic boot id:
  the capture has none), against the full `--profile auto` check of the same tree; the
  ratio of the two medians is printed (this tree only: a reference may predate the option).
Prints median / min / 90th percentile wall time and the median CPU time (user+sys) per case;
CPU time is the steadier figure on a busy machine. The target: < 0.3 s on a 2-core machine.

`--against PATH` also runs a reference checkout (e.g. `git worktree add /tmp/ref main`),
alternating with this tree run by run so that both see the same machine load, and prints the
ratio of the medians (this tree / reference; below 1 is faster). Each tree gets its own cache
directory. nodetune's modules are byte-compiled first, as an installed package is (with
PYTHONDONTWRITEBYTECODE set, Python would otherwise compile every module on every start).
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "tests/fixtures/hosts/h200x2-vm-gather.tar.gz"
NVML = REPO / "tests/fixtures/nvml/h200x2-vm.json"


@dataclass
class Checkout:
    label: str
    path: Path
    env: dict[str, str]
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    codes: set[int] = field(default_factory=set)


def measure_once(argv: list[str], env: dict[str, str], into: Checkout) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # cwd: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                          check=False, cwd=into.path)
    into.walls.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    into.cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    into.codes.add(proc.returncode)
    if proc.returncode == 3:
        sys.exit(f"{into.label}: {' '.join(argv)} failed: {proc.stderr.decode().strip()}")


def line(label: str, walls: list[float], cpus: list[float], codes: set[int]) -> str:
    walls = sorted(walls)
    p90 = walls[int(0.9 * (len(walls) - 1))]
    return (f"{label:<54} median {statistics.median(walls) * 1000:6.0f} ms  "
            f"min {walls[0] * 1000:5.0f} ms  p90 {p90 * 1000:5.0f} ms  "
            f"cpu {statistics.median(cpus) * 1000:5.0f} ms  exit {sorted(codes)}")


def run_case(label: str, args: list[str], checkouts: list[Checkout], runs: int
             ) -> tuple[float, float]:
    """Warm up, then run each checkout in turn, `runs` times; print each and the ratio.
    `{cache}` in `args` becomes the checkout's own cache directory."""
    argvs = [[sys.executable, *(a.replace("{cache}", c.env["NODETUNE_CACHE_DIR"]) for a in args)]
             for c in checkouts]
    for rounds in (2, runs):  # 2: warm the page cache and nodetune's suite cache
        for c in checkouts:
            c.walls, c.cpus, c.codes = [], [], set()
        for _ in range(rounds):
            for c, argv in zip(checkouts, argvs, strict=True):
                measure_once(argv, c.env, c)
    for c in checkouts:
        name = f"{label} [{c.label}]" if len(checkouts) > 1 else label
        print(line(name, c.walls, c.cpus, c.codes))
    if len(checkouts) == 2:
        cur, ref = checkouts
        wall = statistics.median(cur.walls) / statistics.median(ref.walls)
        cpu = statistics.median(cur.cpus) / statistics.median(ref.cpus)
        print(f"{'':<54} ratio {cur.label}/{ref.label}: wall {wall:.3f}  cpu {cpu:.3f}")
    return statistics.median(checkouts[0].walls), statistics.median(checkouts[0].cpus)


IN_PROCESS = """
import statistics, sys, time
t0 = time.perf_counter()
from nodetune.check.fastpath import stored_answer
from nodetune.check.options import parse, request_fields
from nodetune.views.check_text import render_text
imported = time.perf_counter() - t0
times = []
for _ in range(200):
    t0 = time.perf_counter()
    values = parse(sys.argv[1:])
    doc = stored_answer(values, request_fields(values))
    render_text(doc)
    times.append(time.perf_counter() - t0)
assert doc is not None and doc.get("from_agent")
print(f"{'check --from-agent in process':<54} imports {imported * 1000:6.1f} ms  "
      f"parse + read + render: median {statistics.median(times) * 1000:.2f} ms")
"""


def in_process(checkout: Checkout, argv: list[str]) -> str:
    """The fast path's own cost, without the interpreter's start: its imports (once), then
    parsing the command line, reading and checking the answer and rendering it (median of 200)."""
    return subprocess.run([sys.executable, "-c", IN_PROCESS, *argv], env=checkout.env,
                          check=True, capture_output=True, text=True,
                          cwd=checkout.path).stdout.rstrip()


def agent_answer(checkout: Checkout, tree: Path, on_tree: list[str], tmp: str) -> dict[str, str]:
    """Give the tree a (synthetic) boot id, run one agent cycle that writes its answer file,
    and return the environment that points `check --from-agent` at it."""
    boot = tree / "proc/sys/kernel/random/boot_id"
    boot.parent.mkdir(parents=True, exist_ok=True)
    boot.write_text("5b0e7c1e-0000-4000-8000-synthetic0001\n")
    answer = os.path.join(tmp, "agent-check.json")
    node = on_tree[on_tree.index("--root"):]
    subprocess.run([sys.executable, "-m", "nodetune", "agent", "--once", "--kubernetes", "off",
                    "--check-file", answer, *node], env=checkout.env, check=True,
                   stdout=subprocess.DEVNULL, cwd=checkout.path)
    return {**checkout.env, "NODETUNE_AGENT_CHECK_FILE": answer}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--against", type=Path, default=None, metavar="PATH",
                        help="a reference checkout of nodetune to run alternately")
    args = parser.parse_args()
    trees = [("current", REPO)]
    if args.against is not None:
        if not (args.against / "nodetune" / "__main__.py").is_file():
            sys.exit(f"--against {args.against}: not a nodetune checkout")
        trees.append(("reference", args.against.resolve()))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"Python {sys.version.split()[0]}, {args.runs} runs each"
          + "".join(f"; {label} {path}" for label, path in trees))
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = []
        for label, path in trees:
            compileall.compile_dir(str(path / "nodetune"), quiet=1)
            cache = os.path.join(tmp, f"cache-{label}")
            os.mkdir(cache, 0o700)
            checkouts.append(Checkout(label, path, {**os.environ, "PYTHONPATH": str(path),
                                                    "NODETUNE_CACHE_DIR": cache}))
        hosts = os.path.join(tmp, "hosts")
        with tarfile.open(TREE) as tar:
            tar.extractall(hosts, filter="fully_trusted")
        tree = next(p for p in Path(hosts).iterdir() if p.is_dir())
        check = ["-m", "nodetune", "check", "--tier", "quick"]
        on_tree = [*check, "--root", str(tree), "--nvml", str(NVML)]
        cases = [
            ("python -c pass", ["-c", "pass"]),
            ("check --tier quick (live host)", check),
            ("check --tier quick (h200x2 tree + NVML)", on_tree),
            ("check --tier quick --max-age 60 (cached)",
             [*on_tree, "--max-age", "60", "--cache-file", "{cache}/result.json"]),
        ]
        for label, argv in cases:
            run_case(label, argv, checkouts, args.runs)
        current = checkouts[0]
        with_agent = Checkout(current.label, current.path,
                              agent_answer(current, tree, on_tree, tmp))
        full = run_case("check --profile auto (h200x2 tree, full)", [*on_tree, "--profile",
                        "auto"], [with_agent], args.runs)
        fast = run_case("check --from-agent --profile auto (agent's answer)",
                        [*on_tree, "--profile", "auto", "--from-agent"], [with_agent], args.runs)
        if with_agent.codes != {0}:
            sys.exit("check --from-agent did not answer healthy from the agent's answer")
        print(f"{'':<54} ratio from-agent/full: wall {fast[0] / full[0]:.3f}  "
              f"cpu {fast[1] / full[1]:.3f}")
        print(in_process(with_agent, [*on_tree[3:], "--profile", "auto", "--from-agent"]))


if __name__ == "__main__":
    main()
