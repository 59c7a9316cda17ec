"""`nodetune check`: pre-job health check for Slurm and Kubernetes.

Stdout's first line is the one-line summary ("nodetune: GPU3 PCIe x8 (expected x16)"), usable as
a Slurm drain reason; details follow on the next lines. `--json` prints the nodetune.check/1
document instead. Exit 0 healthy, 1 unhealthy, 3 nodetune could not run.

`nodetune check` usually starts through `nodetune.check.fastpath.fast_main` without click; this
command serves --help and the command lines the fast path leaves to click.
"""

from __future__ import annotations

import click

from nodetune.check.fastpath import TIERS, emitter
from nodetune.cli import node_options


@click.command("check")
@node_options
@click.option("--tier", type=click.Choice(TIERS), default="quick", show_default=True,
              help="quick: files and NVML only (every job start); standard: adds quick memcpy "
                   "and all-reduce runs.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the nodetune.check/1 document instead of text.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None, metavar="S",
              help="Seconds the whole check may take (default 30 quick, 120 standard); each "
                   "check also has its own timeout.")
@click.option("--max-age", type=click.FloatRange(min=0), default=None, metavar="S",
              help="Reuse a cached result at most S seconds old (same node, tier, profile, "
                   "expectations, boot).")
@click.option("--profile", default=None, metavar="NAME|auto",
              help="Take expectations (GPU count, model, port rate ...) from this profile; "
                   "'auto' picks the matching one.")
@click.option("--expect-gpus", type=click.IntRange(min=0), default=None, metavar="N",
              help="Expected number of GPUs (overrides the profile).")
@click.option("--expect-model", default=None, metavar="NAME",
              help="Expected GPU model, e.g. H100 (overrides the profile).")
@click.option("--mount", "mounts", multiple=True, metavar="PATH",
              help="A mount point that must be mounted read-write, e.g. /scratch (repeatable).")
@click.option("--require-module", "modules", multiple=True, metavar="NAME",
              help="A kernel module that must be loaded, e.g. nvidia_peermem (repeatable).")
@click.option("--write-probe", is_flag=True,
              help="Also write and remove a small file in each required mount and in /, /tmp "
                   "and /dev/shm (live host only).")
@click.option("--cache-file", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Keep the cached result in PATH (default: /run/nodetune, $XDG_RUNTIME_DIR "
                   "or the temp directory).")
@click.option("-v", "--verbose", is_flag=True, help="List every check with its status.")
def cmd(root: str | None, snapshot: str | None, nvml: str, tier: str, as_json: bool,
        timeout: float | None, max_age: float | None, profile: str | None,
        expect_gpus: int | None, expect_model: str | None, mounts: tuple[str, ...],
        modules: tuple[str, ...], write_probe: bool, cache_file: str | None, verbose: bool) -> int:
    """Pre-job health check: is this node fit to run a job now?

    Exit 0 healthy (warnings may be printed), 1 unhealthy (a drain check failed or timed
    out), 3 nodetune could not run. The first stdout line is a one-line summary suitable as a
    Slurm drain reason.
    """
    from nodetune.check.operation import CheckRequest, check

    request = CheckRequest(tier=tier, root=root, snapshot=snapshot, nvml=nvml, timeout=timeout,
                           max_age=max_age, profile=profile, expect_gpus=expect_gpus,
                           expect_model=expect_model, mounts=mounts, modules=modules,
                           write_probe=write_probe,
                           cache_file=cache_file)
    return check(request, emitter(as_json, verbose))
