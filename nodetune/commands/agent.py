"""`nodetune agent`: audit and check the node on a schedule; serve metrics; label the Node."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from nodetune.agent.benchcycle import BenchSchedule
from nodetune.agent.cycle import LIBRARIES, CycleOptions, run_cycle, verdict
from nodetune.agent.kube import NodePublisher
from nodetune.agent.loop import Agent
from nodetune.agent.server import AgentServer
from nodetune.agent.state import AgentState
from nodetune.check.fromagent import answer_path
from nodetune.check.operation import check_profile_dirs
from nodetune.cli import node_options
from nodetune.commands.audit import profile_options
from nodetune.commands.params import PROFILE_NAME, FiniteFloatRange
from nodetune.errors import MissingExtra, NodetuneError
from nodetune.node.hostroot import HostRoot
from nodetune.schemas import AGENT_REPORT_SCHEMA
from nodetune.views.output import emit_json

SHUTDOWN_GRACE_S = 4.0


@click.command("agent")
@node_options
@click.option(
    "--interval",
    type=FiniteFloatRange(min=0),
    default=300.0,
    show_default=True,
    metavar="S",
    help="Seconds between cycles (0: back to back).",
)
@click.option(
    "--jitter",
    type=FiniteFloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Spread each interval by up to this fraction, so nodes do not run in step.",
)
@click.option(
    "--listen",
    default="0.0.0.0:9402",
    show_default=True,
    metavar="HOST:PORT",
    help="Address of /metrics, /healthz, /readyz and /report.",
)
@click.option(
    "--profile", type=PROFILE_NAME,
    default=None,
    metavar="NAME",
    help="Audit against this profile (default: the one the node matches).",
)
@profile_options
@click.option(
    "--check-timeout",
    type=FiniteFloatRange(min=1),
    default=30.0,
    show_default=True,
    metavar="S",
    help="Seconds the health check of one cycle may take.",
)
@click.option(
    "--bench-interval",
    type=FiniteFloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="S",
    help="Also run the quick benchmarks every S seconds (0: never).",
)
@click.option(
    "--kubernetes",
    "kube_mode",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Publish node labels/condition: auto = when running in a cluster.",
)
@click.option(
    "--node-name",
    envvar="NODE_NAME",
    default=None,
    metavar="NAME",
    help="This node's Kubernetes name (env NODE_NAME, from the downward API).",
)
@click.option(
    "--taint-unhealthy",
    is_flag=True,
    help="Also taint the node nodetune.io/unhealthy:NoSchedule while a check fails.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Run one cycle, print its report (with --json: the /report document) and exit.",
)
@click.option("--json", "as_json", is_flag=True, help="With --once: print the report as JSON.")
@click.option(
    "--check-file",
    type=click.Path(dir_okay=False),
    envvar="NODETUNE_AGENT_CHECK_FILE",
    default=None,
    metavar="PATH",
    help="Write each cycle's check answer here, for `nodetune check` to answer from (env "
    "NODETUNE_AGENT_CHECK_FILE; default <root>/run/nodetune/agent-check.json; with --once "
    "only when given).",
)
@click.option(
    "--max-cycles",
    type=click.IntRange(min=1),
    default=None,
    hidden=True,
    help="Stop after N cycles (soak tests).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def cmd(
    root: str | None,
    snapshot: str | None,
    nvml: str,
    interval: float,
    jitter: float,
    listen: str,
    profile: str | None,
    profiles_dirs: tuple[str, ...],
    overrides: str | None,
    check_timeout: float,
    bench_interval: float,
    kube_mode: str,
    node_name: str | None,
    taint_unhealthy: bool,
    once: bool,
    as_json: bool,
    check_file: str | None,
    max_cycles: int | None,
    log_level: str,
) -> int:
    """Run the node agent: every --interval it audits the node and runs the quick health check,
    serves the results on /metrics (Prometheus), /report (JSON), /healthz and /readyz, and, in
    Kubernetes, labels its Node nodetune.io/{profile,compliant,healthy}. `--once` runs one
    cycle and prints its report instead (exit 0 healthy and compliant, 1 otherwise).

    A failing collector, an NVML error or an unreachable API server never stops the loop or the
    HTTP server. SIGTERM stops it within 5 seconds.
    """
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s nodetune-agent %(levelname)s %(message)s",
    )
    log = logging.getLogger("nodetune.agent")
    if root and not snapshot:
        HostRoot(root).check_tree()
    check_profile_dirs(profiles_dirs)  # a bad profile or overrides file fails before any cycle
    if profile:
        LIBRARIES.get(profiles_dirs, overrides).load(profile, overrides)
    publish = _publisher(kube_mode, node_name, taint_unhealthy, log)

    opts = CycleOptions(
        root=root,
        snapshot=snapshot,
        nvml=nvml,
        profile=profile,
        profiles_dirs=profiles_dirs,
        overrides=overrides,
        check_timeout=check_timeout,
        check_file=check_file or (None if once or as_json else answer_path(root)),
    )
    state = AgentState()
    bench = BenchSchedule(bench_interval) if bench_interval > 0 else None
    if once or as_json:
        return _run_once(opts, bench, publish, as_json)

    def cycle() -> dict[str, Any]:
        return run_cycle(opts, bench)

    server = AgentServer(state, listen)
    server.start()
    host, port = server.address
    log.info(
        "listening on %s:%d; interval %ss; kubernetes %s",
        host,
        port,
        interval,
        "on" if publish else "off",
    )
    def publish_report(report: dict[str, Any]) -> None:
        if publish is not None:
            publish(verdict(report))

    agent = Agent(
        cycle,
        state,
        interval=interval,
        jitter=jitter,
        publish=publish_report if publish else None,
        max_cycles=max_cycles,
    )

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.start_thread()
    try:
        while not agent.done.wait(0.2):
            if agent.stop.is_set():
                agent.done.wait(SHUTDOWN_GRACE_S)
                break
    finally:
        server.close()
    if agent.stop.is_set() and not agent.done.is_set():
        log.warning("a cycle was still running at shutdown; leaving it")
        sys.stdout.flush()
        os._exit(0)
    if state.report is None and state.last_error:
        raise NodetuneError(f"no cycle succeeded: {state.last_error}")
    return 0


def _run_once(opts: CycleOptions, bench: BenchSchedule | None,
              publish: Callable[[Any], object] | None, as_json: bool) -> int:
    report = run_cycle(opts, bench)
    if publish is not None:
        publish(verdict(report))
    summary = report["summary"]
    if as_json:
        emit_json(report, AGENT_REPORT_SCHEMA)
    else:
        click.echo(f"nodetune agent: profile {summary['profile']}, "
                   f"{'compliant' if summary['compliant'] else 'not compliant'} "
                   f"({summary['compliance_score']:.1f}%); {summary['check_summary']}")
    return 0 if summary["compliant"] and summary["healthy"] else 1


def _publisher(mode: str, node_name: str | None, taint: bool,
               log: logging.Logger) -> Callable[[Any], object] | None:
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if mode == "off" or (mode == "auto" and not in_cluster):
        if taint:
            log.warning("--taint-unhealthy has no effect without Kubernetes")
        return None
    if not node_name:
        raise NodetuneError(
            "Kubernetes publishing needs the node's name",
            fix="set NODE_NAME from the downward API (spec.nodeName) or pass "
            "--node-name, or --kubernetes off",
        )
    try:
        publisher = NodePublisher.in_cluster(node_name, taint)
    except MissingExtra:
        raise
    except Exception as exc:
        raise NodetuneError(
            f"cannot load a Kubernetes configuration: {exc}",
            fix="run in a pod with a ServiceAccount, provide a kubeconfig, or "
            "pass --kubernetes off",
        ) from exc
    return publisher.publish
