"""Node Problem Detector: nodetune's quick health check as an NPD custom plugin.

NPD (kubernetes/node-problem-detector) runs a custom plugin every invoke_interval and reads
its exit status (0 OK, 1 NonOK, 2 Unknown) and one line of stdout; `nodetune check --npd`
answers exactly that. The plugin config follows config/custom-plugin-monitor.json and
docs/custom_plugin_monitor.md there: a permanent rule sets the node condition NodetuneProblem
(its default, healthy state declared under `conditions`, as NPD's validation requires), a
temporary rule records an Event each time the check fails. Both run the same plugin; the
second answer of an interval is the stored result (`--max-age`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from nodetune import __version__
from nodetune.manifests import Options, Rendered
from nodetune.views import templating

if TYPE_CHECKING:
    from nodetune.placement.plan import Placement

CONFIG_FILE = "nodetune-npd.json"
PLUGIN_FILE = "nodetune-npd.sh"
MOUNT = "/config/nodetune"  # where the ConfigMap is mounted in NPD's container
NAMESPACE = "kube-system"  # NPD's own (deployment/node-problem-detector.yaml)
CONDITION = "NodetuneProblem"
REASON = "NodetuneUnhealthy"
CHECK_TIMEOUT_S = 45  # nodetune check --timeout; NPD kills the plugin at RULE_TIMEOUT_S
RULE_TIMEOUT_S = 60
MAX_OUTPUT = 200  # the check's summary line is at most 200 characters


def plugin_argv() -> list[str]:
    # --max-age: the two rules of one interval get one check
    return ["nodetune", "check", "--npd", "--root", "/host", "--nvml", "live", "--tier",
            "quick", "--profile", "auto", "--timeout", str(CHECK_TIMEOUT_S), "--max-age", "30"]


def config(options: Options) -> dict[str, Any]:
    path = f"{MOUNT}/{PLUGIN_FILE}"
    timeout = f"{RULE_TIMEOUT_S}s"
    return {
        "plugin": "custom",
        "pluginConfig": {"invoke_interval": f"{options.interval}s", "timeout": timeout,
                         "max_output_length": MAX_OUTPUT, "concurrency": 1},
        "source": "nodetune-custom-plugin-monitor",
        "metricsReporting": True,
        "conditions": [{"type": CONDITION, "reason": "NodetuneHealthy",
                        "message": "nodetune check: healthy"}],
        "rules": [
            {"type": "temporary", "reason": REASON, "path": path, "timeout": timeout},
            {"type": "permanent", "condition": CONDITION, "reason": REASON, "path": path,
             "timeout": timeout},
        ],
    }


def plugin_script() -> str:
    return ("#!/bin/sh\n# NPD custom plugin: nodetune's quick health check of the host under "
            "/host\nexec " + " ".join(plugin_argv()) + "\n")


def config_map(options: Options) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "nodetune-npd", "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/part-of": "nodetune"}},
            "data": {CONFIG_FILE: json.dumps(config(options), indent=2) + "\n",
                     PLUGIN_FILE: plugin_script()}}


def render(plan: Placement, options: Options) -> Rendered:
    cm = config_map(options)
    text = templating.render("manifests/npd.yaml.j2", version=__version__, mount=MOUNT,
                             config_file=CONFIG_FILE, namespace=NAMESPACE, data=cm["data"],
                             meta={k: v for k, v in cm.items() if k != "data"})
    return Rendered(target="npd", files={CONFIG_FILE: cm["data"][CONFIG_FILE],
                                         "nodetune-npd.yaml": text}, objects=[cm])
