"""The `nodetune` command line: a thin click group whose commands load lazily.

Each command lives in `nodetune/commands/<name>.py` as a click command named `cmd`; importing
only the one that runs keeps `nodetune check` and `nodetune facts` fast to start.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

from nodetune import exitcodes
from nodetune.errors import NodetuneError, debug_enabled, internal_error_line

if sys.argv[1:2] == ["check"] and sys.argv[0].endswith(
        ("nodetune", "nodetune/__main__.py", "nodetune/cli.py")):
    # `nodetune check` starts before every job: run it without importing click (it returns
    # only for --help or a command line that click should answer).
    from nodetune.check.fastpath import fast_main

    try:
        fast_main(sys.argv[2:])
    except Exception as exc:
        if debug_enabled():
            raise
        sys.stderr.write(internal_error_line(exc) + "\n")
        sys.exit(exitcodes.ERROR)

import contextlib
import importlib
import os
from collections.abc import Callable
from typing import Any, NoReturn

import click

from nodetune import __version__
from nodetune.schemas import ERROR_SCHEMA

# name -> (module under nodetune.commands, one-line help shown by `nodetune --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "facts": ("facts", "Show everything nodetune knows about this node."),
    "topo": ("topo", "Show the GPU/NIC/NVMe topology matrix, or draw it."),
    "snapshot": ("snapshot", "Capture this node into a shareable .tar.gz."),
    "import": ("imports", "Turn nvidia-smi text into an NVML recording to replay."),
    "collectors": ("collectors", "List the fact collectors."),
    "audit": ("audit", "Compare the node with its hardware profile."),
    "profiles": ("profiles", "List or show hardware profiles."),
    "explain": ("explain", "Explain a setting, check or fault code: why, sources, fix."),
    "apply": ("apply", "Fix audit findings through Ansible (dry-run first)."),
    "rollback": ("rollback", "Restore the values the last apply changed."),
    "tune": ("tune", "Apply fixes, prove them with benchmarks, roll back a regression."),
    "manifests": ("manifests", "Generate kubelet, pod, docker and Slurm pinning configuration."),
    "bind": ("bind", "Run a command bound to its GPU's CPUs, memory and NIC."),
    "bench": ("bench", "Run micro-benchmarks that verify tuning."),
    "check": ("check", "Pre-job health check for Slurm and Kubernetes."),
    "agent": ("agent", "Run the node agent: metrics, labels and periodic checks."),
    "fleet": ("fleet", "Collect and compare reports across many nodes."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (mod, _) in COMMANDS.items() if _module_exists(mod)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"nodetune.commands.{entry[0]}")
        command: click.Command = module.cmd
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, h) for n, (mod, h) in COMMANDS.items() if _module_exists(mod)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _module_exists(module: str) -> bool:
    return find_spec(f"nodetune.commands.{module}") is not None


EPILOG = """Exit codes (every command): 0 success / compliant / healthy; 1 warnings only,
unhealthy, or some settings failed; 2 critical findings (audit); 3 nodetune could not run
(usage error, bad profile, bad snapshot or --root); 4 refused, nothing was changed (apply)."""


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nodetune")
def cli() -> None:
    """nodetune: find, fix and prove the tuning of GPU servers."""


def _collector_timeout(_ctx: click.Context, _param: click.Parameter, value: Any) -> None:
    # deferred: the collectors package loads the facts model, which `nodetune --help` and
    # commands that read no node do not need
    from nodetune.collectors import limits

    limits.set_override(None if value is None else float(value))


def node_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--root, --from, --nvml and --collector-timeout, shared by every read-only command."""
    # deferred: commands.params is loaded by the command modules that use these options, not
    # by every start of the CLI
    from nodetune.commands.params import FiniteFloatRange

    func = click.option("--collector-timeout", type=FiniteFloatRange(min=0, min_open=True),
                        default=None, metavar="S", expose_value=False,
                        callback=_collector_timeout,
                        help="Seconds each collector may take before its facts are unknown "
                             "(default: each collector's own, `nodetune collectors` lists "
                             "them; env NODETUNE_COLLECTOR_TIMEOUT).")(func)
    return node_source_options(func)


def node_source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--root, --from and --nvml: where the node comes from (`check` bounds its collectors by
    the timeouts of its checks instead of --collector-timeout)."""
    func = click.option("--nvml", "nvml", default="auto", show_default=True,
                        metavar="auto|live|off|FILE",
                        help="NVML source: live on the live host, off, or a recorded NVML JSON "
                             "file.")(func)
    func = click.option("--from", "snapshot", type=click.Path(dir_okay=False), default=None,
                        metavar="FILE",
                        help="Replay a node from a snapshot (.tar.gz) or an hwloc XML "
                             "topology (lstopo).")(func)
    func = click.option("--root", "root", type=click.Path(file_okay=False), default=None,
                        envvar="NODETUNE_ROOT", metavar="DIR",
                        help="Read the host from DIR laid out like / (env NODETUNE_ROOT).")(func)
    return func


def main(argv: list[str] | None = None) -> None:
    """Entry point: one clear line and exit code 3 for anything nodetune could not do."""
    try:
        _main(argv)
    except SystemExit as exc:
        _exit_past_stuck_collectors(exc.code)
        raise


def _exit_past_stuck_collectors(code: Any) -> None:
    """End the process at once when a collector was abandoned at its time limit: its thread
    may sit in a read or NVML call that never returns (nodetune.collectors.limits)."""
    limits = sys.modules.get("nodetune.collectors.limits")  # not imported: none was abandoned
    if limits is None or not limits.left_running():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code if isinstance(code, int) else exitcodes.ERROR)


def _main(argv: list[str] | None) -> None:
    try:
        rc = cli.main(args=argv, prog_name="nodetune", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("nodetune: aborted", err=True)
        sys.exit(exitcodes.REFUSED)
    except click.ClickException as exc:  # usage errors: exit 3, not click's 2
        _fail(f"nodetune: error: {exc.format_message()}", exitcodes.ERROR, argv)
    except NodetuneError as exc:
        _fail(f"nodetune: error: {exc.one_line()}", exc.exit_code, argv)
    except KeyboardInterrupt:
        click.echo("nodetune: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(exitcodes.OK)
    except Exception as exc:  # a bug: one line, not a traceback, unless NODETUNE_DEBUG is set
        if debug_enabled():
            raise
        _fail(internal_error_line(exc), exitcodes.ERROR, argv)
    sys.exit(rc if isinstance(rc, int) else exitcodes.OK)


def _fail(line: str, code: int, argv: list[str] | None) -> NoReturn:
    """The line on stderr; with --json also a nodetune.error/1 document on stdout, same exit."""
    click.echo(line, err=True)
    args = sys.argv[1:] if argv is None else argv
    if "--json" in args:
        error = line.removeprefix("nodetune: ").removeprefix("error: ")
        doc = {"schema": ERROR_SCHEMA, "error": error, "exit_code": code}
        from nodetune.views.output import json_text  # as every --json document is written

        sys.stdout.write(json_text(doc) + "\n")
    sys.exit(code)


if __name__ == "__main__":  # `python -m nodetune.cli ...` behaves as `nodetune ...`
    main()
