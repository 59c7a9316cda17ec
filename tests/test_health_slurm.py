"""checks/slurm against a real single-node Slurm cluster (Debian's slurm-wlm and munge) started
on localhost by this module: the node really drains with nodetune's reason, resumes when healthy
again, keeps an admin's drain, survives an unreachable slurmctld, and the Prolog fails a job on
an unhealthy node."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import stop_all

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "checks" / "slurm"
NVML = REPO / "tests" / "fixtures" / "nvml" / "h200x2-vm.json"
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
TOOLS = ("slurmctld", "slurmd", "scontrol", "sinfo", "sbatch", "munged")

# the tests on a real cluster are slow; the ones with fake scontrol/sinfo below are not


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=":".join(SBIN))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    conf: Path
    node: str
    env: dict[str, str]
    prolog_env: Path  # sourced by the Prolog wrapper: which tree nodetune checks

    def run(self, *argv: str, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def raw_state(self) -> tuple[str, str]:
        lines = self.run(_which("sinfo") or "sinfo", "--noheader", "--Node",
                         f"--nodes={self.node}", "--format=%T %E").stdout.strip().splitlines()
        state, _, reason = (lines[0] if lines else "? no answer from slurmctld").partition(" ")
        return state, reason

    def state(self) -> tuple[str, str]:
        state, reason = self.raw_state()
        return state.rstrip("*~#!%$@^-"), reason  # flags such as "*" (not responding yet)

    def scontrol(self, *args: str) -> None:
        proc = self.run(_which("scontrol") or "scontrol", *args)
        assert proc.returncode == 0, proc.stderr

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; node is {self.state()}")


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            host_tree: Callable[[str], Path]) -> Iterator[Cluster]:
    missing = [t for t in TOOLS if _which(t) is None]
    if missing:
        pytest.skip(f"Slurm/munge binaries not installed: {', '.join(missing)} "
                    "(Debian: apt-get install slurm-wlm munge)")
    tmp = tmp_path_factory.mktemp("slurm")
    user = pwd.getpwuid(os.getuid()).pw_name
    node = socket.gethostname().split(".")[0]
    key = tmp / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = tmp / "munge.sock"
    env = {**os.environ, "SLURM_CONF": str(tmp / "slurm.conf")}
    procs = [_start([_which("munged") or "munged", "-F", "-f", f"--socket={sock}",
                     f"--key-file={key}", f"--pid-file={tmp}/munged.pid",
                     f"--seed-file={tmp}/munged.seed", f"--log-file={tmp}/munged.log"],
                    tmp / "munged.out", env)]
    try:
        cpus = subprocess.run([_which("slurmd") or "slurmd", "-C"], capture_output=True,
                              text=True, check=True).stdout.split("CPUs=")[1].split()[0]
        prolog = tmp / "prolog"
        prolog_env = tmp / "prolog.env"
        prolog_env.write_text("")
        prolog.write_text(f"#!/bin/sh\n. {prolog_env}\nexec {SLURM_DIR}/nodetune-prolog\n")
        prolog.chmod(0o755)
        for sub in ("state", "spool"):
            (tmp / sub).mkdir()
        (tmp / "slurm.conf").write_text(f"""\
ClusterName=nodetunetest
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/linear
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MessageTimeout=5
SchedulerParameters=sched_interval=1
Prolog={prolog}
PrologFlags=Alloc
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=100 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES State=UP
""")
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.1)
        procs.append(_start([_which("slurmctld") or "slurmctld", "-D", "-f",
                             str(tmp / "slurm.conf")], tmp / "slurmctld.out", env))
        procs.append(_start([_which("slurmd") or "slurmd", "-D", "-f", str(tmp / "slurm.conf")],
                            tmp / "slurmd.out", env))
        tree = tmp / "node"
        shutil.copytree(host_tree("h200x2-vm-gather"), tree, symlinks=True)
        faulty = tmp / "faulty"
        shutil.copytree(tree, faulty, symlinks=True)
        (faulty / "sys/bus/pci/devices/0000:00:07.0/current_link_width").write_text("8\n")
        script_env = {
            "NODETUNE": str(Path(sys.executable).parent / "nodetune"),
            "NODETUNE_DEFAULTS": str(tmp / "no-defaults"),
            "NODETUNE_SCONTROL_TIMEOUT": "8",
            "NODETUNE_CACHE_DIR": str(tmp / "cache"),
            "NODETUNE_SLURM_NODE": node,
            "CLEAN_ARGS": f"--root {tree} --nvml {NVML}",
            "FAULTY_ARGS": f"--root {faulty} --nvml off",
        }
        c = Cluster(conf=tmp / "slurm.conf", node=node, env={**env, **script_env},
                    prolog_env=prolog_env)
        try:
            c.wait_for(lambda: c.state()[0].startswith("idle"), "slurmd to register", timeout=30)
        except AssertionError as exc:
            logs = "".join(f"\n--- {n}:\n" + "".join((tmp / n).read_text(errors="replace")
                                                     .splitlines(keepends=True)[-15:])
                           for n in ("slurmctld.out", "slurmd.out", "munged.out")
                           if (tmp / n).exists())
            raise AssertionError(f"the test cluster did not come up: {exc}{logs}") from exc
        yield c
    finally:
        stop_all(procs)


def healthcheck(c: Cluster, args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return c.run(str(SLURM_DIR / "nodetune-healthcheck"),
                 env={"NODETUNE_CHECK_ARGS": args, **env})


@pytest.mark.slow
def test_healthcheck_drains_with_the_reason_and_resumes(cluster: Cluster) -> None:
    c = cluster
    # x8 comes from sysfs (the faulty tree is checked without NVML): "GPU1" by sysfs order
    proc = healthcheck(c, c.env["FAULTY_ARGS"])
    assert proc.returncode == 1, proc.stderr
    state, reason = c.state()
    assert state.startswith("drain"), (state, reason)
    assert reason == "nodetune: GPU1 PCIe x8 (expected x16)"
    proc = healthcheck(c, c.env["CLEAN_ARGS"])
    assert proc.returncode == 0, proc.stderr
    assert "resumed (was: nodetune: GPU1 PCIe x8 (expected x16))" in proc.stderr
    state, reason = c.state()
    assert state.startswith("idle") and reason == "none"


@pytest.mark.slow
def test_a_drain_by_someone_else_is_kept(cluster: Cluster) -> None:
    c = cluster
    c.scontrol("update", f"nodename={c.node}", "state=drain", "reason=disk swap")
    try:
        assert healthcheck(c, c.env["CLEAN_ARGS"]).returncode == 0
        assert c.state() == ("drained", "disk swap")
        proc = healthcheck(c, c.env["FAULTY_ARGS"])
        assert proc.returncode == 1
        assert "already drained by someone else (disk swap)" in proc.stderr
        assert c.state() == ("drained", "disk swap")
    finally:
        c.scontrol("update", f"nodename={c.node}", "state=resume")


@pytest.mark.slow
def test_unreachable_slurmctld_changes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    dead = tmp_path / "slurm.conf"
    text = c.conf.read_text()
    port = next(line for line in text.splitlines() if line.startswith("SlurmctldPort="))
    dead.write_text(text.replace(port, f"SlurmctldPort={_free_port()}")
                    .replace("MessageTimeout=5", "MessageTimeout=2"))
    start = time.monotonic()
    proc = healthcheck(c, c.env["FAULTY_ARGS"], SLURM_CONF=str(dead),
                       NODETUNE_SCONTROL_TIMEOUT="3")
    assert time.monotonic() - start < 20
    assert proc.returncode == 1
    assert "could not drain (slurmctld unreachable?)" in proc.stderr
    assert c.state()[0].startswith("idle")  # the real controller saw nothing
    proc = healthcheck(c, c.env["CLEAN_ARGS"], SLURM_CONF=str(dead),
                       NODETUNE_SCONTROL_TIMEOUT="3")
    assert proc.returncode == 0 and "slurmctld did not answer" in proc.stderr


@pytest.mark.slow
def test_nodetune_error_leaves_the_node_alone(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    proc = healthcheck(c, f"--root {tmp_path / 'missing'}")
    assert proc.returncode == 3
    assert "nodetune check could not run (exit 3): nodetune: error: --root" in proc.stderr
    assert c.state()[0].startswith("idle")
    proc = c.run(str(SLURM_DIR / "nodetune-prolog"),
                 env={"NODETUNE_CHECK_ARGS": f"--root {tmp_path / 'missing'}"})
    assert proc.returncode == 0  # a broken nodetune must not fail every job
    proc = healthcheck(c, f"--root {tmp_path / 'missing'}", NODETUNE_ON_ERROR="drain")
    assert proc.returncode == 1
    assert c.state() == ("drained", "nodetune: check could not run (exit 3)")
    assert healthcheck(c, c.env["CLEAN_ARGS"]).returncode == 0
    assert c.state()[0].startswith("idle")


def _job_state(c: Cluster, job: str) -> str:
    out = c.run(_which("scontrol") or "scontrol", "show", "job", job).stdout
    return out.split("JobState=")[1].split()[0] if "JobState=" in out else "?"


@pytest.mark.slow
def test_prolog_fails_the_job_and_drains_an_unhealthy_node(cluster: Cluster) -> None:
    c = cluster
    sbatch = _which("sbatch") or "sbatch"
    c.prolog_env.write_text("".join(f"export {k}='{c.env[k]}'\n" for k in (
        "NODETUNE", "NODETUNE_DEFAULTS", "NODETUNE_CACHE_DIR", "NODETUNE_SLURM_NODE",
        "SLURM_CONF")) + f"export NODETUNE_CHECK_ARGS='{c.env['CLEAN_ARGS']}'\n")
    c.wait_for(lambda: c.raw_state()[0] == "idle", "the node to answer pings")
    job = c.run(sbatch, "--parsable", "--output=/dev/null", "--wrap", "true").stdout.strip()
    c.wait_for(lambda: _job_state(c, job) == "COMPLETED", f"healthy job {job} to complete")
    c.prolog_env.write_text(c.prolog_env.read_text().replace(c.env["CLEAN_ARGS"],
                                                             c.env["FAULTY_ARGS"]))
    job = c.run(sbatch, "--parsable", "--output=/dev/null", "--wrap", "true").stdout.strip()
    try:
        c.wait_for(lambda: c.state()[0].startswith("drain"), "the Prolog to drain the node")
        assert c.state()[1] == "nodetune: GPU1 PCIe x8 (expected x16)"
        c.wait_for(lambda: _job_state(c, job) == "PENDING", f"job {job} to be requeued")
    finally:
        c.run(_which("scancel") or "scancel", job)
        c.scontrol("update", f"nodename={c.node}", "state=resume")


@pytest.mark.parametrize(("mode", "expect_idle", "passed"), [
    ("prolog", "1", True), ("prolog", "0", False), ("healthcheck", "1", False)])
def test_only_the_prolog_asks_for_idle_gpus_and_only_when_told(
        tmp_path: Path, mode: str, expect_idle: str, passed: bool) -> None:
    """NODETUNE_EXPECT_IDLE=1 adds --expect-idle to the prolog's check; the health check runs
    beside jobs and never asks for it. A stand-in nodetune records its arguments."""
    args_file = tmp_path / "args"
    fake = tmp_path / "nodetune"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {args_file}\necho 'nodetune: healthy'\n")
    fake.chmod(0o755)
    for tool in ("sinfo", "scontrol"):
        (tmp_path / tool).write_text("#!/bin/sh\necho 'idle none'\n")
        (tmp_path / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "NODETUNE": str(fake),
           "NODETUNE_EXPECT_IDLE": expect_idle, "NODETUNE_SLURM_NODE": "n1",
           "NODETUNE_DEFAULTS": str(tmp_path / "none")}
    proc = subprocess.run(["bash", str(SLURM_DIR / "nodetune-slurm.sh"), mode], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert ("--expect-idle" in args_file.read_text().split()) is passed


def _fake_slurm(tmp_path: Path, state: str = "idle none") -> tuple[Path, dict[str, str]]:
    """Stand-in sinfo and scontrol on PATH that record each call's arguments in `calls`."""
    calls = tmp_path / "calls"
    calls.touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sinfo", "scontrol"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho \"{tool} $*\" >> {calls}\n"
                                    f"echo '{state}'\n")
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NODETUNE_SLURM_NODE": "n1",
           "NODETUNE_DEFAULTS": str(tmp_path / "none"),
           "NODETUNE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NODETUNE_DEBUG", None)
    return calls, env


def _stand_in(tmp_path: Path, rc: int, stderr: str) -> str:
    fake = tmp_path / f"nodetune-{rc}"
    fake.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit {rc}\n")
    fake.chmod(0o755)
    return str(fake)


@pytest.mark.parametrize("mode", ["healthcheck", "prolog"])
def test_no_result_from_nodetune_never_drains(tmp_path: Path, mode: str,
                                              host_tree: Callable[[str], Path]) -> None:
    """Exit 3 (real nodetune on a damaged NVML recording), an internal error, a hang (124) or
    a kill (137): scontrol is never asked to drain, the prolog lets the job run."""
    calls, env = _fake_slurm(tmp_path)
    bad = tmp_path / "nvml.json"
    bad.write_text(NVML.read_text(encoding="utf-8").replace('"devices": [', '"devices": {"x": [', 1)
                   + "}", encoding="utf-8")
    nodetune = str(Path(sys.executable).parent / "nodetune")
    cases = [
        (nodetune, f"--root {host_tree('h200x2-vm-gather')} --nvml {bad}", 3),
        (_stand_in(tmp_path, 3, "nodetune: internal error: KeyError: x; fix: report it"), "", 3),
        (_stand_in(tmp_path, 124, ""), "", 124),
        (_stand_in(tmp_path, 137, ""), "", 137),
        (_stand_in(tmp_path, 2, ""), "", 2),
    ]
    for exe, args, rc in cases:
        proc = subprocess.run(["bash", str(SLURM_DIR / "nodetune-slurm.sh"), mode],
                              env={**env, "NODETUNE": exe, "NODETUNE_CHECK_ARGS": args},
                              capture_output=True, text=True, timeout=120, check=False)
        assert f"could not run (exit {rc})" in proc.stderr, proc.stderr
        assert proc.returncode == (0 if mode == "prolog" else rc), proc.stderr
        assert "state=drain" not in calls.read_text(), (exe, calls.read_text())
        assert "state=resume" not in calls.read_text()


def test_the_stand_in_scontrol_does_see_a_drain(tmp_path: Path) -> None:
    """The recording works: an unhealthy result (exit 1) does reach scontrol, and an exit 3
    with NODETUNE_ON_ERROR=drain does too, since it was asked for."""
    calls, env = _fake_slurm(tmp_path)
    sick = tmp_path / "sick"
    sick.write_text("#!/bin/sh\necho 'nodetune: GPU1 PCIe x8 (expected x16)'\nexit 1\n")
    sick.chmod(0o755)
    proc = subprocess.run(["bash", str(SLURM_DIR / "nodetune-slurm.sh"), "healthcheck"],
                          env={**env, "NODETUNE": str(sick)}, capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 1
    assert ('scontrol update nodename=n1 state=drain reason=nodetune: GPU1 PCIe x8 (expected x16)'
            in calls.read_text())
    calls.write_text("")
    proc = subprocess.run(["bash", str(SLURM_DIR / "nodetune-slurm.sh"), "prolog"],
                          env={**env, "NODETUNE": _stand_in(tmp_path, 3, "nodetune: error: x"),
                               "NODETUNE_ON_ERROR": "drain"},
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert "state=drain reason=nodetune: check could not run (exit 3)" in calls.read_text()
