"""`nodetune fleet topology`: NVLink domains from fleet reports of synthetic GB200 trays and the
real H200 VM, as Slurm topology.conf (accepted by the real slurmctld) and node labels.

Each tray's facts come from nodetune's collectors reading the synthetic GB200 tree; the fleet
places trays in two NVL domains by giving each report the cluster UUID and clique id the
fabric manager would, and plants one fault per unhealthy tray.
"""

from __future__ import annotations

import copy
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from nodetune.cli import main
from nodetune.fleet import domains
from tests import placement_trees
from tests.test_fleet_report import fleet_report_doc, node_docs, run

UUID_A = "1b6c7f3e-5d1a-4c9e-9f3b-2a7d8e4c6b10"
UUID_B = "7e0c2a91-3f4d-4b8e-a1c2-5d6e7f8a9b0c"


def _tray(facts: dict, audit: dict, uuid: str, clique: int) -> tuple[dict, dict]:
    facts = copy.deepcopy(facts)
    for g in facts["gpus"]:
        g["fabric"] = {**g["fabric"], "cluster_uuid": uuid, "clique_id": clique}
    return facts, copy.deepcopy(audit)


@pytest.fixture(scope="module")
def fleet_dir(request, host_tree, tmp_path_factory) -> Path:
    root, nvml = placement_trees.tree(request, "gb200")
    facts, audit = node_docs(root, Path(nvml))
    assert all(g["fabric"]["cluster_uuid"] == UUID_A for g in facts["gpus"])  # synth tray
    out = tmp_path_factory.mktemp("nvl")
    trays = {f"gb-a{i}": _tray(facts, audit, UUID_A, 32766) for i in range(1, 5)}
    trays |= {f"gb-b{i}": _tray(facts, audit, UUID_B, 7) for i in range(1, 4)}
    trays["gb-a2"][0]["gpus"].pop()  # a GPU fell off the bus
    trays["gb-a3"][0]["gpus"][1]["fabric"]["state"] = "in_progress"  # fabric not registered
    trays["gb-b3"][1]["summary"]["failed"]["critical"] = 2
    for host, (f, a) in trays.items():
        (out / f"{host}.json").write_text(json.dumps(fleet_report_doc(host, f, a)))
    vm_facts, vm_audit = node_docs(host_tree("h200x2-vm-gather"),
                                   placement_trees.H200_NVML)
    (out / "h200-vm.json").write_text(json.dumps(fleet_report_doc("h200-vm", vm_facts,
                                                                  vm_audit)))
    return out


def test_domains_group_trays_and_exclude_failing_ones(fleet_dir: Path) -> None:
    topo = domains.build(fleet_dir)
    assert [(d.cluster_uuid, d.clique_id) for d in topo.domains] == [(UUID_A, 32766),
                                                                    (UUID_B, 7)]
    a, b = topo.domains
    assert a.healthy_hosts == ["gb-a1", "gb-a4"] and a.partly_healthy
    problems = {m.host: " ".join(m.problems) for m in a.excluded}
    assert "GPUs in the clique where other nodes have" in problems["gb-a2"]
    assert "fabric in_progress" in problems["gb-a3"]
    assert b.healthy_hosts == ["gb-b1", "gb-b2"]
    assert "2 critical audit findings" in b.excluded[0].problems
    assert topo.no_domain == ["h200-vm"]  # the real VM: all-zero cluster UUID
    assert topo.exit_code == 1


def test_cli_formats(fleet_dir: Path, capsys) -> None:
    code, out, _ = run(["fleet", "topology", str(fleet_dir)], capsys)
    assert code == 1
    assert "BlockName=nvl-1b6c7f3e-32766 Nodes=gb-a1,gb-a4\n" in out
    assert "#   excluded gb-a3: GPU 1 fabric in_progress/success" in out
    code, out, _ = run(["fleet", "topology", str(fleet_dir), "--format", "labels"], capsys)
    assert (f"kubectl label node --overwrite gb-b3 nvidia.com/gpu.clique={UUID_B}.7 "
            "nodetune.io/nvlink-domain=nvl-7e0c2a91-7 nodetune.io/nvlink-domain-healthy=false "
            "nodetune.io/nvlink-domain-member=excluded") in out
    code, out, _ = run(["fleet", "topology", str(fleet_dir / "gb-a1.json"), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "nodetune.fleet-topology/1"
    assert doc["domains"][0]["healthy_nodes"] == ["gb-a1"]
    code, _, err = run(["fleet", "topology", str(fleet_dir / "missing")], capsys)
    assert code == 3 and err.count("\n") == 1 and "neither a node report" in err


@pytest.mark.slow
def test_real_slurmctld_accepts_the_tree_topology(fleet_dir: Path, tmp_path: Path,
                                                  capsys) -> None:
    """Debian's slurm-wlm (22.05) has topology/tree, not topology/block (23.11+)."""
    from tests.test_health_slurm import _free_port, _start, _which
    if not (_which("slurmctld") and _which("munged") and _which("scontrol")):
        pytest.skip("slurm-wlm and munge not installed")
    with pytest.raises(SystemExit):
        main(["fleet", "topology", str(fleet_dir), "--format", "slurm-tree"])
    (tmp_path / "topology.conf").write_text(capsys.readouterr().out)
    key, sock = tmp_path / "munge.key", tmp_path / "munge.sock"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    (tmp_path / "state").mkdir()
    user = pwd.getpwuid(os.getuid()).pw_name
    nodes = ",".join(p.stem for p in sorted(fleet_dir.glob("*.json")))
    (tmp_path / "slurm.conf").write_text(f"""\
ClusterName=nvltest
SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={tmp_path}/state
SlurmctldPidFile={tmp_path}/slurmctld.pid
SlurmctldLogFile={tmp_path}/slurmctld.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/linear
TopologyPlugin=topology/tree
NodeName={nodes} NodeAddr=127.0.0.1 CPUs=1 State=FUTURE
PartitionName=all Nodes=ALL Default=YES
""")
    env = {**os.environ, "SLURM_CONF": str(tmp_path / "slurm.conf")}
    procs = [_start([_which("munged") or "munged", "-F", "-f", f"--socket={sock}",
                     f"--key-file={key}", f"--pid-file={tmp_path}/munged.pid",
                     f"--seed-file={tmp_path}/munged.seed",
                     f"--log-file={tmp_path}/munged.log"], tmp_path / "munged.out", env)]
    try:
        time.sleep(0.5)
        procs.append(_start([_which("slurmctld") or "slurmctld", "-D", "-i"],
                            tmp_path / "slurmctld.out", env))
        shown = ""
        for _ in range(100):
            proc = subprocess.run([_which("scontrol") or "scontrol", "show", "topology"],
                                  env=env, capture_output=True, text=True, timeout=10)
            shown = proc.stdout
            if proc.returncode == 0 and "nvl-all" in shown:
                break
            assert procs[-1].poll() is None, (tmp_path / "slurmctld.out").read_text()
            time.sleep(0.2)
        assert "SwitchName=nvl-1b6c7f3e-32766 Level=0 LinkSpeed=1 Nodes=gb-a1,gb-a4\n" in shown
        assert "SwitchName=nvl-7e0c2a91-7 Level=0 LinkSpeed=1 Nodes=gb-b1,gb-b2\n" in shown
        assert "SwitchName=nvl-all Level=1" in shown, shown
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(tmp_path / "state", ignore_errors=True)
