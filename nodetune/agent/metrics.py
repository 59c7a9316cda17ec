"""Prometheus metrics built from the agent's last report on every scrape.

A custom collector (not long-lived Gauge objects) yields exactly the series of the last report,
so settings that disappear leave no stale series and memory does not grow with cycles.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from nodetune import __version__
from nodetune.agent import usage
from nodetune.agent.state import AgentState

if TYPE_CHECKING:
    from nodetune.agent.server import HttpErrors

PASS_VALUES = {"pass": 1.0, "fail": 0.0}


class ReportCollector:
    def __init__(self, state: AgentState) -> None:
        self.state = state

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        # deferred: optional extra [agent]
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        report, counters = self.state.snapshot()
        yield InfoMetricFamily(
            "nodetune_build", "nodetune build information", value={"version": __version__}
        )
        yield CounterMetricFamily("nodetune_cycles", "Agent cycles run", value=counters["cycles"])
        yield CounterMetricFamily(
            "nodetune_cycle_errors", "Agent cycles that failed", value=counters["cycle_errors"]
        )
        yield CounterMetricFamily(
            "nodetune_kubernetes_errors",
            "Failed Kubernetes API calls",
            value=counters["kube_errors"],
        )
        yield GaugeMetricFamily(
            "nodetune_ready",
            "1 once the first cycle has finished",
            value=1.0 if report is not None else 0.0,
        )
        yield from usage.metric_families(usage.current())
        if counters["last_success_at"] is not None:
            yield GaugeMetricFamily(
                "nodetune_last_run_timestamp_seconds",
                "Unix time the last cycle finished",
                value=counters["last_success_at"],
            )
            yield GaugeMetricFamily(
                "nodetune_cycle_duration_seconds",
                "Duration of the last cycle",
                value=counters["last_cycle_seconds"],
            )
        if report is None:
            return
        yield from _collector_metrics(report)
        yield from _finding_metrics(report)
        yield from _bench_metrics(report)


class HttpErrorCollector:
    """The HTTP server's own troubles: connections closed or answered with an error, by kind."""

    def __init__(self, errors: HttpErrors) -> None:
        self.errors = errors

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        # deferred: optional extra [agent]
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        family = CounterMetricFamily(
            "nodetune_agent_http_errors",
            "HTTP connections closed or answered with an error, by kind",
            labels=["kind"],
        )
        for kind, n in self.errors.snapshot().items():
            family.add_metric([kind], float(n))
        yield family
        yield GaugeMetricFamily(
            "nodetune_agent_http_connections",
            "HTTP connections open now (waiting for a request or being answered)",
            value=float(self.errors.open_connections),
        )


def _collector_metrics(report: dict[str, Any]) -> Iterator[Any]:
    # deferred: optional extra [agent]
    from prometheus_client.core import GaugeMetricFamily

    duration = GaugeMetricFamily(
        "nodetune_collector_duration_seconds",
        "Time each fact collector took in the last cycle",
        labels=["collector"],
    )
    success = GaugeMetricFamily(
        "nodetune_collector_success",
        "1 when the collector succeeded in the last cycle",
        labels=["collector"],
    )
    for name, status in sorted((report.get("collectors") or {}).items()):
        duration.add_metric([name], float(status.get("seconds") or 0.0))
        success.add_metric([name], 1.0 if status.get("ok") else 0.0)
    yield duration
    yield success


def _finding_metrics(report: dict[str, Any]) -> Iterator[Any]:
    # deferred: optional extra [agent]
    from prometheus_client.core import GaugeMetricFamily

    audit = report.get("audit") or {}
    check = report.get("check") or {}
    setting = GaugeMetricFamily(
        "nodetune_setting_compliant",
        "1 when the profile setting is met on this subject, 0 when not (unknown: absent)",
        labels=["id", "subject", "area", "severity"],
    )
    for f in audit.get("findings") or []:
        if f.get("status") in PASS_VALUES:
            setting.add_metric(
                [f["id"], f.get("subject") or "", f.get("area") or "", f.get("severity") or ""],
                PASS_VALUES[f["status"]],
            )
    yield setting
    health = GaugeMetricFamily(
        "nodetune_check_healthy",
        "1 when the health check passes on this subject, 0 when it fails",
        labels=["id", "subject", "fault_code", "severity"],
    )
    for c in check.get("checks") or []:
        labels = [c["id"], "", c.get("fault_code") or "", c.get("severity") or ""]
        subjects = [f for f in c.get("findings") or [] if f.get("status") in PASS_VALUES]
        if subjects:
            for f in subjects:
                labels[1] = f.get("subject") or ""
                health.add_metric(list(labels), PASS_VALUES[f["status"]])
        elif c.get("status") in ("pass", "fail", "timeout"):
            health.add_metric(labels, 1.0 if c["status"] == "pass" else 0.0)
    yield health
    summary = report.get("summary") or {}
    for key, help_text in (
        ("compliant", "1 when the node meets its profile (no warning or critical finding)"),
        ("healthy", "1 when every health check passes"),
    ):
        if summary.get(key) is not None:
            yield GaugeMetricFamily(f"nodetune_node_{key}", help_text, value=float(summary[key]))
    if summary.get("compliance_score") is not None:  # a percentage in JSON, a ratio here
        yield GaugeMetricFamily(
            "nodetune_node_compliance_ratio",
            "Share of profile settings met, weighted by severity, 0..1",
            value=round(float(summary["compliance_score"]) / 100.0, 6),
        )
    failing = GaugeMetricFamily(
        "nodetune_findings", "Failing settings and checks by severity", labels=["kind", "severity"]
    )
    failed_checks = [f for f in (check.get("faults") or []) + (check.get("warnings") or [])]
    for kind, items in (
        ("setting", [f for f in audit.get("findings") or [] if f.get("status") == "fail"]),
        ("check", failed_checks),
    ):
        counts = {"critical": 0, "warning": 0, "info": 0}
        for f in items:
            if f.get("severity") in counts:
                counts[f["severity"]] += 1
        for sev, n in counts.items():
            failing.add_metric([kind, sev], float(n))
    yield failing


def _bench_metrics(report: dict[str, Any]) -> Iterator[Any]:
    # deferred: optional extra [agent]
    from prometheus_client.core import GaugeMetricFamily

    bench = report.get("bench")
    if not bench:
        return
    family = GaugeMetricFamily(
        "nodetune_bench_value", "Last benchmark results", labels=["suite", "metric", "unit"]
    )
    for row in bench.get("metrics") or []:
        if isinstance(row.get("value"), (int, float)):
            family.add_metric(
                [str(row.get("suite", "")), str(row.get("metric", "")), str(row.get("unit", ""))],
                float(row["value"]),
            )
    yield family
