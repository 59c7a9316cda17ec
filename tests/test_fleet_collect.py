"""`nodetune fleet collect` for real: ansible-playbook runs nodetune on several hosts.

The hosts are localhost aliases (`ansible_connection=local`), each with its own `--root` tree,
so every host reports a different node: the real H200 and H100 VM gathers and three synthetic
DGX H100 trees (tuned, GPU3 link at x8, THP always). Besides them: a host whose ssh port is
closed (unreachable), one without nodetune, one whose command hangs past --timeout. Then
`fleet report` on the result finds the planted fault and the drift.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nodetune.fleet import load
from nodetune.schemas import FLEET_COLLECT_SCHEMA, FLEET_REPORT_SCHEMA

NVML = Path(__file__).parent / "fixtures" / "nvml"
LOCAL = 'ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"'
NODETUNE = 'nodetune_bin="{{ ansible_playbook_python }} -m nodetune"'

pytestmark = pytest.mark.slow


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nodetune(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodetune", *argv], capture_output=True,
                          text=True, cwd=cwd, timeout=300, check=False)


@pytest.fixture(scope="module")
def fleet_hosts(host_tree, synth, tmp_path_factory):
    """host name -> (root, nvml) of five different nodes (synthetic trees in RAM if possible)."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="nodetune-fleet-hosts-", dir=shm)) \
        if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.mktemp("fleet-trees")
    hosts = {
        "vm-h200": (host_tree("h200x2-vm-gather"), NVML / "h200x2-vm.json"),
        "vm-h100": (host_tree("h100x2-fc-vm-gather"), NVML / "h100x2-fc-vm.json"),
    }
    for name, options in (("dgx-ok", synth.Options()),
                          ("dgx-x8", synth.Options(gpu_link_width={3: 8})),
                          ("dgx-thp", synth.Options(thp="always"))):
        built = synth.build_dgx_h100(base / name, options)
        hosts[name] = (built.root, built.nvml)
    yield hosts
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def inventory(fleet_hosts, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inventory")
    slow = d / "slow-nodetune"
    slow.write_text("#!/bin/sh\nsleep 20\n")
    slow.chmod(0o755)
    lines = ["[gpu]"]
    lines += [f"{name} ansible_host=localhost {LOCAL} {NODETUNE} nodetune_root={root} "
              f"nodetune_nvml={nvml}" for name, (root, nvml) in fleet_hosts.items()]
    lines += ["", "[broken]",
              f"down ansible_connection=ssh ansible_host=127.0.0.1 ansible_port={closed_port()}",
              f"no-nodetune ansible_host=localhost {LOCAL} nodetune_bin=/opt/none/bin/nodetune",
              f"hangs ansible_host=localhost {LOCAL} nodetune_bin={slow}", ""]
    path = d / "hosts.ini"
    path.write_text("\n".join(lines))
    return path


def test_collect_then_report_finds_the_fault_and_the_drift(inventory, fleet_hosts,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    run = nodetune("fleet", "collect", "--inventory", str(inventory), "--limit", "all:!hangs",
                   "--out", str(out), "--forks", "8", "--json", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert doc["schema"] == FLEET_COLLECT_SCHEMA and doc["hosts"] == 7
    assert sorted(doc["collected"]) == sorted(fleet_hosts)
    failed = {f["host"]: f for f in doc["failed"]}
    assert set(failed) == {"down", "no-nodetune"}
    assert failed["down"]["stage"] == "connect" and "unreachable" in failed["down"]["reason"]
    assert failed["no-nodetune"]["stage"] == "facts"
    assert "/opt/none/bin/nodetune" in failed["no-nodetune"]["reason"]
    assert "nodetune_bin" in failed["no-nodetune"]["reason"]
    assert json.loads((out / "_failed.json").read_text())["failed"] == doc["failed"]

    seen = set()
    for host in fleet_hosts:
        data = (out / f"{host}.json").read_bytes()
        report = json.loads(data)
        assert report["schema"] == FLEET_REPORT_SCHEMA and report["host"] == host
        # the footer `fleet report` reads instead of the whole report says the same
        assert report["fleet_summary"]["schema"] == "nodetune.node-summary/1"
        if load._DECODER is not None:
            from nodetune.fleet.summary import Reader

            footers = Reader()
            _, layout = footers.node(host, data)
            footers.learn(layout, load.from_document(f"{host}.json", report))
            assert footers.node(host, data) == (load.from_document(f"{host}.json", report),
                                                None)
        assert report["errors"] == [] and report["bench"] is None
        assert report["facts"]["cpu"]["model_name"]  # the lean facts keep what drift reads
        assert "sources" not in report["facts"]["cpu"]
        assert report["audit"]["summary"]["exit_code"] in (0, 1, 2)
        assert report["check"]["schema"] == "nodetune.check/2"
        assert report["check"]["summary"].startswith("nodetune: ")
        assert "checks" not in report["check"]  # lean: the verdict and the faults
        seen.add(json.dumps([report["facts"], report["audit"]["findings"]], sort_keys=True))
    assert len(seen) == len(fleet_hosts)  # every host reported its own node
    gpus = {h: json.loads((out / f"{h}.json").read_text())["facts"]["gpus"] for h in fleet_hosts}
    assert {g["name"] for g in gpus["vm-h200"]} == {"NVIDIA H200"}
    assert all("H100" in g["name"] for g in gpus["vm-h100"]) and len(gpus["dgx-ok"]) == 8
    x8 = json.loads((out / "dgx-x8.json").read_text())["audit"]
    assert x8["summary"]["exit_code"] == 2 and x8["profile"]["name"] == "hgx-h100"
    x8_check = json.loads((out / "dgx-x8.json").read_text())["check"]
    assert x8_check["healthy"] is False and x8_check["exit_code"] == 1
    assert [f["subject"] for f in x8_check["faults"]] == ["GPU3"]
    assert json.loads((out / "dgx-ok.json").read_text())["check"]["healthy"] is True

    run = nodetune("fleet", "report", str(out), "--json", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    fleet = json.loads(run.stdout)
    width = next(s for s in fleet["settings"] if s["id"] == "pcie.gpu_link_width")
    assert width["failed_nodes"] == ["dgx-x8"] and width["severity"] == "critical"
    assert fleet["nodes"][0]["host"] == "dgx-x8"
    health = {n["host"]: (n["healthy"], n["health_faults"]) for n in fleet["nodes"]}
    assert health["dgx-x8"] == (False, 1) and health["dgx-ok"] == (True, 0)
    assert fleet["nodes"][0]["health_summary"] == x8_check["summary"]
    assert fleet["summary"]["unhealthy"] == 1
    drift = {g["profile"]: {f["fact"]: f for f in g["facts"]} for g in fleet["drift"]}
    thp = drift["hgx-h100"]["thp"]
    assert thp["majority"] == "enabled=madvise defrag=madvise" and thp["majority_nodes"] == 2
    assert thp["minority"] == [{"value": "enabled=always defrag=madvise", "diff": None,
                                "nodes": ["dgx-thp"]}]
    gpus = drift["cloud-vm"]["gpus"]  # the two VMs: H200 and H100, one each
    assert gpus["tie"] and {gpus["majority"], gpus["minority"][0]["value"]} == \
        {"2x NVIDIA H200", "2x NVIDIA H100 80GB HBM3"}
    assert {h["host"] for h in fleet["not_collected"]} == {"down", "no-nodetune"}

    run = nodetune("fleet", "report", str(out), cwd=tmp_path)
    assert "dgx-x8" in run.stdout and "not collected: down" in run.stdout
    assert "unhealthy (1 faults): GPU3 PCIe" in " ".join(run.stdout.split())


class Recorder:
    """The progress `fleet collect` drives, as (event, host, what) in arrival order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def step(self, host: str, stage: str) -> None:
        self.events.append(("step", host, stage))

    def host_done(self, host: str, collected: bool) -> None:
        self.events.append(("done", host, collected))


def test_progress_moves_as_each_host_answers(inventory, fleet_hosts, tmp_path: Path) -> None:
    """A host slow to start does not hold the others back: the fast host has answered every
    command, and is done, before the slow one answers its first (strategy free); each command's
    answer is a step, so the bar moves within a host too."""
    from nodetune.fleet import collect

    slow = tmp_path / "slow-start-nodetune"
    slow.write_text(f'#!/bin/sh\n[ "$1" = facts ] && sleep 20\nexec {sys.executable} -m '
                    'nodetune "$@"\n')
    slow.chmod(0o755)
    text = inventory.read_text()
    root, nvml = fleet_hosts["vm-h200"]
    text += (f"slow ansible_host=localhost {LOCAL} nodetune_bin={slow} "
             f"nodetune_root={root} nodetune_nvml={nvml}\n")
    (tmp_path / "hosts.ini").write_text(text)
    recorder = Recorder()
    request = collect.Request(inventory=tmp_path / "hosts.ini", out=tmp_path / "fleet",
                              limit="vm-h200,slow")
    result = collect.run(request, recorder, hosts=["vm-h200", "slow"])
    assert sorted(result.collected) == ["slow", "vm-h200"]
    for host in ("vm-h200", "slow"):
        mine = [(e, what) for e, h, what in recorder.events if h == host]
        assert mine == [("step", "facts"), ("step", "audit"), ("step", "check"), ("done", True)]
    order = [(e, h) for e, h, _ in recorder.events]
    assert order.index(("done", "vm-h200")) < order.index(("step", "slow"))


def test_collect_bench_timeout_and_bad_inventory(inventory, tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    (tmp_path / "hosts.ini").write_text(inventory.read_text().replace(
        "dgx-thp ansible_host", 'dgx-thp nodetune_bench_args="cpu-mem --sizes 8M" '
        "ansible_host"))
    run = nodetune("fleet", "collect", "-i", "hosts.ini", "--limit", "dgx-thp", "--bench",
                   "--out", str(out), "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["collected"] == ["dgx-thp"]
    bench = json.loads((out / "dgx-thp.json").read_text())["bench"]
    keys = [m["key"] for s in bench["suites"] for m in s["metrics"]]
    assert keys and all(k.startswith("cpu-mem.triad.") for k in keys)

    run = nodetune("fleet", "collect", "-i", "hosts.ini", "--limit", "hangs", "--timeout", "3",
                   "--out", str(out), "--json", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert doc["collected"] == [] and doc["failed"][0]["host"] == "hangs"
    assert doc["failed"][0]["stage"] == "facts" and "after 3 second" in doc["failed"][0]["reason"]
    # the earlier collection of dgx-thp is still there; _failed.json now lists hangs
    assert (out / "dgx-thp.json").is_file()
    assert [f["host"] for f in json.loads((out / "_failed.json").read_text())["failed"]] == \
        ["hangs"]

    (tmp_path / "bad.ini").write_text("[gpu\nnode-a ansible_host=\n")
    run = nodetune("fleet", "collect", "-i", "bad.ini", cwd=tmp_path)
    assert run.returncode == 3 and run.stdout == ""
    assert run.stderr.startswith("nodetune: error: inventory bad.ini could not be parsed")
    assert run.stderr.count("\n") == 1
    run = nodetune("fleet", "collect", "-i", "hosts.ini", "--limit", "nosuchhost", cwd=tmp_path)
    assert run.returncode == 3 and "no hosts matching --limit nosuchhost" in run.stderr
