"""Publish the agent's verdict on its own Kubernetes Node: labels, an optional taint, a condition
and an Event on change.

nodetune removes only what it set itself: the keys it set are recorded in the annotation
`nodetune.io/managed` (JSON: {"labels": [...], "taint": true|false}) and only those are ever
removed. A taint or label a person set under the same key is left alone.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass
from typing import Any

from nodetune.errors import needs_extra

LABEL_PROFILE = "nodetune.io/profile"
LABEL_COMPLIANT = "nodetune.io/compliant"
LABEL_HEALTHY = "nodetune.io/healthy"
TAINT_KEY = "nodetune.io/unhealthy"
MANAGED_ANNOTATION = "nodetune.io/managed"
CONDITION_TYPE = "NodetuneHealthy"
TIMEOUT = 10.0  # seconds for each API call


@dataclass(frozen=True)
class Verdict:
    profile: str | None
    compliant: bool
    healthy: bool
    reason: str  # one line: failing checks, "" when healthy
    # False when the check could not be evaluated (nodetune check's exit 3: a collector failed,
    # NT0001): the taint is then left as it is, never added or removed on no result
    checked: bool = True


def _label_value(text: str) -> str:
    """A valid label value: <= 63 chars of [A-Za-z0-9._-], alphanumeric at both ends."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in text)[:63]
    return cleaned.strip("._-")


def desired_labels(verdict: Verdict) -> dict[str, str]:
    labels = {
        LABEL_COMPLIANT: str(verdict.compliant).lower(),
        LABEL_HEALTHY: str(verdict.healthy).lower(),
    }
    if verdict.profile:
        labels[LABEL_PROFILE] = _label_value(verdict.profile)
    return labels


def plan_metadata_patch(
    node: dict[str, Any], verdict: Verdict, taint_unhealthy: bool
) -> dict[str, Any] | None:
    """A merge patch for the Node (labels, annotation, taints), or None when nothing changes.

    `node` is the Node as a plain dict (metadata.labels, metadata.annotations, spec.taints).
    """
    metadata = node.get("metadata") or {}
    labels = dict(metadata.get("labels") or {})
    annotations = metadata.get("annotations") or {}
    try:
        managed = json.loads(annotations.get(MANAGED_ANNOTATION) or "{}")
    except ValueError:
        managed = {}
    owned_labels = set(managed.get("labels") or [])
    owned_taint = bool(managed.get("taint"))

    want = desired_labels(verdict)
    label_patch: dict[str, str | None] = {}
    for key, value in want.items():
        if labels.get(key) != value:
            label_patch[key] = value
    for key in sorted(owned_labels - set(want)):
        if key in labels:
            label_patch[key] = None

    taints = list((node.get("spec") or {}).get("taints") or [])
    ours = [t for t in taints if t.get("key") == TAINT_KEY]
    new_taints = taints
    now_owned_taint = owned_taint
    if not verdict.checked:
        pass  # no result: neither taint a node nodetune could not check nor untaint it
    elif taint_unhealthy and not verdict.healthy:
        if not ours:
            new_taints = [*taints, {"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}]
            now_owned_taint = True
    elif owned_taint:
        new_taints = [t for t in taints if t.get("key") != TAINT_KEY]
        now_owned_taint = False

    new_managed = {"labels": sorted(want), "taint": now_owned_taint}
    patch: dict[str, Any] = {}
    meta_patch: dict[str, Any] = {}
    if label_patch:
        meta_patch["labels"] = label_patch
    if new_managed != {"labels": sorted(owned_labels), "taint": owned_taint}:
        meta_patch["annotations"] = {MANAGED_ANNOTATION: json.dumps(new_managed, sort_keys=True)}
    if meta_patch:
        patch["metadata"] = meta_patch
    if new_taints != taints:
        patch["spec"] = {"taints": new_taints}
        # taints is a plain list in the Node schema: send the version we read, so a concurrent
        # change by someone else makes the patch fail instead of being overwritten
        version = metadata.get("resourceVersion")
        if version:
            patch.setdefault("metadata", {})["resourceVersion"] = version
    return patch or None


def current_condition(node: dict[str, Any]) -> dict[str, Any] | None:
    """nodetune's condition as the Node object holds it now, or None."""
    conditions = (node.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, dict)
                 and c.get("type") == CONDITION_TYPE), None)


def _rfc3339(text: str) -> str | None:
    """A timestamp as the API server writes it ("...Z"); the client reads them back as
    "+00:00" datetimes."""
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))  # 3.10: no "Z"
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.timezone.utc)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition_patch(verdict: Verdict, now: float | None = None,
                    previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The condition to publish. lastTransitionTime moves only when the status changes
    (as the API conventions define it); lastHeartbeatTime moves on every publish."""
    stamp = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now if now is not None else time.time())
    )
    status = "True" if verdict.healthy else "False"
    transition = stamp
    if previous and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition = _rfc3339(str(previous["lastTransitionTime"])) or stamp
    return {
        "status": {
            "conditions": [
                {
                    "type": CONDITION_TYPE,
                    "status": status,
                    "reason": "ChecksPassed" if verdict.healthy else "ChecksFailed",
                    "message": verdict.reason or "all nodetune health checks pass",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": transition,
                }
            ]
        }
    }


def event_body(node_name: str, verdict: Verdict, namespace: str = "default") -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{node_name}.nodetune.", "namespace": namespace},
        "involvedObject": {"kind": "Node", "name": node_name, "apiVersion": "v1"},
        "reason": "NodetuneHealthy" if verdict.healthy else "NodetuneUnhealthy",
        "message": verdict.reason or "all nodetune health checks pass",
        "type": "Normal" if verdict.healthy else "Warning",
        "source": {"component": "nodetune-agent", "host": node_name},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class NodePublisher:
    """Applies verdicts through the official client; backs off after API errors."""

    def __init__(
        self,
        api: Any,
        node_name: str,
        taint_unhealthy: bool,
        event_namespace: str = "default",
        max_backoff: float = 300.0,
    ) -> None:
        self.api = api  # kubernetes.client.CoreV1Api
        self.node_name = node_name
        self.taint_unhealthy = taint_unhealthy
        self.event_namespace = event_namespace
        self.max_backoff = max_backoff
        self.failures = 0
        self.next_attempt = 0.0
        self.last_healthy: bool | None = None

    @classmethod
    def in_cluster(cls, node_name: str, taint_unhealthy: bool) -> NodePublisher:
        # optional: the [agent] extra; the patch planning above needs no client
        needs_extra("agent", "kubernetes")
        # deferred: optional extra [agent]
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(client.CoreV1Api(), node_name, taint_unhealthy)

    def publish(self, verdict: Verdict) -> bool:
        """True when published; False when skipped for backoff or failed (the error is raised)."""
        now = time.monotonic()
        if now < self.next_attempt:
            return False
        try:
            node = self.api.api_client.sanitize_for_serialization(
                self.api.read_node(self.node_name, _request_timeout=TIMEOUT)
            )
            patch = plan_metadata_patch(node, verdict, self.taint_unhealthy)
            if patch:
                # the client would default to a JSON Patch content type for any body
                self.api.patch_node(
                    self.node_name,
                    patch,
                    _request_timeout=TIMEOUT,
                    _content_type="application/merge-patch+json",
                )
            self.api.patch_node_status(
                self.node_name,
                condition_patch(verdict, previous=current_condition(node)),
                _request_timeout=TIMEOUT,
                _content_type="application/strategic-merge-patch+json",
            )
            if self.last_healthy is not None and self.last_healthy != verdict.healthy:
                self.api.create_namespaced_event(
                    self.event_namespace,
                    event_body(self.node_name, verdict, self.event_namespace),
                    _request_timeout=TIMEOUT,
                )
            self.last_healthy = verdict.healthy
        except Exception:
            self.failures += 1
            self.next_attempt = now + min(self.max_backoff, 2.0 ** min(self.failures, 10))
            raise
        self.failures = 0
        self.next_attempt = 0.0
        return True
