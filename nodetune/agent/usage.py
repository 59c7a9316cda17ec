"""The agent's own resource use: CPU seconds, resident memory, threads and open files.

A node agent must show that it stays small over weeks of cycles; psutil reads all four figures
in one pass over /proc/self (`Process.oneshot`). They are served on /metrics as
`nodetune_agent_*` series and under `agent.usage` in /report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float  # user + system, since the agent started
    rss_bytes: int
    threads: int
    open_fds: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def current(process: psutil.Process | None = None) -> Usage:
    """What `process` (default: this one) uses now."""
    proc = process if process is not None else psutil.Process()
    with proc.oneshot():
        times = proc.cpu_times()
        return Usage(cpu_seconds=round(times.user + times.system, 3),
                     rss_bytes=proc.memory_info().rss, threads=proc.num_threads(),
                     open_fds=proc.num_fds())


def metric_families(usage: Usage) -> Iterator[Metric]:
    yield CounterMetricFamily("nodetune_agent_cpu_seconds",
                              "CPU time the agent has used (user + system)",
                              value=usage.cpu_seconds)
    yield GaugeMetricFamily("nodetune_agent_resident_memory_bytes",
                            "Resident memory of the agent", value=usage.rss_bytes)
    yield GaugeMetricFamily("nodetune_agent_threads", "Threads of the agent",
                            value=usage.threads)
    yield GaugeMetricFamily("nodetune_agent_open_fds", "File descriptors the agent holds open",
                            value=usage.open_fds)
