"""The nodetune agent on every GPU node: Namespace, ServiceAccount, RBAC and the DaemonSet.

The container runs `nodetune agent --root /host --nvml live --listen 0.0.0.0:9402
--interval N [--taint-unhealthy]` against the host's /proc, /sys and /etc mounted read-only
under /host; it patches its own Node (labels, taint, condition) and records Events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodetune import __version__
from nodetune.manifests import Options, Rendered
from nodetune.views import templating

if TYPE_CHECKING:
    from nodetune.placement.plan import Placement

PORT = 9402
NAME = "nodetune-agent"
TAINT_KEY = "nodetune.io/unhealthy"


def agent_args(options: Options) -> list[str]:
    args = ["agent", "--root", "/host", "--nvml", "live", "--listen", f"0.0.0.0:{PORT}",
            "--interval", str(options.interval)]
    if options.taint_unhealthy:
        args.append("--taint-unhealthy")
    return args


def objects(options: Options) -> list[dict[str, Any]]:
    ns = options.namespace
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "nodetune"}
    # The kernel log (/dev/kmsg, else /var/log) is where Xid and SXid events are: without it
    # the agent could only report them as unknown.
    host_mounts = [("proc", "/proc", "Directory"), ("sys", "/sys", "Directory"),
                   ("etc", "/etc", "Directory"), ("log", "/var/log", "Directory"),
                   ("kmsg", "/dev/kmsg", "CharDevice")]
    probe = {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 20,
             "timeoutSeconds": 5, "failureThreshold": 3}
    container = {
        "name": "agent",
        "image": options.image,
        "args": agent_args(options),
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"}],
        "ports": [{"name": "metrics", "containerPort": PORT, "protocol": "TCP"}],
        "livenessProbe": {**probe, "initialDelaySeconds": 10},
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "metrics"},
                           "periodSeconds": 10, "failureThreshold": 1},
        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
        # requests < limits keeps the agent Burstable: it never takes exclusive cores from
        # the static CPU manager.
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                      "limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": {
            "runAsUser": 0, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
            # SYS_ADMIN: the kernel shows PCIe config space past 64 bytes (ACS, MaxReadReq)
            # only to it. SYSLOG: reading /dev/kmsg under kernel.dmesg_restrict=1.
            "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN", "SYSLOG"]},
        },
        "volumeMounts": [{"name": f"host-{n}", "mountPath": f"/host{p}", "readOnly": True}
                         for n, p, _ in host_mounts] + [{"name": "tmp", "mountPath": "/tmp"}],
    }
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": labels,
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/port": str(PORT),
                                             "prometheus.io/path": "/metrics"}},
                "spec": {
                    "serviceAccountName": NAME,
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        # the agent must keep running on nodes it tainted itself
                        {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"},
                    ],
                    "terminationGracePeriodSeconds": 10,
                    "containers": [container],
                    "volumes": [{"name": f"host-{n}", "hostPath": {"path": p, "type": kind}}
                                for n, p, kind in host_mounts]
                    + [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {
             # hostPath volumes are outside the baseline Pod Security Standard.
             "pod-security.kubernetes.io/enforce": "privileged"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": NAME, "namespace": ns, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": NAME, "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
                   {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
                   {"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
                    "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": NAME, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]},
        daemonset,
    ]


def render(plan: Placement, options: Options) -> Rendered:
    objs = objects(options)
    text = templating.render("manifests/daemonset.yaml.j2", objects=objs, version=__version__,
                             port=PORT, image=options.image,
                             command=" ".join(["nodetune", *agent_args(options)]))
    return Rendered(target="daemonset", files={"nodetune-agent.yaml": text}, objects=objs)
