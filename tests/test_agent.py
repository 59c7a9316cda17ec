"""The agent end to end: HTTP endpoints, a real Prometheus scraping it, SIGTERM, robustness."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from nodetune.agent.loop import Agent, next_delay
from nodetune.agent.state import AgentState

NVML = Path(__file__).parent / "fixtures" / "nvml" / "h200x2-vm.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def start_agent(root: Path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodetune",
            "agent",
            "--root",
            str(root),
            "--nvml",
            str(NVML),
            "--listen",
            f"127.0.0.1:{port}",
            "--kubernetes",
            "off",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture()
def vm_root(host_tree) -> Path:
    return host_tree("h200x2-vm-gather")


def test_endpoints_and_sigterm(vm_root):
    port = free_port()
    proc = start_agent(vm_root, port, "--interval", "0.5")
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: get(base + "/healthz")[0] == 200 if _up(base) else None, 15)
        assert wait_for(lambda: get(base + "/readyz")[0] == 200, 30)
        status, body = get(base + "/report")
        report = json.loads(body)
        assert status == 200 and report["schema"] == "nodetune.agent-report/2"
        assert report["summary"]["profile"] == report["audit"]["profile"]["name"]
        assert report["check"]["schema"] == "nodetune.check/2"
        status, metrics = get(base + "/metrics")
        text = metrics.decode()
        assert "nodetune_build_info{version=" in text
        assert "nodetune_node_healthy 1.0" in text
        assert get(base + "/nope")[0] == 404
    finally:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        stopped_in = time.monotonic() - start
    assert rc == 0, proc.stderr.read()
    assert stopped_in < 5.0


def _up(base: str) -> bool:
    try:
        get(base + "/healthz", timeout=1)
        return True
    except OSError:
        return False


def test_failing_cycles_never_stop_the_loop_or_server():
    calls = {"n": 0}

    def cycle():
        calls["n"] += 1
        if calls["n"] % 2:
            raise RuntimeError("NVML: GPU is lost")
        return {"summary": {"compliant": True, "healthy": True}, "collectors": {}}

    published = []

    def publish(report):
        published.append(report)
        raise ConnectionError("API server unreachable")

    state = AgentState()
    agent = Agent(cycle, state, interval=0, publish=publish, max_cycles=6)
    agent.run()
    assert calls["n"] == 6
    assert state.cycle_errors == 3 and state.cycles == 6
    assert state.kube_errors == 3 and len(published) == 3
    assert state.ready


def test_next_delay_jitter_and_backoff():
    import random

    rng = random.Random(1)
    delays = [next_delay(300, 0.1, 0, rng) for _ in range(200)]
    assert min(delays) >= 270 and max(delays) <= 330 and len(set(delays)) > 100
    assert next_delay(300, 0.0, 1, rng) == 5.0
    assert next_delay(300, 0.0, 3, rng) == 20.0
    assert next_delay(300, 0.0, 20, rng) == 300.0
    assert next_delay(0, 0.5, 3, rng) == 0.0


def agent_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nodetune", "agent", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_bad_listen_address_is_one_line_exit_3(vm_root):
    proc = agent_cli("--root", str(vm_root), "--listen", "nonsense", "--kubernetes", "off")
    assert proc.returncode == 3
    assert proc.stderr.strip().count("\n") == 0 and "--listen" in proc.stderr


def test_kubernetes_on_without_node_name_is_refused(vm_root):
    env = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    proc = agent_cli("--root", str(vm_root), "--kubernetes", "on", "--listen", "127.0.0.1:0",
                     env=env)
    assert proc.returncode == 3 and "NODE_NAME" in proc.stderr


PROM_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: nodetune
    static_configs:
      - targets: ['127.0.0.1:{port}']
"""


def prom_query(base: str, query: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body = get(url)
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="Debian's prometheus package is not installed"
)
def test_real_prometheus_scrapes_the_agent(vm_root, tmp_path):
    agent_port, prom_port = free_port(), free_port()
    agent = start_agent(vm_root, agent_port, "--interval", "2")
    (tmp_path / "prometheus.yml").write_text(PROM_CONFIG.format(port=agent_port))
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{prom_port}"
    try:
        assert wait_for(
            lambda: (
                _up(f"http://127.0.0.1:{agent_port}")
                and get(f"http://127.0.0.1:{agent_port}/readyz")[0] == 200
            ),
            30,
        )
        series = wait_for(lambda: _safe_query(base, "nodetune_ready == 1"), 60, step=0.5)
        assert series, "Prometheus never scraped nodetune_ready"
        report = json.loads(get(f"http://127.0.0.1:{agent_port}/report")[1])

        ratio = prom_query(base, "nodetune_node_compliance_ratio")
        assert float(ratio[0]["value"][1]) == pytest.approx(
            report["summary"]["compliance_score"] / 100)
        healthy = prom_query(base, "nodetune_node_healthy")
        assert float(healthy[0]["value"][1]) == float(report["summary"]["healthy"])

        settings = prom_query(base, "nodetune_setting_compliant")
        got = {
            (s["metric"]["id"], s["metric"].get("subject", "")): float(s["value"][1])
            for s in settings
        }
        want = {
            (f["id"], f["subject"] or ""): 1.0 if f["status"] == "pass" else 0.0
            for f in report["audit"]["findings"]
            if f["status"] in ("pass", "fail")
        }
        assert got == want and len(want) > 5

        checks = prom_query(base, "nodetune_check_healthy")
        assert {s["metric"]["fault_code"] for s in checks} >= {
            c["fault_code"] for c in report["check"]["checks"] if c["status"] == "pass"
        }
        durations = prom_query(base, "nodetune_collector_duration_seconds")
        assert {s["metric"]["collector"] for s in durations} == set(report["collectors"])
    finally:
        prom.terminate()
        agent.terminate()
        prom.wait(timeout=10)
        agent.wait(timeout=10)


def _safe_query(base: str, query: str):
    try:
        return prom_query(base, query)
    except (OSError, AssertionError, ValueError):
        return None


@pytest.mark.slow
def test_soak_2000_cycles_memory_stays_flat(vm_root):
    from tests.bench.agent_soak import soak

    figures = soak(str(vm_root), str(NVML), cycles=2000)
    assert figures["cycles"] == 2000 and figures["errors"] == 0
    assert figures["scrapes"] == 20
    assert figures["rss_growth_mib"] < 10, figures


def test_once_json_prints_the_report_and_exit_code(vm_root):
    proc = agent_cli("--root", str(vm_root), "--nvml", str(NVML), "--json")
    report = json.loads(proc.stdout)
    assert report["schema"] == "nodetune.agent-report/2"
    assert report["facts"]["gpu"]["driver_version"]  # what fleet drift compares
    summary = report["summary"]
    assert proc.returncode == (0 if summary["compliant"] and summary["healthy"] else 1)


def test_bench_results_become_metrics():
    from prometheus_client import generate_latest

    from nodetune.agent.server import make_registry

    state = AgentState()
    state.publish({"summary": {"compliant": True, "healthy": True}, "collectors": {},
                   "bench": {"metrics": [{"suite": "cpu-mem", "metric": "cpu-mem.triad.cpu0.mem0",
                                          "unit": "GB/s", "value": 22.5}]}}, 0.1)
    text = generate_latest(make_registry(state)).decode()
    assert ('nodetune_bench_value{metric="cpu-mem.triad.cpu0.mem0",suite="cpu-mem",unit="GB/s"} '
            "22.5") in text
