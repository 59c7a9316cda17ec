"""Install size of nodetune: `pip install .` against `pip install '.[all]'`. Prints figures.

    python3 tests/bench/install_figures.py [--before DIR] [--spec .[agent] ...]

Each spec is installed into a fresh virtual environment; the figures are what the install
added to it: MiB on disk under site-packages and bin/, and the number of distributions
(pip itself, present in every fresh venv, is not counted). --before DIR measures another
checkout too, e.g. the main branch: `git worktree add /tmp/ref-main main`, then
`--before /tmp/ref-main`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPECS = (".", ".[all]")
LIST_DISTRIBUTIONS = ("import importlib.metadata as m, json; "
                      "print(json.dumps(sorted({d.metadata['Name'].lower() "
                      "for d in m.distributions()})))")


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            file = Path(dirpath, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def measured_dirs(venv: Path) -> list[Path]:
    return [venv / "bin", *venv.glob("lib/python*/site-packages")]


def distributions(venv: Path) -> set[str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", LIST_DISTRIBUTIONS],
                         capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def measure(checkout: Path, spec: str) -> tuple[float, int]:
    """(MiB added, distributions added) by `pip install SPEC` run in `checkout`."""
    with tempfile.TemporaryDirectory(prefix="nodetune-install-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        fresh_bytes = sum(tree_bytes(d) for d in measured_dirs(venv))
        fresh = distributions(venv)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", spec], cwd=checkout, check=True)
        added = sum(tree_bytes(d) for d in measured_dirs(venv)) - fresh_bytes
        return added / 2**20, len(distributions(venv) - fresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path,
                        help="another checkout to measure with `pip install .`")
    parser.add_argument("--spec", action="append", help=f"what to install (default: {SPECS})")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    if args.before:
        rows.append((str(args.before), "."))
    rows += [(str(REPO), spec) for spec in (args.spec or SPECS)]
    print(f"{'checkout':<28} {'pip install':<12} {'MiB':>8} {'distributions':>14}")
    for checkout, spec in rows:
        mib, count = measure(Path(checkout), spec)
        print(f"{checkout:<28} {spec:<12} {mib:8.1f} {count:14d}", flush=True)


if __name__ == "__main__":
    main()
