"""State files: what a host held before `nodetune apply` changed it, for `nodetune rollback`.

One JSON document per apply (schema `nodetune.state/1`), written before anything changes, in
`/var/lib/nodetune/state/<UTC time>.json` (inside the root with --root). Per host it keeps:

- `files`: each persistent file the roles may touch, as nodetune_backup found it: `state`
  (file, link, absent), `content_b64`, `mode`, `target`, `missing_dirs` (directories the apply
  may create);
- `runtime`: each sysfs/procfs file the apply changes: `raw` (its text) and `value`;
- `kmods`: module -> loaded before; `units`: unit -> {active, enabled} before.

A state file also names its target, `root` and `identity` (the hostname of the machine that
wrote it and the /etc/machine-id of the root), and carries a `checksum` (sha256 of its canonical
JSON). `load` refuses a file of the wrong shape, with undecodable content or a checksum that
does not match; `check_target` refuses one written for another root or host, or naming a path
that leaves the root once links inside it are resolved. Files written before these fields
existed (no `checksum`) are `legacy`: accepted only for the root they name.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune import __version__
from nodetune.errors import Refused, SourceError
from nodetune.schemas import STATE_SCHEMA

STATE_DIR = "/var/lib/nodetune/state"
LOCK_NAME = ".lock"
LOCKERS = ("apply", "rollback", "tune")  # the commands that take the lock of a root
STATUSES = ("recorded", "applied", "failed", "interrupted", "rolled-back")
FILE_STATES = ("file", "link", "absent", "directory")
_FIX = "give the file `nodetune apply` printed, unchanged"


@dataclass
class HostState:
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    runtime: dict[str, dict[str, Any]] = field(default_factory=dict)
    kmods: dict[str, bool] = field(default_factory=dict)
    units: dict[str, dict[str, bool]] = field(default_factory=dict)

    def rollback_vars(self) -> dict[str, Any]:
        """The rollback role's variables for this host."""
        return {
            "rollback_files": [{"path": p, **r} for p, r in sorted(self.files.items())],
            "rollback_runtime": [{"path": p, **r} for p, r in sorted(self.runtime.items())],
            "rollback_kmods": dict(self.kmods),
            "rollback_units": dict(self.units),
        }


@dataclass
class State:
    path: Path
    created: str
    profile: str
    root: str
    inventory: str | None = None
    limit: str | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    hosts: dict[str, HostState] = field(default_factory=dict)
    status: str = "recorded"  # recorded, applied, failed, interrupted, rolled-back
    rolled_back_at: str | None = None
    identity: dict[str, str | None] | None = None  # None: not recorded (a legacy file)
    legacy: bool = False  # read from a file without checksum and identity

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": STATE_SCHEMA, "nodetune_version": __version__, "created": self.created,
            "profile": self.profile, "root": self.root,
            "identity": self.identity if self.identity is not None else identity(self.root),
            "inventory": self.inventory,
            "limit": self.limit, "status": self.status, "rolled_back_at": self.rolled_back_at,
            "changes": self.changes,
            "hosts": {h: {"files": s.files, "runtime": s.runtime, "kmods": s.kmods,
                          "units": s.units} for h, s in self.hosts.items()},
        }
        doc["checksum"] = checksum(doc)
        return doc

    def save(self) -> None:
        """Write the state file (atomically: a crash never leaves half a record)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = self.to_json()
        self.identity, self.legacy = doc["identity"], False
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def checksum(doc: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `doc` without its checksum (sorted keys, no spaces)."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def identity(root: str) -> dict[str, str | None]:
    """Who a state file belongs to: this machine's hostname and the root's /etc/machine-id."""
    return {"hostname": socket.gethostname(), "machine_id": machine_id(root)}


def machine_id(root: str) -> str | None:
    path = os.path.join(root or "/", "etc/machine-id")
    try:
        with open(path, "rb") as fh:
            text = fh.read(256).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text or None


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def state_dir(root: str) -> Path:
    return Path(root.rstrip("/") + STATE_DIR) if root not in ("", "/") else Path(STATE_DIR)


def new_path(root: str) -> Path:
    """A fresh state file path in the state directory of `root`."""
    directory = state_dir(root)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"{stamp}.json"
    n = 1
    while path.exists():
        path = directory / f"{stamp}-{n}.json"
        n += 1
    return path


# -- paths under a root -------------------------------------------------------------------

def resolve(root: str, hostpath: str, *, follow_last: bool = True) -> str:
    """The real path a host path of `root` reaches, every link resolved as the kernel does.

    With `follow_last` false the last component is not followed: a module that replaces or
    unlinks a link acts on the link itself, not on what it points to."""
    base = os.path.realpath(root or "/")
    joined = os.path.join(base, hostpath.lstrip("/"))
    if follow_last:
        return os.path.realpath(joined)
    parent, name = os.path.split(joined)
    if name in ("", ".", ".."):
        return os.path.realpath(joined)
    return os.path.join(os.path.realpath(parent), name)


def inside(root: str, real: str) -> bool:
    base = os.path.realpath(root or "/")
    return base == "/" or real == base or real.startswith(base + "/")


def escape(root: str, hostpath: str, *, follow_last: bool = True) -> str | None:
    """Where `hostpath` leads when that is outside `root` (None when it stays inside)."""
    real = resolve(root, hostpath, follow_last=follow_last)
    return None if inside(root, real) else real


def same_root(a: str, b: str) -> bool:
    return os.path.realpath(a or "/") == os.path.realpath(b or "/")


# -- reading --------------------------------------------------------------------------------

class _Shape:
    """Checks of one state file's fields; every problem names the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> SourceError:
        return SourceError(f"state file {self.path} is damaged: {where} {what}; nothing was "
                           "changed", fix=_FIX)

    def obj(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self.fail(where, f"is {_kind(value)}, not an object")
        return value

    def text(self, value: Any, where: str, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(where, f"is {_kind(value)}, not a string")
        return value

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"is {_kind(value)}, not true or false")
        return value

    def hostpath(self, value: Any, where: str) -> str:
        text = self.text(value, where)
        assert text is not None
        if not text.startswith("/") or "\0" in text:
            raise self.fail(where, f"{text!r} is not an absolute path")
        return text

    def file_record(self, path: str, record: Any, where: str) -> dict[str, Any]:
        rec = dict(self.obj(record, where))
        state = rec.get("state")
        if state not in FILE_STATES:
            raise self.fail(f"{where}.state", f"is {state!r}, not one of {', '.join(FILE_STATES)}")
        if state == "file":
            encoded = self.text(rec.get("content_b64"), f"{where}.content_b64")
            try:
                base64.b64decode(encoded or "", validate=True)
            except (binascii.Error, ValueError) as exc:
                raise self.fail(f"{where}.content_b64", f"is not base64 ({exc})") from exc
            mode = self.text(rec.get("mode", "0644"), f"{where}.mode")
            if not mode or len(mode) > 5 or any(c not in "01234567" for c in mode):
                raise self.fail(f"{where}.mode", f"{mode!r} is not an octal file mode")
        elif state == "link":
            self.text(rec.get("target"), f"{where}.target")
        elif state == "absent":
            dirs = rec.get("missing_dirs") or []
            if not isinstance(dirs, list):
                raise self.fail(f"{where}.missing_dirs", f"is {_kind(dirs)}, not a list")
            for i, d in enumerate(dirs):
                self.hostpath(d, f"{where}.missing_dirs[{i}]")
        self.hostpath(path, where)
        return rec

    def host(self, name: str, value: Any) -> HostState:
        where = f"hosts[{name!r}]"
        doc = self.obj(value, where)
        files = {p: self.file_record(p, r, f"{where}.files[{p!r}]")
                 for p, r in self.obj(doc.get("files") or {}, f"{where}.files").items()}
        runtime: dict[str, dict[str, Any]] = {}
        for p, r in self.obj(doc.get("runtime") or {}, f"{where}.runtime").items():
            at = f"{where}.runtime[{p!r}]"
            self.hostpath(p, at)
            rec = dict(self.obj(r, at))
            self.text(rec.get("raw"), f"{at}.raw")
            self.text(rec.get("value"), f"{at}.value")
            runtime[p] = rec
        kmods = {m: self.flag(v, f"{where}.kmods[{m!r}]")
                 for m, v in self.obj(doc.get("kmods") or {}, f"{where}.kmods").items()}
        units: dict[str, dict[str, bool]] = {}
        for u, v in self.obj(doc.get("units") or {}, f"{where}.units").items():
            unit = self.obj(v, f"{where}.units[{u!r}]")
            units[u] = {k: self.flag(unit.get(k), f"{where}.units[{u!r}].{k}")
                        for k in ("active", "enabled")}
        return HostState(files=files, runtime=runtime, kmods=kmods, units=units)


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def load(path: Path) -> State:
    """Read and check a state file: SourceError naming the file when it is not a whole,
    unchanged nodetune state file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SourceError(f"state file {path} does not exist",
                          fix="give the file `nodetune apply` printed, or omit --state-file "
                              "to use the latest") from exc
    except (OSError, ValueError) as exc:
        raise SourceError(f"state file {path} is not readable JSON ({exc})",
                          fix="give the file `nodetune apply` printed") from exc
    if not isinstance(doc, Mapping) or not str(doc.get("schema", "")).startswith("nodetune.state/"):
        raise SourceError(f"{path} is not a nodetune state file (no nodetune.state schema)",
                          fix="give the file `nodetune apply` printed")
    shape = _Shape(path)
    legacy = "checksum" not in doc
    if not legacy:
        recorded = shape.text(doc.get("checksum"), "checksum")
        if recorded != checksum(doc):
            raise SourceError(f"state file {path} does not match its checksum (it was changed "
                              "after nodetune wrote it); nothing was changed", fix=_FIX)
    ident: dict[str, str | None] | None = None
    if not legacy:
        raw_ident = shape.obj(doc.get("identity"), "identity")
        ident = {"hostname": shape.text(raw_ident.get("hostname"), "identity.hostname"),
                 "machine_id": shape.text(raw_ident.get("machine_id"), "identity.machine_id",
                                          optional=True)}
    status = shape.text(doc.get("status", "recorded"), "status")
    if status not in STATUSES:
        raise shape.fail("status", f"is {status!r}, not one of {', '.join(STATUSES)}")
    changes = doc.get("changes") or []
    if not isinstance(changes, list):
        raise shape.fail("changes", f"is {_kind(changes)}, not a list")
    hosts = {name: shape.host(name, h)
             for name, h in shape.obj(doc.get("hosts") or {}, "hosts").items()}
    root = shape.text(doc.get("root", "/" if legacy else None), "root") or "/"
    return State(path=path, created=shape.text(doc.get("created", ""), "created") or "",
                 profile=shape.text(doc.get("profile", ""), "profile") or "", root=root,
                 inventory=shape.text(doc.get("inventory"), "inventory", optional=True),
                 limit=shape.text(doc.get("limit"), "limit", optional=True),
                 changes=list(changes), hosts=hosts, status=status,
                 rolled_back_at=shape.text(doc.get("rolled_back_at"), "rolled_back_at",
                                           optional=True),
                 identity=ident, legacy=legacy)


def check_target(state: State, root: str) -> None:
    """Refuse (nothing changed) a state file that is not this root's and this host's, or that
    names a path leaving the root once the links inside it are resolved."""
    path = state.path
    if not same_root(state.root, root):
        raise Refused(f"state file {path} records the apply to root {state.root}, not {root}; "
                      "nothing was changed",
                      fix=f"run nodetune rollback --root {state.root} --state-file {path}, "
                          "or give a state file of this root")
    if state.identity is not None:
        here = identity(root)
        for key, label in (("hostname", "hostname"), ("machine_id", "machine-id")):
            if state.identity.get(key) != here[key]:
                raise Refused(f"state file {path} was written for {label} "
                              f"{state.identity.get(key) or 'none'}, this is "
                              f"{here[key] or 'none'}; nothing was changed",
                              fix="roll back on the host the apply changed, with its own "
                                  "state file")
    if state.inventory is not None:
        return  # the paths are on the inventory's hosts, checked there by the modules
    for host in state.hosts.values():
        checks = [(p, False) for p in host.files]
        checks += [(d, False) for r in host.files.values() for d in r.get("missing_dirs") or []]
        checks += [(p, True) for p in host.runtime]
        for hostpath, follow in checks:
            outside = escape(root, hostpath, follow_last=follow)
            if outside is not None:
                raise Refused(f"state file {path} names {hostpath}, which leads to {outside}, "
                              f"outside {root}; nothing was changed",
                              fix="remove the link that leaves the tree, or give a state file "
                                  "of this root")


def _age(path: Path) -> tuple[str, int]:
    """Sort key: "20260101T000000Z-2.json" -> ("20260101T000000Z", 2)."""
    stamp, _, n = path.stem.partition("-")
    return stamp, int(n) if n.isdigit() else 0


def latest(root: str) -> Path:
    """The newest state file of `root` not yet rolled back.

    A newer file that cannot be read is an error, never skipped: rolling back an older apply
    under a newer one would restore the wrong values."""
    directory = state_dir(root)
    candidates = sorted(directory.glob("*.json"), key=_age, reverse=True)
    for path in candidates:
        state = load(path)
        if state.status != "rolled-back":
            return path
    raise SourceError(f"no state file to roll back in {directory}",
                      fix="nodetune rollback needs a state file written by `nodetune apply`; "
                          "give one with --state-file")


# -- one apply or rollback at a time --------------------------------------------------------

def lock_path(root: str) -> Path:
    return state_dir(root) / LOCK_NAME


@contextmanager
def locked(root: str, what: str) -> Iterator[Path]:
    """Hold the lock of `root`'s state directory (fcntl.flock) for one apply, rollback or tune
    (`what`, written into the lock file with the pid).

    Another holder makes this refuse at once (exit 4) with its pid. The lock is released when
    the process ends, however it ends."""
    directory = state_dir(root)
    if root not in ("", "/"):
        outside = escape(root, STATE_DIR)
        if outside is not None:
            raise Refused(f"the state directory {directory} leads to {outside}, outside {root}; "
                          "nothing was changed",
                          fix="remove the link that leaves the tree")
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    new_lock = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").split()
            pid = holder[0] if holder else "unknown"
            command = holder[1] if len(holder) > 1 and holder[1] in LOCKERS else \
                ", ".join(LOCKERS[:-1]) + f" or {LOCKERS[-1]}"
            raise Refused(f"another nodetune {command} (pid {pid}) holds {path}; "
                          "nothing was changed",
                          fix="wait for it to finish, then run again") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode("ascii"), 0)
        yield path
    finally:
        # A run that wrote no state file (refused, cancelled) leaves the tree as it found it:
        # the lock file and the directories made for it go again.
        if new_lock and not any(directory.glob("*.json")):
            with suppress(OSError):
                path.unlink()
            for made in created:  # deepest first
                with suppress(OSError):
                    made.rmdir()
        os.close(fd)  # closing the descriptor releases the lock
