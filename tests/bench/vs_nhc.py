"""`nodetune check --tier quick` against LBNL NHC (Node Health Check) on this machine.

    .venv/bin/python tests/bench/vs_nhc.py [--runs 20] [--nhc PATH] [--conf FILE]
                                           [--nhc-scripts DIR]

NHC is the health check most Slurm sites run as HealthCheckProgram, so it is the yardstick
for nodetune's quick tier: both are started as a fresh process, exactly as slurmd starts
them, in alternating pairs so that both see the same machine load. NHC runs with the
configuration `nhc-genconf` writes for this machine (hardware, filesystems, processes), or with
--conf FILE; nodetune with its quick tier and no cached result. Prints the median and minimum
wall time and the median CPU time (user+sys of the process and its children: NHC forks
`ps`, `df` and friends) of each, then the ratios nodetune / NHC (the goal: 0.6 or less).

Where NHC comes from: Ubuntu (universe) and EPEL package it as `lbnl-nhc`
(`apt-get install lbnl-nhc`, `dnf install lbnl-nhc`); Debian does not. Its source is
https://github.com/mej/nhc (`./autogen.sh && ./configure --prefix=/usr --sysconfdir=/etc
--libexecdir=/usr/libexec && make install`). The script looks for `nhc` on PATH, in /usr/sbin
and in $NHC (or --nhc); without it, it says so and times nodetune alone. An NHC that is not
installed (a source checkout) needs --nhc-scripts DIR, its scripts/ directory: NHC finds its
checks only in INCDIR (/etc/nhc/scripts), and with none found it runs no check and exits 0, so
the script first runs NHC once verbosely and stops unless every configured check passed.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WHERE = ("LBNL NHC not found: install it (Ubuntu/EPEL package lbnl-nhc; Debian has none) or "
         "build https://github.com/mej/nhc, or give --nhc PATH / $NHC")


@dataclass
class Case:
    label: str
    argv: list[str]
    env: dict[str, str]
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    codes: set[int] = field(default_factory=set)

    def once(self) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(self.argv, env=self.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, check=False)
        self.walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        self.codes.add(proc.returncode)
        if proc.returncode not in (0, 1):
            sys.exit(f"{self.label}: exit {proc.returncode}: {proc.stderr.decode().strip()}")

    def line(self) -> str:
        return (f"{self.label:<40} median {statistics.median(self.walls) * 1000:7.1f} ms  "
                f"min {min(self.walls) * 1000:7.1f} ms  "
                f"cpu {statistics.median(self.cpus) * 1000:7.1f} ms  exit {sorted(self.codes)}")


def find_nhc(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("NHC"), shutil.which("nhc"), "/usr/sbin/nhc"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def generate_conf(nhc: str, directory: str, settings: list[str]) -> str:
    """nhc-genconf's configuration for this machine (next to nhc, or on PATH)."""
    genconf = shutil.which("nhc-genconf", path=f"{os.path.dirname(nhc)}:{os.environ['PATH']}")
    if genconf is None:
        sys.exit("nhc-genconf not found next to nhc: give --conf FILE")
    conf = os.path.join(directory, "nhc.conf.auto")
    # its exit status is that of its last line, `[[ $VERBOSE == 1 ]] && echo done.`: 1 without
    # -v (nhc-genconf of NHC 1.4.3 and 1.5, https://github.com/mej/nhc); judge by what it wrote
    subprocess.run([genconf, "-c", conf, *settings], check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    if count_checks(conf) == 0:
        sys.exit(f"nhc-genconf wrote no checks to {conf}: give --nhc-scripts DIR or --conf FILE")
    return conf


def count_checks(conf: str) -> int:
    if not os.path.exists(conf):
        return 0
    return sum(1 for line in Path(conf).read_text().splitlines()
               if "||" in line and not line.lstrip().startswith("#"))


def verify_nhc(nhc: str, conf: str, settings: list[str], env: dict[str, str],
               checks: int) -> None:
    """Stop unless NHC, run as timed, loads its checks and passes every one of them."""
    proc = subprocess.run([nhc, "-v", "-l", "-", "-c", conf, *settings], env=env,
                          capture_output=True, text=True, check=False)
    passed = re.search(r"completed successfully; (\d+) passed", proc.stdout)
    if proc.returncode == 0 and passed and int(passed.group(1)) == checks:
        return
    if proc.returncode == 0:
        sys.exit(f"NHC ran {passed.group(1) if passed else 'no'} of the {checks} checks: its "
                 "check scripts were not found; give --nhc-scripts DIR (NHC's scripts/)")
    failed = [line for line in proc.stdout.splitlines() if "Health check failed" in line]
    sys.exit(f"NHC fails on this machine (exit {proc.returncode}): "
             f"{failed[0] if failed else proc.stderr.strip()}; give --conf FILE without that "
             "check, so that NHC runs all of its checks")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nhc", default=None, help="the nhc executable")
    parser.add_argument("--conf", default=None, help="NHC configuration (default: nhc-genconf)")
    parser.add_argument("--nhc-scripts", default=None, metavar="DIR",
                        help="NHC's check scripts (*.nhc), where NHC is not installed")
    args = parser.parse_args()
    compileall.compile_dir(str(REPO / "nodetune"), quiet=1)  # as an installed package is
    nhc = find_nhc(args.nhc)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO), "NODETUNE_CACHE_DIR": tmp}
        cases = [Case("nodetune check --tier quick",
                      [sys.executable, "-m", "nodetune", "check", "--tier", "quick"], env)]
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
              f"Python {sys.version.split()[0]}, {args.runs} runs each, alternating")
        if nhc is None:
            print(f"{WHERE}; timing nodetune alone")
        else:
            # INCDIR: NHC's checks; RUNDIR: its PID file, here rather than in /var/run/nhc
            scripts = [f"INCDIR={args.nhc_scripts}"] if args.nhc_scripts else []
            conf = args.conf or generate_conf(nhc, tmp, scripts)
            checks = count_checks(conf)
            print(f"NHC: {nhc}, configuration {conf} ({checks} checks)")
            # MARK_OFFLINE=0: report only, never drain this machine; -l: no log file
            settings = [*scripts, f"RUNDIR={tmp}", "MARK_OFFLINE=0"]
            verify_nhc(nhc, conf, settings, env, checks)
            cases.append(Case("nhc (nhc-genconf configuration)" if not args.conf else "nhc",
                              [nhc, "-c", conf, "-l", os.devnull, *settings], env))
        for rounds in (2, args.runs):  # 2: warm the page cache and nodetune's suite cache
            for case in cases:
                case.walls, case.cpus, case.codes = [], [], set()
            for _ in range(rounds):
                for case in cases:
                    case.once()
        for case in cases:
            print(case.line())
        if len(cases) == 2:
            ours, theirs = cases
            wall = statistics.median(ours.walls) / statistics.median(theirs.walls)
            cpu = statistics.median(ours.cpus) / statistics.median(theirs.cpus)
            print(f"ratio nodetune/NHC: wall {wall:.2f}  cpu {cpu:.2f}  (goal: 0.6 or less)")


if __name__ == "__main__":
    main()
