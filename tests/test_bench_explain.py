"""bench explain: the path of a result below its expectation, on the real 2x H200 VM's facts
with faults planted in them, and on the recorded H200 GPU run."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from nodetune.bench import compare, explain
from nodetune.bench.results import Binding, SuiteResult

FIXTURES = Path(__file__).parent / "fixtures"
BENCH = FIXTURES / "bench"



def memcpy_run() -> SuiteResult:
    doc = json.loads((BENCH / "h200x2-fc-vm-bench.json").read_text())
    [suite] = [s for s in compare.baseline_suites(doc) if s.suite == "memcpy"]
    return suite


def scaled(suite: SuiteResult, key: str, factor: float) -> SuiteResult:
    metrics = [dataclasses.replace(m, samples=tuple(v * factor for v in m.samples))
               if m.key == key else m for m in suite.metrics]
    return dataclasses.replace(suite, metrics=metrics)


def test_healthy_recorded_run_has_nothing_to_explain(h200_facts: dict[str, Any]) -> None:
    assert explain.explain([memcpy_run()], h200_facts) == []


def test_a_downtrained_link_is_the_likely_cause_of_slow_h2d(h200_facts: dict[str, Any]) -> None:
    key = "memcpy.h2d_pinned.GPU0.node0.256MiB"
    suite = scaled(memcpy_run(), key, 0.5)
    facts = copy.deepcopy(h200_facts)
    gpu0 = next(d for d in facts["pci"]["devices"] if d["address"] == "0000:00:06.0")
    gpu0["link"]["current_width"] = 8
    [item] = explain.explain([suite], facts)
    assert item.metric.key == key and item.metric.status == "low"
    assert item.path[0] == "0000:00:06.0 gpu Gen5 x8 (capable of Gen5 x16)"
    assert item.path[-1] == "host memory on node 0"
    likely = item.causes[0]
    assert likely.found == "0000:00:06.0 link trained at Gen5 x8 (capable of Gen5 x16)"
    assert likely.gain == "up to 2.0x (31.5 -> 63.0 GB/s)"
    doc = item.to_json()
    assert doc["likely_cause"]["fix"].startswith("reseat the GPU")


def test_remote_numa_memory_and_iommu_are_named_with_the_gain(
        h200_facts: dict[str, Any]) -> None:
    suite = memcpy_run()
    local = next(m for m in suite.metrics if m.key == "memcpy.h2d_pinned.GPU1.node0.256MiB")
    remote = dataclasses.replace(local, key="memcpy.h2d_pinned.GPU1.node1.256MiB",
                                 samples=tuple(v * 0.6 for v in local.samples),
                                 binding=Binding(method="numactl", cpus="16-31", mem_node=1))
    suite = dataclasses.replace(suite, metrics=[*suite.metrics, remote])
    facts = copy.deepcopy(h200_facts)
    facts["kernel"]["iommu"] = {"mode": "translated", "groups": None}
    [item] = explain.explain([suite], facts)
    assert item.metric.key == remote.key
    found = [c.found for c in item.causes]
    assert found == ["host buffer on NUMA node 1, GPU on node 0",
                     "IOMMU in translated mode: every DMA is translated"]
    assert item.causes[0].gain == "about 1.67x (this run's node0 figure)"
    assert "nodetune bind --local-rank 1 -- CMD" in item.causes[0].fix
    assert "iommu=pt" in item.causes[1].fix


def test_gpu_power_cap_is_named_with_the_clock_gain() -> None:
    doc = json.loads((BENCH / "h200-fc-vm-gpu.json").read_text())
    items = explain.explain(compare.baseline_suites(doc), {}, everything=True)
    bf16 = next(i for i in items if i.metric.key == "gpu.gemm_bf16.GPU0")
    assert bf16.causes[0].found.startswith("power capped at 700.0 W (sw_power_cap)")
    assert bf16.causes[0].gain == "up to 1.32x at 1980 MHz"
    copy_item = next(i for i in items if i.metric.key == "gpu.hbm_copy.GPU0")
    assert copy_item.causes[0].found == "memory clock and ECC state look normal"


def test_cli_explain(capsys: pytest.CaptureFixture[str], host_tree: Any) -> None:
    from nodetune.cli import main

    root = host_tree("h200x2-vm-gather")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "explain", str(BENCH / "h200x2-fc-vm-bench.json"), "--root", str(root),
              "--nvml", str(FIXTURES / "nvml" / "h200x2-vm.json"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0
    assert out["schema"] == "nodetune.bench-explain/1" and out["explanations"] == []
    with pytest.raises(SystemExit) as exc:
        main(["bench", "explain", str(BENCH / "nope.json"), "--nvml", "off"])
    assert exc.value.code == 3 and "cannot read" in capsys.readouterr().err


def test_device_copy_walks_hbm_and_a_healthy_host_path_says_so() -> None:
    """The quick memcpy run of the H200 VM, explained with --all on that node's facts."""
    doc = json.loads((BENCH / "h200-fc-vm-memcpy-quick.json").read_text())
    items = {i.metric.key: i for i in explain.explain(compare.baseline_suites(doc), {
        "gpus": [{"pci_address": "0000:00:06.0", "numa_node": 0}]}, everything=True)}
    d2d = next(i for k, i in items.items() if k.startswith("memcpy.d2d.GPU0"))
    assert d2d.path[0] == "GPU0 HBM"
    pinned = next(i for k, i in items.items() if k.startswith("memcpy.h2d_pinned.GPU0"))
    assert pinned.causes[0].found.startswith("the path looks right")


def test_a_saved_result_with_keys_of_another_version_still_loads(tmp_path) -> None:
    """A saved nccl-tests row carrying a key this version does not know (a newer writer, or
    an edited file) is read without it; it was a TypeError (found by tests/test_fuzz.py)."""
    import json as _json
    import subprocess as _sp
    import sys as _sys
    from pathlib import Path as _Path

    doc = _json.loads((_Path(__file__).parent / "fixtures" / "bench"
                       / "h100x2-fc-vm-bench.json").read_text())
    planted = []

    def plant(node):
        if isinstance(node, dict):
            if "size_bytes" in node and "busbw_gbps" in node:
                node["key"] = "from another version"
                planted.append(node)
            for value in node.values():
                plant(value)
        elif isinstance(node, list):
            for value in node:
                plant(value)

    plant(doc)
    assert planted
    saved = tmp_path / "saved.json"
    saved.write_text(_json.dumps(doc))
    proc = _sp.run([_sys.executable, "-m", "nodetune", "bench", "explain", str(saved)],
                   capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "internal error" not in proc.stderr
