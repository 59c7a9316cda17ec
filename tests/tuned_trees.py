"""A real host tree with TuneD on it: the tree copied, TuneD's profiles laid over it.

The profiles are Debian's (tests/fixtures/tuned, copied from the tuned 2.20 package); the tree
gets /etc/tuned/active_profile naming one of them and, when running, a tuned process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import FIXTURES
from tests.host_trees import write_tree

TUNED_PROFILES = FIXTURES / "tuned"
TUNED_PID = "950"


def with_tuned(tree: Path, dest: Path, active: str | None, *, running: bool = True,
               mode: str = "manual", files: dict[str, str] | None = None) -> Path:
    """A copy of `tree` at `dest` with Debian's TuneD profiles, `active` in
    /etc/tuned/active_profile (None: no such file) and tuned running (its /proc/PID/comm)."""
    shutil.copytree(tree, dest, symlinks=True)
    shutil.copytree(TUNED_PROFILES / "usr", dest / "usr", symlinks=True, dirs_exist_ok=True)
    extra = dict(files or {})
    extra["/etc/tuned/profile_mode"] = f"{mode}\n"
    if active is not None:
        extra["/etc/tuned/active_profile"] = f"{active}\n"
    if running:
        extra[f"/proc/{TUNED_PID}/comm"] = "tuned\n"
    return write_tree(dest, extra)
