"""`nodetune check --npd`: the answer as a Node Problem Detector custom plugin gives it.

NPD's custom plugin protocol (kubernetes/node-problem-detector, docs/custom_plugin_monitor.md,
pkg/custompluginmonitor/types/types.go and plugin/plugin.go): the exit status is 0 OK, 1 NonOK,
anything else Unknown; stdout, trimmed and cut to the config's max_output_length, is the
condition's message; stderr only goes to NPD's log. nodetune prints its one summary line:
    healthy                              0  "nodetune: healthy (quick: ...)"
    unhealthy (a drain check failed)     1  "nodetune: GPU count 4 (expected 8)"
    drain checks not evaluated, or no    2  "nodetune: not checked ...", the summary
      check passed and some unknown
    nodetune could not run (exit 3)      2  "nodetune: error: what; fix: how"
"""

from __future__ import annotations

from typing import Any

OK, NON_OK, UNKNOWN = 0, 1, 2


def status(doc: dict[str, Any]) -> int:
    """NPD's exit status for a nodetune.check/2 document."""
    code = doc.get("exit_code")
    if code == NON_OK:
        return NON_OK
    if code != OK or doc.get("healthy") is not True:
        return UNKNOWN
    counts = doc.get("counts") or {}
    if not counts.get("pass") and counts.get("unknown"):
        return UNKNOWN
    return OK


def line(doc: dict[str, Any]) -> str:
    """The one line NPD shows as the condition's message."""
    return one_line(str(doc.get("summary") or "nodetune: no summary"))


def one_line(text: str) -> str:
    return " ".join(text.split()) + "\n"
