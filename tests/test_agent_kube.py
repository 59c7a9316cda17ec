"""Node labels, taint, condition and events published by the agent through the real client."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from kubernetes.client.exceptions import ApiException

from nodetune.agent import kube
from tests.fake_kube import FakeKube

K8S_VERSIONS = ("1.30.0", "1.34.0")


def make_node(labels=None, taints=None, annotations=None):
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "gpu-node-1",
            "labels": labels or {"kubernetes.io/hostname": "gpu-node-1"},
            "annotations": annotations or {},
        },
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


HEALTHY = kube.Verdict(profile="dgx-h100", compliant=True, healthy=True, reason="")
SICK = kube.Verdict(
    profile="dgx-h100",
    compliant=False,
    healthy=False,
    reason="nodetune: GPU3 PCIe x8 (expected x16)",
)


def validate(node):
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(node, version, strict=True)


def test_plan_sets_labels_and_records_ownership():
    patch = kube.plan_metadata_patch(make_node(), HEALTHY, taint_unhealthy=True)
    assert patch["metadata"]["labels"] == {
        "nodetune.io/compliant": "true",
        "nodetune.io/healthy": "true",
        "nodetune.io/profile": "dgx-h100",
    }
    managed = json.loads(patch["metadata"]["annotations"][kube.MANAGED_ANNOTATION])
    assert managed == {"labels": sorted(patch["metadata"]["labels"]), "taint": False}
    assert "spec" not in patch


def test_plan_is_empty_when_nothing_changes():
    node = make_node()
    from tests.fake_kube import merge_patch

    node = merge_patch(node, kube.plan_metadata_patch(node, HEALTHY, taint_unhealthy=True))
    assert kube.plan_metadata_patch(node, HEALTHY, taint_unhealthy=True) is None


def test_taint_added_only_when_asked_and_removed_only_if_ours():
    node = make_node()
    assert "spec" not in (kube.plan_metadata_patch(node, SICK, taint_unhealthy=False) or {})
    patch = kube.plan_metadata_patch(node, SICK, taint_unhealthy=True)
    assert patch["spec"]["taints"] == [
        {"key": kube.TAINT_KEY, "value": "true", "effect": "NoSchedule"}
    ]

    # a taint a person set under our key is not ours: healthy again must leave it in place
    foreign = make_node(taints=[{"key": kube.TAINT_KEY, "value": "manual", "effect": "NoSchedule"}])
    patch = kube.plan_metadata_patch(foreign, HEALTHY, taint_unhealthy=True)
    assert "spec" not in (patch or {})


def test_labels_not_ours_are_never_removed():
    node = make_node(
        labels={"nodetune.io/profile": "custom", "team": "a"},
        annotations={kube.MANAGED_ANNOTATION: json.dumps({"labels": [], "taint": False})},
    )
    verdict = kube.Verdict(profile=None, compliant=True, healthy=True, reason="")
    patch = kube.plan_metadata_patch(node, verdict, taint_unhealthy=False)
    assert "nodetune.io/profile" not in patch["metadata"]["labels"]  # set by a person, kept
    assert "team" not in patch["metadata"]["labels"]


def test_label_value_is_valid():
    assert kube._label_value("Grace Hopper/GB200 (NVL72)") == "Grace-Hopper-GB200--NVL72"
    assert len(kube._label_value("x" * 100)) == 63


def test_publish_through_real_client_set_keep_remove():
    with FakeKube(make_node(labels={"team": "ml"})) as fake:
        pub = kube.NodePublisher(fake.core_api(), "gpu-node-1", taint_unhealthy=True)
        assert pub.publish(SICK)
        node = fake.node
        assert node["metadata"]["labels"]["nodetune.io/healthy"] == "false"
        assert node["metadata"]["labels"]["team"] == "ml"
        assert [t["key"] for t in node["spec"]["taints"]] == [kube.TAINT_KEY]
        cond = next(c for c in node["status"]["conditions"] if c["type"] == kube.CONDITION_TYPE)
        assert cond["status"] == "False" and "GPU3 PCIe x8" in cond["message"]
        validate(node)

        assert pub.publish(HEALTHY)
        node = fake.node
        assert node["metadata"]["labels"]["nodetune.io/healthy"] == "true"
        assert node["spec"]["taints"] == []
        assert node["metadata"]["labels"]["team"] == "ml"
        assert len(fake.events) == 1 and fake.events[0]["reason"] == "NodetuneHealthy"
        validate(node)
        kubernetes_validate.validate(
            {**fake.events[0], "metadata": {"name": "e1", "namespace": "default"}},
            K8S_VERSIONS[0],
            strict=True,
        )
        content_types = {ct for method, _, ct, _ in fake.requests if method == "PATCH"}
        assert content_types == {
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        }


def test_unreachable_api_backs_off_and_recovers():
    with FakeKube(make_node()) as fake:
        pub = kube.NodePublisher(fake.core_api(), "gpu-node-1", taint_unhealthy=False)
        fake.fail_all = True
        with pytest.raises(ApiException):
            pub.publish(HEALTHY)
        assert pub.failures == 1
        assert pub.publish(HEALTHY) is False  # inside the backoff window: skipped, no request
        fake.fail_all = False
        pub.next_attempt = 0.0
        assert pub.publish(HEALTHY)
        assert pub.failures == 0


def test_condition_transition_time_moves_only_on_a_change_of_status():
    old = "2026-01-01T00:00:00Z"
    node = make_node()
    node["status"]["conditions"].append({
        "type": kube.CONDITION_TYPE, "status": "False", "reason": "ChecksFailed",
        "message": "GPU3 PCIe x8", "lastHeartbeatTime": old, "lastTransitionTime": old,
    })
    with FakeKube(node) as fake:
        pub = kube.NodePublisher(fake.core_api(), "gpu-node-1", taint_unhealthy=False)
        assert pub.publish(SICK)  # still unhealthy: the transition stays where it was
        cond = kube.current_condition(fake.node)
        assert cond is not None
        assert cond["lastTransitionTime"] == old
        assert cond["lastHeartbeatTime"] != old
        assert pub.publish(HEALTHY)  # a change of status: the transition moves
        cond = kube.current_condition(fake.node)
        assert cond is not None and cond["status"] == "True"
        assert cond["lastTransitionTime"] != old
        validate(fake.node)


def test_condition_patch_keeps_transition_of_an_unchanged_status():
    previous = {"type": kube.CONDITION_TYPE, "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}
    same = kube.condition_patch(HEALTHY, now=1.8e9, previous=previous)["status"]["conditions"][0]
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same["lastHeartbeatTime"] == "2027-01-15T08:00:00Z"
    flipped = kube.condition_patch(SICK, now=1.8e9, previous=previous)["status"]["conditions"][0]
    assert flipped["lastTransitionTime"] == "2027-01-15T08:00:00Z"


def test_a_check_that_could_not_run_never_taints_or_untaints():
    """nodetune check's exit 3 (a collector failed: NT0001) is no result: the taint stays as is."""
    from tests.fake_kube import merge_patch

    unchecked = kube.Verdict(profile="dgx-h100", compliant=False, healthy=False, checked=False,
                             reason="nodetune: not checked (quick: 16/40 evaluated): gpu failed")
    node = make_node()
    assert "spec" not in (kube.plan_metadata_patch(node, unchecked, taint_unhealthy=True) or {})
    tainted = merge_patch(node, kube.plan_metadata_patch(node, SICK, taint_unhealthy=True))
    assert "spec" not in (kube.plan_metadata_patch(tainted, unchecked, taint_unhealthy=True)
                          or {})  # nor is a taint nodetune set removed without a result


def test_the_agent_verdict_of_an_exit_3_check_is_unchecked():
    from nodetune.agent.cycle import verdict

    report = {"summary": {"profile": "base", "compliant": True, "healthy": False,
                          "check_summary": "nodetune: not checked"},
              "check": {"exit_code": 3, "healthy": False}}
    assert verdict(report).checked is False
    report["check"]["exit_code"] = 1
    assert verdict(report).checked is True
