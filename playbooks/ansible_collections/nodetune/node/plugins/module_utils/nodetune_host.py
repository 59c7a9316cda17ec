"""Host paths under a root, shared by nodetune's Ansible modules.

Every nodetune module takes host paths ("/sys/kernel/mm/transparent_hugepage/enabled") and a
`root`: "" (or "/") is the live host; any other directory is a tree laid out like / (a copy of
a gathered node), where sysfs and procfs files are plain files.
"""

from __future__ import annotations

import base64
import glob
import os
import re
import stat

_BRACKETED = re.compile(r"\[([^\]]*)\]")


def is_live(root: str) -> bool:
    return root in ("", "/")


def real(root: str, hostpath: str) -> str:
    """The real path of a host path under root."""
    if is_live(root):
        return hostpath
    return os.path.join(root, hostpath.lstrip("/"))


class Escape(Exception):
    """A host path under a root that a link leads out of the root."""


def writable(root: str, hostpath: str, follow_last: bool = True) -> str:
    """The real path of a host path under root, to write; Escape when links lead it out of
    the root (its last component followed only with `follow_last`: a module that replaces or
    unlinks a link acts on the link itself)."""
    path = real(root, hostpath)
    if is_live(root):
        return path
    base = os.path.realpath(root)
    if follow_last:
        target = os.path.realpath(path)
    else:
        parent, name = os.path.split(path)
        target = os.path.join(os.path.realpath(parent), name)
    if base != "/" and target != base and not target.startswith(base + "/"):
        raise Escape(f"{hostpath} leads to {target}, outside the root {root}; not written")
    return path


def to_host(root: str, realpath: str) -> str:
    if is_live(root):
        return realpath
    return "/" + os.path.relpath(realpath, root)


def expand(root: str, pattern: str) -> list[str]:
    """Host paths matching a glob pattern under root, sorted; a plain path gives itself."""
    if not glob.has_magic(pattern):
        return [pattern]
    return sorted(to_host(root, p) for p in glob.glob(real(root, pattern)))


def read_raw(root: str, hostpath: str) -> str | None:
    """A sysfs/procfs file's text as the kernel gives it; None when missing or unreadable."""
    try:
        with open(real(root, hostpath), encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def selected(raw: str) -> str:
    """The value a file holds: the bracketed choice of "always [madvise] never", else the
    text with whitespace runs collapsed ("4096\\t87380" -> "4096 87380")."""
    match = _BRACKETED.search(raw)
    if match is not None:
        return match.group(1)
    return " ".join(raw.split())


def choices(raw: str) -> list[str]:
    """The choices of a bracketed file, brackets removed; [] for a plain file."""
    if _BRACKETED.search(raw) is None:
        return []
    return [token.strip("[]") for token in raw.split()]


def same(raw: str, value: str) -> bool:
    """Whether a file already holds `value` (numbers compare as numbers)."""
    current, wanted = selected(raw), " ".join(str(value).strip("[] \n").split())
    if current == wanted:
        return True
    try:
        return [int(x) for x in current.split()] == [int(x) for x in wanted.split()]
    except ValueError:
        return False


def emulated(raw: str, value: str) -> str:
    """What the kernel would show after `value` is written: the bracket moves to the chosen
    word in a choice file; a plain file holds the value and a newline."""
    options = choices(raw)
    if options and value in options:
        return " ".join(f"[{o}]" if o == value else o for o in options) + "\n"
    return f"{value}\n"


def _missing_dirs(root: str, hostpath: str) -> list[str]:
    missing: list[str] = []
    parent = os.path.dirname(hostpath)
    while parent not in ("/", "") and not os.path.lexists(real(root, parent)):
        missing.insert(0, parent)
        parent = os.path.dirname(parent)
    return missing


def record_file(root: str, hostpath: str) -> dict:
    """How a file is now, for rollback: state file (content_b64, mode), link (target) or
    absent (with the directories that do not exist either, outermost first)."""
    realpath = real(root, hostpath)
    if os.path.islink(realpath):
        return {"state": "link", "target": os.readlink(realpath)}
    if not os.path.lexists(realpath):
        return {"state": "absent", "missing_dirs": _missing_dirs(root, hostpath)}
    if os.path.isdir(realpath):
        return {"state": "directory"}
    with open(realpath, "rb") as fh:
        content = fh.read()
    return {"state": "file", "content_b64": base64.b64encode(content).decode("ascii"),
            "mode": f"{stat.S_IMODE(os.stat(realpath).st_mode):04o}"}
