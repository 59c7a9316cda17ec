"""A snapshot replays anywhere: every read-only command prints the same from `--root TREE` as
from `--from SNAPSHOT` taken of that tree, on every fixture node.

Nodes: every real tree in tests/fixtures/hosts, the synthetic DGX H100 and GB200 trees (with
their NVML recordings), and every snapshot in tests/fixtures/snapshots (there the pair is
`--from S` against `--from` a snapshot of that replay). Each node is snapshotted once per session
with `nodetune snapshot`, as a user would.

Only what legitimately differs is normalised, each in `normalise` with its reason: the node's
name (the tree's path against the snapshot's), timings, and the check cache key derived from the
source's path. The snapshot's file name is padded so that it names the node with as many
characters as the tree's path, and text is rendered 1000 columns wide: layouts (column widths,
padding) then come out the same and the name, never wrapped, is the only thing replaced.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodetune.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
REAL_TREES = sorted(p.name.split(".tar")[0] for p in (FIXTURES / "hosts").glob("*.tar*")
                    if not p.name.startswith("synthetic-"))
SYNTHETIC = ("synthetic-dgx-h100", "synthetic-gb200-tray")
SNAPSHOTS = sorted(p.name.split(".tar")[0] for p in (FIXTURES / "snapshots").glob("*.tar.gz"))
NODES = [*REAL_TREES, *SYNTHETIC, *(f"snapshot-{name}" for name in SNAPSHOTS)]

# Every read-only command that reads the node, in each of its output forms (the commands that
# do not read a node, `collectors` and `profiles`, have nothing to compare). "{out}" is a
# directory of its own for each run; files written there are compared too. Forms one run can
# give at once share it: each run gathers the facts anew.
COMMANDS: dict[str, list[str]] = {
    "facts": ["facts"],
    "facts-json": ["facts", "--json"],
    "topo": ["topo"],
    "topo-json-svg": ["topo", "--json", "--svg", "{out}/topo.svg"],
    "audit": ["audit"],
    "audit-json-junit": ["audit", "--json", "--junit", "{out}/audit.xml"],
    "check": ["check", "--verbose", "--cache-file", "{out}/check-cache.json"],
    "check-json": ["check", "--json", "--cache-file", "{out}/check-cache.json"],
    "manifests": ["manifests"],
    "manifests-json-files": ["manifests", "--target", "all", "--json", "-o", "{out}/manifests"],
    "bind-dry-run": ["bind", "--dry-run", "--local-rank", "0"],
    "bind-json-nic": ["bind", "--json", "--nic-env", "--mem-policy", "preferred",
                      "--local-rank", "1"],
}

_TIMINGS = (
    re.compile(r'("(?:seconds|started_at|finished_at|duration_s|elapsed_s)": ?)'
               r'(?:"[0-9T:.Z-]+"|[-0-9.e]+)'),
    re.compile(r'( time=")[0-9.]+(")'),  # JUnit
)
_CACHE_KEY = re.compile(r'("cache_key": ?")\w+(")')


@dataclass(frozen=True)
class Pair:
    """One node read two ways: `direct` (its tree, or a fixture snapshot) and `replay` (the
    snapshot taken of it); the names by which each run's output may call the node."""

    direct: tuple[str, ...]
    replay: tuple[str, ...]
    direct_names: tuple[str, ...]
    replay_names: tuple[str, ...]
    nvml: str | None  # the NVML recording the direct run is given, if any


def _short_dir() -> Path:
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="nt-", dir=where))


def _padded_snapshot(base: Path, index: int, length: int) -> Path:
    """A snapshot path whose `snapshot:PATH` name is `length` characters long."""
    folder = base / f"{index:02d}"
    folder.mkdir()
    pad = length - len("snapshot:") - len(str(folder)) - len("/.tar.gz")
    assert pad >= 1, f"the node's name is too short ({length}) to pad a snapshot path to it"
    return folder / ("s" * pad + ".tar.gz")


def _snapshot(source: tuple[str, ...], out: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["snapshot", *source, "-o", str(out)])
    assert exc.value.code in (0, None), f"nodetune snapshot {' '.join(source)} failed"


@pytest.fixture(scope="session")
def pairs(host_tree: Callable[[str], Path],
          synthetic_host: Callable[[str], object]) -> Iterator[Callable[[str], Pair]]:
    """pairs(node) -> its Pair, the snapshot taken once per session."""
    base = _short_dir()
    made: dict[str, Pair] = {}

    def get(node: str) -> Pair:
        if node in made:
            return made[node]
        nvml: str | None = None
        if node.startswith("snapshot-"):
            fixture = str((FIXTURES / "snapshots" / f"{node[9:]}.tar.gz").resolve())
            direct: tuple[str, ...] = ("--from", fixture)
            name = f"snapshot:{fixture}"
            direct_names: tuple[str, ...] = (name,)
        else:
            if node in SYNTHETIC:
                host = synthetic_host(node)
                root, nvml = str(host.root), str(host.nvml)  # type: ignore[attr-defined]
                direct = ("--root", root, "--nvml", nvml)
            else:
                root = str(host_tree(node))
                direct = ("--root", root)
            name = root
            direct_names = (f"root:{root}", root)
        out = _padded_snapshot(base, len(made), len(name))
        _snapshot(direct, out)
        # A replay may also name what it was taken from: the snapshot keeps the gpu
        # collector's note on why NVML was not used ("NVML not used for --root TREE").
        made[node] = Pair(direct=direct, replay=("--from", str(out)), direct_names=direct_names,
                          replay_names=(f"snapshot:{out}", *direct_names), nvml=nvml)
        return made[node]

    yield get
    shutil.rmtree(base, ignore_errors=True)


def normalise(text: str, names: tuple[str, ...], nvml: str | None) -> str:
    # The NVML recording is named by its path on both sides; a synthetic tree keeps it inside
    # the tree, so it is set apart before the tree's path is replaced.
    if nvml:
        text = text.replace(nvml, "<nvml>")
    # Where the node came from: `root:TREE` or the tree's path against `snapshot:FILE`.
    for name in names:
        text = text.replace(name, "<node>")
    # How long collectors, checks and the audit took.
    for pattern in _TIMINGS:
        text = pattern.sub(lambda m: m.group(1) + "0" + (m.group(2) if m.lastindex == 2 else ""),
                           text)
    # `check` keys its result cache by the source's path and modification time (or boot id).
    return _CACHE_KEY.sub(r"\1<key>\2", text)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def outputs(pair: Pair, command: str, source: tuple[str, ...], names: tuple[str, ...],
            out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    """Exit code, stdout, stderr and every file written, normalised."""
    out.mkdir()
    head, *rest = COMMANDS[command]
    argv = [head, *source, *(a.replace("{out}", str(out)) for a in rest)]
    code, stdout, stderr = run(argv, capsys)
    # Each run writes its files into a directory of its own, which the messages name.
    stdout, stderr = (text.replace(str(out), "<out>") for text in (stdout, stderr))
    files = {str(p.relative_to(out)): normalise(p.read_text(encoding="utf-8"), names, pair.nvml)
             for p in sorted(out.rglob("*")) if p.is_file() and p.name != "check-cache.json"}
    return {"exit code": code, "stdout": normalise(stdout, names, pair.nvml),
            "stderr": normalise(stderr, names, pair.nvml), "files": files}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("node", NODES)
def test_replay_prints_what_the_tree_prints(pairs: Callable[[str], Pair], node: str,
                                            command: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Wide enough that no table cell wraps the node's name, which is then replaced whole.
    monkeypatch.setenv("COLUMNS", "1000")
    pair = pairs(node)
    capsys.readouterr()  # what `nodetune snapshot` printed, when this test took the snapshot
    direct = outputs(pair, command, pair.direct, pair.direct_names, tmp_path / "a", capsys)
    replay = outputs(pair, command, pair.replay, pair.replay_names, tmp_path / "b", capsys)
    assert replay == direct, _differences(direct, replay)


def _differences(direct: dict[str, object], replay: dict[str, object]) -> str:
    """A unified diff (tree first, replay second) of every output that differs."""
    flat = {}
    for side in (direct, replay):
        files = side["files"]
        assert isinstance(files, dict)
        flat[id(side)] = {**{k: str(v) for k, v in side.items() if k != "files"},
                          **{f"file {name}": text for name, text in files.items()}}
    a, b = flat[id(direct)], flat[id(replay)]
    parts = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) != b.get(key):
            diff = difflib.unified_diff((a.get(key) or "").splitlines(),
                                        (b.get(key) or "").splitlines(),
                                        "tree", "replay", lineterm="", n=1)
            parts.append(f"{key}:\n" + "\n".join(list(diff)[:40]))
    return "\n".join(parts)
