"""allreduce across nodes: groups, launcher command lines, rank discovery, and the whole-job and
per-pair analysis over recorded nccl-tests output (the 8x A100 log, one pair slowed down)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodetune.bench import multinode, session, torchdist
from nodetune.bench.base import RunContext, RunOptions
from tests.processes import stop_all

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
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, None),  # one task in a job: spawn per GPU
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
    result = multinode.run(ctx, execute, address=lambda node, launcher, env: node)
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
    result = multinode.run(ctx, launch, address=lambda node, launcher, env: node)
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


# -- a real Slurm: three slurmd on this host, a CPU all-reduce over TCP between the ranks -----

SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
CPU_ALLREDUCE = Path(__file__).parent / "bench" / "cpu_allreduce.py"


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name) or shutil.which(name, path=":".join(SBIN))


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os
    import pwd
    import random
    import socket
    import subprocess
    import time

    tools = ("slurmctld", "slurmd", "srun", "sinfo", "munged")
    missing = [t for t in tools if _which(t) is None]
    if missing:
        pytest.skip(f"Slurm/munge binaries not installed: {', '.join(missing)}")
    tmp = tmp_path_factory.mktemp("slurm3")
    user = pwd.getpwuid(os.getuid()).pw_name
    key = tmp / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = tmp / "munge.sock"
    port = random.randint(20000, 29000)
    cpus = subprocess.run([_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True,
                          check=True).stdout.split("CPUs=")[1].split()[0]
    host = socket.gethostname().split(".")[0]
    (tmp / "state").mkdir()
    nodes = ("nta", "ntb", "ntc")
    lines = [f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={port + 1 + i} "
             f"CPUs={cpus} RealMemory=100 State=UNKNOWN" for i, n in enumerate(nodes)]
    for n in nodes:
        (tmp / f"spool{n}").mkdir()
    (tmp / "slurm.conf").write_text("\n".join([
        "ClusterName=nodetunemulti", "SlurmctldHost=localhost", f"SlurmctldPort={port}",
        f"SlurmUser={user}", f"SlurmdUser={user}", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={sock}", f"StateSaveLocation={tmp}/state",
        f"SlurmdSpoolDir={tmp}/spool%n", f"SlurmctldPidFile={tmp}/slurmctld.pid",
        f"SlurmdPidFile={tmp}/slurmd%n.pid", f"SlurmctldLogFile={tmp}/slurmctld.log",
        f"SlurmdLogFile={tmp}/slurmd%n.log", "ProctrackType=proctrack/pgid",
        "TaskPlugin=task/none", "SchedulerType=sched/builtin", "SelectType=select/linear",
        "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "ReturnToService=2",
        "MessageTimeout=5", *lines, f"PartitionName=debug Nodes={','.join(nodes)} Default=YES "
        "State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(tmp / "slurm.conf")}
    procs = [subprocess.Popen([_which("munged") or "munged", "-F", "-f", f"--socket={sock}",
                               f"--key-file={key}", f"--pid-file={tmp}/munged.pid",
                               f"--seed-file={tmp}/munged.seed", f"--log-file={tmp}/munged.log"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.1)
        daemons = [[_which("slurmctld") or "slurmctld", "-D", "-f", str(tmp / "slurm.conf")]]
        daemons += [[_which("slurmd") or "slurmd", "-D", "-N", n, "-f", str(tmp / "slurm.conf")]
                    for n in nodes]
        for argv in daemons:
            procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        end = time.monotonic() + 30
        while time.monotonic() < end:
            out = subprocess.run([_which("sinfo") or "sinfo", "--noheader", "--Node",
                                  "--format=%T"], env=env, capture_output=True, text=True,
                                 check=False).stdout.split()
            if len(out) == 3 and all(s.startswith("idle") for s in out):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the three slurmd did not register: {out}")
        yield nodes, env, tmp
    finally:
        stop_all(procs)


@pytest.mark.slow
def test_srun_launches_ranks_that_meet_and_report_the_job_and_each_pair(three_nodes: Any) -> None:
    import sys

    nodes, env, tmp = three_nodes
    runner = tmp / "all_reduce_perf"
    runner.write_text(f"#!/bin/sh\nexec {sys.executable} {CPU_ALLREDUCE} \"$@\"\n")
    runner.chmod(0o755)
    ctx = RunContext(facts={}, options=RunOptions(nodes=nodes, launcher="srun", quick=True,
                                                  repeat=1, sizes=(1 << 20, 1 << 22)),
                     env=env, which=lambda name: str(runner) if name == "all_reduce_perf"
                     else _which(name))
    result = multinode.run(ctx)
    keys = sorted(m.key for m in result.metrics)
    assert keys == ["allreduce.job.busbw.1MiB", "allreduce.job.busbw.2MiB",
                    "allreduce.job.busbw.4MiB", "allreduce.pair.nta+ntb",
                    "allreduce.pair.nta+ntc", "allreduce.pair.ntb+ntc"]
    assert all(m.value > 0 for m in result.metrics)
    assert result.runner == f"srun+{runner}"
    assert result.hosts == list(nodes)
