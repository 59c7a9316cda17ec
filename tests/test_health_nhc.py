"""checks/nhc/nodetune.nhc, the LBNL NHC check `check_nodetune`, sourced into bash as NHC
sources its scripts and run as NHC runs a check, against stand-in `nodetune` executables giving
exit 0, 1, 3 and a hang, and against the real nodetune on the captured 2x H200 VM.

NHC itself is not packaged for Debian, so the harness below implements the parts of NHC's
driver (https://github.com/mej/nhc, `nhc`, version 1.4.3 and later) that a check meets:
- checks run in NHC's own shell with globbing off (`set -f` after loading scripts/*.nhc),
  invoked by `nhcmain_run_checks` as `eval $CHECK; RET=$?`; a check that returns non-zero
  without calling die() is failed by the driver (`die $RET "Check $CHECK returned $RET"`);
- `die [RET] MSG`: RET defaults to 1; sets CHECK_DIED=1, logs "Health check failed:  MSG",
  queues it for syslog, marks the node offline with that note and exits with RET (the whole
  NHC run ends);
- `log` writes to stdout unless SILENT, `dbg` to stderr when DEBUG, `syslog MSG` queues a line
  that NHC sends with logger at the end of the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "checks" / "nhc" / "nodetune.nhc"
NVML = REPO / "tests" / "fixtures" / "nvml" / "h200x2-vm.json"

HARNESS = r"""
SILENT=0 DEBUG=${DEBUG:-0} CHECK_DIED=0
function log() { (( !SILENT )) && printf '%s\n' "$*"; }
function dbg() { (( DEBUG )) && printf 'DEBUG:  %s\n' "$*" >&2; return 0; }
function syslog() { printf '%s\n' "$*" >> "$SYSLOG_FILE"; }
function die() {
    local RET=1
    if [[ -n "$1" && "$1" == +([0-9]) ]]; then RET="$1"; shift; fi
    CHECK_DIED=1
    log "Health check failed:  $*"
    syslog "Health check failed:  $*"
    printf '%s\n' "$*" > "$OFFLINE_FILE"
    exit "$RET"
}
shopt -s extglob
. "$MODULE"
set -f
CHECK="$1"
eval $CHECK
RET=$?
if [[ "$RET" != 0 && "$CHECK_DIED" == 0 ]]; then
    die "$RET" "Check $CHECK returned $RET"
fi
exit 0
"""


class Nhc:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.harness = tmp_path / "nhc-harness.sh"
        self.harness.write_text(HARNESS)
        self.syslog = tmp_path / "syslog"
        self.offline = tmp_path / "offline"
        self.args = tmp_path / "args"

    def fake(self, rc: int, stdout: str = "", stderr: str = "", sleep: int = 0) -> Path:
        """A stand-in nodetune that records its arguments and answers with `rc`."""
        path = self.tmp / f"nodetune-{rc}-{sleep}"
        path.with_suffix(".out").write_text(stdout + "\n")
        path.with_suffix(".err").write_text(stderr + "\n")
        path.write_text(f"#!/bin/sh\necho \"$@\" > {self.args}\n"
                        + (f"sleep {sleep}\n" if sleep else "")
                        + f"cat {path}.out\ncat {path}.err >&2\nexit {rc}\n")
        path.chmod(0o755)
        return path

    def run(self, check: str, nodetune: Path | str | None, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
        for f in (self.syslog, self.offline, self.args):
            f.unlink(missing_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("NODETUNE_")}
        base.update({"MODULE": str(MODULE), "SYSLOG_FILE": str(self.syslog),
                     "OFFLINE_FILE": str(self.offline),
                     "NODETUNE_DEFAULTS": str(self.tmp / "no-defaults"),
                     "NODETUNE_CACHE_DIR": str(self.tmp / "cache")})
        if nodetune is not None:
            base["NODETUNE"] = str(nodetune)
        return subprocess.run(["bash", str(self.harness), check], env={**base, **env},
                              capture_output=True, text=True, timeout=timeout, check=False)

    def offline_note(self) -> str | None:
        return self.offline.read_text().strip() if self.offline.exists() else None

    def logged(self) -> str:
        return self.syslog.read_text() if self.syslog.exists() else ""

    def argv(self) -> list[str]:
        return self.args.read_text().split()


@pytest.fixture
def nhc(tmp_path: Path) -> Nhc:
    return Nhc(tmp_path)


def test_healthy_passes_and_asks_the_slurm_scripts_question(nhc: Nhc) -> None:
    proc = nhc.run("check_nodetune", nhc.fake(0, "nodetune: healthy (quick: 12 passed)"))
    assert proc.returncode == 0, proc.stderr
    assert nhc.offline_note() is None and nhc.logged() == ""
    assert nhc.argv() == ["check", "--tier", "quick", "--from-agent", "--max-age", "360",
                          "--timeout", "30", "--profile", "auto"]


def test_unhealthy_dies_with_the_summary_as_the_offline_note(nhc: Nhc) -> None:
    fake = nhc.fake(1, "nodetune: GPU count 4 (expected 8)\n  FAIL NT1001 gpu.count: x")
    proc = nhc.run("check_nodetune -t quick", fake)
    assert proc.returncode == 1
    assert nhc.offline_note() == "nodetune: GPU count 4 (expected 8)"
    assert "Health check failed:  nodetune: GPU count 4 (expected 8)" in proc.stdout


@pytest.mark.parametrize(("rc", "stderr"), [
    (3, "nodetune: error: cannot read NVML recording; fix: record it again"),
    (2, "Usage: nodetune check [OPTIONS]"), (137, "")])
def test_no_result_is_logged_and_never_takes_the_node_offline(nhc: Nhc, rc: int,
                                                               stderr: str) -> None:
    note = "nodetune: not using the agent's answer: none; running the full check"
    proc = nhc.run("check_nodetune", nhc.fake(rc, "", f"{note}\n{stderr}" if stderr else note))
    assert proc.returncode == 0, proc.stdout
    assert nhc.offline_note() is None
    line = f"check_nodetune:  nodetune check could not run (exit {rc}): {stderr or 'no output'}"
    assert nhc.logged() == line + "\n"
    assert line in proc.stdout


def test_a_missing_nodetune_never_takes_the_node_offline(nhc: Nhc) -> None:
    proc = nhc.run("check_nodetune", nhc.tmp / "not-installed")
    assert proc.returncode == 0 and nhc.offline_note() is None
    assert "could not run (exit 127): nodetune: error: " in nhc.logged()


def test_nodetune_named_in_the_defaults_file_outside_nhc_s_path(nhc: Nhc) -> None:
    """NHC sets PATH=/sbin:/usr/sbin:/bin:/usr/bin before running checks (nhcmain_init_env)."""
    defaults = nhc.tmp / "defaults"
    defaults.write_text(f"NODETUNE={nhc.fake(1, 'nodetune: GPU count 4 (expected 8)')}\n")
    proc = nhc.run("check_nodetune", None, NODETUNE_DEFAULTS=str(defaults),
                   PATH="/sbin:/usr/sbin:/bin:/usr/bin")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert nhc.offline_note() == "nodetune: GPU count 4 (expected 8)"


def test_a_hang_is_cut_short_and_passes(nhc: Nhc) -> None:
    proc = nhc.run("check_nodetune -T 1", nhc.fake(1, "nodetune: late", sleep=30), timeout=20)
    assert proc.returncode == 0 and nhc.offline_note() is None
    assert "could not run (exit 124)" in nhc.logged()


def test_on_error_drain_from_the_defaults_file(nhc: Nhc) -> None:
    defaults = nhc.tmp / "defaults"
    defaults.write_text("NODETUNE_ON_ERROR=drain\nNODETUNE_CHECK_ARGS='--expect-gpus 8'\n")
    proc = nhc.run("check_nodetune", nhc.fake(3, "", "nodetune: error: x"),
                   NODETUNE_DEFAULTS=str(defaults))
    assert proc.returncode == 1
    assert nhc.offline_note() == "nodetune: check could not run (exit 3)"
    assert nhc.argv()[-4:] == ["--expect-gpus", "8", "--profile", "auto"]


def test_options_and_arguments_reach_nodetune_check(nhc: Nhc) -> None:
    fake = nhc.fake(0, "nodetune: healthy")
    assert nhc.run("check_nodetune -t standard -p dgx-h100 -a 90 --mount /scratch",
                   fake).returncode == 0
    assert nhc.argv() == ["check", "--tier", "quick", "--from-agent", "--max-age", "90",
                          "--timeout", "30", "--mount", "/scratch", "--tier", "standard",
                          "--profile", "dgx-h100"]
    assert nhc.run("check_nodetune -n", fake).returncode == 0
    assert nhc.argv() == ["check", "--tier", "quick", "--max-age", "60", "--timeout", "30"]
    # a profile in the arguments is the agent's question too: no --profile auto added
    assert nhc.run("check_nodetune --profile=h200", fake).returncode == 0
    assert nhc.argv()[-1] == "--profile=h200"


def test_nodetune_stays_inside_nhc_s_timeout(nhc: Nhc) -> None:
    """NHC's watchdog ends the run after $TIMEOUT s: nodetune gets what is left, less 5 s."""
    fake = nhc.fake(0, "nodetune: healthy")
    assert nhc.run("check_nodetune", fake, TIMEOUT="20").returncode == 0
    assert nhc.argv()[nhc.argv().index("--timeout") + 1] == "15"
    assert nhc.run("check_nodetune", fake, TIMEOUT="5").returncode == 0
    assert not nhc.args.exists()  # no time left: not run, logged, passed
    assert "no time left within NHC's TIMEOUT=5" in nhc.logged()


@pytest.mark.parametrize("check", ["check_nodetune -x", "check_nodetune -a soon"])
def test_a_bad_nhc_conf_line_fails_as_nhc_checks_do(nhc: Nhc, check: str) -> None:
    proc = nhc.run(check, nhc.fake(0, "nodetune: healthy"))
    assert proc.returncode == 1
    assert (nhc.offline_note() or "").startswith("check_nodetune:  ")
    assert not nhc.args.exists()


def test_the_real_nodetune_on_a_captured_node(nhc: Nhc, host_tree) -> None:
    nodetune = Path(sys.executable).parent / "nodetune"
    root = host_tree("h200x2-vm-gather")
    tree = f"--root {root} --nvml {NVML}"
    proc = nhc.run(f"check_nodetune -n {tree}", nodetune)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert nhc.offline_note() is None and nhc.logged() == ""
    proc = nhc.run(f"check_nodetune -n {tree} --expect-gpus 4", nodetune)
    assert proc.returncode == 1
    assert nhc.offline_note() == "nodetune: GPU count 2 (expected 4)"
    bad = nhc.tmp / "nvml.json"
    bad.write_text(NVML.read_text().replace('"devices": [', '"devices": {"x": [', 1) + "}")
    proc = nhc.run(f"check_nodetune -n --root {root} --nvml {bad}", nodetune)
    assert proc.returncode == 0 and nhc.offline_note() is None
    assert "could not run (exit 3): nodetune: error: " in nhc.logged()
