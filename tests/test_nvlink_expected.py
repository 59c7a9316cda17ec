"""NT3001 counts the NVLinks a GPU product has, not NVML's link slots: an H100 NVL (12 links)
with 6 of 18 slots inactive is healthy; an H100 SXM (18 links) with the same is 6 links down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nodetune.check import npd
from nodetune.check.suite import load_suite
from nodetune.facts.derived import derive
from nodetune.facts.health import health_view
from nodetune.facts.nvlink import links_down, nvlink_spec
from nodetune.rules.evaluation import evaluate
from nodetune.rules.rule import Rule

NVML = Path(__file__).parent / "fixtures" / "nvml" / "h100x4-fc-vm-live.json"


def gpu(name: str, active: int, slots: int = 18) -> dict[str, Any]:
    links = [{"link": i, "active": i < active, "peer_pci_address": None, "peer_kind": None}
             for i in range(slots)]
    return {"index": 0, "name": name, "pci_address": "0000:1b:00.0", "source": "nvml",
            "nvlink": {"links": links, "active": active, "inactive": slots - active,
                       "peers": {}}}


def nt3001(gpus: list[dict[str, Any]], variables: dict[str, Any] | None = None) -> list[tuple]:
    doc = {"gpus": gpus, "gpu": {"nvml": {"available": True}}}
    doc["health"] = health_view(doc, variables or {})
    check = next(c for c in load_suite("quick").checks if c.id == "nvlink.inactive")
    return [(f.status.value, f.message)
            for f in evaluate([Rule.from_dict(check.rule)], doc, variables or {})]


@pytest.mark.parametrize(("name", "links"), [
    ("NVIDIA H100 80GB HBM3", 18), ("NVIDIA H100 NVL", 12), ("NVIDIA H200", 18),
    ("NVIDIA H800", 8), ("NVIDIA B200", 18), ("NVIDIA GB200", 18), ("NVIDIA H200 NVL", 18),
    ("NVIDIA A100-SXM4-80GB", 12)])
def test_products_have_their_datasheet_link_count(name: str, links: int) -> None:
    spec = nvlink_spec(name)
    assert spec is not None and spec.links == links


def test_an_h100_nvl_with_its_12_links_up_passes() -> None:
    assert nt3001([gpu("NVIDIA H100 NVL", active=12)]) == [("pass", "")]


def test_an_h100_sxm_with_6_links_down_fails() -> None:
    assert nt3001([gpu("NVIDIA H100 80GB HBM3", active=12)]) == [
        ("fail", "GPU0 NVLink 6/18 links down")]


def test_a_pcie_card_without_a_bridge_has_no_link_down() -> None:
    assert links_down("NVIDIA H100 PCIe", active=0, inactive=18) == (0, 0)
    assert links_down("NVIDIA H100 PCIe", active=8, inactive=10) == (4, 12)


def test_a_profile_sets_the_link_count_of_an_unlisted_product() -> None:
    assert nt3001([gpu("NVIDIA Future GPU", active=12)])[0][0] == "fail"  # every slot counts
    assert nt3001([gpu("NVIDIA Future GPU", active=12)], {"nvlink_links": 12}) == [("pass", "")]


def test_without_nvml_link_counts_stay_unknown() -> None:
    assert links_down("NVIDIA H100 NVL", active=None, inactive=None) == (None, None)


def test_recorded_h100_machine_has_all_its_links_up() -> None:
    """The 4x H100 VM's real NVML recording: 18 links per GPU, all active."""
    devices = json.loads(NVML.read_text())["devices"]
    for device in devices:
        active = sum(1 for link in device["nvlink"] if link["active"])
        assert links_down(device["name"], active, len(device["nvlink"]) - active) == (0, 18)


def test_audit_uses_the_same_count() -> None:
    """The profile setting gpu.nvlink_inactive reads derived.gpus[*].nvlink_down."""
    doc = {"gpus": [gpu("NVIDIA H100 NVL", active=12), gpu("NVIDIA H100 80GB HBM3", active=12)],
           "gpu": {"nvml": {"available": True}}}
    doc["gpus"][1]["index"] = 1
    derived = derive(doc)
    assert [(g["nvlink_down"], g["nvlink_expected"]) for g in derived["gpus"]] == [(0, 12), (6, 18)]


def test_a_gpu_whose_nvlinks_nvml_does_not_show_is_unknown_not_down() -> None:
    """A single H200 in a VM: NVML answers NotSupported for every link slot (real capture:
    tests/fixtures/snapshots/h200x1-fc-vm.tar.gz). The links may exist; nothing says so."""
    assert links_down("NVIDIA H200", active=0, inactive=0) == (None, 18)
    assert nt3001([gpu("NVIDIA H200", active=0, slots=0)])[0][0] == "unknown"
    assert links_down("NVIDIA L40S", active=0, inactive=0) == (0, 0)  # no NVLink product
    assert links_down("NVIDIA H100 NVL", active=0, inactive=0) == (0, 0)  # no bridge


SNAPSHOTS = sorted((Path(__file__).parent / "fixtures" / "snapshots").glob("*.tar.gz"))


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=[s.name for s in SNAPSHOTS])
def test_no_real_capture_is_drained(snapshot: Path) -> None:
    """Zero false drains: every real node we captured was healthy when captured."""
    proc = subprocess.run([sys.executable, "-m", "nodetune", "check", "--from", str(snapshot),
                           "--json"], capture_output=True, text=True, timeout=120, check=False)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0, doc["summary"]
    assert not [f for f in doc["faults"] if f.get("action") == "drain"]
    assert npd.status(doc) == npd.OK  # nor marked by Node Problem Detector (check --npd)
    ran = {c["id"] for c in doc["checks"]}
    assert {"rdma.gpudirect", "rdma.gpudirect.known_issue", "nvlink.recovery_failed",
            "nvlink.recovery_events", "nvlink.effective_errors"} <= ran
