"""Synthetic fleets for `nodetune fleet report`: thousands of node reports made from real ones.

Seeds are real reports: `nodetune facts` and `nodetune audit` run (in process) on the real
H200 VM gather tree and on synthetic DGX H100 trees (tests/fixtures/synth.py: a tuned node,
one with GPU3's link trained down to x8, one with THP "always"), each reduced to a
`nodetune.fleet-report/1` document exactly as `fleet collect` writes it. Each seed gets a
quick-benchmark result built with nodetune's own bench types: typical fractions of what
`nodetune.bench.expect` predicts for that node's links (no GPU is needed here).

`generate()` copies the seeds into N reports: 94% DGX H100 (hgx-h100), 6% H200 VMs
(cloud-vm). Every node varies the way identical nodes do (its own GPU UUIDs, root disk UUID
and PXE MAC on the kernel command line, a few MB of memory, benchmark noise of sd 1% clipped
to +-3%); none of that is drift. With `inject=True` it plants, on DGX nodes:

    drift     7 nodes with another GPU driver, 3 with one NIC on other firmware, 2 with
              4 NUMA nodes (sub-NUMA clustering) instead of 2, 4 from the THP seed
    outliers  12 nodes with all-reduce busbw 20% low at every size, 5 with one GPU's pinned
              H2D 30% low, and the 6 nodes of the x8-link seed, whose GPU3 host copies run
              at half speed
    audit     those 6 nodes fail pcie.gpu_link_width (critical)

and returns the ground truth, so a test can check that everything planted is found and
nothing else.

    .venv/bin/python tests/bench/fleet_synth.py OUT_DIR [--nodes 10000] [--clean] [--seed 1]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
MIB = 1 << 20

NOISE_SD = 0.01
NOISE_CLIP = 0.03
OTHER_DRIVER = "570.124.06"
OTHER_NIC_FW = "28.39.1002"
DRIFT_DRIVER, DRIFT_NIC, DRIFT_NUMA = 7, 3, 2
THP_NODES, LINK_X8_NODES = 4, 6
SLOW_ALLREDUCE, SLOW_H2D = 12, 5
VM_SHARE = 0.06


@dataclass
class Truth:
    """What generate() planted: fact or metric family -> the hosts."""

    drift: dict[str, set[str]] = field(default_factory=dict)  # drift fact key -> hosts
    outliers: dict[str, set[str]] = field(default_factory=dict)  # metric key prefix -> hosts
    critical: dict[str, set[str]] = field(default_factory=dict)  # setting id -> hosts
    nodes: int = 0


# -- seeds: real facts and audits ----------------------------------------------------------

def _synth_module() -> Any:
    spec = importlib.util.spec_from_file_location("synth", FIXTURES / "synth.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("synth", module)
    spec.loader.exec_module(module)
    return module


def _unpack(name: str, dest: Path) -> Path:
    target = dest / name
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xf", str(FIXTURES / "hosts" / f"{name}.tar.gz"), "-C", str(target)],
                   check=True)
    return target / "node"


def seed_report(root: Path, nvml: Path) -> dict[str, Any]:
    """facts + audit of a tree, as `fleet collect` stores them, plus a quick bench result."""
    from nodetune.audit.operation import run_audit
    from nodetune.fleet import lean
    from nodetune.node.source import open_node
    from nodetune.schemas import AUDIT_SCHEMA, FLEET_REPORT_SCHEMA

    with open_node(root=str(root), nvml=str(nvml)) as node:
        facts = node.facts().to_json()
        origin = node.origin
    audit = {"schema": AUDIT_SCHEMA, **run_audit(facts, source=origin).to_json()}
    return {"schema": FLEET_REPORT_SCHEMA, "host": "", "collected_at": "2025-06-01T12:00:00+00:00",
            "nodetune_version": "seed", "lean": True, "facts": lean.facts(facts),
            "audit": lean.audit(audit), "bench": lean.bench(bench_document(facts)), "errors": []}


def build_seeds(workdir: Path, h200_tree: Path | None = None,
                synth: Any = None) -> dict[str, dict[str, Any]]:
    """The four seed reports; trees are built (or unpacked) under workdir."""
    synth = synth or _synth_module()
    h200_tree = h200_tree or _unpack("h200x2-vm-gather", workdir)
    seeds = {"vm-h200": seed_report(h200_tree, FIXTURES / "nvml" / "h200x2-vm.json")}
    for name, options in (("dgx", synth.Options()),
                          ("dgx-link-x8", synth.Options(gpu_link_width={3: 8})),
                          ("dgx-thp", synth.Options(thp="always"))):
        host = synth.build_dgx_h100(workdir / name, options)
        seeds[name] = seed_report(host.root, host.nvml)
        shutil.rmtree(workdir / name, ignore_errors=True)
    return seeds


# -- benchmark results -------------------------------------------------------------------

def bench_document(facts: dict[str, Any]) -> dict[str, Any]:
    """A `nodetune bench all --quick` result for this node: memcpy, allreduce, cpu-mem."""
    from nodetune.bench import expect, session
    from nodetune.bench.allreduce import DEFAULT_SIZES
    from nodetune.bench.base import RunOptions
    from nodetune.bench.memcpy import QUICK_SIZE
    from nodetune.bench.results import Metric, SuiteResult, size_label

    gpus = sorted(facts.get("gpus") or [], key=lambda g: g["pci_address"])
    nodes = [n["id"] for n in facts["numa"]["nodes"] if n.get("cpus")]
    size = size_label(QUICK_SIZE)

    def value(expected: Any, fraction: float, fallback: float) -> float:
        return round((expected.value if expected else fallback) * fraction, 3)

    memcpy: list[Metric] = []
    for i, gpu in enumerate(gpus):
        bus = gpu["pci_address"]
        for node in nodes:
            local = gpu.get("numa_node") in (node, None)
            for direction in ("h2d", "d2h"):
                for pinned in (True, False):
                    kind = f"{direction}_{'pinned' if pinned else 'pageable'}"
                    fraction = (0.85 if pinned else 0.42) * (1.0 if local else 0.78)
                    memcpy.append(Metric(
                        key=f"memcpy.{kind}.GPU{i}.node{node}.{size}", suite="memcpy",
                        name=f"{direction.upper()} {'pinned' if pinned else 'pageable'} GPU{i} "
                             f"node{node}", unit="GB/s", subject=f"GPU{i}-node{node}",
                        size_bytes=QUICK_SIZE,
                        samples=(value(expect.host_copy(facts, bus, direction, pinned),
                                       fraction, 55.0),)))
        memcpy.append(Metric(key=f"memcpy.d2d.GPU{i}.{size}", suite="memcpy", unit="GB/s",
                             name=f"D2D GPU{i}", subject=f"GPU{i}", size_bytes=QUICK_SIZE,
                             samples=(value(expect.device_copy(facts, bus), 0.9, 1500.0),)))
    for i, src in enumerate(gpus):
        for j, dst in enumerate(gpus):
            if i != j:
                memcpy.append(Metric(
                    key=f"memcpy.p2p.GPU{i}-GPU{j}.{size}", suite="memcpy", unit="GB/s",
                    name=f"GPU{i} -> GPU{j}", subject=f"GPU{i}->GPU{j}", size_bytes=QUICK_SIZE,
                    samples=(value(expect.peer_copy(facts, src["pci_address"],
                                                    dst["pci_address"]), 0.82, 50.0),)))
    busbw = expect.allreduce_busbw(facts, [g["pci_address"] for g in gpus])
    allreduce = [Metric(key=f"allreduce.busbw.{size_label(s)}", suite="allreduce", unit="GB/s",
                        name=f"all-reduce busbw {size_label(s)}", subject=f"{len(gpus)} GPUs",
                        size_bytes=s,
                        samples=(value(busbw, 0.85 * s / (s + 24 * MIB), 100.0),))
                 for s in DEFAULT_SIZES]
    cpumem = [Metric(key=f"cpu-mem.triad.cpu{c}.mem{m}", suite="cpu-mem", unit="GB/s",
                     name=f"triad node{c}<-node{m}", subject=f"node{c}<-node{m}",
                     samples=(110.0 if c == m else 48.0,))
              for c in nodes for m in nodes if c == m or abs(c - m) == 1]
    suites = [SuiteResult(suite="memcpy", status="ok", runner="cuda-bindings", metrics=memcpy),
              SuiteResult(suite="allreduce", status="ok", runner="nccl", metrics=allreduce),
              SuiteResult(suite="cpu-mem", status="ok", runner="numpy", metrics=cpumem)]
    doc: dict[str, Any] = session.document(suites, facts, RunOptions(quick=True))
    return doc


# -- the fleet -----------------------------------------------------------------------------

def _noisy(rng: random.Random, value: float) -> float:
    noise = max(-NOISE_CLIP, min(NOISE_CLIP, rng.gauss(0.0, NOISE_SD)))
    return round(value * (1.0 + noise), 3)


def _node(seed: dict[str, Any], host: str, rng: random.Random) -> dict[str, Any]:
    """A copy of a seed report with what differs between identical nodes."""
    report = dict(seed)
    report["host"] = host
    facts = dict(seed["facts"])
    facts["gpus"] = [{**g, "uuid": f"GPU-{uuid.UUID(int=rng.getrandbits(128))}"}
                     for g in seed["facts"].get("gpus") or []]
    if "memory" in facts:
        memory = dict(facts["memory"])
        memory["total_bytes"] += rng.randint(-16, 16) * MIB
        facts["memory"] = memory
    kernel = dict(facts["kernel"])
    mac = "-".join(f"{rng.getrandbits(8):02x}" for _ in range(6))
    kernel["cmdline"] = (f"BOOTIF=01-{mac} root=UUID={uuid.UUID(int=rng.getrandbits(128))} "
                         + (kernel.get("cmdline") or ""))
    facts["kernel"] = kernel
    report["facts"] = facts
    bench = dict(seed["bench"])
    bench["suites"] = [{**s, "metrics": [{**m, "value": _noisy(rng, m["value"])}
                                         for m in s["metrics"]]}
                       for s in seed["bench"]["suites"]]
    report["bench"] = bench
    return report


def _scale(report: dict[str, Any], prefixes: tuple[str, ...], factor: float) -> None:
    for suite in report["bench"]["suites"]:
        for m in suite["metrics"]:
            if m["key"].startswith(prefixes):
                m["value"] = round(m["value"] * factor, 3)


def _four_numa_nodes(facts: dict[str, Any]) -> None:
    """Sub-NUMA clustering on: each socket's CPUs split over two NUMA nodes."""
    nodes = []
    for n in facts["numa"]["nodes"]:
        cpus = sorted(n["cpus"])
        half = len(cpus) // 2
        nodes += [{**n, "id": 2 * n["id"], "cpus": cpus[:half]},
                  {**n, "id": 2 * n["id"] + 1, "cpus": cpus[half:]}]
    facts["numa"] = {**facts["numa"], "nodes": nodes}


def _plan(n: int, rng: random.Random, inject: bool) -> tuple[list[str], dict[str, set[int]]]:
    """Seed name per node, and which DGX nodes get which planted fault."""
    vms = max(3, round(n * VM_SHARE))
    seeds = ["dgx"] * (n - vms) + ["vm-h200"] * vms
    rng.shuffle(seeds)
    dgx = [i for i, s in enumerate(seeds) if s == "dgx"]
    picks: dict[str, set[int]] = {}
    if inject:
        chosen = rng.sample(dgx, THP_NODES + LINK_X8_NODES + DRIFT_DRIVER + DRIFT_NIC
                            + DRIFT_NUMA + SLOW_ALLREDUCE + SLOW_H2D)
        for name, count in (("dgx-thp", THP_NODES), ("dgx-link-x8", LINK_X8_NODES),
                            ("driver", DRIFT_DRIVER), ("nic", DRIFT_NIC), ("numa", DRIFT_NUMA),
                            ("allreduce", SLOW_ALLREDUCE), ("h2d", SLOW_H2D)):
            picks[name], chosen = set(chosen[:count]), chosen[count:]
        for i in picks["dgx-thp"]:
            seeds[i] = "dgx-thp"
        for i in picks["dgx-link-x8"]:
            seeds[i] = "dgx-link-x8"
    return seeds, picks


def generate(seeds: dict[str, dict[str, Any]], out: Path, n: int, *, inject: bool = True,
             seed: int = 1, summaries: bool = True) -> Truth:
    """Write n node reports into out/<host>.json; return what was planted. Each has its fleet
    summary as `fleet collect` writes it, unless summaries is False (as the agent's /report
    documents and reports of another nodetune version are read)."""
    from nodetune.fleet import load

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    names, picks = _plan(n, rng, inject)
    truth = Truth(nodes=n)
    hosts = [f"gpu-{i:05d}" for i in range(n)]
    if inject:
        def named(key: str) -> set[str]:
            return {hosts[i] for i in picks[key]}

        truth.drift = {"gpu_driver": named("driver"), "nic_firmware": named("nic"),
                       "numa_layout": named("numa"), "thp": named("dgx-thp")}
        truth.critical = {"pcie.gpu_link_width": named("dgx-link-x8")}
        # an x8 link halves GPU3's host copies: nodetune's expectations (from which the seed's
        # values are drawn) already account for the link the seed tree reports
        truth.outliers = {"allreduce.busbw": named("allreduce"),
                          "memcpy.h2d": named("h2d") | named("dgx-link-x8"),
                          "memcpy.d2h": named("dgx-link-x8")}
    for i, name in enumerate(names):
        report = _node(seeds[name], hosts[i], rng)
        facts = report["facts"]
        if i in picks.get("driver", ()):
            facts["gpu"] = {**facts["gpu"], "driver_version": OTHER_DRIVER}
        if i in picks.get("nic", ()):
            devices = copy.deepcopy(facts["rdma"]["devices"])
            devices[rng.randrange(len(devices))]["fw_ver"] = OTHER_NIC_FW
            facts["rdma"] = {**facts["rdma"], "devices": devices}
        if i in picks.get("numa", ()):
            _four_numa_nodes(facts)
        if i in picks.get("allreduce", ()):
            _scale(report, ("allreduce.busbw.",), 0.8)
        if i in picks.get("h2d", ()):
            _scale(report, (f"memcpy.h2d_pinned.GPU{rng.randrange(8)}.",), 0.7)
        path = out / f"{hosts[i]}.json"
        if summaries:
            path.write_bytes(load.report_text(report))
        else:
            path.write_text(json.dumps(report, separators=(",", ":")), encoding="utf-8")
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--clean", action="store_true", help="plant nothing")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nodetune-seeds-",
                                     dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as w:
        seeds = build_seeds(Path(w))
    truth = generate(seeds, args.out, args.nodes, inject=not args.clean, seed=args.seed)
    print(json.dumps({k: {x: sorted(h) for x, h in v.items()} if isinstance(v, dict) else v
                      for k, v in truth.__dict__.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
