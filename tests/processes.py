"""Stop the daemons a test started (slurmctld, slurmd, munged...), newest first."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


def stop_all(procs: Sequence[subprocess.Popen[bytes] | subprocess.Popen[str]]) -> None:
    """SIGTERM each, newest first, then wait up to 10 s for each and kill what is left."""
    for proc in reversed(procs):
        proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
