"""Compare new output with a capture made by an earlier nodetune release.

A capture holds the fields its release emitted; newer releases add fields. `as_recorded(new,
old)` keeps, at every level, only the keys the capture has, so a test compares what both
releases report and still fails on any value that changed.
"""

from __future__ import annotations

from typing import Any


def as_recorded(new: Any, old: Any) -> Any:
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: as_recorded(new[k], old[k]) if k in new else new.get(k) for k in old}
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [as_recorded(n, o) for n, o in zip(new, old, strict=True)]
    return new
