"""The agent's HTTP server under abuse: idle sockets, slow clients, garbage, clients that vanish.

Scrapes must keep succeeding, the thread count must stay bounded, nothing may be printed as a
traceback, and `nodetune_agent_http_errors_total{kind}` must count what happened.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nodetune.agent.server import LISTEN_BACKLOG, AgentServer, HttpLimits
from nodetune.agent.state import AgentState
from tests.test_agent import free_port, get, start_agent, wait_for

REPORT = {"schema": "nodetune.agent-report/1", "summary": {"compliant": True, "healthy": True},
          "collectors": {}, "padding": "x" * 8_000_000}  # synthetic: a large /report body


def errors_of(text: str) -> dict[str, float]:
    pattern = r'^nodetune_agent_http_errors_total\{kind="(\w+)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m, name
    return float(m[1])


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on one connection and read the answer until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def vanish_mid_response(port: int, path: str = "/report") -> None:
    """Ask for a large answer, read a little of it, then reset the connection."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.recv(100)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
    s.close()


MALFORMED = [
    b"GARBAGE\r\n\r\n",  # not a request line
    b"GET /metrics HTTP/9.9\r\n\r\n",  # no such version
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS hello
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",  # request line over 64 KiB
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n",  # too many headers
]
ODD_HEADERS = b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: nan\r\nBad header line\r\n\r\n"


@pytest.fixture()
def server():
    state = AgentState()
    state.publish(REPORT, 0.1)
    srv = AgentServer(state, "127.0.0.1:0", HttpLimits(max_connections=32, workers=2,
                                                       read_timeout=1.0))
    srv.start()
    yield srv
    srv.close()


def test_listen_backlog_is_at_least_64():
    assert LISTEN_BACKLOG >= 64
    assert HttpLimits().max_connections >= 64


def test_idle_sockets_and_slow_clients_never_block_scrapes(server, capfd):
    port = server.address[1]
    base = f"http://127.0.0.1:{port}"
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    slow = []
    for _ in range(4):  # slowloris: headers trickle in, more than the 2 workers can hold
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        slow.append(s)
    try:
        cut: set[int] = set()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and len(cut) < len(slow):
            for i, s in enumerate(slow):
                try:
                    s.send(b"X")  # one byte at a time keeps each recv() within its timeout
                except OSError:
                    cut.add(i)
            time.sleep(0.2)
        assert len(cut) == len(slow)  # ... but not the whole request within its deadline
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: get(base + "/metrics"), range(80)))
        assert [code for code, _ in answers] == [200] * 80
        assert threading.active_count() <= threads_before + 1  # no thread per connection
    finally:
        for s in idle + slow:
            s.close()
    # Every idle and slow socket is accounted for: refused past the cap, or ended by the read
    # timeout (or by the client's close) once it held a slot; on a loaded machine more of them
    # get a slot as held ones time out. The accept thread may still be draining the backlog.
    deadline = time.monotonic() + 15.0
    while True:
        errors = errors_of(get(base + "/metrics")[1].decode())
        ended = errors["over_capacity"] + errors["timeout"] + errors["disconnect"]
        if ended >= 200 + 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ended >= 200 + 4, errors
    assert errors["over_capacity"] > 0, errors  # the cap of 32 refused sockets
    assert errors["timeout"] >= 4  # the slow clients ran out of time (the whole request's)
    assert "Traceback" not in capfd.readouterr().err


def test_malformed_requests_are_answered_and_counted(server, capfd):
    port = server.address[1]
    for data in MALFORMED:
        answer = raw(port, data)
        # an HTTP/0.9-looking line gets the error page without a status line
        assert answer.startswith((b"HTTP/1.0 4", b"HTTP/1.0 5", b"<!DOCTYPE HTML>")), answer[:80]
    assert raw(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").startswith(
        b"HTTP/1.0 501")
    assert raw(port, ODD_HEADERS).startswith(b"HTTP/1.0 200")  # a GET ignores its headers
    assert raw(port, b"") == b""  # connect and close at once
    code, body = get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    errors = errors_of(body.decode())
    assert errors["malformed"] >= 5 and errors["method"] == 1
    assert "Traceback" not in capfd.readouterr().err


def test_clients_that_vanish_mid_response_are_counted(server, capfd):
    port = server.address[1]
    base = f"http://127.0.0.1:{port}"
    # the kernel may take a whole answer into its buffers before the reset arrives: keep
    # vanishing until some resets land mid-answer
    deadline = time.monotonic() + 60
    while errors_of(get(base + "/metrics")[1].decode())["disconnect"] < 3:
        assert time.monotonic() < deadline, "no disconnect counted"
        for _ in range(5):
            vanish_mid_response(port)
    code, body = get(base + "/report")
    assert code == 200 and json.loads(body)["schema"] == "nodetune.agent-report/1"
    assert "Traceback" not in capfd.readouterr().err


def test_the_real_agent_shrugs_off_abuse(host_tree):
    """`nodetune agent` on a real tree: 200 idle sockets, 20 scrapers, garbage, resets."""
    port = free_port()
    proc = start_agent(host_tree("h200x2-vm-gather"), port, "--interval", "1")
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _ready(base), 60)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        try:
            with ThreadPoolExecutor(20) as pool:
                garbage = [pool.submit(raw, port, data) for data in MALFORMED]
                resets = [pool.submit(vanish_mid_response, port, "/metrics") for _ in range(20)]
                scrapes = list(pool.map(lambda _: get(base + "/metrics"), range(200)))
                for f in garbage + resets:
                    f.result()
        finally:
            for s in idle:
                s.close()
        assert all(code == 200 for code, _ in scrapes)
        text = get(base + "/metrics")[1].decode()
        errors = errors_of(text)
        assert errors["over_capacity"] >= 200 - HttpLimits().max_connections
        assert errors["malformed"] >= 5
        assert metric(text, "nodetune_agent_threads") <= 16
        assert metric(text, "nodetune_node_healthy") == 1.0
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
        err = proc.stderr.read()
    assert rc == 0, err
    assert "Traceback" not in err
    assert "Exception" not in err


def _ready(base: str) -> bool:
    try:
        return get(base + "/readyz", timeout=2)[0] == 200
    except OSError:
        return False
