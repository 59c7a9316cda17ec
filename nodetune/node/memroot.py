"""A host tree held in memory: how a snapshot replays without unpacking thousands of files.

`MemoryRoot` answers the same questions as `HostRoot` (read, list, readlink, realpath, exists)
from a dict of entries, so collectors see no difference between a replayed snapshot and a tree
on disk. The entries come from a snapshot's `tree.json`:

    {"dirs": ["/sys", ...], "files": {"/proc/cmdline": "text", ...},
     "binary": {"/sys/bus/pci/devices/0000:18:00.0/config": "<base64>"},
     "links": {"/sys/bus/pci/devices/0000:18:00.0": "../../../devices/pci0000:00/..."}}
"""

from __future__ import annotations

import base64
import os
import posixpath
import stat
from typing import Any

from nodetune.node.hostroot import HostRoot


class MemoryRoot(HostRoot):
    def __init__(self, label: str, entries: dict[str, tuple[str, Any]]) -> None:
        super().__init__("/", name=label)
        self.root = label
        self.is_live = False
        self.entries = entries  # host path -> ("dir", None) | ("file", bytes) | ("link", target)
        children: dict[str, list[str]] = {}
        for path in entries:
            if path != "/":
                parent, name = posixpath.split(path)
                children.setdefault(parent, []).append(name)
        self.children = {k: sorted(v) for k, v in children.items()}
        self._resolved: dict[str, str] = {}

    @classmethod
    def from_tree(cls, label: str, tree: dict[str, Any]) -> MemoryRoot:
        """Entries from a tree.json document; ValueError when it is malformed."""
        entries: dict[str, tuple[str, Any]] = {"/": ("dir", None)}

        def key(path: object) -> str:
            if not isinstance(path, str) or not path.startswith("/") or \
                    posixpath.normpath(path) != path or "\x00" in path:
                raise ValueError(f"bad path {path!r}")
            return path

        for path in tree.get("dirs") or []:
            entries[key(path)] = ("dir", None)
        for path, text in (tree.get("files") or {}).items():
            entries[key(path)] = ("file", str(text).encode("utf-8", "surrogateescape"))
        for path, data in (tree.get("binary") or {}).items():
            entries[key(path)] = ("file", base64.b64decode(str(data), validate=True))
        for path, target in (tree.get("links") or {}).items():
            entries[key(path)] = ("link", str(target))
        for path in list(entries):  # every parent is a directory
            parent = posixpath.dirname(path)
            while parent not in entries:
                entries[parent] = ("dir", None)
                parent = posixpath.dirname(parent)
        return cls(label, entries)

    def materialize(self, dest: str) -> None:
        """Write the tree under `dest`, a new empty directory: directories and files first,
        symlinks last, so no write passes through a link, whatever the links point at. An
        entry below a link or a file is left out: no read of this root reaches it (a path
        through a link resolves to the link's target), so it is no part of the tree."""
        links: list[tuple[str, str]] = []
        for path in sorted(self.entries):
            kind, value = self.entries[path]
            if path == "/" or self._hidden(path):
                continue
            real = dest + path
            if kind == "link":
                links.append((real, value))
                continue
            os.makedirs(real if kind == "dir" else os.path.dirname(real), exist_ok=True)
            if kind == "file":
                fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(value)
        for real, target in links:
            os.makedirs(os.path.dirname(real), exist_ok=True)
            os.symlink(target, real)

    def _hidden(self, path: str) -> bool:
        """Whether something other than a directory stands above `path`."""
        parent = posixpath.dirname(path)
        while parent != "/":
            entry = self.entries.get(parent)
            if entry is not None and entry[0] != "dir":
                return True
            parent = posixpath.dirname(parent)
        return False

    def path(self, hostpath: str) -> str:
        # no file of this tree is on disk: callers that open real paths find nothing
        return "/nonexistent-nodetune-memory-root" + hostpath

    raw_path = path

    def check_tree(self) -> None:
        return None

    def realpath(self, hostpath: str) -> str:
        if self.recording:
            self.resolved_links.add(hostpath)
        cached = self._resolved.get(hostpath)
        if cached is not None:
            return cached
        if "/." in hostpath or not hostpath.startswith("/"):
            return self._walk(hostpath)
        # resolve the parent once (memoised: sysfs paths share long prefixes), then the leaf
        parent, name = posixpath.split(hostpath.rstrip("/"))
        if not name:
            return "/"
        base = self.realpath(parent)
        candidate = base.rstrip("/") + "/" + name
        entry = self.entries.get(candidate)
        result = self._walk(candidate) if entry is not None and entry[0] == "link" else candidate
        self._resolved[hostpath] = result
        return result

    def _component(self, hostpath: str) -> tuple[str | None, Any]:
        entry = self.entries.get(hostpath)
        return (entry[1] if entry is not None and entry[0] == "link" else None), entry

    def _entry(self, hostpath: str) -> tuple[str, Any] | None:
        return self.entries.get(self.realpath(hostpath))

    def _lentry(self, hostpath: str) -> tuple[str, Any] | None:
        """The entry at `hostpath` itself (a link is not followed at the last step)."""
        parent, name = posixpath.split(hostpath.rstrip("/") or "/")
        if not name:
            return self.entries.get("/")
        return self.entries.get(posixpath.join(self.realpath(parent), name))

    def _read_bytes(self, hostpath: str) -> bytes:
        if self.recording:
            self.read_files.add(hostpath)
        entry = self._entry(hostpath)
        if entry is None:
            raise FileNotFoundError(2, "No such file or directory", hostpath)
        if entry[0] != "file":
            raise IsADirectoryError(21, "Is a directory", hostpath)
        data: bytes = entry[1]
        return data

    def listdir(self, hostpath: str) -> list[str]:
        if self.recording:
            self.listed_dirs.add(hostpath)
        resolved = self.realpath(hostpath)
        entry = self.entries.get(resolved)
        if entry is None or entry[0] != "dir":
            return []
        return list(self.children.get(resolved, []))

    def readlink(self, hostpath: str) -> str | None:
        if self.recording:
            self.resolved_links.add(hostpath)
        entry = self._lentry(hostpath)
        return entry[1] if entry is not None and entry[0] == "link" else None

    def exists(self, hostpath: str) -> bool:
        return self._entry(hostpath) is not None

    def isdir(self, hostpath: str) -> bool:
        entry = self._entry(hostpath)
        return entry is not None and entry[0] == "dir"

    def islink(self, hostpath: str) -> bool:
        entry = self._lentry(hostpath)
        return entry is not None and entry[0] == "link"

    def file_mode(self, hostpath: str) -> int:
        entry = self._entry(hostpath)
        if entry is None:
            return 0
        return stat.S_IFDIR if entry[0] == "dir" else stat.S_IFREG

    def read_tail(self, hostpath: str, size: int) -> bytes | None:
        try:
            data = self._read_bytes(hostpath)
        except OSError:
            return None
        if len(data) > size:
            data = data[len(data) - size:]
            data = data[data.find(b"\n") + 1:]
        return data


def tree_document(entries: dict[str, Any]) -> dict[str, Any]:
    """tree.json from snapshot plan entries (objects with kind, data, target)."""
    dirs: list[str] = []
    files: dict[str, str] = {}
    binary: dict[str, str] = {}
    links: dict[str, str] = {}
    for path in sorted(entries):
        entry = entries[path]
        if entry.kind == "dir":
            dirs.append(path)
        elif entry.kind == "link":
            links[path] = entry.target
        else:
            data = entry.data or b""
            try:
                files[path] = data.decode("utf-8")
            except UnicodeDecodeError:
                binary[path] = base64.b64encode(data).decode("ascii")
    return {"dirs": dirs, "files": files, "binary": binary, "links": links}

