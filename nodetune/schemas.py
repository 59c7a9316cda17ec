"""Versioned schema names of every JSON document nodetune writes, and the one format of the
times in them.

Bump the number after the slash when a documented path changes meaning or disappears;
adding keys does not bump it. A time is ISO 8601 in UTC with microseconds,
"2026-12-03T16:20:49.123456Z" (`utc_timestamp`); a duration is a number of seconds; a score
is a percentage, 0 to 100 (`compliance_score`).
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

FACTS_SCHEMA: Final = "nodetune.facts/1"
COLLECTORS_SCHEMA: Final = "nodetune.collectors/1"
TOPO_SCHEMA: Final = "nodetune.topo/1"
NVML_SCHEMA: Final = "nodetune.nvml/1"
SNAPSHOT_SCHEMA: Final = "nodetune.snapshot/1"
AUDIT_SCHEMA: Final = "nodetune.audit/1"
PROFILE_SCHEMA: Final = "nodetune.profile/1"
APPLY_SCHEMA: Final = "nodetune.apply/1"
ROLLBACK_SCHEMA: Final = "nodetune.rollback/1"
TUNED_PROFILE_SCHEMA: Final = "nodetune.tuned-profile/1"
STATE_SCHEMA: Final = "nodetune.state/1"
MANIFESTS_SCHEMA: Final = "nodetune.manifests/1"
BIND_SCHEMA: Final = "nodetune.bind/1"
BENCH_SCHEMA: Final = "nodetune.bench/1"
CHECK_SCHEMA: Final = "nodetune.check/2"
AGENT_REPORT_SCHEMA: Final = "nodetune.agent-report/2"
AGENT_CHECK_SCHEMA: Final = "nodetune.agent-check/1"
NET_READINGS_SCHEMA: Final = "nodetune.net-readings/1"
FLEET_SCHEMA: Final = "nodetune.fleet/1"
FLEET_REPORT_SCHEMA: Final = "nodetune.fleet-report/1"
NODE_SUMMARY_SCHEMA: Final = "nodetune.node-summary/1"
FLEET_COLLECT_SCHEMA: Final = "nodetune.fleet-collect/1"
FLEET_TOPOLOGY_SCHEMA: Final = "nodetune.fleet-topology/1"
IMPORT_SCHEMA: Final = "nodetune.import/1"
EXPLAIN_SCHEMA: Final = "nodetune.explain/1"
ERROR_SCHEMA: Final = "nodetune.error/1"

_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z")


def utc_timestamp(epoch: float) -> str:
    """`epoch` (seconds since 1970, time.time()) as "YYYY-MM-DDTHH:MM:SS.ffffffZ"."""
    micros = round(epoch * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:06d}Z"


def epoch_of(text: Any) -> float | None:
    """The epoch seconds of a `utc_timestamp` text (its fraction optional); None for anything
    else. (No datetime or strptime: the cached `nodetune check` answer reads this at start-up.)"""
    m = _TIMESTAMP.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    # days from 1970-01-01 to the civil date (H. Hinnant, "chrono-Compatible Low-Level Date
    # Algorithms", days_from_civil)
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    fraction = int((m[7] or "0").ljust(6, "0")) / 1_000_000
    return days * 86400 + hour * 3600 + minute * 60 + second + fraction
