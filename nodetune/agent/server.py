"""The agent's HTTP endpoints: /metrics, /healthz, /readyz, /report.

The server is built to be scraped by Prometheus on a node that anyone on the network can reach:

- one thread accepts connections and waits for their requests; a small fixed pool of worker
  threads answers them, so idle or slow clients cost a socket, never a thread;
- at most `HttpLimits.max_connections` connections are open at once: past that, the connection
  that has waited longest without sending a request is closed (a scraper sends its request at
  once, an idle socket does not), or the new one when every open connection is being served;
- a request must arrive whole within `HttpLimits.read_timeout` seconds of the connection opening
  (each socket also has that timeout, so a stalled write ends too);
- a client that disconnects, a request that is not HTTP, a timeout or a refused connection is
  counted in `nodetune_agent_http_errors_total{kind}` (docs/metrics.md), never printed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import queue
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any, Final

from nodetune.agent.state import AgentState
from nodetune.errors import NodetuneError, needs_extra
from nodetune.schemas import utc_timestamp

if TYPE_CHECKING:
    from socketserver import BaseServer

log = logging.getLogger("nodetune.agent")

LISTEN_BACKLOG: Final = 128
# why each connection that nodetune closed or could not answer was counted
ERROR_KINDS: Final = ("disconnect", "malformed", "method", "timeout", "over_capacity", "internal")
_DISCONNECTS: Final = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_MALFORMED_CODES: Final = frozenset({400, 408, 414, 431, 505})


@dataclass(frozen=True)
class HttpLimits:
    """How much the HTTP server gives one client and all of them (defaults: docs/metrics.md)."""

    max_connections: int = 128  # open at once, waiting or being answered
    workers: int = 4  # threads answering requests
    read_timeout: float = 10.0  # seconds for a whole request to arrive; also each socket's timeout


class HttpErrors:
    """Counters of connections closed or answered with an error, by kind; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(ERROR_KINDS, 0)
        self.open_connections = 0

    def count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def parse_listen(listen: str) -> tuple[str, int]:
    """ "0.0.0.0:9402", "127.0.0.1:0", "[::]:9402", ":9402" -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise NodetuneError(
            f"--listen {listen!r} is not HOST:PORT", fix="use e.g. 0.0.0.0:9402 or 127.0.0.1:9402"
        )
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def make_registry(state: AgentState, errors: HttpErrors | None = None) -> Any:
    # optional: the [agent] extra serves /metrics; `agent --once` runs without it
    needs_extra("agent", "prometheus_client")
    needs_extra("agent", "psutil")
    # deferred: optional extra [agent]
    from prometheus_client import CollectorRegistry, ProcessCollector

    # deferred: optional extra [agent]: imports prometheus_client
    from nodetune.agent.metrics import HttpErrorCollector, ReportCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(state))
    if errors is not None:
        registry.register(HttpErrorCollector(errors))
    ProcessCollector(registry=registry)
    return registry


class _DeadlineReader(io.RawIOBase):
    """A socket's reading side that gives up once the request's deadline has passed.

    A per-recv timeout alone lets a client that sends one byte every few seconds hold a
    worker forever; the deadline bounds the whole request.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _Server(HTTPServer):
    """Accepts on one thread, waits for requests with a selector, answers on a worker pool."""

    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        limits: HttpLimits,
        errors: HttpErrors,
        family: socket.AddressFamily,
    ) -> None:
        self.address_family = family
        self.limits = limits
        self.errors = errors
        self._waiting: dict[socket.socket, float] = {}  # connection -> when it was accepted
        self._busy: dict[socket.socket, float] = {}  # handed to the workers -> request deadline
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[socket.socket, Any] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._workers: list[threading.Thread] = []
        super().__init__(address, handler)

    def server_activate(self) -> None:
        super().server_activate()
        self.socket.setblocking(False)  # accept() after select() must not wait for a gone client

    # the accepting thread ------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        for i in range(self.limits.workers):
            worker = threading.Thread(target=self._work, name=f"nodetune-http-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self.socket, selectors.EVENT_READ)
                while not self._stop.is_set():
                    for key, _ in sel.select(min(poll_interval, self.limits.read_timeout)):
                        if key.fileobj is self.socket:
                            self._accept(sel)
                        else:
                            self._dispatch(sel, key.fileobj)  # type: ignore[arg-type]
                    self._expire(sel)
                for conn in list(self._waiting):
                    self._drop(sel, conn)
        finally:
            for _ in self._workers:
                self._jobs.put(None)
            self._stopped.set()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            conn, addr = self.socket.accept()
        except OSError:  # the client gave up between select() and accept()
            return
        with self._lock:
            full = len(self._waiting) + len(self._busy) >= self.limits.max_connections
        if full:
            self.errors.count("over_capacity")
            if not self._waiting:  # every slot is being answered: refuse the newcomer
                _close(conn)
                return
            oldest = min(self._waiting, key=self._waiting.__getitem__)
            self._drop(sel, oldest)
        self._waiting[conn] = time.monotonic()
        sel.register(conn, selectors.EVENT_READ, addr)
        self._update_open()

    def _dispatch(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        addr = sel.get_key(conn).data
        sel.unregister(conn)
        accepted = self._waiting.pop(conn)
        with self._lock:
            self._busy[conn] = accepted + self.limits.read_timeout
        self._jobs.put((conn, addr))

    def deadline(self, conn: socket.socket) -> float:
        """When the request on `conn` must have arrived whole."""
        with self._lock:
            return self._busy.get(conn, time.monotonic() + self.limits.read_timeout)

    def _expire(self, sel: selectors.BaseSelector) -> None:
        cutoff = time.monotonic() - self.limits.read_timeout
        for conn in [c for c, t in self._waiting.items() if t <= cutoff]:
            self.errors.count("timeout")
            self._drop(sel, conn)

    def _drop(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        sel.unregister(conn)
        del self._waiting[conn]
        _close(conn)
        self._update_open()

    def _update_open(self) -> None:
        with self._lock:
            self.errors.open_connections = len(self._waiting) + len(self._busy)

    # the workers ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            conn, addr = job
            try:
                self.RequestHandlerClass(conn, addr, self)  # type: ignore[arg-type]
            except _DISCONNECTS:
                self.errors.count("disconnect")
            except TimeoutError:
                self.errors.count("timeout")
            except Exception as exc:  # a bug in a handler must not end the worker
                self.errors.count("internal")
                log.warning("HTTP request from %s failed: %s: %s", addr[0], type(exc).__name__, exc)
            finally:
                with self._lock:
                    self._busy.pop(conn, None)
                _close(conn)
                self._update_open()

    def shutdown(self) -> None:
        self._stop.set()
        self._stopped.wait()
        with self._lock:
            busy = list(self._busy)
        for conn in busy:  # unblock workers reading from a slow client
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()


class AgentServer:
    """The HTTP server, serving in the background from `start()` until `close()`."""

    def __init__(self, state: AgentState, listen: str, limits: HttpLimits | None = None) -> None:
        host, port = parse_listen(listen)
        self.limits = limits or HttpLimits()
        self.errors = HttpErrors()
        registry = make_registry(state, self.errors)
        handler = _handler_class(state, registry, self.errors)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.httpd = _Server((host, port), handler, self.limits, self.errors, family)
        except OSError as exc:
            raise NodetuneError(
                f"cannot listen on {listen}: {exc.strerror or exc}",
                fix="choose a free port with --listen HOST:PORT",
            ) from exc
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
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()


def _handler_class(
    state: AgentState, registry: Any, errors: HttpErrors
) -> type[BaseHTTPRequestHandler]:
    # deferred: optional extra [agent]
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    from nodetune.agent import usage  # psutil: the [agent] extra, checked by make_registry

    class Handler(BaseHTTPRequestHandler):
        server_version = "nodetune-agent"

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # the socket stays open until every file made from it is closed
            deadline = _deadline(self.server, self.connection)
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would flood the log

        def log_error(self, format: str, *args: Any) -> None:
            if args and isinstance(args[0], TimeoutError):  # handle_one_request swallows it
                errors.count("timeout")

        def send_error(self, code: int, message: str | None = None,
                       explain: str | None = None) -> None:
            if code == 501:
                errors.count("method")
            elif code in _MALFORMED_CODES:
                errors.count("malformed")
            super().send_error(code, message, explain)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.connection.settimeout(_read_timeout(self.server))  # the answer gets its own time
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
                for key in ("started_at", "last_success_at"):  # epoch numbers for /metrics
                    if counters[key] is not None:
                        counters[key] = utc_timestamp(counters[key])
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


def _deadline(server: BaseServer, conn: socket.socket) -> float:
    if isinstance(server, _Server):
        return server.deadline(conn)
    return time.monotonic() + HttpLimits().read_timeout


def _read_timeout(server: BaseServer) -> float:
    return server.limits.read_timeout if isinstance(server, _Server) else HttpLimits().read_timeout
