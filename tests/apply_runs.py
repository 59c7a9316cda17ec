"""What the apply, rollback and tune tests share: nodetune run in the foreground or in the
background (its own TMPDIR, so that its children can be found), byte-for-byte snapshots of a
tree, the lock and the state files of a root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STATE = "var/lib/nodetune/state"
_STATE_PARENTS = ("var", "var/lib", "var/lib/nodetune")


def nodetune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodetune", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300, check=False,
                          env=env)


def snapshot(root: Path, *, with_state: bool = True) -> dict[str, tuple[str, bytes | str, int]]:
    """Every entry under root by relative path: kind, content or link target, mode.

    The lock every apply and rollback takes is left out (empty when none runs); without
    `with_state`, so is nodetune's state directory and the directories made for it."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if not with_state and (rel_dir == _STATE_PARENTS[-1]
                               or rel_dir.startswith(_STATE_PARENTS[-1] + "/")):
            continue
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel == f"{STATE}/.lock" or (not with_state and rel in _STATE_PARENTS):
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                out[rel] = ("link", os.readlink(path), 0)
            elif stat.S_ISDIR(info.st_mode):
                out[rel] = ("dir", "", stat.S_IMODE(info.st_mode))
            else:
                out[rel] = ("file", Path(path).read_bytes(), stat.S_IMODE(info.st_mode))
    return out


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nodetune: error: "), lines[0]
    return lines[0]


def faulty_tree(host_tree: Any, into: Path) -> Path:
    """A copy of the real 2x H200 VM tree with THP `always` (and swappiness 60, as captured):
    two settings for an apply to fix."""
    root = into / "node"
    shutil.copytree(host_tree("h200x2-vm-gather"), root, symlinks=True)
    (root / "sys/kernel/mm/transparent_hugepage/enabled").write_text("[always] madvise never\n")
    (root / "etc").mkdir()
    return root


class Run:
    """`nodetune apply|rollback|tune` started in the background, with its own TMPDIR."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.tmp = tmp / "tmpdir"
        self.tmp.mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.tmp)}
        self.proc = subprocess.Popen([sys.executable, "-m", "nodetune", *args], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def children(self, word: bytes) -> list[int]:
        """Live processes started by this run (its TMPDIR, or one below it) whose command line
        holds `word`."""
        marker = f"TMPDIR={self.tmp}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or entry.name == str(self.proc.pid):
                continue
            try:
                if word not in (entry / "cmdline").read_bytes():
                    continue
                variables = (entry / "environ").read_bytes().split(b"\0")
                # Ansible itself runs with a TMPDIR inside the run's own
                if any(v == marker or v.startswith(marker + b"/") for v in variables):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
        return found

    def ansible(self) -> list[int]:
        """Live ansible-playbook processes (workers included) started by this run."""
        return self.children(b"ansible")

    def task_done(self) -> bool:
        """A task of its Ansible run has finished (ansible-runner's job events in its TMPDIR)."""
        for event in self.tmp.glob("nodetune-runner-*/artifacts/*/job_events/*.json"):
            try:
                if '"event": "runner_on_ok"' in event.read_text(encoding="utf-8"):
                    return True
            except OSError:
                continue
        return False

    def wait_until(self, ready: Any, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "boundary not reached"
            time.sleep(0.05)

    def finish(self) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=600)
        return self.proc.returncode, err

    def left_nothing(self, *words: bytes) -> None:
        """Its temp directories are gone and no ansible-playbook (nor a process whose command
        line holds one of `words`) outlives it."""
        def left() -> list[int]:
            return [pid for word in (b"ansible", *words) for pid in self.children(word)]
        deadline = time.monotonic() + 20
        while left() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left() == [], left()
        leftover = sorted(str(p.relative_to(self.tmp)) for p in self.tmp.rglob("*"))
        assert leftover == [], leftover


def lock_held_by(root: Path, pid: int) -> bool:
    try:
        return (root / STATE / ".lock").read_text().split()[:1] == [str(pid)]
    except OSError:
        return False


def state_files(root: Path) -> list[Path]:
    return sorted((root / STATE).glob("*.json"))
