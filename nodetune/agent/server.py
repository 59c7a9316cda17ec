"""The agent's HTTP endpoints: /metrics, /healthz, /readyz, /report."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nodetune.agent.state import AgentState
from nodetune.errors import NodetuneError, needs_extra


def parse_listen(listen: str) -> tuple[str, int]:
    """ "0.0.0.0:9402", "127.0.0.1:0", "[::]:9402", ":9402" -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise NodetuneError(
            f"--listen {listen!r} is not HOST:PORT", fix="use e.g. 0.0.0.0:9402 or 127.0.0.1:9402"
        )
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def make_registry(state: AgentState) -> Any:
    # optional: the [agent] extra serves /metrics; `agent --once` runs without it
    needs_extra("agent", "prometheus_client")
    needs_extra("agent", "psutil")
    # deferred: optional extra [agent]
    from prometheus_client import CollectorRegistry, ProcessCollector

    # deferred: optional extra [agent]: imports prometheus_client
    from nodetune.agent.metrics import ReportCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(state))
    ProcessCollector(registry=registry)
    return registry


class AgentServer:
    """A threaded HTTP server running in the background until `close()`."""

    def __init__(self, state: AgentState, listen: str) -> None:
        host, port = parse_listen(listen)
        registry = make_registry(state)
        handler = _handler_class(state, registry)
        try:
            ThreadingHTTPServer.allow_reuse_address = True
            if ":" in host:
                class V6Server(ThreadingHTTPServer):
                    address_family = socket.AF_INET6

                self.httpd: ThreadingHTTPServer = V6Server((host, port), handler)
            else:
                self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise NodetuneError(
                f"cannot listen on {listen}: {exc.strerror or exc}",
                fix="choose a free port with --listen HOST:PORT",
            ) from exc
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="nodetune-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler_class(state: AgentState, registry: Any) -> type[BaseHTTPRequestHandler]:
    # deferred: optional extra [agent]
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    from nodetune.agent import usage  # psutil: the [agent] extra, checked by make_registry

    class Handler(BaseHTTPRequestHandler):
        server_version = "nodetune-agent"

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would flood the log

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                if state.ready:
                    self._send(200, b"ready\n", "text/plain; charset=utf-8")
                else:
                    self._send(503, b"first cycle not finished\n", "text/plain; charset=utf-8")
            elif path == "/report":
                report, counters = state.snapshot()
                counters["usage"] = usage.current().as_dict()
                if report is None:
                    body = {"error": "first cycle not finished", "agent": counters}
                    self._send(503, json.dumps(body).encode(), "application/json")
                else:
                    doc = dict(report)
                    doc["agent"] = counters
                    self._send(200, json.dumps(doc, default=str).encode(), "application/json")
            else:
                self._send(
                    404,
                    b"not found: try /metrics /healthz /readyz /report\n",
                    "text/plain; charset=utf-8",
                )

    return Handler
