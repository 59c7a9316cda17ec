"""Serve an agent report through the real AgentServer on a free local port and scrape it."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from nodetune.agent.server import AgentServer
from nodetune.agent.state import AgentState


def scrape(report: dict[str, Any], cycle_seconds: float) -> tuple[str, dict[str, Any]]:
    """Publish `report` (a cycle that took `cycle_seconds`); its /metrics text and /report."""
    state = AgentState()
    state.publish(report, cycle_seconds)
    server = AgentServer(state, "127.0.0.1:0")
    server.start()
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        with urllib.request.urlopen(f"http://{host}:{port}/report", timeout=5) as resp:
            served: dict[str, Any] = json.loads(resp.read())
    finally:
        server.close()
    return metrics, served


def series(metrics: str, prefix: str) -> dict[str, float]:
    """{name: value} of the unlabelled series whose name starts with `prefix`."""
    return {line.split(" ")[0]: float(line.split(" ")[1])
            for line in metrics.splitlines() if line.startswith(prefix)}
