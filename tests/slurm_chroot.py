"""A real slurmctld: the host's (Debian 12: Slurm 22.05), or a newer one run from a Debian
chroot that tests/slurm_chroot.sh builds (trixie: Slurm 24.11, topology/block; sid: 26.05,
topology.yaml).

slurmctld reads /proc/self/exe at start, so each daemon runs in a private mount namespace
(`unshare --mount`) with /proc mounted inside the chroot; the mount goes away with the daemon
and the host's mounts never see it. Needs root; the tests skip when a chroot is absent.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROOTS = Path(os.environ.get("NODETUNE_SLURM_CHROOTS", "/var/cache/nodetune"))
HOST_TOOLS = ("slurmctld", "scontrol", "munged")
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"
# Mount /proc inside the chroot, then become the daemon (argv after the chroot's path).
_IN_CHROOT = 'root=$1; shift; mount -t proc proc "$root/proc"; exec chroot "$root" "$@"'


def chroot_dir(suite: str) -> Path:
    root = CHROOTS / f"slurm-{suite}"
    if not (root / "usr" / "sbin" / "slurmctld").exists():
        pytest.skip(f"no Debian {suite} chroot with Slurm in {root}: build it with "
                    f"`bash tests/slurm_chroot.sh {suite}` (tests/run.sh does, as root)")
    if os.geteuid() != 0:
        pytest.skip("running slurmctld in a chroot needs root")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) not installed")
    return root


def _host_root() -> Path:
    path = f"{os.environ.get('PATH', '')}:{SBIN}"
    missing = [t for t in HOST_TOOLS if shutil.which(t, path=path) is None]
    if missing:
        pytest.skip(f"Slurm/munge binaries not installed: {', '.join(missing)} "
                    "(Debian: apt-get install slurm-wlm munge)")
    return Path("/")


@dataclass
class Controller:
    root: Path  # "/": the host's Slurm
    work: str  # the work directory as the daemons see it
    env: dict[str, str]
    daemon: subprocess.Popen[bytes]

    def scontrol(self, *args: str) -> subprocess.CompletedProcess[str]:
        chroot = ["chroot", str(self.root)] if self.root != Path("/") else []
        return subprocess.run([*chroot, "scontrol", *args], env=self.env,
                              capture_output=True, text=True, timeout=10, check=False)

    def log(self) -> str:
        path = self.root / self.work.lstrip("/") / "slurmctld.out"
        return path.read_text(errors="replace") if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _daemon(root: Path, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    if root != Path("/"):
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-ec", _IN_CHROOT,
                "sh", str(root), *argv]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


@contextmanager
def controller(suite: str | None, nodes: list[str], files: dict[str, str],
               settings: str = "") -> Iterator[Controller]:
    """slurmctld of the chroot of `suite` (None: the host's) with `files` (topology.conf,
    topology.yaml) beside slurm.conf, `nodes` as FUTURE nodes and `settings` (slurm.conf
    lines) added."""
    root = chroot_dir(suite) if suite else _host_root()
    work = f"/tmp/nodetune-slurm-{uuid.uuid4().hex[:12]}"
    host_work = root / work.lstrip("/")
    (host_work / "state").mkdir(parents=True)
    key = host_work / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    for name, text in files.items():
        (host_work / name).write_text(text)
    (host_work / "slurm.conf").write_text(f"""\
ClusterName=nvltest
SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmUser={pwd.getpwuid(os.getuid()).pw_name if suite is None else "root"}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={work}/munge.sock
StateSaveLocation={work}/state
SlurmctldPidFile={work}/slurmctld.pid
SlurmctldLogFile={work}/slurmctld.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
{settings}
NodeName={','.join(nodes)} NodeAddr=127.0.0.1 CPUs=1 State=FUTURE
PartitionName=all Nodes=ALL Default=YES
""")
    env = {"PATH": f"{os.environ.get('PATH', '')}:{SBIN}" if suite is None else SBIN,
           "SLURM_CONF": f"{work}/slurm.conf"}
    procs = [_daemon(root, ["munged", "-F", "-f", f"--socket={work}/munge.sock",
                            f"--key-file={work}/munge.key", f"--pid-file={work}/munged.pid",
                            f"--seed-file={work}/munged.seed",
                            f"--log-file={work}/munged.log"], host_work / "munged.out", env)]
    try:
        for _ in range(50):
            if (host_work / "munge.sock").exists():
                break
            time.sleep(0.1)
        procs.append(_daemon(root, ["slurmctld", "-D", "-i", "-f", f"{work}/slurm.conf"],
                             host_work / "slurmctld.out", env))
        yield Controller(root, work, env, procs[-1])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(host_work, ignore_errors=True)


def show_topology(ctld: Controller) -> str:
    """`scontrol show topology` once slurmctld answers; fails with its log if it exited."""
    for _ in range(100):
        proc = ctld.scontrol("show", "topology")
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout
        if ctld.daemon.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"slurmctld gave no topology:\n{ctld.log()}")
