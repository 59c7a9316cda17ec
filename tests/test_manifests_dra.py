"""`manifests --target dra`: ResourceClaimTemplates valid for resource.k8s.io/v1 of Kubernetes
1.34 and 1.35, whose GPU and NICs really share the PCIe root each claim names, checked against
the sysfs tree of every fixture node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nodetune.cli import cli
from tests import placement_trees as trees

# resource.k8s.io/v1 (DRA GA) exists from 1.34; kubernetes-validate ships its schemas.
DRA_VERSIONS = ("1.34.0", "1.35.0")
TREES = ("dgx-h100", "gb200", "h200x2-vm", "hgx-multirail")
GOLDEN = Path(__file__).parent / "golden" / "manifests"
ROOT_CEL = re.compile(r'pcieRoot == "(pci[0-9a-f]{4}:[0-9a-f]{2})"')


def source(request, name):
    if name == "h200x2-vm":
        return request.getfixturevalue("host_tree")("h200x2-vm-gather"), str(trees.H200_NVML)
    return trees.tree(request, name)


@pytest.fixture(scope="module")
def claims(request):
    out = {}
    for name in TREES:
        result = CliRunner().invoke(cli, ["manifests", *trees.cli_args(*source(request, name)),
                                          "--target", "dra"])
        assert result.exit_code == 0, result.output
        out[name] = result.output
    return out


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("version", DRA_VERSIONS)
def test_dra_objects_validate_against_resource_k8s_io_v1(claims, name, version):
    import kubernetes_validate

    objs = [o for o in docs(claims[name]) if o["apiVersion"].startswith("resource.k8s.io/")]
    assert sum(o["kind"] == "ResourceClaimTemplate" for o in objs) >= 2
    for obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", TREES)
def test_every_claim_names_the_root_its_gpu_and_nics_really_share(request, claims, name):
    facts = trees.facts(*source(request, name))
    bridge = {d["address"]: d.get("host_bridge") for d in facts["pci"]["devices"]}
    numa = {d["address"]: d.get("numa_node") for d in facts["pci"]["devices"]}
    rdma_pci = {d["name"]: d["pci_address"] for d in (facts.get("rdma") or {}).get("devices", [])}
    plan = trees.plan(facts)
    templates = {o["metadata"]["name"]: o for o in docs(claims[name])
                 if o["kind"] == "ResourceClaimTemplate"}
    assert set(templates) == {f"gpu{g.index}-rails" for g in plan.gpus}
    paired = 0
    for g in plan.gpus:
        devices = templates[f"gpu{g.index}-rails"]["spec"]["spec"]["devices"]
        requests = devices["requests"]
        claimed = {ROOT_CEL.search(s["cel"]["expression"]).group(1)
                   for r in requests for s in r["exactly"].get("selectors", [])}
        nics = [r for r in requests if r["name"].startswith("nic")]
        match = (devices.get("constraints") or [{}])[0].get("matchAttribute")
        if match == "resource.kubernetes.io/numaNode":  # no NIC on the GPU's root
            assert not claimed and len(nics) == 1
            assert numa[rdma_pci[g.nic]] == numa[g.pci_address] is not None
            assert bridge[rdma_pci[g.nic]] != bridge[g.pci_address]
            paired += 1
        elif nics:
            paired += 1
            assert claimed == {bridge[g.pci_address]}
            rails = [n for n in g.nics if bridge[rdma_pci[n]] == bridge[g.pci_address]]
            assert len(nics) == len(rails) >= 1
            assert devices["constraints"] == [{"requests": [r["name"] for r in requests],
                                               "matchAttribute":
                                               "resource.kubernetes.io/pcieRoot"}]
        else:
            assert not any(bridge.get(rdma_pci[n]) == bridge.get(g.pci_address)
                           for n in g.nics)
    if name in ("dgx-h100", "hgx-multirail"):
        assert paired == 8  # every GPU has its NIC(s) on its own root port


def test_multi_rail_claims_ask_for_both_rails(claims):
    for obj in docs(claims["hgx-multirail"]):
        if obj["kind"] == "ResourceClaimTemplate":
            names = [r["name"] for r in obj["spec"]["spec"]["devices"]["requests"]]
            assert names == ["gpu", "nic0", "nic1"]


def test_compute_domain_only_on_multi_node_nvlink(request, claims):
    for name in TREES:
        kinds = [o["kind"] for o in docs(claims[name])]
        facts = trees.facts(*source(request, name))
        cluster = any(str((g.get("fabric") or {}).get("cluster_uuid") or "").strip("0-")
                      for g in facts["gpus"])
        assert ("ComputeDomain" in kinds) == cluster, name


@pytest.mark.parametrize("name", TREES)
def test_dra_golden(claims, update_golden, name):
    path = GOLDEN / "dra" / f"{name}.yaml"
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(claims[name])
    assert claims[name] == path.read_text(), "rerun with --update-golden after checking the diff"
