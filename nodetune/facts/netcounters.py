"""Network counter readings and what changed between them: InfiniBand port error counters and
link flaps (IB `link_downed`, NIC `carrier_changes`).

A reading is what one check saw: `{"t": epoch, "ports": {"mlx5_0/1": {counter: value}},
"interfaces": {"eth0": carrier_changes}}`. The agent keeps the readings of the current boot
(nodetune.check.readings); these functions compare the current one with them. Nothing here
reads the host.

A counter grows within a window when it rose over the readings of that window and the current
value (the oldest of them is the baseline). A counter lower than in an earlier reading was
reset (`perfquery -R`, a driver reload, a 32-bit wrap): the drop is not growth, and counting
starts again from the lower value.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

# Port counters whose growth means the physical link is failing: symbol and link-integrity
# errors, link recoveries and downs, bad packets received, receive-buffer overruns
# (sysfs names of the IBA PortCounters, Documentation/ABI/stable/sysfs-class-infiniband).
# Discards, constraint errors, VL15 drops and switch-relay errors also rise on a healthy port
# (congestion, SM sweeps, multicast loop-back); they count against the absolute thresholds only.
LINK_ERROR_COUNTERS = (
    "symbol_error", "link_error_recovery", "link_downed", "port_rcv_errors",
    "port_rcv_remote_physical_errors", "local_link_integrity_errors",
    "excessive_buffer_overrun_errors",
)
Reading = Mapping[str, Any]


def reading(health: Mapping[str, Any], at: float) -> dict[str, Any]:
    """The counters of a `health` section (nodetune.facts.health) worth comparing with a later
    reading: each RDMA port's counters and each physical interface's carrier changes."""
    ports = {str(p["subject"]): dict(p["counters"]) for p in health.get("rdma_ports") or []
             if p.get("counters")}
    interfaces = {str(f["subject"]): int(f["count"]) for f in health.get("link_flaps") or []
                  if f.get("kind") == "interface" and isinstance(f.get("count"), int)}
    return {"t": at, "ports": ports, "interfaces": interfaces}


def increase_within(history: Sequence[Reading], now: float, window_s: float, kind: str,
                    name: str, current: int | None, counter: str | None = None) -> int | None:
    """How much a counter rose over the readings of the last `window_s` seconds and the current
    value (resets skipped); None without a reading of it in that window."""
    if current is None:
        return None
    values = []
    for r in within(history, now, window_s):
        value = (r.get(kind) or {}).get(name)
        if counter is not None:
            value = value.get(counter) if isinstance(value, Mapping) else None
        if isinstance(value, int):
            values.append(value)
    if not values:
        return None
    values.append(current)
    return sum(b - a for a, b in itertools.pairwise(values) if b > a)


def within(history: Sequence[Reading], now: float, window_s: float) -> list[Reading]:
    """The readings of the last `window_s` seconds, oldest first."""
    timed = [(float(r["t"]), i, r) for i, r in enumerate(history)
             if isinstance(r.get("t"), (int, float))]
    return [r for t, _, r in sorted(timed) if now - window_s <= t <= now]
