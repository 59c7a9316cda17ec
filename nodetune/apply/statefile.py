"""State files: what a host held before `nodetune apply` changed it, for `nodetune rollback`.

One JSON document per apply (schema `nodetune.state/1`), written before anything changes, in
`/var/lib/nodetune/state/<UTC time>.json` (inside the root with --root). Per host it keeps:

- `files`: each persistent file the roles may touch, as nodetune_backup found it: `state`
  (file, link, absent), `content_b64`, `mode`, `target`, `missing_dirs` (directories the apply
  may create);
- `runtime`: each sysfs/procfs file the apply changes: `raw` (its text) and `value`;
- `kmods`: module -> loaded before; `units`: unit -> {active, enabled} before.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune import __version__
from nodetune.errors import NodetuneError, SourceError
from nodetune.schemas import STATE_SCHEMA

STATE_DIR = "/var/lib/nodetune/state"


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
    status: str = "recorded"  # recorded, applied, failed, rolled-back
    rolled_back_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA, "nodetune_version": __version__, "created": self.created,
            "profile": self.profile, "root": self.root, "inventory": self.inventory,
            "limit": self.limit, "status": self.status, "rolled_back_at": self.rolled_back_at,
            "changes": self.changes,
            "hosts": {h: {"files": s.files, "runtime": s.runtime, "kmods": s.kmods,
                          "units": s.units} for h, s in self.hosts.items()},
        }

    def save(self) -> None:
        """Write the state file (atomically: a crash never leaves half a record)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


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


def load(path: Path) -> State:
    """Read a state file; SourceError naming the file when it is not one."""
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
    hosts = {name: HostState(files=dict(h.get("files") or {}), runtime=dict(h.get("runtime") or {}),
                             kmods=dict(h.get("kmods") or {}), units=dict(h.get("units") or {}))
             for name, h in (doc.get("hosts") or {}).items()}
    return State(path=path, created=str(doc.get("created", "")),
                 profile=str(doc.get("profile", "")), root=str(doc.get("root", "/")),
                 inventory=doc.get("inventory"), limit=doc.get("limit"),
                 changes=list(doc.get("changes") or []), hosts=hosts,
                 status=str(doc.get("status", "recorded")),
                 rolled_back_at=doc.get("rolled_back_at"))


def _age(path: Path) -> tuple[str, int]:
    """Sort key: "20260101T000000Z-2.json" -> ("20260101T000000Z", 2)."""
    stamp, _, n = path.stem.partition("-")
    return stamp, int(n) if n.isdigit() else 0


def latest(root: str) -> Path:
    """The newest state file of `root` not yet rolled back."""
    directory = state_dir(root)
    candidates = sorted(directory.glob("*.json"), key=_age, reverse=True)
    for path in candidates:
        try:
            state = load(path)
        except NodetuneError:
            continue
        if state.status != "rolled-back":
            return path
    raise SourceError(f"no state file to roll back in {directory}",
                      fix="nodetune rollback needs a state file written by `nodetune apply`; "
                          "give one with --state-file")
