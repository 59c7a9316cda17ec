"""Network counter readings kept between checks (`nodetune.net-readings/1`).

The agent records one reading per cycle (nodetune.facts.netcounters.reading) in the cache
directory (nodetune.check.cache.runtime_dir), one file per host root, holding the readings of
the current boot within the longest window (an hour at most). `nodetune check` reads that file
and never writes it: counter growth and link flaps compare the node with the agent's readings
when they are of this boot and recent enough, else those checks are skipped and say why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from nodetune.check.cache import read_json, result_key, runtime_dir, write_json_atomic
from nodetune.check.fromagent import boot_id
from nodetune.facts.netcounters import reading
from nodetune.facts.nethealth import History
from nodetune.schemas import NET_READINGS_SCHEMA, utc_timestamp

KEEP_S = 3600.0  # at most; a reading older than every window is dropped sooner
KEEP_MAX = 64  # readings per file, whatever the agent's interval


def readings_path(root: str | None) -> str | None:
    """The readings file of this host root in the cache directory (None: no usable one)."""
    directory = runtime_dir()
    if directory is None:
        return None
    key = result_key({"root": os.path.abspath(root) if root else "/"})
    return os.path.join(directory, f"net-readings-{key}.json")


def load(root: str | None, snapshot: str | None = None, now: float | None = None) -> History:
    """The earlier readings of this boot, or an empty History saying why there are none."""
    now = time.time() if now is None else now
    if snapshot:
        return History((), now, "a snapshot has no earlier reading")
    current = boot_id(root)
    if current is None:
        return History((), now, "no earlier reading (the boot id cannot be read)")
    path = readings_path(root)
    doc = read_json(path)
    if doc is None or doc.get("schema") != NET_READINGS_SCHEMA:
        return History((), now, "no earlier reading (the agent records one each cycle)")
    if doc.get("boot_id") != current:
        return History((), now, "no earlier reading of this boot")
    readings = [r for r in doc.get("readings") or [] if isinstance(r, dict)]
    return History(readings, now, "no earlier reading" if readings else
                   "no earlier reading (the agent records one each cycle)")


def record(root: str | None, history: History, health: Mapping[str, Any],
           keep_s: float = KEEP_S) -> bool:
    """Add this check's reading to the file (the agent, once per cycle), keeping the earlier
    ones of the last `keep_s` seconds (the longest window; at most KEEP_S); False when it
    could not be written (no cache directory, unreadable boot id, a write error)."""
    path = readings_path(root)
    current = boot_id(root)
    if path is None or current is None:
        return False
    now = history.now
    keep_s = min(keep_s, KEEP_S)
    kept = [r for r in history.readings
            if isinstance(r.get("t"), (int, float)) and now - keep_s <= r["t"] < now]
    kept = [*kept, reading(health, now)][-KEEP_MAX:]
    return write_json_atomic(path, {"schema": NET_READINGS_SCHEMA, "boot_id": current,
                                    "written_at": utc_timestamp(now), "readings": kept})
