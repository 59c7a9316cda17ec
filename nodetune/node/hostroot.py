"""Every read of the host's /proc, /sys, /etc and /run goes through HostRoot.

`HostRoot("/")` is the live host; `HostRoot("/host")` a container's view of it; any directory
laid out like `/` (an unpacked snapshot, an `hwloc-gather-topology` tree) works the same.
Paths given to HostRoot are always host paths ("/sys/bus/pci/devices"), never joined by callers.

Under a root other than `/`, every path is resolved inside the root, as `chroot` would: a
symlink's absolute target is relative to the root and `..` stops at it, so no read, listing
or probe ever reaches the machine nodetune runs on (`facts --root T` shows T's kernel command
line even where `T/proc/cmdline` links to `/proc/cmdline`). A link loop, or a chain longer
than the kernel's 40 links, is unreadable. The live root resolves nothing itself and costs no
extra system call.

Every file read is bounded: at most `MAX_READ_BYTES` (`read_tail` reads only the tail it is
asked for), and only from a regular file: a FIFO, a socket or a device where a file is
expected is unreadable (opened with O_NONBLOCK, checked with fstat, so nothing can hang a
read). Unreadable means what a missing file means: `fallback`, or CollectorError, so the fact
becomes unknown.

A HostRoot can record what it read (`recording=True`); `nodetune snapshot` uses that record
to capture exactly the files the collectors need to replay a node elsewhere.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, Final, TypeVar

from nodetune.errors import CollectorError, SourceError

T = TypeVar("T")


class _Missing:
    pass


MISSING = _Missing()
MAX_LINK_HOPS: Final = 40  # as the kernel's limit on nested symlinks (MAXSYMLINKS)
# sysfs and procfs files are at most a few pages (the largest the collectors read, a big
# host's /proc/interrupts, is under 1 MiB); configuration files are smaller still.
MAX_READ_BYTES: Final = 16 << 20
_LINK_FILE_BYTES: Final = 4096  # a gathered tree's "<name>.link" holds one path (PATH_MAX)
_CHUNK: Final = 1 << 16
_READ: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_READ_IN_ROOT: Final = _READ | os.O_NOFOLLOW
_DIR_IN_ROOT: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What path() gives for a path that cannot be resolved inside the root (a link loop) or that
# leads to a FIFO or a socket: a name below a character device, which every open refuses
# (ENOTDIR), so a caller that opens path() itself reads nothing rather than something else.
UNREADABLE_PATH: Final = os.devnull + "/nodetune-unreadable"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "not a regular file"


def _refuse(mode: int, hostpath: str) -> OSError:
    """The error for reading something that is not a regular file."""
    if stat.S_ISDIR(mode):
        return IsADirectoryError(errno.EISDIR, "Is a directory", hostpath)
    return OSError(errno.EINVAL, f"is {_kind(mode)}, not a regular file", hostpath)


def _read_fd(fd: int, hostpath: str, limit: int = MAX_READ_BYTES) -> bytes:
    """Read a whole regular file from `fd` (closed afterwards), at most `limit` bytes."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(st.st_mode, hostpath)
        chunks: list[bytes] = []
        total = 0
        want = max(st.st_size + 1, _CHUNK)
        while True:
            chunk = os.read(fd, min(want, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB, the limit for a "
                              "file read under a root", hostpath)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


class HostRoot:
    """A host filesystem rooted at `root` (default: the live host)."""

    def __init__(self, root: str = "/", *, recording: bool = False,
                 name: str | None = None) -> None:
        self.root = os.path.abspath(root)
        # How facts and messages name this tree: its path, or "snapshot:FILE" for a replay
        # (whether the snapshot is held in memory or unpacked into a temporary directory).
        self.name = name or self.root
        self.is_live = self.root == "/"
        self.recording = recording
        self.read_files: set[str] = set()
        self.listed_dirs: set[str] = set()
        self.resolved_links: set[str] = set()
        # resolved host path -> (link target, lstat) of the directories and links seen: sysfs
        # paths share long prefixes, so each is looked at once for the life of this root (one
        # command, or one agent cycle); files are looked at on every read
        self._components: dict[str, tuple[str | None, Any]] = {}

    def __repr__(self) -> str:
        return f"HostRoot({self.root!r})"

    # -- paths -------------------------------------------------------------------------
    def raw_path(self, hostpath: str) -> str:
        """The path under the root as written, no link resolved (the OS follows any link in
        it): only for code that walks the tree itself, one lstat at a time."""
        if self.is_live:
            return hostpath
        if hostpath.startswith("/"):
            return self.root + hostpath
        return os.path.join(self.root, hostpath)

    def path(self, hostpath: str) -> str:
        """The real path of a host path, resolved inside this root: no link is left in it, so
        opening it never leaves the root. A path that cannot be resolved (a link loop) or
        that leads to a FIFO, a socket, or a device outside /dev gives `UNREADABLE_PATH`."""
        if self.is_live:
            return hostpath
        resolved, info, ok = self._resolve(hostpath)
        if not ok:
            return UNREADABLE_PATH
        if info is not None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            is_device = stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            if not (is_device and resolved.startswith("/dev/")):
                return UNREADABLE_PATH
        return self.raw_path(resolved)

    def to_host(self, realpath: str) -> str:
        """The host path of a real path under this root."""
        if self.is_live:
            return realpath
        if realpath == self.root:
            return "/"
        if realpath.startswith(self.root + "/"):
            return realpath[len(self.root):]
        return realpath

    def check_tree(self) -> None:
        """Raise SourceError unless the root looks like a host tree (has proc/ or sys/)."""
        if not os.path.isdir(self.root):
            raise SourceError(f"--root {self.root} is not a directory",
                              fix="point --root at a directory laid out like /")
        if not (self.isdir("/proc") or self.isdir("/sys")):
            raise SourceError(f"--root {self.root} is not a host tree: it has neither proc/ "
                              "nor sys/",
                              fix="point --root at a directory laid out like / "
                                  "(a container's /host mount or an unpacked snapshot)")

    # -- resolution inside the root --------------------------------------------------------
    def _component(self, hostpath: str) -> tuple[str | None, Any]:
        """(link target or None, what is there or None) for `hostpath`, whose parent is
        already resolved. On disk "what is there" is the lstat result; a missing entry with a
        gathered "<name>.link" file beside it is a link to that file's content."""
        cached = self._components.get(hostpath)
        if cached is not None:
            return cached
        real = self.raw_path(hostpath)
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return self._link_file(real), None
        except OSError:
            return None, None
        if stat.S_ISLNK(st.st_mode):
            try:
                found: tuple[str | None, Any] = (os.readlink(real), st)
            except OSError:
                return None, None
        elif stat.S_ISDIR(st.st_mode):
            found = (None, st)
        else:
            return None, st  # files are not remembered: they may be replaced between reads
        self._components[hostpath] = found
        return found

    @staticmethod
    def _link_file(real: str) -> str | None:
        """The content of a gathered tree's "<name>.link" file, read as carefully as any."""
        try:
            fd = os.open(real + ".link", _READ_IN_ROOT)
        except OSError:
            return None
        try:
            data = _read_fd(fd, real + ".link", _LINK_FILE_BYTES)
        except OSError:
            return None
        return data.decode("utf-8", "surrogateescape").strip()

    def link_at(self, hostpath: str) -> str | None:
        """The target when `hostpath` itself is a link (or, under a root, a gathered
        "<name>.link" file), its parent taken as already resolved; nothing is recorded."""
        if self.is_live:
            try:
                return os.readlink(hostpath)
            except OSError:
                return None
        return self._component(hostpath)[0]

    def _resolve(self, hostpath: str) -> tuple[str, Any, bool]:
        """(resolved host path, what is there or None, resolved): each component in turn,
        following links inside the root; `resolved` is False after more than MAX_LINK_HOPS
        links. Past a missing component the rest is resolved lexically (it is missing too)."""
        parts = [p for p in hostpath.split("/") if p and p != "."]
        resolved: list[str] = []
        info: Any = None
        known = False  # whether `info` describes `resolved`
        missing = False
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                known = False
                continue
            candidate = "/" + "/".join([*resolved, part])
            if missing:
                resolved.append(part)
                continue
            target, info = self._component(candidate)
            if target is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    return candidate, None, False
                if self.recording:
                    self.resolved_links.add(candidate)
                parts = [p for p in target.split("/") if p and p != "."] + parts
                if target.startswith("/"):
                    resolved = []
                known = False
                continue
            resolved.append(part)
            known = True
            if info is None:
                missing = True
        result = "/" + "/".join(resolved)
        if missing:
            return result, None, True
        if not known:
            info = self._component(result)[1]
        return result, info, True

    def _walk(self, hostpath: str) -> str:
        """The host path `hostpath` resolves to inside the root."""
        return self._resolve(hostpath)[0]

    def _lookup(self, hostpath: str) -> Any:
        """What `hostpath` leads to inside the root (an lstat result), None when missing."""
        _, info, ok = self._resolve(hostpath)
        return info if ok else None

    def _leaf(self, hostpath: str) -> tuple[str, str | None, Any]:
        """(resolved path of the entry itself, its link target, its lstat): the parent is
        resolved, the last component is not followed."""
        head, _, name = hostpath.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            resolved, info, _ = self._resolve(hostpath)
            return resolved, None, info
        parent, _, ok = self._resolve(head or "/")
        if not ok:
            return parent, None, None
        candidate = parent.rstrip("/") + "/" + name
        target, info = self._component(candidate)
        return candidate, target, info

    # -- queries -----------------------------------------------------------------------
    def exists(self, hostpath: str) -> bool:
        if self.is_live:
            return os.path.exists(self.path(hostpath))
        return self._lookup(hostpath) is not None

    def isdir(self, hostpath: str) -> bool:
        if self.is_live:
            return os.path.isdir(self.path(hostpath))
        info = self._lookup(hostpath)
        return info is not None and stat.S_ISDIR(info.st_mode)

    def islink(self, hostpath: str) -> bool:
        if self.is_live:
            return os.path.islink(self.path(hostpath))
        info = self._leaf(hostpath)[2]
        return info is not None and stat.S_ISLNK(info.st_mode)

    def _open(self, hostpath: str) -> int:
        """A descriptor of the regular file `hostpath` leads to, opened without blocking."""
        if self.is_live:
            return os.open(self.path(hostpath), _READ)
        resolved, info, ok = self._resolve(hostpath)
        if not ok:
            raise OSError(errno.ELOOP, "Too many levels of symbolic links", hostpath)
        if info is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", hostpath)
        if not stat.S_ISREG(info.st_mode):
            raise _refuse(info.st_mode, hostpath)  # a device is never opened
        return os.open(self.raw_path(resolved), _READ_IN_ROOT)

    def _read_bytes(self, hostpath: str) -> bytes:
        if self.recording:
            self.read_files.add(hostpath)
        return _read_fd(self._open(hostpath), hostpath)

    def read_bytes(self, hostpath: str, fallback: T | _Missing = MISSING) -> bytes | T:
        """The file's raw bytes (binary files such as PCI `config`)."""
        try:
            return self._read_bytes(hostpath)
        except OSError as exc:
            if isinstance(fallback, _Missing):
                raise CollectorError(f"cannot read {hostpath}: {exc.strerror or exc}") from exc
            return fallback

    def read_str(self, hostpath: str, fallback: T | _Missing = MISSING) -> str | T:
        """The file's text, stripped. Missing or unreadable: `fallback`, or CollectorError."""
        try:
            data = self._read_bytes(hostpath)
        except OSError as exc:
            if isinstance(fallback, _Missing):
                raise CollectorError(f"cannot read {hostpath}: {exc.strerror or exc}") from exc
            return fallback
        return data.decode("utf-8", "replace").strip()

    def read_text(self, hostpath: str, fallback: T | _Missing = MISSING) -> str | T:
        """The file's text, unstripped (for multi-line files)."""
        try:
            return self._read_bytes(hostpath).decode("utf-8", "replace")
        except OSError as exc:
            if isinstance(fallback, _Missing):
                raise CollectorError(f"cannot read {hostpath}: {exc.strerror or exc}") from exc
            return fallback

    def read_int(self, hostpath: str, fallback: T | _Missing = MISSING, base: int = 10) -> int | T:
        text = self.read_str(hostpath, None)
        if text is None:
            if isinstance(fallback, _Missing):
                raise CollectorError(f"cannot read {hostpath}")
            return fallback
        try:
            return int(text.split()[0], base) if text else int("x")
        except (ValueError, IndexError) as exc:
            if isinstance(fallback, _Missing):
                raise CollectorError(f"{hostpath} holds {text!r}, not an integer") from exc
            return fallback

    def file_mode(self, hostpath: str) -> int:
        """st_mode of what the path leads to (0 when missing), to tell devices from files."""
        if self.is_live:
            try:
                return os.stat(self.path(hostpath)).st_mode
            except OSError:
                return 0
        info = self._lookup(hostpath)
        return 0 if info is None else int(info.st_mode)

    def read_tail(self, hostpath: str, size: int) -> bytes | None:
        """The last `size` bytes of a (possibly huge) log file, from a line start; None if
        unreadable."""
        try:
            fd = self._open(hostpath)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            start = st.st_size - size
            if start <= 0:  # small, or a size the kernel does not report: read it, bounded
                os.lseek(fd, 0, os.SEEK_SET)
                data = _read_fd(os.dup(fd), hostpath)
                if len(data) <= size:
                    return data
                start = len(data) - size
                data = data[start:]
            else:
                chunks = []
                got = 0
                while got < size and (chunk := os.pread(fd, size - got, start + got)):
                    chunks.append(chunk)
                    got += len(chunk)
                data = b"".join(chunks)
            newline = data.find(b"\n")  # drop the partial first line
            return b"" if newline < 0 else data[newline + 1:]
        except OSError:
            return None
        finally:
            os.close(fd)

    def listdir(self, hostpath: str) -> list[str]:
        """Sorted entries of a directory; [] when it is missing."""
        if self.recording:
            self.listed_dirs.add(hostpath)
        if self.is_live:
            try:
                return sorted(os.listdir(self.path(hostpath)))
            except OSError:
                return []
        resolved, info, ok = self._resolve(hostpath)
        if not ok or info is None or not stat.S_ISDIR(info.st_mode):
            return []
        try:
            fd = os.open(self.raw_path(resolved), _DIR_IN_ROOT)
        except OSError:
            return []
        try:
            return sorted(os.listdir(fd))
        except OSError:
            return []
        finally:
            os.close(fd)

    def readlink(self, hostpath: str) -> str | None:
        """A symlink's target; in gathered trees also a "<name>.link" file's content."""
        if self.recording:
            self.resolved_links.add(hostpath)
        if self.is_live:
            try:
                return os.readlink(self.path(hostpath))
            except OSError:
                return None
        return self._leaf(hostpath)[1]

    def realpath(self, hostpath: str) -> str:
        """Resolve symlinks and return a host path, staying inside the root.

        Absolute link targets in a gathered tree point at the original host's `/`, so they
        are followed relative to this root, not to the machine nodetune runs on.
        """
        if self.recording:
            self.resolved_links.add(hostpath)
        if self.is_live:
            return os.path.realpath(hostpath)
        return self._walk(hostpath)
