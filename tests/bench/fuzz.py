"""A longer fuzz campaign over the real captures: the cases of tests/test_fuzz.py, round robin
over the targets, for --seconds; prints the figures (cases, outcomes by exit code, failures by
class) and, for each class of failure, one case to reproduce with the place it failed.

    .venv/bin/python tests/bench/fuzz.py [--seconds 600] [--seed 20] [--only nvml,fio]
    .venv/bin/python tests/bench/fuzz.py --seconds 60 --only state   # rollback's state files

Target: 0 failures. The tree, work directory, cache and HOME are temporary; nothing is written
elsewhere (the fixtures are checked before and after).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--only", default="", help="comma-separated targets (default: all)")
    ap.add_argument("--first-case", type=int, default=0, help="start at this case number")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from tests import test_fuzz as fz

    names = [n for n in args.only.split(",") if n] or sorted(fz.TARGETS)
    base = Path(tempfile.mkdtemp(prefix="nodetune-fuzz-"))
    (base / "unpacked").mkdir()
    (base / "home").mkdir()
    with tarfile.open(fz.FIXTURES / "hosts" / "h200x2-vm-gather.tar.gz") as tar:
        tar.extractall(base / "gather", filter="tar")
    tree = base / "gather" / "node"
    os.environ.update(HOME=str(base / "home"), NODETUNE_CACHE_DIR=str(base / "cache"))
    for var in ("NODETUNE_ROOT", "NODETUNE_PROFILES_DIR", "NODETUNE_DEBUG"):
        os.environ.pop(var, None)
    fz.bench_cmd._facts = fz.facts_doc  # type: ignore[attr-defined]
    watched = (fz.FIXTURES, REPO / "profiles", REPO / "checks")
    before = fz.stat_digest(*watched)
    fuzzers = {}
    for name in names:
        work = base / f"work-{name}"
        work.mkdir()
        fuzzers[name] = fz.Fuzzer(work, tree, seed=args.seed)
    os.chdir(base)
    deadline = time.monotonic() + args.seconds
    case = args.first_case
    examples: dict[str, fz.Outcome] = {}
    while time.monotonic() < deadline:
        for name in names:
            outcome = fuzzers[name].run_case(fz.TARGETS[name], case)
            key = f"{name}:{outcome.failure}"
            if outcome.failure and key not in examples:
                examples[key] = outcome
                outcome.note = _where(fuzzers[name], name, case)
        case += 1
    outcomes = [o for f in fuzzers.values() for o in f.campaign.outcomes]
    wrote = fz.stat_digest(*watched) != before
    print(f"seed {args.seed}, {args.seconds:.0f} s, cases {len(outcomes)}")
    for name in names:
        mine = [o for o in outcomes if o.target == name]
        codes = Counter(o.code for o in mine)
        fails = sum(1 for o in mine if o.failure)
        slowest = max((o.seconds for o in mine), default=0.0)
        print(f"  {name:<13} cases {len(mine):5}  failures {fails:4}  slowest {slowest:5.1f} s  "
              "exit " + " ".join(f"{c}:{n}" for c, n in sorted(codes.items(), key=str)))
    by_class = Counter(f"{o.target}:{o.failure}" for o in outcomes if o.failure)
    print("failures by class:" + ("" if by_class else " none"))
    for key, n in by_class.most_common():
        ex = examples[key]
        print(f"  {key:<32} {n:5}  e.g. case {ex.case}: nodetune {' '.join(ex.argv)}")
        print(f"      {ex.err.strip().splitlines()[-1][:300] if ex.err.strip() else '(no stderr)'}")
        if ex.note:
            print("      " + ex.note.replace("\n", "\n      "))
    print(f"written outside the work directory: {'YES' if wrote else 'nothing'}")
    shutil.rmtree(base, ignore_errors=True)
    return 1 if by_class or wrote else 0


def _where(fuzzer: object, name: str, case: int) -> str:
    """Run the case again with NODETUNE_DEBUG=1: the last frames of the traceback."""
    from tests import test_fuzz as fz

    os.environ["NODETUNE_DEBUG"] = "1"
    try:
        f = fz.Fuzzer(fuzzer.work, fuzzer.tree, seed=fuzzer.seed)  # type: ignore[attr-defined]
        outcome = f.run_case(fz.TARGETS[name], case)
    except BaseException:  # any failure of the rerun is the answer
        return traceback.format_exc(limit=-3)
    finally:
        del os.environ["NODETUNE_DEBUG"]
    lines = [ln for ln in outcome.err.splitlines() if ln.startswith("  File ")]
    return "\n".join(lines[-3:])


if __name__ == "__main__":
    sys.exit(main())
