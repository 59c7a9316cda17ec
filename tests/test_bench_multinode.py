"""allreduce across nodes: groups, launcher command lines, rank discovery, and the whole-job and
per-pair analysis over recorded nccl-tests output (the 8x A100 log, one pair slowed down)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodetune.bench import multinode, session, torchdist
from nodetune.bench.base import RunContext, RunOptions

A100_LOG = Path(__file__).parent / "fixtures" / "bench" / "a100x8-nccl-allreduce.log"
RDMA_FACTS = {"rdma": {"devices": [{"ports": [{"state": "ACTIVE", "rate_gbps": 400}]}
                                   for _ in range(8)]}}


def test_groups_are_the_job_then_node_pairs() -> None:
    assert multinode.groups(("a", "b")) == [("a", "b")]
    assert multinode.groups(("a", "b", "c")) == [("a", "b", "c"), ("a", "b"), ("a", "c"),
                                                 ("b", "c")]
    many = tuple(f"n{i}" for i in range(10))
    ring = multinode.groups(many)
    assert ring[0] == many and len(ring) == 11 and ring[-1] == ("n9", "n0")


def test_launch_command_lines() -> None:
    inner = ["all_reduce_perf", "-g", "1"]
    assert multinode.launch_argv("srun", ("a", "b"), 8, inner) == [
        "srun", "--nodes", "2", "--nodelist", "a,b", "--ntasks-per-node", "8",
        "--kill-on-bad-exit=1", "all_reduce_perf", "-g", "1"]
    assert multinode.launch_argv("mpirun", ("a", "b"), 4, inner)[:7] == [
        "mpirun", "-np", "8", "--host", "a:4,b:4", "--map-by", "ppr:4:node"]


@pytest.mark.parametrize(("env", "ranks"), [
    ({"RANK": "3", "WORLD_SIZE": "16", "LOCAL_RANK": "3"}, (3, 16, 3)),
    ({"OMPI_COMM_WORLD_RANK": "9", "OMPI_COMM_WORLD_SIZE": "16",
      "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, (9, 16, 1)),
    ({"SLURM_PROCID": "15", "SLURM_NTASKS": "16", "SLURM_LOCALID": "7"}, (15, 16, 7)),
    ({"SLURM_JOB_ID": "1"}, None),
])
def test_ranks_from_each_launcher(env: dict[str, str], ranks: Any) -> None:
    assert torchdist.launcher_ranks(env) == ranks


def replay(slow_pair: tuple[str, ...], factor: float) -> Any:
    text = A100_LOG.read_text()
    calls: list[tuple[list[str], dict[str, str]]] = []

    def execute(argv: list[str], env: Any) -> str:
        calls.append((argv, dict(env)))
        group = tuple(argv[argv.index("--nodelist") + 1].split(","))
        if group != slow_pair:
            return text
        lines = []
        for line in text.splitlines():
            if line.strip().startswith("8589934592"):  # the largest size: what pairs report
                line = line.replace("235.26", f"{235.26 * factor:.2f}")
                line = line.replace("235.03", f"{235.03 * factor:.2f}")
            lines.append(line)
        return "\n".join(lines)

    return execute, calls


def test_whole_job_against_the_nics_and_the_slow_pair() -> None:
    execute, calls = replay(("n2", "n3"), 0.7)
    ctx = RunContext(facts=RDMA_FACTS, options=RunOptions(nodes=("n1", "n2", "n3", "n4"),
                                                          launcher="srun", repeat=2),
                     which=lambda name: f"/usr/bin/{name}")
    result = multinode.run(ctx, execute)
    assert len(calls) == 7 * 2  # the job and 6 pairs, twice each
    argv, env = calls[0]
    assert argv[:5] == ["srun", "--nodes", "4", "--nodelist", "n1,n2,n3,n4"]
    assert argv[8] == "/usr/bin/all_reduce_perf" and argv[argv.index("-g") + 1] == "1"
    assert env["MASTER_ADDR"] == "n1" and env["NCCL_NVLS_ENABLE"] == "0"
    job = next(m for m in result.metrics if m.key == "allreduce.job.busbw.4GiB")
    assert job.expected is not None and job.expected.value == 400.0
    assert job.value == pytest.approx(234.37)
    pairs = [m for m in result.metrics if m.key.startswith("allreduce.pair.")]
    assert len(pairs) == 6
    assert [f["subject"] for f in result.flags or []] == ["n2+n3"]
    assert "-30% against the median of 6" in (result.note or "")
    assert result.hosts == ["n1", "n2", "n3", "n4"] and result.ranks == 4
    assert session.exit_code([result], None) == 1


def test_two_nodes_and_torch_fallback() -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def launch(argv: list[str], env: Any) -> str:
        calls.append((argv, dict(env)))
        return A100_LOG.read_text()

    ctx = RunContext(facts={}, options=RunOptions(nodes=("a", "b"), launcher="mpirun",
                                                  quick=True),
                     which=lambda name: None if name == "all_reduce_perf" else f"/bin/{name}")
    result = multinode.run(ctx, launch)
    [(argv, _)] = calls
    assert argv[0] == "mpirun" and "nodetune.bench.torchdist" in argv
    assert result.flags == [] and all(m.expected is None for m in result.metrics)


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from nodetune.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "allreduce", "--launcher", "srun"])
    assert exc.value.code == 3
    assert "--launcher only applies to --nodes" in capsys.readouterr().err
    ctx = RunContext(facts={}, options=RunOptions(nodes=("a",)), which=lambda n: "/bin/srun")
    with pytest.raises(Exception, match="needs 2 or more nodes"):
        multinode.run(ctx, lambda argv, env: "")
