"""Snapshots: one node captured into a .tar.gz that replays anywhere with `--from FILE`.

`nodetune snapshot -o FILE.tar.gz` runs every collector over a HostRoot that remembers what it
read, listed, probed and resolved, then writes exactly that:

    meta.json   schema nodetune.snapshot/1: nodetune and tool versions, creation time, host
                name, how NVML was used, what was left out
    nvml.json   the NVML dump the gpu collector saw (nodetune.nvml/1), when NVML was used
    tree.json   the same tree as root/, as one document: replays read it into memory
                (nodetune.node.memroot) instead of unpacking thousands of small files
    root/       the files read (with the bytes the collectors saw), listed directories with
                their entries (files as empty placeholders), and every symlink on the way

Safe to share by construction: only allow-listed host paths enter `root/` (/proc without
per-process directories, except the `comm` of the GPU daemons the services collector looks
for; /sys without serial numbers and UUIDs; from /etc only sysctl, modprobe, modules-load,
grub and kernel command line files, systemd unit links and os-release; from /dev only the
names of the IMEX channel devices), the kernel log only as its NVIDIA Xid lines, no environment,
no command lines, no NVML serial numbers. docs/snapshots.md lists it all.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import platform
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

from nodetune import __version__
from nodetune.collectors import NodeFacts, kernel_log
from nodetune.collectors.gpu import GpuFacts
from nodetune.collectors.gpudirect_stack import LIB_DIRS, SONAMES
from nodetune.collectors.services import COMM_LEN, SERVICES
from nodetune.errors import NodetuneError, SourceError
from nodetune.node.hostroot import HostRoot
from nodetune.node.memroot import MemoryRoot, tree_document
from nodetune.node.model import Node
from nodetune.node.nvml import RecordedNvml
from nodetune.schemas import SNAPSHOT_SCHEMA

META: Final = "meta.json"
NVML_FILE: Final = "nvml.json"
TREE_FILE: Final = "tree.json"
ROOT_DIR: Final = "root"
MAX_UNPACKED_BYTES: Final = 512 << 20  # the archive's members together, unpacked
MAX_MEMBERS: Final = 200_000  # the largest snapshot taken holds ~1,500
MAX_IN_MEMORY_BYTES: Final = 64 << 20  # tree.json, meta.json, nvml.json each (largest ~200 KiB)
SNAPSHOT_FIX: Final = "give a .tar.gz written by `nodetune snapshot -o FILE.tar.gz`"

# Host paths a snapshot may hold besides /proc and /sys (a directory allows what is under it).
ALLOWED_ELSEWHERE: Final = (
    "/etc/sysctl.conf", "/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d", "/lib/sysctl.d",
    "/etc/modprobe.conf", "/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d",
    "/usr/lib/modprobe.d", "/lib/modprobe.d",
    "/etc/modules", "/etc/modules-load.d", "/run/modules-load.d",
    "/usr/local/lib/modules-load.d", "/usr/lib/modules-load.d", "/lib/modules-load.d",
    "/etc/default/grub", "/etc/default/grub.d", "/etc/kernel/cmdline",
    "/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system", "/lib/systemd/system", "/run/systemd/container",
    "/etc/os-release", "/usr/lib/os-release",
    "/etc/tuned", "/usr/lib/tuned",  # TuneD's active profile and the profiles it includes
    "/dev/nvidia-caps-imex-channels",  # channel device names only, kept as empty files
    "/var/lib/kubelet/plugins/compute-domain.nvidia.com",  # only whether it exists
    # the soname links of libibverbs and NCCL (their targets name the versions), nothing else
    *(f"{d}/{n}" for d in LIB_DIRS for n in SONAMES),
)
# The running kernel's build options (/boot/config-<release>), no other file of /boot.
_KERNEL_CONFIG: Final = re.compile(r"^/boot/config-[^/]+$")
# Never, even under an allowed prefix.
DENIED: Final = (
    "/proc/kcore", "/proc/kmsg", "/proc/kallsyms", "/proc/keys", "/proc/key-users",
    "/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6", "/proc/net/unix",
    "/proc/net/raw", "/proc/net/raw6", "/proc/net/packet", "/proc/net/arp", "/proc/net/route",
    "/sys/firmware/efi/efivars", "/sys/kernel/debug", "/sys/kernel/security",
)
# The reading process's own view of mounts and cgroups, kept under /proc/self.
SELF_FILES: Final = ("mounts", "mountinfo", "cgroup", "status")
_SELF_LINKS: Final = ("/proc/self", "/proc/thread-self")
_PID: Final = re.compile(r"^/proc/(\d+)(?:/(.*))?$")
_SECRET_LEAF: Final = re.compile(r"serial|uuid|asset_tag", re.IGNORECASE)


# -- capture ---------------------------------------------------------------------------------

class CapturingRoot(HostRoot):
    """A HostRoot that also keeps the bytes and listings the collectors saw, and what they
    probed, so the snapshot replays exactly the node they described."""

    def __init__(self, root: str = "/") -> None:
        super().__init__(root, recording=True)
        self.contents: dict[str, bytes] = {}
        self.listings: dict[str, list[str]] = {}
        self.probed: set[str] = set()

    def _read_bytes(self, hostpath: str) -> bytes:
        data = super()._read_bytes(hostpath)
        self.contents.setdefault(hostpath, data)
        return data

    def listdir(self, hostpath: str) -> list[str]:
        entries = super().listdir(hostpath)
        self.listings.setdefault(hostpath, entries)
        return entries

    def exists(self, hostpath: str) -> bool:
        self.probed.add(hostpath)
        return super().exists(hostpath)

    def isdir(self, hostpath: str) -> bool:
        self.probed.add(hostpath)
        return super().isdir(hostpath)

    def islink(self, hostpath: str) -> bool:
        self.probed.add(hostpath)
        return super().islink(hostpath)


class CachingNvml:
    """Wraps an NVML backend so the snapshot stores the very dump the gpu collector used."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.origin = getattr(backend, "origin", "live")
        self.recorded: dict[str, Any] | None = None

    def dump(self) -> dict[str, Any]:
        if self.recorded is None:
            self.recorded = self.backend.dump()
        copy: dict[str, Any] = json.loads(json.dumps(self.recorded))
        return copy

    def close(self) -> None:
        self.backend.close()


def service_process_names() -> frozenset[str]:
    """The /proc/<pid>/comm values the services collector looks for."""
    return frozenset(comm[:COMM_LEN] for comm in SERVICES.values())


def allowed(hostpath: str, kept_pids: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether a host path may enter a snapshot (see the module docstring)."""
    if any(hostpath == d or hostpath.startswith(d + "/") for d in DENIED):
        return False
    if hostpath in ("/proc", "/sys"):
        return True
    if hostpath.startswith("/proc/"):
        pid = _PID.match(hostpath)
        if pid:
            # the directory itself (its name is the pid, no data); inside it only a GPU
            # daemon's comm
            return pid.group(2) is None or (pid.group(1) in kept_pids and pid.group(2) == "comm")
        for link in _SELF_LINKS:
            if hostpath.startswith(link + "/") or hostpath == link:
                rest = hostpath[len(link) + 1:]
                return rest in ("", *SELF_FILES)
        return True
    if hostpath.startswith("/sys/"):
        return not _SECRET_LEAF.search(hostpath.rsplit("/", 1)[-1])
    if _KERNEL_CONFIG.match(hostpath):
        return True
    return any(hostpath == a or hostpath.startswith(a + "/") for a in ALLOWED_ELSEWHERE)


@dataclass
class _Entry:
    kind: str  # "dir", "file", "link"
    data: bytes | None = None  # file content; None: an empty placeholder
    target: str = ""


@dataclass
class Plan:
    """What `root/` will hold, by host path."""

    entries: dict[str, _Entry] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)

    def put(self, hostpath: str, entry: _Entry) -> None:
        old = self.entries.get(hostpath)
        if old is not None and old.kind == "file" and old.data is not None and entry.data is None:
            return  # a placeholder never replaces captured content
        self.entries[hostpath] = entry
        parent = posixpath.dirname(hostpath)
        while parent not in ("/", "") and parent not in self.entries:
            self.entries[parent] = _Entry("dir")
            parent = posixpath.dirname(parent)

    def exclude(self, hostpath: str) -> None:
        pid = _PID.match(hostpath)
        self.excluded.add("/proc/<pid>/..." if pid else hostpath)


class _Planner:
    """Turns what a CapturingRoot saw into a Plan, resolving symlinks in the source tree."""

    def __init__(self, src: CapturingRoot) -> None:
        self.src = src
        self.plan = Plan()
        names = service_process_names()
        self.kept_pids = {m.group(1) for path, data in src.contents.items()
                          if (m := _PID.match(path)) and m.group(2) == "comm"
                          and data.decode("utf-8", "replace").strip() in names}

    def ok(self, hostpath: str) -> bool:
        return allowed(hostpath, self.kept_pids)

    def ok_link(self, hostpath: str) -> bool:
        """A link may also stand above an allowed path (/lib -> usr/lib on merged-/usr)."""
        return self.ok(hostpath) or any(a.startswith(hostpath + "/") for a in ALLOWED_ELSEWHERE)

    def link_target(self, hostpath: str) -> str | None:
        if hostpath in _SELF_LINKS and self.src.is_live:
            return None  # keep the reader's own /proc/self as a plain directory
        return self.src.link_at(hostpath)

    def walk(self, hostpath: str) -> tuple[str, list[tuple[str, str]]] | None:
        """(resolved host path, [(link, target)] passed on the way); None on a link loop."""
        parts = [p for p in hostpath.split("/") if p not in ("", ".")]
        current = ""
        links: list[tuple[str, str]] = []
        while parts:
            part = parts.pop(0)
            if part == "..":
                current = current.rpartition("/")[0]
                continue
            candidate = f"{current}/{part}"
            target = self.link_target(candidate)
            if target is None:
                current = candidate
                continue
            if len(links) >= 40:
                return None
            links.append((candidate, target))
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            if target.startswith("/"):
                current = ""
        return current or "/", links

    def place(self, hostpath: str, leaf: _Entry | None) -> str | None:
        """Store the links along `hostpath` and `leaf` at its resolved path; the resolved path,
        or None when something on the way is not allowed."""
        walked = self.walk(hostpath)
        if walked is None:
            return None
        resolved, links = walked
        if not self.ok(hostpath) or not all(self.ok_link(link) for link, _ in links) or \
                (leaf is not None and not self.ok(resolved)):
            self.plan.exclude(hostpath)
            return None
        for link, target in links:
            self.plan.put(link, _Entry("link", target=target))
        if leaf is not None:
            self.plan.put(resolved, leaf)
        return resolved

    def is_dir(self, hostpath: str) -> bool:
        """Whether `hostpath` (already resolved) is a directory in the source tree."""
        try:
            return stat.S_ISDIR(os.lstat(self.src.raw_path(hostpath)).st_mode)
        except OSError:
            return False

    def kind_of(self, hostpath: str) -> _Entry | None:
        """A placeholder for what `hostpath` (already resolved) is in the source tree."""
        try:
            mode = os.lstat(self.src.raw_path(hostpath)).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode):
            return _Entry("dir")
        if stat.S_ISLNK(mode):
            return _Entry("link", target=self.src.link_at(hostpath) or "")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return _Entry("file")  # a device node: its name is the fact, never its data
        return _Entry("file") if stat.S_ISREG(mode) else None

    def build(self) -> Plan:
        src = self.src
        for path, data in src.contents.items():
            self.place(path, _Entry("file", data))
        for path, entries in src.listings.items():
            walked = self.walk(path)
            is_dir = walked is not None and self.is_dir(walked[0])
            resolved = self.place(path, _Entry("dir")) if is_dir else None
            if resolved is not None:
                self.list_entries(resolved.rstrip("/"), entries)
        for path in sorted(src.resolved_links | src.probed):
            self.probe(path)
        return self.plan

    def list_entries(self, directory: str, names: list[str]) -> None:
        """Recreate a listed directory's entries: links as links, the rest as placeholders."""
        for name in names:
            child = f"{directory}/{name}"
            if self.src.is_live and child in _SELF_LINKS:
                continue
            entry = self.kind_of(child)
            if entry is not None and entry.kind == "file" and name.endswith(".link") and \
                    not self.src.is_live and \
                    not os.path.lexists(self.src.raw_path(child[:-5])):
                # a gathered tree's "<name>.link" file stands for a link called <name>
                child = child[:-5]
                entry = _Entry("link", target=self.link_target(child) or "")
            if entry is None:
                continue
            if self.ok(child):
                self.plan.put(child, entry)
            else:
                self.plan.exclude(child)

    def probe(self, hostpath: str) -> None:
        """What exists(), isdir(), readlink() and realpath() looked at: the links on the way
        and a placeholder at the end. An empty directory may stand anywhere: it holds no data."""
        walked = self.walk(hostpath)
        if walked is None:
            return
        resolved, links = walked
        if not all(self.ok_link(link) for link, _ in links):
            return
        leaf = self.kind_of(resolved)
        if leaf is not None and leaf.kind != "dir" and not self.ok(resolved):
            leaf = None
        for link, target in links:
            self.plan.put(link, _Entry("link", target=target))
        if leaf is not None:
            self.plan.put(resolved, leaf)


def kernel_log_files(src: CapturingRoot, facts: NodeFacts) -> dict[str, bytes]:
    """The kernel log the kernel_log collector read, reduced to its NVIDIA Xid/SXid lines."""
    result = facts.results.get("kernel_log")
    if not isinstance(result, kernel_log.KernelLogFacts):
        return {}
    source = result.source
    if source == "/dev/kmsg":
        real = src.path("/dev/kmsg")
        try:
            is_device = stat.S_ISCHR(os.stat(real).st_mode)
        except OSError:
            return {}
        if is_device:
            try:
                records = kernel_log.read_kmsg_device(real)
            except OSError:
                return {}
            lines = [f"4,{i},{round((when or 0) * 1e6)},-;{text}"
                     for i, (when, text) in enumerate(records)]
        else:
            text = src.contents.get("/dev/kmsg", b"").decode("utf-8", "replace")
            lines = [line for line in text.splitlines() if "Xid" in line]
    elif source in kernel_log.SYSLOG_FILES:
        tail = src.read_tail(source, kernel_log.SYSLOG_TAIL_BYTES)
        text = "" if tail is None else tail.decode("utf-8", "replace")
        lines = [line for _, line in kernel_log.parse_syslog(text)]
    else:
        return {}
    return {source: "".join(line + "\n" for line in lines).encode()}


@dataclass
class SnapshotResult:
    path: str
    bytes: int
    files: int
    links: int
    dirs: int
    excluded: list[str]
    nvml_recorded: bool
    facts: NodeFacts  # what the collectors produced while capturing


def check_output(output: str) -> None:
    """Fail in one line, before anything is collected, when `output` cannot be written."""
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise NodetuneError(f"cannot write {output}: {directory} is not a directory",
                            fix="create the directory or choose another -o path")


def take(output: str, node: Node) -> SnapshotResult:
    """Collect every fact of an opened node (the live host, a --root tree or a replayed
    snapshot) and write the snapshot to `output`. The node is read through a capturing root,
    so it is spent afterwards."""
    check_output(output)
    with tempfile.TemporaryDirectory(prefix="nodetune-resnapshot-", dir=_memory_tmp()) as tmp:
        if isinstance(node.root, MemoryRoot):  # a snapshot of a snapshot: capture from disk
            node.root.materialize(tmp)
            src = CapturingRoot(tmp)
        else:
            src = CapturingRoot(node.root.root)
        backend = CachingNvml(node.nvml) if node.nvml is not None else None
        node.root, node.nvml = src, backend
        facts = node.facts()
        plan = _Planner(src).build()
        for path, data in kernel_log_files(src, facts).items():
            plan.put(path, _Entry("file", data))
        nvml_doc = backend.recorded if backend is not None else None
        meta = _meta(node, src, facts, plan, nvml_doc, backend)
        size = write_archive(output, plan, meta, nvml_doc)
    kinds = [e.kind for e in plan.entries.values()]
    return SnapshotResult(path=output, bytes=size, files=kinds.count("file"),
                          links=kinds.count("link"), dirs=kinds.count("dir"),
                          excluded=sorted(plan.excluded), nvml_recorded=nvml_doc is not None,
                          facts=facts)


def _meta(node: Node, src: CapturingRoot, facts: NodeFacts, plan: Plan,
          nvml_doc: dict[str, Any] | None, backend: CachingNvml | None) -> dict[str, Any]:
    def content(path: str) -> str | None:
        data = src.contents.get(path)
        if data is None:
            data = src.read_str(path, "").encode() or None
        return data.decode("utf-8", "replace").strip() if data else None

    try:
        nvml_binding: str | None = version("nvidia-ml-py")
    except PackageNotFoundError:
        nvml_binding = None
    kinds = [e.kind for e in plan.entries.values()]
    return {
        "schema": SNAPSHOT_SCHEMA,
        "nodetune_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": facts.sections.get("kernel", {}).get("hostname"),
        "source": node.origin,
        "tools": {
            "python": platform.python_version(),
            "nvidia-ml-py": nvml_binding,
            "nvidia_driver": (nvml_doc or {}).get("driver_version"),
            "kernel": content("/proc/sys/kernel/osrelease"),
        },
        "nvml": {"recorded": nvml_doc is not None, "note": _nvml_note(node, facts),
                 "source": backend.origin if backend is not None else None},
        "counts": {"files": kinds.count("file"), "links": kinds.count("link"),
                   "dirs": kinds.count("dir")},
        "excluded": sorted(plan.excluded),
        "collectors": {name: "ok" if st.ok and not st.no_data else
                       "no data" if st.no_data else f"failed: {st.error}"
                       for name, st in facts.status.items()},
    }


def _nvml_note(node: Node, facts: NodeFacts) -> str | None:
    """Why NVML data is missing, as the gpu collector put it (its note also covers a dump that
    failed), so a replay without nvml.json reports the same."""
    gpu = facts.results.get("gpu")
    return gpu.nvml.note if isinstance(gpu, GpuFacts) else node.nvml_note


def write_archive(output: str, plan: Plan, meta: dict[str, Any],
                  nvml_doc: dict[str, Any] | None) -> int:
    """Write the .tar.gz next to `output`, then rename it into place; its size in bytes."""
    now = int(time.time())
    directory = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=".nodetune-snapshot-", suffix=".tar.gz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add_bytes(tar, META, json.dumps(meta, indent=1).encode() + b"\n", now)
            if nvml_doc is not None:
                _add_bytes(tar, NVML_FILE, json.dumps(nvml_doc, indent=1).encode() + b"\n", now)
            tree = tree_document(plan.entries)
            _add_bytes(tar, TREE_FILE, json.dumps(tree, separators=(",", ":")).encode(), now)
            _add_dir(tar, ROOT_DIR, now)
            for hostpath in sorted(plan.entries):
                _add_entry(tar, hostpath, plan.entries[hostpath], now)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return os.path.getsize(output)


def _info(name: str, kind: bytes, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = mtime
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = _info(name, tarfile.REGTYPE, mtime)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mtime: int) -> None:
    tar.addfile(_info(name, tarfile.DIRTYPE, mtime))


def _add_entry(tar: tarfile.TarFile, hostpath: str, entry: _Entry, mtime: int) -> None:
    name = ROOT_DIR + hostpath
    if entry.kind == "dir":
        _add_dir(tar, name, mtime)
    elif entry.kind == "file":
        _add_bytes(tar, name, entry.data or b"", mtime)
    elif _inside_root(hostpath, entry.target):
        info = _info(name, tarfile.SYMTYPE, mtime)
        info.linkname = entry.target
        tar.addfile(info)
    else:
        # An absolute (or escaping) target would point outside the unpacked snapshot: keep it
        # the way gathered trees do, as "<name>.link" holding the target, which HostRoot
        # follows inside the root and readlink() returns unchanged.
        _add_bytes(tar, name + ".link", entry.target.encode() + b"\n", mtime)


def _inside_root(hostpath: str, target: str) -> bool:
    """Whether a relative link at `hostpath` resolves inside the snapshot's root/."""
    if target.startswith("/"):
        return False
    depth = len([p for p in posixpath.dirname(hostpath).split("/") if p])
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


# -- replay ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """What loading one snapshot may cost. `unpacked` bounds the archive's members together
    (data plus one 512-byte header each, as the tar stream holds them), `members` their
    number; meta.json, nvml.json and tree.json are held in memory, each at most `in_memory`
    bytes. The archive is read as a stream and each limit is checked at a member's header,
    before its data is decompressed; no more than one member's data plus `HEADER_ALLOWANCE`
    is ever decompressed ahead of a check."""

    unpacked: int = MAX_UNPACKED_BYTES
    members: int = MAX_MEMBERS
    in_memory: int = MAX_IN_MEMORY_BYTES


HEADER_ALLOWANCE: Final = 1 << 20  # a tar header with its pax or GNU long-name records


class _TooLarge(Exception):
    pass


class _Capped:
    """The archive's decompressed stream, refusing to give more than `cap` bytes in all; the
    reader raises the cap member by member, by what the member's header announced."""

    def __init__(self, fileobj: Any) -> None:
        self.fileobj = fileobj
        self.total = 0
        self.cap = HEADER_ALLOWANCE

    def allow(self, size: int) -> None:
        self.cap = self.total + size + HEADER_ALLOWANCE

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 16
        data: bytes = self.fileobj.read(max(1, min(size, self.cap + 1 - self.total)))
        self.total += len(data)
        if self.total > self.cap:
            raise _TooLarge
        return data


@contextlib.contextmanager
def _stream(path: str) -> Iterator[tuple[tarfile.TarFile, _Capped]]:
    """The archive as a tar stream (gzip-compressed or not), never seeked nor held whole."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, after the tar stream
    except OSError as exc:
        raise _bad(path, f"cannot read it ({exc.strerror or exc})") from None
    with raw:
        head = raw.read(262)
        raw.seek(0)
        if head[:2] == b"\x1f\x8b":
            source: Any = gzip.GzipFile(fileobj=raw, mode="rb")
        elif head[257:262] == b"ustar":  # an uncompressed tar is accepted too
            source = raw
        else:
            raise _bad(path, "not a complete tar.gz archive (no gzip or tar header)")
        capped = _Capped(source)
        try:
            with tarfile.open(fileobj=capped, mode="r|") as tar:  # type: ignore[call-overload]
                yield tar, capped
        except _TooLarge:
            raise _bad(path, f"a tar header is larger than {HEADER_ALLOWANCE >> 20} MiB, or "
                             "the data runs past what the headers announce") from None
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise _bad(path, f"not a complete tar.gz archive ({exc})") from None
        except OSError as exc:
            raise _bad(path, f"cannot read it ({exc.strerror or exc})") from None


def _members(path: str, tar: tarfile.TarFile, capped: _Capped,
             limits: Limits) -> Iterator[tarfile.TarInfo]:
    """Each member in turn, after the size and count limits are checked at its header."""
    total = 0
    count = 0
    while True:
        member = tar.next()
        if member is None:
            return
        count += 1
        if count > limits.members:
            raise _bad(path, f"it has more than {limits.members} members")
        total += tarfile.BLOCKSIZE + member.size
        if total > limits.unpacked:
            raise _bad(path, f"it unpacks to more than {_mib(limits.unpacked)}")
        capped.allow(member.size + tarfile.BLOCKSIZE)  # its data and padding
        yield member


_LIMIT: Final = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)?\s*$")
_UNITS: Final = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_limit(text: str) -> int:
    """A snapshot size limit: bytes, or a number with KiB, MiB, GiB or TiB."""
    found = _LIMIT.match(text)
    size = int(found.group(1)) * _UNITS[found.group(2)] if found else 0
    if size < 1 << 20:
        raise NodetuneError(f"snapshot limit {text!r} is not a size of at least 1 MiB",
                            fix="give bytes or a size such as 512MiB or 2GiB")
    return size


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


@contextlib.contextmanager
def open_snapshot(path: str, limits: Limits | None = None) -> Iterator[Node]:
    """Yield a Node replaying the snapshot: from its tree.json held in memory, or, for
    snapshots without one, from root/ unpacked safely into a temporary directory."""
    limits = limits or Limits()
    if not os.path.isfile(path):
        raise SourceError(f"snapshot {path} does not exist", fix=SNAPSHOT_FIX)
    head = _read_head(path, limits)
    if TREE_FILE in head:
        meta = _parse_meta(path, head.get(META))
        try:
            tree = json.loads(head.pop(TREE_FILE))
            root: HostRoot = MemoryRoot.from_tree(f"snapshot:{path}", tree)
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            raise _bad(path, f"{TREE_FILE} is malformed ({exc})") from None
        except MemoryError:
            raise _bad(path, f"{TREE_FILE} does not fit in memory") from None
        yield _replay_node(path, meta, root, head.get(NVML_FILE))
        return
    tmp = os.path.realpath(tempfile.mkdtemp(prefix="nodetune-snapshot-", dir=_memory_tmp()))
    try:
        _unpack(path, tmp, limits)
        meta = _read_meta(path, tmp)
        nvml_path = os.path.join(tmp, NVML_FILE)
        nvml_text = Path(nvml_path).read_bytes() if os.path.isfile(nvml_path) else None
        root = HostRoot(os.path.join(tmp, ROOT_DIR), name=f"snapshot:{path}")
        yield _replay_node(path, meta, root, nvml_text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replay_node(path: str, meta: dict[str, Any], root: HostRoot,
                 nvml_text: bytes | None) -> Node:
    nvml = None
    said = {k: v for k, v in (meta.get("nvml") or {}).items() if isinstance(v, str) and v}
    if nvml_text is not None:
        recorded = RecordedNvml.from_text(nvml_text, f"{path}:{NVML_FILE}")
        nvml = RecordedNvml(recorded.doc, origin=said.get("source") or f"{path}:{NVML_FILE}")
    note = None if nvml is not None else said.get("note") or \
        "the snapshot holds no NVML recording"
    return Node(root=root, nvml=nvml, nvml_note=note, origin=f"snapshot:{path}", meta=meta)


def _read_head(path: str, limits: Limits) -> dict[str, bytes]:
    """The members before root/ (meta.json, nvml.json, tree.json); the rest of the archive
    is read through to its end without keeping anything, so a truncated or oversized archive
    is refused here too."""
    head: dict[str, bytes] = {}
    in_root = False
    with _stream(path) as (tar, capped):
        for member in _members(path, tar, capped, limits):
            in_root = in_root or member.name == ROOT_DIR or member.name.startswith(ROOT_DIR + "/")
            if not in_root and member.name in (META, NVML_FILE, TREE_FILE) and member.isreg():
                if member.size > limits.in_memory:
                    raise _bad(path, f"{member.name} is {_mib(member.size)}, more than the "
                                     f"{_mib(limits.in_memory)} a replay holds in memory")
                data = tar.extractfile(member)
                head[member.name] = data.read() if data is not None else b""
    return head


def _memory_tmp() -> str | None:
    """/dev/shm when usable: a replay writes thousands of small files that are read once."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _bad(path: str, why: str) -> SourceError:
    return SourceError(f"{path} is not a usable nodetune snapshot: {why}", fix=SNAPSHOT_FIX)


def _unpack(path: str, dest: str, limits: Limits) -> None:
    """Extract member by member, each checked first; links are made last so no write
    follows one."""
    links = []
    seen_meta = False
    try:
        with _stream(path) as (tar, capped):
            for member in _members(path, tar, capped, limits):
                _check_member(path, member)
                seen_meta = seen_meta or member.name == META
                if member.issym():
                    links.append(member)
                    continue
                try:
                    _extract(tar, member, os.path.join(dest, member.name))
                except FileExistsError:
                    raise _bad(path, f"{member.name} appears twice") from None
                except OSError as exc:
                    raise _bad(path, f"cannot unpack it ({exc.strerror or exc})") from None
        if not seen_meta:
            raise _bad(path, f"it has no {META}")
        for member in links:
            target = os.path.join(dest, member.name)
            if _below_link(dest, target):
                # its target was checked against the path as written, not a link's detour
                raise _bad(path, f"link {member.name!r} lies below another link")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.lexists(target):
                raise _bad(path, f"{member.name} appears twice")
            os.symlink(member.linkname, target)
    except OSError as exc:
        raise _bad(path, f"cannot unpack it ({exc.strerror or exc})") from None


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    """A directory or a regular file, written where no link can redirect it (links come
    last, and a file is created anew, never through a link)."""
    if member.isdir():
        os.makedirs(target, exist_ok=True)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    source = tar.extractfile(member)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with os.fdopen(fd, "wb") as out:
        if source is not None:
            shutil.copyfileobj(source, out)


def _below_link(dest: str, target: str) -> bool:
    current = dest
    for part in os.path.relpath(os.path.dirname(target), dest).split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            return True
    return False


def _check_member(path: str, member: tarfile.TarInfo) -> None:
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name:
        raise _bad(path, f"member {name!r} points outside the snapshot")
    if not (name in (META, NVML_FILE, ROOT_DIR) or name.startswith(ROOT_DIR + "/")):
        raise _bad(path, f"unexpected member {name!r}")
    if member.issym():
        if not name.startswith(ROOT_DIR + "/") or \
                not _inside_root(name[len(ROOT_DIR):], member.linkname):
            raise _bad(path, f"link {name!r} points outside the snapshot")
    elif not (member.isreg() or member.isdir()):
        raise _bad(path, f"member {name!r} is neither a file, a directory nor a symlink")


def _read_meta(path: str, dest: str) -> dict[str, Any]:
    try:
        with open(os.path.join(dest, META), "rb") as fh:
            data: bytes | None = fh.read()
    except OSError:
        data = None
    meta = _parse_meta(path, data)
    if not os.path.isdir(os.path.join(dest, ROOT_DIR)):
        raise _bad(path, f"it has no {ROOT_DIR}/ directory")
    return meta


def _parse_meta(path: str, data: bytes | None) -> dict[str, Any]:
    if data is None:
        raise _bad(path, f"it has no {META}")
    try:
        meta = json.loads(data)
    except ValueError as exc:
        raise _bad(path, f"{META} is not JSON ({exc})") from None
    schema = meta.get("schema") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or schema != SNAPSHOT_SCHEMA:
        raise _bad(path, f"{META} has schema {schema!r}, expected {SNAPSHOT_SCHEMA!r}")
    nvml = meta.get("nvml")
    if nvml is not None and not isinstance(nvml, dict):
        raise _bad(path, f"{META} field nvml is a {type(nvml).__name__}, not an object")
    return meta
