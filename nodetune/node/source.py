"""Where a read-only command gets its node from: the live host, --root DIR, --from snapshot, or
--from an hwloc XML topology.

    with open_node(root=..., snapshot=..., nvml=...) as node:
        facts = node.facts()

`nvml` is "auto" (live NVML on the live host only), "live", "off", or a path to a recorded
NVML JSON file (`nodetune.nvml/1`). A snapshot always replays its own recorded NVML data.
`snapshot_limit` (or env NODETUNE_SNAPSHOT_LIMIT: "512MiB", "2GiB", bytes) bounds what a
snapshot may unpack to (docs/snapshots.md). `thin_nvml`: live NVML through the ctypes binding
(`nodetune.node.nvml_ctypes`) rather than nvidia-ml-py, for a fast start (`nodetune check`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from nodetune.collectors.limits import left_running
from nodetune.errors import SourceError
from nodetune.node import nvml as nvml_mod
from nodetune.node.hostroot import HostRoot
from nodetune.node.model import Node

ROOT_ENV = "NODETUNE_ROOT"
SNAPSHOT_LIMIT_ENV = "NODETUNE_SNAPSHOT_LIMIT"


def _nvml_backend(choice: str, root: HostRoot, thin: bool = False) -> tuple[Any, str | None]:
    if choice == "off":
        return None, "NVML disabled (--nvml off)"
    if choice not in ("auto", "live"):
        return nvml_mod.RecordedNvml.from_file(choice), None
    if choice == "auto" and not root.is_live:
        return None, (f"NVML not used for --root {root.root} "
                      "(pass --nvml live to query this machine's GPUs)")
    return nvml_mod.live_backend(thin=thin)


def _is_hwloc_xml(path: str) -> bool:
    """--from FILE is an hwloc XML (`lstopo --of xml`) rather than a snapshot."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False  # open_snapshot says what is wrong with the file
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text.startswith((b"<?xml", b"<topology"))


@contextlib.contextmanager
def open_node(root: str | None = None, snapshot: str | None = None,
              nvml: str = "auto", recording: bool = False,
              snapshot_limit: str | None = None, thin_nvml: bool = False) -> Iterator[Node]:
    if root and snapshot:
        raise SourceError("--root and --from cannot be used together",
                          fix="give one: a host tree (--root) or a snapshot (--from)")
    if snapshot and _is_hwloc_xml(snapshot):
        from nodetune.node.hwloc_xml import open_hwloc_xml  # only for --from FILE.xml

        with open_hwloc_xml(snapshot) as topology:
            yield topology
        return
    if snapshot:
        # Imported only for --from: its tarfile, gzip and tempfile imports add ~16 ms to the
        # start-up of every command (measured), `nodetune check` before each job included.
        from nodetune.node.snapshot import Limits, open_snapshot, parse_limit

        limit = snapshot_limit or os.environ.get(SNAPSHOT_LIMIT_ENV) or None
        limits = Limits(unpacked=parse_limit(limit)) if limit else Limits()
        with open_snapshot(snapshot, limits) as replay:
            yield replay
        return
    root = root or os.environ.get(ROOT_ENV) or "/"
    host = HostRoot(root, recording=recording)
    host.check_tree()
    backend, note = _nvml_backend(nvml, host, thin=thin_nvml)
    origin = "live" if host.is_live else f"root:{host.root}"
    try:
        yield Node(root=host, nvml=backend, nvml_note=note, origin=origin)
    finally:
        close = getattr(backend, "close", None)
        if close is not None and not left_running():
            close()  # not under a collector still in NVML: nvmlShutdown would wait for it
