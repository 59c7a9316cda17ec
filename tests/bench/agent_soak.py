"""Soak the agent: N back-to-back cycles (--interval 0) against a host tree, scraping /metrics
as it goes, and report the resident memory growth; then scrape the last report with
--clients parallel clients while --idle sockets sit open, and report the latency and threads.
Prints figures.

    .venv/bin/python tests/bench/agent_soak.py [--cycles 2000] [--clients 20] [--idle 200]
                                               [--root DIR --nvml FILE]

Without --root it uses the real 2x H200 VM tree from tests/fixtures. Targets: RSS growth
under 10 MiB over 2,000 cycles (measured after a warm-up of 100 cycles); under 20 clients and
200 idle sockets every scrape answered and the server's threads stay at 1 + its workers
(the clients run in the same process, so the latency includes their share of the GIL).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
WARMUP = 100


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def soak(root: str, nvml: str, cycles: int, scrape_every: int = 100) -> dict[str, float]:
    """Run the agent's loop and HTTP server in this process; return the figures."""
    from nodetune.agent.cycle import CycleOptions, run_cycle
    from nodetune.agent.loop import Agent
    from nodetune.agent.server import AgentServer
    from nodetune.agent.state import AgentState

    state = AgentState()
    server = AgentServer(state, "127.0.0.1:0")
    server.start()
    host, port = server.address
    url = f"http://{host}:{port}/metrics"
    opts = CycleOptions(root=root, nvml=nvml)
    marks: dict[str, float] = {}
    scrapes = 0

    def cycle() -> dict:
        nonlocal scrapes
        report = run_cycle(opts)
        done = state.cycles + 1
        if done % scrape_every == 0:
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
            scrapes += 1
        if done == WARMUP:
            marks["rss_warm"] = rss_bytes()
            marks["t_warm"] = time.perf_counter()
        return report

    start = time.perf_counter()
    try:
        Agent(cycle, state, interval=0, max_cycles=cycles).run()
    finally:
        server.close()
    end = time.perf_counter()
    rss_end = rss_bytes()
    return {
        "cycles": state.cycles,
        "errors": state.cycle_errors,
        "scrapes": scrapes,
        "seconds": end - start,
        "ms_per_cycle": 1000 * (end - marks["t_warm"]) / max(1, state.cycles - WARMUP),
        "rss_warm_mib": marks["rss_warm"] / 2**20,
        "rss_end_mib": rss_end / 2**20,
        "rss_growth_mib": (rss_end - marks["rss_warm"]) / 2**20,
    }


def scrape_load(root: str, nvml: str, clients: int, idle: int,
                scrapes: int = 2000) -> dict[str, float]:
    """One cycle, then `scrapes` scrapes of /metrics by `clients` threads beside `idle` sockets."""
    from nodetune.agent.cycle import CycleOptions, run_cycle
    from nodetune.agent.server import AgentServer
    from nodetune.agent.state import AgentState

    state = AgentState()
    state.publish(run_cycle(CycleOptions(root=root, nvml=nvml)), 0.0)
    server = AgentServer(state, "127.0.0.1:0")
    server.start()
    host, port = server.address
    url = f"http://{host}:{port}/metrics"
    sockets = [socket.create_connection((host, port)) for _ in range(idle)]

    def one(_: int) -> float:
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
        except OSError:
            return float("inf")
        return time.perf_counter() - start

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            peak = 0
            futures = [pool.submit(one, i) for i in range(scrapes)]
            latencies = []
            for f in futures:
                latencies.append(f.result())
                ours = [t for t in threading.enumerate() if t.name.startswith("nodetune-http")]
                peak = max(peak, len(ours))
        seconds = time.perf_counter() - start
    finally:
        for s in sockets:
            s.close()
        server.close()
    ok = sorted(x for x in latencies if x != float("inf"))
    errors = server.errors.snapshot()
    return {
        "clients": clients,
        "idle_sockets": idle,
        "scrapes": scrapes,
        "failed": scrapes - len(ok),
        "scrapes_per_s": len(ok) / seconds,
        "p50_ms": 1000 * statistics.median(ok),
        "p99_ms": 1000 * ok[int(0.99 * (len(ok) - 1))],
        "server_threads": peak,
        "over_capacity": errors["over_capacity"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--root")
    ap.add_argument("--nvml", default=str(FIXTURES / "nvml" / "h200x2-vm.json"))
    args = ap.parse_args()
    root = args.root
    if root is None:
        tmp = tempfile.mkdtemp(prefix="nodetune-soak-")
        subprocess.run(["tar", "xzf", str(FIXTURES / "hosts" / "h200x2-vm-gather.tar.gz"),
                        "-C", tmp], check=True)
        root = os.path.join(tmp, "node")
    sys.path.insert(0, str(REPO))
    figures = soak(root, args.nvml, args.cycles)
    for key, value in figures.items():
        print(f"{key:<16} {value:10.2f}" if isinstance(value, float) else f"{key:<16} {value:10}")
    print("target: rss_growth_mib < 10 over 2,000 cycles")
    for key, value in scrape_load(root, args.nvml, args.clients, args.idle).items():
        print(f"{key:<16} {value:10.2f}" if isinstance(value, float) else f"{key:<16} {value:10}")
    print("target: failed 0, server_threads = 1 + workers (5) under 20 clients and 200 idle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
