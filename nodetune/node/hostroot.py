"""Every read of the host's /proc, /sys, /etc and /run goes through HostRoot.

`HostRoot("/")` is the live host; `HostRoot("/host")` a container's view of it; any directory
laid out like `/` (an unpacked snapshot, an `hwloc-gather-topology` tree) works the same.
Paths given to HostRoot are always host paths ("/sys/bus/pci/devices"), never joined by callers.

A HostRoot can record what it read (`recording=True`); `nodetune snapshot` uses that record
to capture exactly the files the collectors need to replay a node elsewhere.
"""

from __future__ import annotations

import os
from typing import TypeVar

from nodetune.errors import CollectorError, SourceError

T = TypeVar("T")


class _Missing:
    pass


MISSING = _Missing()
MAX_LINK_HOPS = 40  # as the kernel's limit on nested symlinks (MAXSYMLINKS)


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

    def __repr__(self) -> str:
        return f"HostRoot({self.root!r})"

    # -- paths -------------------------------------------------------------------------
    def path(self, hostpath: str) -> str:
        """The real path of a host path under this root."""
        if self.is_live:
            return hostpath
        if hostpath.startswith("/"):
            return self.root + hostpath
        return os.path.join(self.root, hostpath)

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
        if not (os.path.isdir(self.path("/proc")) or os.path.isdir(self.path("/sys"))):
            raise SourceError(f"--root {self.root} is not a host tree: it has neither proc/ "
                              "nor sys/",
                              fix="point --root at a directory laid out like / "
                                  "(a container's /host mount or an unpacked snapshot)")

    # -- queries -----------------------------------------------------------------------
    def exists(self, hostpath: str) -> bool:
        return os.path.exists(self.path(hostpath))

    def isdir(self, hostpath: str) -> bool:
        return os.path.isdir(self.path(hostpath))

    def islink(self, hostpath: str) -> bool:
        return os.path.islink(self.path(hostpath))

    def _read_bytes(self, hostpath: str) -> bytes:
        if self.recording:
            self.read_files.add(hostpath)
        try:
            with open(self.path(hostpath), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            if self.is_live:
                raise
            # A gathered tree may store a link as a file "<name>.link" holding its target.
            resolved = self.realpath(hostpath)
            if resolved == hostpath:
                raise
            with open(self.path(resolved), "rb") as fh:
                return fh.read()

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
        try:
            return os.stat(self.path(hostpath)).st_mode
        except OSError:
            return 0

    def read_tail(self, hostpath: str, size: int) -> bytes | None:
        """The last `size` bytes of a (possibly huge) log file, from a line start; None if
        unreadable."""
        try:
            with open(self.path(hostpath), "rb") as fh:
                total = os.fstat(fh.fileno()).st_size
                if total > size:
                    fh.seek(total - size)
                    fh.readline()  # drop the partial first line
                return fh.read()
        except OSError:
            return None

    def listdir(self, hostpath: str) -> list[str]:
        """Sorted entries of a directory; [] when it is missing."""
        if self.recording:
            self.listed_dirs.add(hostpath)
        try:
            return sorted(os.listdir(self.path(hostpath)))
        except OSError:
            return []

    def readlink(self, hostpath: str) -> str | None:
        """A symlink's target; in gathered trees also a "<name>.link" file's content."""
        if self.recording:
            self.resolved_links.add(hostpath)
        real = self.path(hostpath)
        try:
            return os.readlink(real)
        except OSError:
            pass
        if self.is_live or os.path.lexists(real):
            return None
        try:
            with open(real + ".link", encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError:
            return None

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

    def _link_target(self, hostpath: str) -> str | None:
        """The target when `hostpath` itself is a link (or a gathered "<name>.link" file)."""
        real = self.path(hostpath)
        if os.path.islink(real):
            return os.readlink(real)
        if not os.path.lexists(real) and os.path.isfile(real + ".link"):
            with open(real + ".link", encoding="utf-8") as fh:
                return fh.read().strip()
        return None

    def _walk(self, hostpath: str) -> str:
        """Resolve component by component, following links through `_link_target`."""
        parts = [p for p in hostpath.split("/") if p]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/" + "/".join([*resolved, part])
            target = self._link_target(candidate)
            if target is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    return candidate
                if self.recording:
                    self.resolved_links.add(candidate)
                parts = [p for p in target.split("/") if p] + parts
                if target.startswith("/"):
                    resolved = []
                continue
            resolved.append(part)
        return "/" + "/".join(resolved)
