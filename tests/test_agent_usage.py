"""The agent's own resource use, read through psutil and served on /metrics and /report."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from pathlib import Path

from nodetune.agent import usage
from nodetune.agent.server import AgentServer
from nodetune.agent.state import AgentState


def test_usage_counts_this_process_threads_and_files(tmp_path: Path) -> None:
    before = usage.current()
    assert before.rss_bytes > 10 * 2**20  # a Python interpreter with pytest loaded
    assert before.cpu_seconds > 0
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    fd = os.open(tmp_path / "held", os.O_CREAT | os.O_RDONLY)
    try:
        during = usage.current()
    finally:
        os.close(fd)
        stop.set()
        worker.join()
    assert during.threads == before.threads + 1
    assert during.open_fds == before.open_fds + 1


def test_metrics_and_report_carry_the_agent_usage() -> None:
    state = AgentState()
    state.publish({"schema": "nodetune.agent-report/2", "collectors": {}}, 0.1)
    server = AgentServer(state, "127.0.0.1:0")
    server.start()
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        with urllib.request.urlopen(f"http://{host}:{port}/report", timeout=5) as resp:
            report = json.loads(resp.read())
    finally:
        server.close()
    series = {line.split(" ")[0]: float(line.split(" ")[1])
              for line in metrics.splitlines() if line.startswith("nodetune_agent_")
              and not line.startswith("nodetune_agent_http_")}  # test_agent_abuse.py
    assert set(series) == {"nodetune_agent_cpu_seconds_total",
                           "nodetune_agent_resident_memory_bytes", "nodetune_agent_threads",
                           "nodetune_agent_open_fds"}
    assert series["nodetune_agent_threads"] >= 2  # pytest's and the HTTP server's
    assert series["nodetune_agent_open_fds"] >= 4  # stdio and the listening socket
    served = report["agent"]["usage"]
    assert set(served) == {"cpu_seconds", "rss_bytes", "threads", "open_fds"}
    assert served["rss_bytes"] > 10 * 2**20
