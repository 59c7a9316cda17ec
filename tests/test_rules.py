"""The rule engine on facts documents built in the test: paths, operators, conditions, states."""

from __future__ import annotations

import pytest

from nodetune.errors import ProfileError
from nodetune.facts import paths as factpaths
from nodetune.facts.derived import derive, gpu_model, parse_cmdline, pcie_gbps
from nodetune.facts.model import Severity, Status
from nodetune.rules.evaluation import evaluate
from nodetune.rules.operators import check
from nodetune.rules.resolve import resolve
from nodetune.rules.rule import Rule
from nodetune.rules.schema import rule_problems


def rule(fact: str, **kw: object) -> Rule:
    return Rule.from_dict({"fact": fact, **kw}, id="t.rule", area="kernel")


def one(rules: Rule | list[Rule], facts: dict, variables: dict | None = None):
    found = evaluate(rules if isinstance(rules, list) else [rules], facts, variables)
    return found[0] if len(found) == 1 else found


FACTS = {
    "cpu": {"architecture": "x86_64", "governor": None, "hypervisor": False,
            "unknown": {"governor": "no cpufreq driver"}},
    "kernel": {"sysctl": {"vm.swappiness": "60", "net.ipv4.tcp_rmem": "4096\t131072  6291456"},
               "cmdline_args": {"iommu.passthrough": "1", "quiet": True},
               "modules": ["nvidia", "mlx5_core"],
               "persisted": {"sysctl": {"vm.swappiness": {"value": "10", "file": "/etc/s.conf"}},
                             "modprobe": {}, "cmdline": "ro iommu=pt"}},
    "gpus": [
        {"index": 0, "pci_address": "0000:18:00.0", "numa_node": 0,
         "pcie": {"current_gen": 5, "max_gen": 5, "current_width": 8, "max_width": 16}},
        {"index": 1, "pci_address": "0000:2a:00.0", "numa_node": None,
         "pcie": {"current_gen": 5, "max_gen": 5, "current_width": 16, "max_width": 16}},
    ],
    "gpu": {"count": 2, "unknown": {"gpus.1.numa_node": "numa_node is -1"}},
    "rdma": {"devices": [
        {"name": "mlx5_0", "pci_address": "0000:19:00.0", "netdevs": ["ens1"],
         "ports": [{"port": 1, "active_mtu": 1024, "link_layer": "Ethernet"}]},
        {"name": "mlx5_1", "pci_address": "0000:2b:00.0", "netdevs": [],
         "ports": [{"port": 1, "active_mtu": 2048, "link_layer": "InfiniBand"}]}]},
    "storage": {"block": [{"name": "nvme0n1", "kind": "nvme", "scheduler": "mq-deadline"},
                          {"name": "sda", "kind": "disk", "scheduler": "mq-deadline"}]},
    "collectors": {"nic": {"ok": False, "error": "cannot read /sys/class/net"}},
}


# -- fact paths ---------------------------------------------------------------------------

def test_path_syntax() -> None:
    toks = factpaths.parse("pci.devices[kind=nic|infiniband,vendor=0x15b3].link.max_width")
    assert [t.text() for t in toks] == ["pci", "devices", "[kind=nic|infiniband,vendor=0x15b3]",
                                        "link", "max_width"]
    assert factpaths.canonical(toks) == "pci.devices[*].link.max_width"
    for bad in ("", "cpu.", ".cpu", "gpus[*", "gpus[x]", "[*].a", "cpu..x"):
        with pytest.raises(factpaths.PathSyntaxError):
            factpaths.parse(bad)


def test_registry_knows_the_contract_and_nothing_else() -> None:
    assert factpaths.fact_type("kernel.sysctl.vm.swappiness") == "numstr"
    assert factpaths.fact_type("kernel.persisted.sysctl.kernel.numa_balancing.value") == "numstr"
    assert factpaths.fact_type("gpus[*].nvlink.links[*].active") == "bool"
    assert factpaths.fact_type("pci.devices[kind=nic].max_read_request_bytes") == "int"
    assert factpaths.fact_type("derived.gpus[*].nic.path_class") == "str"
    assert factpaths.fact_type("rdma.devices") == "list"
    assert factpaths.fact_type("cpu.governors.performance") == "any"  # below a free dict
    for unknown in ("cpu.gouvernor", "gpus[*].pcie.width", "memory.thp.enable", "derived.nope"):
        assert not factpaths.is_known(unknown), unknown


def test_longest_match_for_dotted_keys_and_subjects() -> None:
    assert [i.value for i in resolve(FACTS, "kernel.sysctl.vm.swappiness")] == ["60"]
    assert resolve(FACTS, "kernel.cmdline_args.iommu.passthrough")[0].value == "1"
    items = resolve(FACTS, "rdma.devices[*].ports[*].active_mtu")
    assert [(i.subject, i.value) for i in items] == [("mlx5_0/port1", 1024), ("mlx5_1/port1", 2048)]
    assert [i.subject for i in resolve(FACTS, "gpus[*].index")] == ["GPU0", "GPU1"]
    assert [i.subject for i in resolve(FACTS, "storage.block[kind=nvme].scheduler")] == ["nvme0n1"]
    assert resolve(FACTS, "gpus[1].index")[0].value == 1


def test_unknown_reasons_come_from_the_section_or_the_collector() -> None:
    assert resolve(FACTS, "cpu.governor")[0].reason == "no cpufreq driver"
    assert resolve(FACTS, "gpus[*].numa_node")[1].reason == "numa_node is -1"
    assert "cannot read /sys/class/net" in (resolve(FACTS, "nic.interfaces")[0].reason or "")
    assert resolve(FACTS, "numa.balancing")[0].reason == "the numa collector did not report"


# -- operators ----------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "actual", "expected", "ok"), [
    ("equals", "0", 0, True), ("equals", "1", 0, False), ("equals", "madvise", "madvise", True),
    ("equals", True, "yes", True), ("equals", "on", True, True), ("equals", 0, False, True),
    ("equals", "4096\t87380", "4096 87380", True), ("equals", [], [], True),
    ("min", "4096", 4096, True), ("min", 8, 16, False), ("max", 10.0, 10, True),
    ("min", "n/a", 1, False), ("one_of", "none", ["none", "noop"], True),
    ("not_one_of", "always", ["always"], False), ("regex", "COMPLETED", "(?i)^completed$", True),
    ("regex", ["a", "b"], "b", True), ("contains", ["nvidia", "x"], "nvidia", True),
    ("contains", ["nvidia"], ["nvidia", "nvidia_peermem"], False),
    ("not_contains", ["gpu_idle", "hw_slowdown"], ["hw_slowdown", "hw_thermal_slowdown"], False),
    ("contains", "ro quiet iommu=pt", "iommu=pt", True), ("contains", {"a": 1}, "a", True),
    ("present", None, True, False), ("absent", None, True, True), ("present", 0, True, True),
])
def test_operators(op: str, actual: object, expected: object, ok: bool) -> None:
    assert check(op, actual, expected) is ok


# -- evaluation ---------------------------------------------------------------------------

def test_per_device_rule_with_fact_reference() -> None:
    found = one(rule("gpus[*].pcie.current_width", min={"fact": "gpus[*].pcie.max_width"},
                     severity="critical"), FACTS)
    assert [(f.subject, f.status, f.severity) for f in found] == [
        ("GPU0", Status.FAIL, Severity.CRITICAL), ("GPU1", Status.PASS, Severity.CRITICAL)]
    assert found[0].expected == ">= 16" and found[0].actual == "8"
    assert found[0].message == "pcie.current_width is 8, expected >= 16"


def test_unknown_fact_is_unknown_with_reason() -> None:
    found = one(rule("cpu.governor", equals="performance"), FACTS)
    assert found.status is Status.UNKNOWN
    assert found.actual == "unknown (no cpufreq driver)"


def test_per_subject_expectation_and_missing_subject() -> None:
    found = one(rule("gpus[*].index", equals={"per_subject": {"GPU0": 0}}), FACTS)
    assert [(f.subject, f.status) for f in found] == [("GPU0", Status.PASS),
                                                      ("GPU1", Status.SKIPPED)]
    assert found[1].message == "no documented value for GPU1"


def test_when_node_wide_and_per_item() -> None:
    skipped = one(rule("kernel.modules", contains="nvidia_peermem",
                       when=[{"fact": "cpu.architecture", "equals": "aarch64",
                              "reason": "x86 only"}]), FACTS)
    assert (skipped.status, skipped.message) == (Status.SKIPPED, "x86 only")
    failing = one(rule("kernel.modules", contains="nvidia_peermem",
                       when=[{"fact": "rdma.devices", "present": True}]), FACTS)
    assert failing.status is Status.FAIL and failing.actual == "nvidia, mlx5_core"
    per_port = one(rule("rdma.devices[*].ports[*].active_mtu", min=4096,
                        when=[{"fact": "rdma.devices[*].ports[*].link_layer",
                               "equals": "Ethernet"}]),
                   FACTS)
    assert [(f.subject, f.status) for f in per_port] == [("mlx5_0/port1", Status.FAIL),
                                                         ("mlx5_1/port1", Status.SKIPPED)]
    any_item = one(rule("kernel.modules", contains="nvidia",
                        when=[{"fact": "rdma.devices[*].ports[*].link_layer",
                               "equals": "InfiniBand"}]), FACTS)
    assert any_item.status is Status.PASS  # a node-wide condition holds if any item holds
    unknown = one(rule("kernel.modules", contains="nvidia",
                       when=[{"fact": "cpu.governor", "equals": "performance"}]), FACTS)
    assert unknown.status is Status.UNKNOWN and "no cpufreq driver" in unknown.message


def test_or_alternative_passes() -> None:
    found = one(rule("cpu.governor", equals="performance",
                     **{"or": [{"fact": "cpu.hypervisor", "equals": False}]}), FACTS)
    assert found.status is Status.PASS and found.message == "satisfied by cpu.hypervisor = false"


def test_empty_list_is_skipped_not_passed() -> None:
    found = one(rule("gpus[*].index", min=0), {**FACTS, "gpus": []})
    assert found.status is Status.SKIPPED and "no gpus" in found.message


def test_variables_typed_and_in_text() -> None:
    r = Rule.from_dict({"fact": "storage.block[*].scheduler", "one_of": "${schedulers}",
                        "fix": "echo ${first} > /sys/block/${subject}/queue/scheduler",
                        "remediation": {"role": "storage", "task": "scheduler",
                                        "vars": {"storage_scheduler": {"${subject}": "${first}"}}}},
                       id="storage.scheduler", area="storage")
    found = evaluate([r], FACTS, {"schedulers": ["none", "noop"], "first": "none"})
    assert found[0].expected == "one of none, noop"
    assert found[0].fix == "echo none > /sys/block/nvme0n1/queue/scheduler"
    assert found[0].remediation == {"role": "storage", "task": "scheduler",
                                    "vars": {"storage_scheduler": {"nvme0n1": "none"}}}
    with pytest.raises(ProfileError, match=r"undefined variable \$\{schedulers\}"):
        evaluate([r], FACTS, {})


def test_three_states_persisted_and_reboot() -> None:
    sysctl = one(rule("kernel.sysctl.vm.swappiness", max=10,
                      persisted="kernel.persisted.sysctl.vm.swappiness.value"), FACTS)
    assert (sysctl.status, sysctl.actual, sysctl.persisted) == (Status.FAIL, "60", "10")
    assert not sysctl.needs_reboot and "persisted but not in effect" in sysctl.message
    cmdline = one(rule("kernel.cmdline_args.iommu", equals="pt", disruption="reboot",
                       persisted={"fact": "derived.persisted_cmdline_args.iommu"}), FACTS)
    # not on the running command line, but in the boot configuration: a reboot applies it
    assert (cmdline.status, cmdline.actual, cmdline.persisted) == (Status.FAIL, "not set", "pt")
    assert cmdline.needs_reboot
    assert cmdline.message == "persisted but not in effect: reboot to apply"
    facts = {**FACTS, "kernel": {**FACTS["kernel"], "cmdline_args": {"iommu": "on"}}}
    cmdline = one(rule("kernel.cmdline_args.iommu", equals="pt", disruption="reboot",
                       persisted={"fact": "derived.persisted_cmdline_args.iommu"}), facts)
    assert (cmdline.status, cmdline.persisted, cmdline.needs_reboot) == (Status.FAIL, "pt", True)
    missing = one(rule("kernel.sysctl.vm.swappiness", max=60,
                       persisted="kernel.persisted.sysctl.vm.nope.value"), FACTS)
    assert missing.status is Status.PASS and missing.persisted == "not persisted"


def test_rule_problems_name_the_key() -> None:
    problems = dict(rule_problems({"id": "x", "area": "cpu", "fact": "cpu.gouvernor",
                                   "equals": "performance", "severty": "info"}))
    assert "unknown fact path 'cpu.gouvernor'" in problems[("fact",)]
    assert "unknown key 'severty'" in problems[("severty",)]
    problems = dict(rule_problems({"id": "x", "area": "cpu", "fact": "cpu.governor",
                                   "min": 3, "when": [{"fact": "cpu.sockets", "min": "two"}]}))
    assert "compares numbers but the fact is a str" in problems[("min",)]
    assert "needs a number" in problems[("when", "0", "min")]
    assert rule_problems({"id": "x", "area": "cpu", "fact": "cpu.sockets"})[0][1].startswith(
        "no expectation")
    with pytest.raises(ProfileError, match="regex: bad regex"):
        Rule.from_dict({"fact": "cpu.governor", "regex": "("}, id="x", area="cpu")


# -- derived facts ------------------------------------------------------------------------

def test_pcie_bandwidth_from_gen_and_width() -> None:
    assert pcie_gbps(5, 16) == 63.0
    assert pcie_gbps(5, 8) == 31.5
    assert pcie_gbps(4, 16) == 31.5
    assert pcie_gbps(1, 16) == 4.0
    assert pcie_gbps(None, 16) is None


def test_gpu_model_from_name_or_device_id() -> None:
    assert gpu_model("NVIDIA H100 80GB HBM3", None) == "H100"
    assert gpu_model("NVIDIA GB200", None) == "GB200"
    assert gpu_model("NVIDIA A100-SXM4-80GB", None) == "A100"
    assert gpu_model("NVIDIA H200 NVL", None) == "H200"
    assert gpu_model(None, "0x2335") == "H200"
    assert gpu_model(None, "0x9999") is None


def test_parse_cmdline() -> None:
    assert parse_cmdline('ro iommu=pt quiet x="a b"') == {"ro": True, "iommu": "pt",
                                                         "quiet": True, "x": "a b"}
    assert parse_cmdline(None) is None


def _bridge(addr: str, srcvalid: bool, path: list[str]) -> dict:
    acs = {"ctl": {"SrcValid": srcvalid, "ReqRedir": False}, "source_validation": srcvalid}
    return {"address": addr, "kind": "bridge", "acs": acs, "path": path, "root_port": path[0]
            if path else addr}


def test_derive_counts_acs_irqs() -> None:
    root, up, down = "0000:00:01.0", "0000:01:00.0", "0000:02:00.0"
    facts = {
        "cpu": {"hypervisor": True, "online": [0, 1, 2, 3]},
        "numa": {"nodes": [{"id": 0, "cpus": [0, 1]}, {"id": 1, "cpus": [2, 3]},
                           {"id": 2, "cpus": []}]},
        "pci": {"devices": [
            _bridge(root, False, []), _bridge(up, True, [root]), _bridge(down, False, [root, up]),
            {"address": "0000:03:00.0", "kind": "gpu", "vendor": "0x10de", "device": "0x2330",
             "path": [root, up, down], "root_port": root, "numa_node": 0,
             "link": {"current_gen": 5, "max_gen": 5, "current_width": 16, "max_width": 16}},
            {"address": "0000:04:00.0", "kind": "nic", "numa_node": 1, "local_cpus": [2, 3]},
            {"address": "0000:05:00.0", "kind": "other", "vendor": "0x10de", "class": "0x068000"}]},
        "gpus": [{"index": 0, "pci_address": "0000:03:00.0", "name": None, "numa_node": 0,
                  "clock_event_reasons": ["gpu_idle"]}],
        "nic": {"interfaces": [{"name": "ens4", "pci_address": "0000:04:00.0", "numa_node": 1,
                                "irq_cpus": [0, 3], "virtual": False, "rdma_device": None},
                               {"name": "lo", "virtual": True}]},
    }
    d = derive(facts)
    assert d["virtualized"] is True and d["gpu_model"] == "H100" and d["nvswitch_count"] == 1
    assert d["numa"] == {"node_count": 3, "cpu_node_count": 2, "cpuless_node_count": 1}
    assert [n["gpus"] for n in d["numa_nodes"]] == [[0], [], []]
    gpu = d["gpus"][0]
    assert gpu["acs_redirect_ports"] == [up] and gpu["idle"] is True
    assert gpu["pcie"]["max_gbps"] == 63.0
    assert gpu["nic"] is None and d["unknown"]["gpus.0.nic"] == "no RDMA NIC on this node"
    assert [(n["name"], n["irqs_local"]) for n in d["nics"]] == [("ens4", False)]
    facts["pci"]["devices"][2]["acs"] = None  # no ACS capability: nothing to redirect
    facts["pci"]["unknown"] = {"devices.2.acs": "0000:02:00.0: no ACS capability"}
    assert derive(facts)["gpus"][0]["acs_redirect_ports"] == [up]
    facts["pci"]["devices"][1]["acs"] = None  # config space unreadable
    facts["pci"]["unknown"]["devices.1.acs"] = "0000:01:00.0: config space beyond 256 B needs root"
    d = derive(facts)
    assert d["gpus"][0]["acs_redirect_ports"] is None
    assert "needs root" in d["unknown"]["gpus.0.acs_redirect_ports"]
