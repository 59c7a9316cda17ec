"""The facts contract against what nodetune emits: every collector on every fixture tree.

Each facts document (real host trees, snapshots, NVML recordings, synthetic trees with and
without faults), its `derived` section and its `health` view is walked leaf by leaf. A leaf the
contract does not promise, or whose value has another type, fails; so does a contract path that
no fixture emits, unless ALLOWED_UNEMITTED says why no tree can have it.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nodetune.bench.results import SuiteResult
from nodetune.check.bench import bench_section
from nodetune.check.evaluate import write_probe
from nodetune.facts import shapes
from nodetune.facts.contract import CONTRACT
from nodetune.facts.derived import derive
from nodetune.facts.health import health_view
from nodetune.facts.schema import ContractNode, contract_tree
from nodetune.node.hostroot import HostRoot
from nodetune.node.source import open_node
from tests.audit_helpers import collect, tree_and_nvml
from tests.conftest import FIXTURES, _ram_dir, real_tree_names
from tests.tuned_trees import with_tuned

# Contract paths that no fixture tree can emit, each with the reason.
ALLOWED_UNEMITTED = {
    # only for a collector that ran past its time limit (tests/test_collector_limits.py makes
    # one hang; no captured tree does)
    "collectors.<collector>.timed_out": "no fixture tree makes a collector time out",
    # page retirement is reported by GPUs before Ampere (V100, T4) only; every fixture GPU is
    # Ampere or later (A100, H100, H200, GB10, RTX 4090), where NVML says "not supported" and
    # row remapping takes its place
    "gpus[*].retired_pages.single_bit": "no pre-Ampere GPU among the fixtures",
    "gpus[*].retired_pages.double_bit": "no pre-Ampere GPU among the fixtures",
    "gpus[*].retired_pages.pending": "no pre-Ampere GPU among the fixtures",
}

# Health variables that give every list of the health view items to show.
HEALTH_VARIABLES: dict[str, Any] = {
    "required_modules": ["nvidia", "nvidia_peermem"],
    "required_mounts": ["/", "/raid"],
    "writable_paths": ["/tmp"],
    "hugepages": {2048: 16},
}

# NVML recordings replayed over an empty tree: every GPU comes from NVML alone.
NVML_ALONE = ("rtx4090x8-driver535.json", "h200-load.json", "h100x4-fc-vm-live.json",
              "h100x2-fc-vm-live.json")

# One synthetic DGX H100 with every fault that adds facts a healthy node lacks.
FAULTS = {"xids": {0: 79, 3: 31}, "sxids": (20034, 12028), "ecc_uncorrectable": {1: 2},
          "remapped_row_failure": (2,), "nvlink_down": {4: 3}, "mig_enabled": (5,),
          "ib_port_down": (1,), "acs_enabled": True, "read_only_mounts": ("/raid",),
          "persistence_off": (6,), "storage_nics": True, "hugepages_2m": 16,
          "nccl_library": "libnccl.so.2.28.9", "extra_modules": ("nv_peer_mem",)}

_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "num": (int, float), "str": (str,), "numstr": (str,), "bool": (bool,),
    "list": (list,), "dict": (dict,), "any": (object,),
}


TRIE = contract_tree()


@dataclass
class Walk:
    hits: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def _child(node: ContractNode, key: str) -> ContractNode | None:
    if key in node.children:
        return node.children[key]
    return next((c for k, c in node.children.items() if k.startswith("<")), None)


def walk(value: Any, node: ContractNode, where: str, out: Walk) -> None:
    """Check `value` (found at JSON path `where`) against the contract below `node`."""
    if node.type is not None:
        out.hits.add(str(node.path))
        wrong = not isinstance(value, _TYPES[node.type]) or (
            node.type in ("int", "num") and isinstance(value, bool))
        if value is not None and wrong:
            out.problems.append(f"{where}: {type(value).__name__} {value!r:.60}, "
                                f"contract says {node.type}")
        return
    if value is None or value == [] or value == {}:
        return  # a record or list that is absent here
    if isinstance(value, dict):
        for key, item in value.items():
            child = _child(node, key)
            if child is None:
                out.problems.append(f"{where}.{key}".lstrip(".") + ": not in the contract")
            else:
                walk(item, child, f"{where}.{key}".lstrip("."), out)
    elif isinstance(value, list) and "[*]" in node.children:
        for item in value:
            walk(item, node.children["[*]"], f"{where}[*]", out)
    else:
        out.problems.append(f"{where}: {type(value).__name__} where the contract has "
                            f"{', '.join(node.children)}")


@pytest.fixture(scope="module")
def documents(host_tree, synthetic_host, synth, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """{label: facts document with `derived` and `health`} of every fixture tree."""
    base = _ram_dir("nodetune-conformance-") or tmp_path_factory.mktemp("conformance")
    docs: dict[str, dict[str, Any]] = {}
    for name in [*real_tree_names(), "synthetic-dgx-h100", "synthetic-gb200-tray"]:
        docs[name] = collect(*tree_and_nvml(name, host_tree, synthetic_host))
    faulty = synth.build("synthetic-dgx-h100", base / "faults", synth.Options(**FAULTS))
    docs["synthetic-dgx-h100+faults"] = collect(str(faulty.root), str(faulty.nvml))
    tuned = with_tuned(host_tree("h100x2-fc-vm-gather"), base / "tuned", "hpc-compute")
    docs["h100x2-fc-vm-gather+tuned"] = collect(str(tuned), "off")
    for snapshot in sorted((FIXTURES / "snapshots").glob("*.tar.gz")):
        with open_node(snapshot=str(snapshot)) as node:
            docs[snapshot.name] = node.facts().to_json()
    empty = base / "empty"
    (empty / "proc").mkdir(parents=True)
    for recording in NVML_ALONE:
        docs[recording] = collect(str(empty), str(FIXTURES / "nvml" / recording))
    ib = base / "ib"
    with tarfile.open(FIXTURES / "rdma/h100x8-sys-class-infiniband.tar.gz") as tar:
        tar.extractall(ib / "x", filter="data")
    (ib / "root/sys/class").mkdir(parents=True)
    (ib / "x/sys-class-infiniband-h100.0").rename(ib / "root/sys/class/infiniband")
    docs["h100x8-sys-class-infiniband"] = collect(str(ib / "root"), "off")
    for doc in docs.values():
        doc["derived"] = derive(doc)
        doc["health"] = health_view(doc, HEALTH_VARIABLES, nvml_requested=True)
        doc["health"]["write_probe"] = None
        doc["health"]["bench"] = bench_section({}, {})
    return docs


def _check_runner_health(tmp_path: Path) -> dict[str, Any]:
    """The health parts that `check` fills in, from a write probe and recorded benchmarks."""
    results = {}
    for recording in ("h100x2-fc-vm-bench.json", "h200-fc-vm-gpu-quick.json"):
        run = json.loads((FIXTURES / "bench" / recording).read_text())
        results.update({s["suite"]: SuiteResult.from_json(s) for s in run["suites"]})
    return {"health": {"write_probe": write_probe(HostRoot(str(tmp_path)), ["/"]),
                       "bench": bench_section(results, {})}}


def test_the_contract_module_and_its_docs_table_are_generated_from_the_types() -> None:
    assert shapes.CONTRACT_MODULE.read_text() == shapes.render(), \
        "nodetune/facts/contract.py is out of date: run python -m nodetune.facts.shapes"
    page = shapes.DOCS_PAGE.read_text()
    assert page == shapes.render_docs(page), \
        "the contract table of docs/facts.md is out of date: run python -m nodetune.facts.shapes"
    assert shapes.contract() == CONTRACT


def test_every_emitted_leaf_is_in_the_contract(documents, tmp_path: Path) -> None:
    problems = []
    for label, doc in [*documents.items(), ("check", _check_runner_health(tmp_path))]:
        out = Walk()
        walk(doc, TRIE, "", out)
        problems += [f"{label}: {p}" for p in sorted(set(out.problems))]
    assert not problems, "\n".join(problems)


def test_every_contract_path_is_emitted_by_a_fixture(documents, tmp_path: Path) -> None:
    out = Walk()
    for doc in [*documents.values(), _check_runner_health(tmp_path)]:
        walk(doc, TRIE, "", out)
    never = sorted(set(CONTRACT) - out.hits - set(ALLOWED_UNEMITTED))
    assert not never, "contract paths no fixture emits:\n" + "\n".join(never)
    assert not set(ALLOWED_UNEMITTED) & out.hits, "emitted now: drop it from ALLOWED_UNEMITTED"
    assert set(ALLOWED_UNEMITTED) <= set(CONTRACT)


def test_the_walk_catches_unknown_leaves_and_wrong_types() -> None:
    out = Walk()
    walk({"memory": {"swappiness": "10", "no_such_fact": 1}, "gpus": [{"index": True}]},
         TRIE, "", out)
    assert sorted(out.problems) == [
        "gpus[*].index: bool True, contract says int",
        "memory.no_such_fact: not in the contract",
        "memory.swappiness: str '10', contract says int",
    ]
    assert {"memory.swappiness", "gpus[*].index"} <= out.hits
