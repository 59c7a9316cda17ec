"""The agent's own resource use, read through psutil and served on /metrics and /report."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from nodetune.agent import usage
from tests.agent_scrape import scrape
from tests.agent_scrape import series as scraped_series


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
    metrics, report = scrape({"schema": "nodetune.agent-report/2", "collectors": {}}, 0.1)
    series = {name: value for name, value in scraped_series(metrics, "nodetune_agent_").items()
              if not name.startswith("nodetune_agent_http_")}  # test_agent_abuse.py
    assert set(series) == {"nodetune_agent_cpu_seconds_total",
                           "nodetune_agent_resident_memory_bytes", "nodetune_agent_threads",
                           "nodetune_agent_open_fds"}
    assert series["nodetune_agent_threads"] >= 2  # pytest's and the HTTP server's
    assert series["nodetune_agent_open_fds"] >= 4  # stdio and the listening socket
    served = report["agent"]["usage"]
    assert set(served) == {"cpu_seconds", "rss_bytes", "threads", "open_fds"}
    assert served["rss_bytes"] > 10 * 2**20
