"""A minimal Kubernetes API server on localhost for the agent's tests.

It serves one Node (GET, PATCH with merge-patch or strategic-merge-patch, PATCH status) and
accepts Events, recording every request, so the real `kubernetes` client is exercised end to end.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_status_patch(node: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Strategic merge of status.conditions by their `type` key (what the API server does)."""
    node = copy.deepcopy(node)
    conditions = node.setdefault("status", {}).setdefault("conditions", [])
    for cond in patch.get("status", {}).get("conditions", []):
        for i, old in enumerate(conditions):
            if old.get("type") == cond["type"]:
                conditions[i] = {**old, **cond}
                break
        else:
            conditions.append(cond)
    return node


class FakeKube:
    def __init__(self, node: dict[str, Any]) -> None:
        self.node = node
        self.requests: list[tuple[str, str, str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.fail_all = False
        self.version = 1
        self.node.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"null")

            def _handle(self, method: str) -> None:
                body = self._body() if method in ("PATCH", "POST") else None
                fake.requests.append(
                    (method, self.path, self.headers.get("Content-Type", ""), body)
                )
                if fake.fail_all:
                    self._reply(503, {"kind": "Status", "code": 503, "message": "unavailable"})
                    return
                name = fake.node["metadata"]["name"]
                path = self.path.split("?", 1)[0]
                if path == f"/api/v1/nodes/{name}" and method == "GET":
                    self._reply(200, fake.node)
                elif path == f"/api/v1/nodes/{name}" and method == "PATCH":
                    if self.headers.get("Content-Type") != "application/merge-patch+json":
                        self._reply(415, {"kind": "Status", "code": 415})
                        return
                    want = (body.get("metadata") or {}).get("resourceVersion")
                    if want and want != fake.node["metadata"]["resourceVersion"]:
                        self._reply(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
                        return
                    fake.node = merge_patch(fake.node, body)
                    fake.version += 1
                    fake.node["metadata"]["resourceVersion"] = str(fake.version)
                    self._reply(200, fake.node)
                elif path == f"/api/v1/nodes/{name}/status" and method == "PATCH":
                    fake.node = strategic_status_patch(fake.node, body)
                    self._reply(200, fake.node)
                elif (
                    path.startswith("/api/v1/namespaces/")
                    and path.endswith("/events")
                    and method == "POST"
                ):
                    fake.events.append(body)
                    self._reply(201, body)
                else:
                    self._reply(404, {"kind": "Status", "code": 404})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_POST(self) -> None:
                self._handle("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeKube:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def core_api(self) -> Any:
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return client.CoreV1Api(client.ApiClient(config))
