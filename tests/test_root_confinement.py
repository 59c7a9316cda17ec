"""One root, enforced, and bounded reads: under `--root T` nothing is read from outside T, no
snapshot reads or writes outside its tree, and every read is bounded in size and never blocks.

Every command case compares a sentinel directory outside the tree before and after, and checks
the documented exit code and, for a refusal, one line on stderr without a traceback. The trees
are copies of real captures (tests/fixtures/hosts); the links, FIFOs, sockets and devices put
into them, and the hostile archives, are synthetic and named so.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from nodetune import cli
from nodetune.errors import SourceError
from nodetune.node import snapshot
from nodetune.node.hostroot import MAX_READ_BYTES, UNREADABLE_PATH, HostRoot

REPO = Path(__file__).resolve().parents[1]
SNAPSHOTS = REPO / "tests" / "fixtures" / "snapshots"
SECRET = "SENTINEL-SECRET-not-in-the-tree"


def _state(directory: Path) -> dict[str, tuple[str, str]]:
    """Everything in `directory`: kind and content (or link target) of each entry."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(directory.rglob("*")):
        name = str(path.relative_to(directory))
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_dir():
            found[name] = ("dir", "")
        elif path.is_file():
            found[name] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            found[name] = ("other", oct(path.lstat().st_mode))
    return found


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A directory outside every tree, holding what a confined read must never see."""
    outside = tmp_path / "sentinel"
    (outside / "sub").mkdir(parents=True)
    (outside / "cmdline").write_text(f"{SECRET} quiet\n", encoding="utf-8")
    (outside / "kern.log").write_text(
        f"Dec  3 10:00:00 node kernel: NVRM: Xid (PCI:0000:18:00): 79, {SECRET}\n",
        encoding="utf-8")
    (outside / "sub" / "operstate").write_text(f"{SECRET}\n", encoding="utf-8")
    return outside


@pytest.fixture
def tree(tmp_path: Path, host_tree: Callable[[str], Path]) -> Path:
    """A private copy of a real capture (2x H100 VM), symlinks kept, to plant links in."""
    copy = tmp_path / "tree"
    shutil.copytree(host_tree("h100x2-fc-vm-gather"), copy, symlinks=True)
    return copy


@pytest.fixture
def run(tmp_path: Path, sentinel: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """cli.main(argv) -> (exit code, stdout, stderr); fails if the sentinel changed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("NODETUNE_ROOT", "NODETUNE_DEBUG"):
        monkeypatch.delenv(name, raising=False)

    def call(*argv: str) -> tuple[int, str, str]:
        before = _state(sentinel)
        with pytest.raises(SystemExit) as info:
            cli.main(list(argv))
        out, err = capsys.readouterr()
        assert _state(sentinel) == before
        assert "Traceback" not in err and "internal error" not in err, err
        code = info.value.code
        return (int(code) if isinstance(code, int) else 0 if code is None else 1), out, err

    return call


def _facts(run: Callable[..., tuple[int, str, str]], tree: Path) -> dict:
    code, out, err = run("facts", "--root", str(tree), "--json")
    assert code == 0, err
    assert SECRET not in out and SECRET not in err
    doc: dict = json.loads(out)
    return doc


def _plant(path: Path, target: str | Path) -> None:
    """Replace `path` with a symlink to `target` (synthetic)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.symlink_to(target)


# -- 1. reads resolve inside the root ---------------------------------------------------------

def test_the_real_tree_reads_its_own_cmdline(run, tree: Path) -> None:
    cmdline = (tree / "proc/cmdline").read_text(encoding="utf-8").strip()
    assert _facts(run, tree)["kernel"]["cmdline"] == cmdline


@pytest.mark.parametrize("target", ["/proc/cmdline", "{sentinel}/cmdline",
                                    "../../../../../../../../../../{sentinel}/cmdline"],
                         ids=["host-proc", "absolute-outside", "dotdot-outside"])
def test_a_link_out_of_the_tree_is_followed_inside_it_and_the_fact_is_unknown(
        run, tree: Path, sentinel: Path, target: str) -> None:
    """synthetic: T/proc/cmdline links out of T. Resolved as chroot would, it leads to a
    missing file (or back to itself), so the command line is unknown, never the host's."""
    _plant(tree / "proc/cmdline", target.format(sentinel=str(sentinel).lstrip("/")
                                                if target.startswith("..") else sentinel))
    kernel = _facts(run, tree)["kernel"]
    host = Path("/proc/cmdline").read_text(encoding="utf-8").strip()
    assert kernel["cmdline"] is None
    assert kernel["cmdline"] != host
    assert "cmdline" in kernel["unknown"]


def test_an_absolute_link_inside_the_tree_resolves_against_the_tree(run, tree: Path) -> None:
    """synthetic: /proc/cmdline -> /proc/driver/../cmdline.saved, both inside T."""
    (tree / "proc/cmdline.saved").write_text("from the tree\n", encoding="utf-8")
    _plant(tree / "proc/cmdline", "/proc/driver/../cmdline.saved")
    assert _facts(run, tree)["kernel"]["cmdline"] == "from the tree"


def test_a_directory_link_out_of_the_tree_hides_what_is_outside(
        tree: Path, sentinel: Path) -> None:
    """synthetic: T/var/log -> SENTINEL and T/sys/class/net/eth9 -> SENTINEL/sub. No query
    of HostRoot sees the sentinel's entries or bytes."""
    (tree / "var").mkdir()
    _plant(tree / "var/log", sentinel)
    _plant(tree / "sys/class/net/eth9", f"../../../../../../../..{sentinel}/sub")
    root = HostRoot(str(tree))
    assert root.read_tail("/var/log/kern.log", 1 << 20) is None
    assert root.read_str("/var/log/kern.log", None) is None
    assert root.listdir("/var/log") == []
    assert not root.exists("/var/log/kern.log")
    assert not root.isdir("/var/log")
    assert root.file_mode("/var/log/kern.log") == 0
    assert root.read_str("/sys/class/net/eth9/operstate", None) is None
    assert root.readlink("/var/log") == str(sentinel)  # the link itself is the tree's data
    assert root.islink("/var/log")
    assert root.realpath("/var/log/kern.log") == f"{sentinel}/kern.log"  # a path in T
    assert root.path("/var/log/kern.log") == f"{tree}{sentinel}/kern.log"
    assert not os.path.exists(root.path("/var/log/kern.log"))


def test_a_link_loop_is_unreadable_and_path_leads_nowhere(tree: Path) -> None:
    """synthetic: 41 links in a chain end at an absolute link to the host's /etc/hostname;
    and a self loop. Both are unreadable, and path() gives a path no open() accepts."""
    links = tree / "proc/chain"
    links.mkdir()
    for i in range(41):
        (links / f"l{i}").symlink_to(f"l{i + 1}")
    (links / "l41").symlink_to("/etc/hostname")
    _plant(tree / "proc/cmdline", "/proc/cmdline")
    root = HostRoot(str(tree))
    for hostpath in ("/proc/chain/l0", "/proc/cmdline"):
        assert root.read_bytes(hostpath, None) is None
        assert not root.exists(hostpath)
        assert root.path(hostpath) == UNREADABLE_PATH
    with pytest.raises(NotADirectoryError):
        Path(UNREADABLE_PATH).read_bytes()


def test_gathered_link_files_are_still_followed_inside_the_tree(
        host_tree: Callable[[str], Path]) -> None:
    """The real h200x2 capture stores some links as "<name>.link" files; an absolute target in
    one is relative to the tree."""
    tree = host_tree("h200x2-vm-gather")
    link_files = sorted(tree.rglob("*.link"))
    assert link_files
    root = HostRoot(str(tree))
    for link_file in link_files:
        hostpath = "/" + str(link_file.relative_to(tree))[:-len(".link")]
        target = link_file.read_text(encoding="utf-8").strip()
        assert root.readlink(hostpath) == target
        resolved = root.realpath(hostpath)
        assert root.path(hostpath).startswith(str(tree) + "/") or \
            root.path(hostpath) == UNREADABLE_PATH
        assert not resolved.startswith(str(tree))


# -- 2. bounded reads: size cap, no FIFOs, sockets or devices ---------------------------------

def test_a_fifo_in_place_of_a_sysfs_file_never_hangs_facts(tree: Path, tmp_path: Path) -> None:
    """synthetic: a FIFO (nobody writes to it) as a NIC's operstate and as /proc/cmdline.
    facts finishes, and those facts are unknown."""
    nics = sorted(p.name for p in (tree / "sys/class/net").iterdir())
    nic = next(n for n in nics if n != "lo")
    operstate = (tree / "sys/class/net" / nic).resolve() / "operstate"
    assert operstate.is_file()
    operstate.unlink()
    os.mkfifo(operstate)
    (tree / "proc/cmdline").unlink()
    os.mkfifo(tree / "proc/cmdline")
    env = {**os.environ, "NODETUNE_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    env.pop("NODETUNE_ROOT", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "nodetune", "facts", "--root", str(tree),
                           "--json"], capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 120
    doc = json.loads(done.stdout)
    assert doc["kernel"]["cmdline"] is None
    assert "could not be read" in doc["kernel"]["unknown"]["cmdline"]
    by_name = {n["name"]: n for n in doc["nic"]["interfaces"]}
    assert by_name[nic]["operstate"] is None


def test_a_file_over_the_cap_is_unreadable(tree: Path) -> None:
    """synthetic: a sparse /proc/cmdline one byte over MAX_READ_BYTES."""
    with open(tree / "proc/cmdline", "wb") as fh:
        fh.truncate(MAX_READ_BYTES + 1)
    root = HostRoot(str(tree))
    assert root.read_str("/proc/cmdline", None) is None
    with pytest.raises(Exception, match="larger than 16 MiB"):
        root.read_str("/proc/cmdline")
    with open(tree / "proc/cmdline", "wb") as fh:
        fh.truncate(MAX_READ_BYTES)
    assert len(root.read_bytes("/proc/cmdline")) == MAX_READ_BYTES
    assert len(root.read_tail("/proc/cmdline", 4096) or b"") <= 4096


def test_a_socket_or_a_device_in_place_of_a_file_is_unreadable(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """synthetic: a listening unix socket as /proc/meminfo, and (as root) a character device
    node (1:5, /dev/zero) as /proc/cmdline: refused without reading, path() leads nowhere."""
    (tree / "proc/meminfo").unlink()
    monkeypatch.chdir(tree / "proc")  # a short name for bind()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("meminfo")
        sock.listen()
        root = HostRoot(str(tree))
        with pytest.raises(Exception, match="is a socket, not a regular file"):
            root.read_text("/proc/meminfo")
        assert root.path("/proc/meminfo") == UNREADABLE_PATH
    if os.geteuid() != 0:
        return
    (tree / "proc/cmdline").unlink()
    os.mknod(tree / "proc/cmdline", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    root = HostRoot(str(tree))
    with pytest.raises(Exception, match="is a device, not a regular file"):
        root.read_text("/proc/cmdline")
    assert root.read_tail("/proc/cmdline", 100) is None
    assert root.path("/proc/cmdline") == UNREADABLE_PATH
    assert stat.S_ISCHR(root.file_mode("/proc/cmdline"))  # what it is may be asked


# -- 3. snapshots stay inside their tree ------------------------------------------------------

def _archive_bytes(path: Path) -> bytes:
    """Every member's name, link target and content, decompressed."""
    out = []
    with tarfile.open(path) as tar:
        for member in tar:
            out += [member.name.encode(), member.linkname.encode()]
            data = tar.extractfile(member) if member.isreg() else None
            if data is not None:
                out.append(data.read())
    return b"\n".join(out)


def test_snapshot_of_a_tree_with_links_out_reads_nothing_outside_it(
        run, tree: Path, sentinel: Path, tmp_path: Path) -> None:
    """synthetic links in a real tree: /proc/cmdline and /sys/class/net/eth9/operstate lead
    out of T (absolute and by ..), /var/log is a link to the sentinel. The snapshot holds
    none of the sentinel's bytes, T is unchanged, and its replay has the command line
    unknown."""
    _plant(tree / "proc/cmdline", sentinel / "cmdline")
    (tree / "sys/class/net/eth9").mkdir()
    _plant(tree / "sys/class/net/eth9/operstate",
           f"../../../../../../../../..{sentinel}/sub/operstate")
    (tree / "var").mkdir()
    _plant(tree / "var/log", sentinel)
    before = _state(tree)
    out = tmp_path / "out" / "t.tar.gz"
    out.parent.mkdir()
    code, _, err = run("snapshot", "--root", str(tree), "-o", str(out))
    assert code == 0, err
    assert _state(tree) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.tar.gz"]
    assert SECRET.encode() not in _archive_bytes(out)
    code, text, err = run("facts", "--from", str(out), "--json")
    assert code == 0, err
    assert json.loads(text)["kernel"]["cmdline"] is None and SECRET not in text


def _fixture_snapshot() -> dict[str, bytes]:
    with tarfile.open(SNAPSHOTS / "h200x2-fc-vm.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar if m.name in ("meta.json", "nvml.json", "tree.json")}


def _write_snapshot(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_resnapshot_of_a_hostile_tree_json_writes_nothing_outside(
        run, sentinel: Path, tmp_path: Path) -> None:
    """synthetic: the real h200x2 snapshot with tree.json edited: /sys/evil an absolute link
    to the sentinel and /sys/evil2 a .. link to it, each with a file "below" it, and
    /proc/cmdline a link to the sentinel's file. Replaying and re-snapshotting it write
    nothing outside, and the re-snapshot holds nothing of the sentinel."""
    members = _fixture_snapshot()
    doc = json.loads(members["tree.json"])
    doc["links"]["/sys/evil"] = str(sentinel)
    doc["files"]["/sys/evil/planted"] = "written through a link\n"
    doc["links"]["/sys/evil2"] = "../" * 12 + str(sentinel).lstrip("/") + "/sub"
    doc["files"]["/sys/evil2/planted"] = "written through a link\n"
    del doc["files"]["/proc/cmdline"]
    doc["links"]["/proc/cmdline"] = str(sentinel / "cmdline")
    members["tree.json"] = json.dumps(doc).encode()
    evil = _write_snapshot(tmp_path / "evil.tar.gz", members)
    code, text, err = run("facts", "--from", str(evil), "--json")
    assert code == 0, err
    assert json.loads(text)["kernel"]["cmdline"] is None and SECRET not in text
    new = tmp_path / "new.tar.gz"
    code, _, err = run("snapshot", "--from", str(evil), "-o", str(new))
    assert code == 0, err
    assert not list(sentinel.rglob("planted"))
    data = _archive_bytes(new)
    assert SECRET.encode() not in data and b"written through a link" not in data


# -- 4. snapshot loading is streamed and bounded -----------------------------------------------

ZEROS_MIB = gzip.compress(bytes(1 << 20), compresslevel=9)  # 1 MiB of zeros, ~1 KiB


def _bomb(path: Path, head: bytes, mib: int) -> Path:
    """synthetic: `head` then `mib` MiB of zeros, as a multi-member gzip stream (~1 KiB per
    MiB), built without compressing anything large."""
    path.write_bytes(gzip.compress(head) + ZEROS_MIB * mib)
    return path


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    return info.tobuf(tarfile.GNU_FORMAT)


def _meta_member() -> bytes:
    meta = _fixture_snapshot()["meta.json"]
    padding = bytes(-len(meta) % tarfile.BLOCKSIZE)
    return _header("meta.json", len(meta)) + meta + padding


def _refused_quickly(run, argv: list[str], why: str) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        code, _, err = run(*argv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 3, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nodetune: error: "), err
    assert why in err, err
    assert time.monotonic() - started < 20
    assert peak < 48 << 20, f"{peak >> 20} MiB held while refusing"


@pytest.mark.parametrize("limit", [None, "1TiB"], ids=["default-limit", "limit-1TiB"])
def test_a_gzip_bomb_is_refused_in_one_line_without_unpacking_it(
        run, tmp_path: Path, limit: str | None) -> None:
    """synthetic: 200 MiB of zeros compressed, three ways: no tar at all, a GNU long-name
    header announcing 200 MiB, and a tree.json of 200 MiB. Each is refused at once, holding
    a few MiB at most, also with --snapshot-limit 1TiB (no MemoryError)."""
    extra = ["--snapshot-limit", limit] if limit else []
    cases = [
        (b"", "no meta.json"),
        (_header("././@LongLink", 200 << 20, tarfile.GNUTYPE_LONGNAME),
         "a tar header is larger than 1 MiB"),
        (_meta_member() + _header("tree.json", 200 << 20),
         "tree.json is 200 MiB, more than the 64 MiB a replay holds in memory"),
    ]
    for i, (head, why) in enumerate(cases):
        bomb = _bomb(tmp_path / f"bomb{i}.tar.gz", head, 200)
        assert bomb.stat().st_size < 1 << 20
        _refused_quickly(run, ["snapshot", "--from", str(bomb), "-o",
                               str(tmp_path / "never.tar.gz"), *extra], why)
        assert not (tmp_path / "never.tar.gz").exists()
    _refused_quickly(run, ["facts", "--from", str(bomb)], "tree.json is 200 MiB")


def test_the_size_limit_is_checked_at_each_member_header(
        run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """synthetic: a snapshot without tree.json whose root/ holds a 200 MiB file: refused at
    its header under NODETUNE_SNAPSHOT_LIMIT=64MiB and under --snapshot-limit 64MiB; nothing
    is left in the temporary directory."""
    head = _meta_member() + _header("root/", 0, tarfile.DIRTYPE) + \
        _header("root/sys/big", 200 << 20)
    bomb = _bomb(tmp_path / "big.tar.gz", head, 200)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tempfile.tempdir = None
    monkeypatch.setattr(snapshot, "_memory_tmp", lambda: None)
    try:
        _refused_quickly(run, ["snapshot", "--from", str(bomb), "-o", str(tmp_path / "n.tgz"),
                               "--snapshot-limit", "64MiB"], "unpacks to more than 64 MiB")
        monkeypatch.setenv("NODETUNE_SNAPSHOT_LIMIT", "64MiB")
        _refused_quickly(run, ["facts", "--from", str(bomb)], "unpacks to more than 64 MiB")
    finally:
        tempfile.tempdir = None
    assert list((tmp_path / "tmp").iterdir()) == []
    monkeypatch.setenv("NODETUNE_SNAPSHOT_LIMIT", "lots")
    code, _, err = run("facts", "--from", str(bomb))
    assert code == 3 and "snapshot limit 'lots' is not a size" in err


def test_the_member_count_is_limited(sentinel: Path, tmp_path: Path) -> None:
    """synthetic: 51 empty files under root/ against a limit of 50 members."""
    members = {"meta.json": _fixture_snapshot()["meta.json"],
               **{f"root/f{i}": b"" for i in range(48)}}
    path = _write_snapshot(tmp_path / "many.tar.gz", members)
    before = _state(sentinel)
    with pytest.raises(SourceError, match="it has more than 40 members"), \
            snapshot.open_snapshot(str(path), snapshot.Limits(members=40)):
        pass
    with snapshot.open_snapshot(str(path), snapshot.Limits(members=49)) as node:
        assert node.root.listdir("/") == [f"f{i}" for i in sorted(range(48), key=str)]
    assert _state(sentinel) == before
