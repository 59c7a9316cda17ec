"""InfiniBand/RoCE network health: subnet manager (NT4020), port error counters (NT4021,
NT4022) and link flaps (NT4023, NT4024).

The trees are the real mlx4 FDR node of tests/fixtures/hosts/32em64t-2n8c+dax+nvme+mic+dimms
(port ACTIVE, LID 0x3a4, SM LID 0x1, every error counter 0), copied into `synthetic-*` trees
that change what each story needs, as the kernel writes it (Documentation/ABI/stable/
sysfs-class-infiniband, sysfs-class-net)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from nodetune.agent.cycle import CycleOptions, run_cycle
from nodetune.check import readings
from nodetune.check.operation import CheckRequest, run
from nodetune.collectors.nic import NicCollector
from nodetune.facts.netcounters import increase_within
from nodetune.schemas import NET_READINGS_SCHEMA
from tests.conftest import real_tree_names
from tests.host_trees import context

HOST = "32em64t-2n8c+dax+nvme+mic+dimms"
IB_DEVICE = "sys/devices/pci0000:80/0000:80:02.2/0000:82:00.0"
PORT = f"{IB_DEVICE}/infiniband/mlx4_0/ports/1"
ETH0 = "sys/devices/pci0000:00/0000:00:01.1/0000:02:00.0/net/eth0"
COPIED = ("sys/class/infiniband", "sys/class/net", IB_DEVICE,
          "sys/devices/pci0000:00/0000:00:01.1/0000:02:00.0",
          "sys/devices/pci0000:00/0000:00:01.1/0000:02:00.3", "proc")
OUR_CHECKS = ("rdma.port.sm", "rdma.port.errors", "rdma.port.errors_growing",
              "net.link.flapping", "net.link.flapped", "rdma.roce.ecn")


@pytest.fixture
def tree(host_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the real node's network and IB sysfs, with a boot id, in its own cache."""
    real = host_tree(HOST)
    root = tmp_path / "synthetic-ib-node"
    for rel in COPIED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(real / rel, root / rel, symlinks=True)
    write(root, "proc/sys/kernel/random/boot_id", "3f1c2a9e-0d6b-4c55-9b7e-2f0a1d4c8e11")
    write(root, f"{ETH0}/carrier_changes", "2")  # Linux >= 3.15 counts carrier changes
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))
    return root


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def check(root: Path, *, record: bool = False) -> dict[str, dict[str, Any]]:
    """{check id: its outcome} of the quick tier on `root` (record: as the agent's cycle)."""
    result = run(CheckRequest(root=str(root), tier="quick"), cache=False,
                 record_readings=record)
    return {c["id"]: c for c in result.doc["checks"] if c["id"] in OUR_CHECKS} | {
        "_doc": result.doc}


def statuses(outcome: dict[str, Any]) -> dict[str | None, str]:
    return {f["subject"]: f["status"] for f in outcome["findings"]}


def drains(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["fault_code"], f["subject"]) for f in doc["faults"]]


# -- the real node is clean -----------------------------------------------------------------

def test_the_real_ib_node_is_healthy_on_every_network_check(tree: Path) -> None:
    first = check(tree, record=True)
    assert statuses(first["rdma.port.sm"]) == {"mlx4_0/1": "pass"}
    assert statuses(first["rdma.port.errors"]) == {"mlx4_0/1": "pass"}
    assert first["rdma.port.errors_growing"]["status"] == "skipped"  # no earlier reading
    assert "no earlier reading" in first["rdma.port.errors_growing"]["note"]
    second = check(tree, record=True)
    assert statuses(second["rdma.port.errors_growing"]) == {"mlx4_0/1": "pass"}
    assert statuses(second["net.link.flapping"]) == {"eth0": "pass", "mlx4_0/1": "pass",
                                                     "eth1": "unknown"}
    assert not drains(second["_doc"]) and not second["_doc"]["warnings"]


# -- subnet manager --------------------------------------------------------------------------

@pytest.mark.parametrize(("lid", "sm_lid"), [("0x3a4", "0x0"), ("0x0", "0x1")])
def test_an_active_ib_port_without_a_subnet_manager_drains(tree: Path, lid: str,
                                                           sm_lid: str) -> None:
    write(tree, f"{PORT}/lid", lid)
    write(tree, f"{PORT}/sm_lid", sm_lid)
    out = check(tree)
    assert statuses(out["rdma.port.sm"]) == {"mlx4_0/1": "fail"}
    assert ("NT4020", "mlx4_0/1") in drains(out["_doc"])
    assert "has no subnet manager" in out["_doc"]["summary"]


def test_a_roce_port_has_no_subnet_manager_to_check(tree: Path) -> None:
    write(tree, f"{PORT}/link_layer", "Ethernet")
    write(tree, f"{PORT}/lid", "0x0")
    write(tree, f"{PORT}/sm_lid", "0x0")
    out = check(tree)
    assert statuses(out["rdma.port.sm"]) == {"mlx4_0/1": "skipped"}
    assert out["rdma.port.sm"]["findings"][0]["message"] == \
        "an Ethernet (RoCE) port: no subnet manager"
    assert not drains(out["_doc"])


def test_an_unreadable_sm_lid_is_unknown_not_pass(tree: Path) -> None:
    (tree / PORT / "sm_lid").unlink()
    out = check(tree)
    finding = out["rdma.port.sm"]["findings"][0]
    assert finding["status"] == "unknown"
    assert "sm_lid not readable" in finding["actual"]


def test_a_port_that_is_down_is_not_judged_for_its_sm(tree: Path) -> None:
    write(tree, f"{PORT}/state", "1: DOWN")
    write(tree, f"{PORT}/sm_lid", "0x0")
    out = check(tree)
    assert statuses(out["rdma.port.sm"]) == {"mlx4_0/1": "skipped"}  # rdma.port.state drains


# -- error counters: absolute thresholds ---------------------------------------------------------

def test_counters_at_ibcheckerrs_thresholds_warn_and_do_not_drain(tree: Path) -> None:
    """The values of the real H100 capture (tests/fixtures/rdma): 14 receive errors and 15
    buffer overruns, both at or above ibcheckerrs' 10."""
    write(tree, f"{PORT}/counters/port_rcv_errors", "14")
    write(tree, f"{PORT}/counters/excessive_buffer_overrun_errors", "15")
    write(tree, f"{PORT}/counters/port_xmit_discards", "99")  # limit 100
    out = check(tree)
    assert statuses(out["rdma.port.errors"]) == {"mlx4_0/1": "fail"}
    warning = next(w for w in out["_doc"]["warnings"] if w["fault_code"] == "NT4021")
    assert warning["message"] == ("mlx4_0/1 error counters over their limits: port_rcv_errors 14 "
                                  "(limit 10), excessive_buffer_overrun_errors 15 (limit 10)")
    assert not drains(out["_doc"]) and out["_doc"]["exit_code"] == 0


def test_unreadable_counters_are_unknown(tree: Path) -> None:
    shutil.rmtree(tree / PORT / "counters")
    finding = check(tree)["rdma.port.errors"]["findings"][0]
    assert finding["status"] == "unknown" and "no error counter readable" in finding["actual"]


# -- error counters: growth between readings -------------------------------------------------

def test_link_errors_rising_between_two_agent_cycles_drain(tree: Path) -> None:
    check(tree, record=True)
    write(tree, f"{PORT}/counters/symbol_error", "7")
    write(tree, f"{PORT}/counters/port_xmit_discards", "40")  # congestion: not a link error
    out = check(tree, record=True)
    assert statuses(out["rdma.port.errors_growing"]) == {"mlx4_0/1": "fail"}
    assert ("NT4022", "mlx4_0/1") in drains(out["_doc"])
    assert "symbol_error +7" in out["_doc"]["summary"]
    assert "port_xmit_discards" not in out["_doc"]["summary"]
    third = check(tree, record=True)  # no new errors, but they rose within the window
    assert ("NT4022", "mlx4_0/1") in drains(third["_doc"])
    age_readings(tree, 901)  # rdma_counter_window_s 900: the rise is history
    assert check(tree, record=True)["rdma.port.errors_growing"]["status"] == "skipped"
    assert statuses(check(tree)["rdma.port.errors_growing"]) == {"mlx4_0/1": "pass"}


def age_readings(tree: Path, seconds: float) -> None:
    """Move every kept reading `seconds` into the past, as time passing does."""
    path = Path(str(readings.readings_path(str(tree))))
    doc = json.loads(path.read_text())
    assert doc["schema"] == NET_READINGS_SCHEMA
    for r in doc["readings"]:
        r["t"] -= seconds
    path.write_text(json.dumps(doc))


def test_a_check_outside_the_agent_compares_with_the_agents_reading(tree: Path) -> None:
    check(tree, record=True)  # the agent's cycle
    write(tree, f"{PORT}/counters/link_error_recovery", "3")
    out = check(tree)  # the prolog's `nodetune check`
    assert ("NT4022", "mlx4_0/1") in drains(out["_doc"])
    again = check(tree)  # it wrote nothing: still compared with the agent's reading
    assert ("NT4022", "mlx4_0/1") in drains(again["_doc"])


def test_a_counter_reset_is_not_growth(tree: Path) -> None:
    write(tree, f"{PORT}/counters/symbol_error", "500")
    check(tree, record=True)
    write(tree, f"{PORT}/counters/symbol_error", "0")  # perfquery -R
    out = check(tree, record=True)
    assert statuses(out["rdma.port.errors_growing"]) == {"mlx4_0/1": "pass"}
    write(tree, f"{PORT}/counters/symbol_error", "4")  # rising again after the reset
    assert "symbol_error +4" in check(tree)["_doc"]["summary"]


def test_after_a_reboot_the_old_readings_do_not_count(tree: Path) -> None:
    check(tree, record=True)
    write(tree, "proc/sys/kernel/random/boot_id", "9d2e4f60-1b3c-4a7d-8e5f-6a7b8c9d0e1f")
    write(tree, f"{PORT}/counters/symbol_error", "12")
    out = check(tree)
    assert out["rdma.port.errors_growing"]["status"] == "skipped"
    assert "NT4022" not in {code for code, _ in drains(out["_doc"])}


def test_a_reading_older_than_the_window_is_no_baseline(tree: Path) -> None:
    check(tree, record=True)
    age_readings(tree, 901)  # rdma_counter_window_s 900
    write(tree, f"{PORT}/counters/symbol_error", "12")
    assert check(tree)["rdma.port.errors_growing"]["status"] == "skipped"


def test_another_users_readings_file_is_ignored(tree: Path) -> None:
    check(tree, record=True)
    path = str(readings.readings_path(str(tree)))
    history = readings.load(str(tree))
    assert len(history.readings) == 1
    Path(path).write_text("not json")
    assert readings.load(str(tree)).readings == ()


# -- link flaps ------------------------------------------------------------------------------

def test_three_flaps_in_ten_minutes_drain(tree: Path) -> None:
    check(tree, record=True)
    write(tree, f"{ETH0}/carrier_changes", "4")  # one flap: down and up
    first = check(tree, record=True)
    assert statuses(first["net.link.flapped"])["eth0"] == "fail"
    assert statuses(first["net.link.flapping"])["eth0"] == "pass"
    assert ("NT4024", "eth0") in [(w["fault_code"], w["subject"])
                                  for w in first["_doc"]["warnings"]]
    write(tree, f"{ETH0}/carrier_changes", "8")  # two more
    out = check(tree, record=True)
    assert ("NT4023", "eth0") in drains(out["_doc"])
    assert "eth0 link went down 3 times in the last 600 s" in out["_doc"]["summary"]
    assert statuses(out["net.link.flapped"])["eth0"] == "skipped"  # the drain says it


def test_ib_link_downed_counts_flaps_of_the_port(tree: Path) -> None:
    check(tree, record=True)
    write(tree, f"{PORT}/counters/link_downed", "3")
    out = check(tree, record=True)
    assert ("NT4023", "mlx4_0/1") in drains(out["_doc"])


def test_an_old_flap_that_recovered_is_fine(tree: Path) -> None:
    write(tree, f"{ETH0}/carrier_changes", "40")  # flapped 19 times since boot, long ago
    check(tree, record=True)
    out = check(tree, record=True)
    assert statuses(out["net.link.flapped"])["eth0"] == "pass"
    assert not drains(out["_doc"])


def test_flaps_count_only_within_the_window() -> None:
    history = [{"t": 0.0, "interfaces": {"eth0": 2}}, {"t": 500.0, "interfaces": {"eth0": 6}},
               {"t": 800.0, "interfaces": {"eth0": 6}}]
    assert increase_within(history, 1000.0, 600.0, "interfaces", "eth0", 8) == 2
    assert increase_within(history, 1000.0, 600.0, "interfaces", "eth0", None) is None
    assert increase_within(history, 2000.0, 600.0, "interfaces", "eth0", 8) is None
    # a reset (driver reload) in the window: counting starts again from the lower value
    reset = [{"t": 500.0, "interfaces": {"eth0": 6}}, {"t": 800.0, "interfaces": {"eth0": 1}}]
    assert increase_within(reset, 1000.0, 600.0, "interfaces", "eth0", 3) == 2


@pytest.mark.parametrize("name", real_tree_names())
def test_no_real_capture_fails_a_network_check(host_tree, name: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero false drains (and no false warning) from these checks on every real tree, the
    agent's way: a cycle recorded, then a second one compared with it."""
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path))
    root = host_tree(name)
    for _ in range(2):
        out = check(root, record=True)
        failing = {i: statuses(o) for i, o in out.items() if i != "_doc"
                   and "fail" in statuses(o).values()}
        assert not failing


# -- RoCE ECN -------------------------------------------------------------------------------

def roce(tree: Path) -> Path:
    """The node's port as a RoCE port: link layer Ethernet, its netdev an Ethernet interface
    eth2, as mlx5_core of MLNX_OFED lays out ecn/ and qos/ (NVIDIA MLNX_OFED ECN guide)."""
    write(tree, f"{PORT}/link_layer", "Ethernet")
    (tree / IB_DEVICE / "net/ib0").rename(tree / IB_DEVICE / "net/eth2")
    (tree / "sys/class/net/ib0").unlink()
    (tree / "sys/class/net/eth2").symlink_to(f"../../devices/{IB_DEVICE.split('/', 2)[2]}"
                                             "/net/eth2")
    netdev = f"{IB_DEVICE}/net/eth2"
    write(tree, f"{netdev}/type", "1")
    write(tree, f"{netdev}/carrier_changes", "2")
    for prio in range(8):
        write(tree, f"{netdev}/ecn/roce_np/enable/{prio}", "0")
        write(tree, f"{netdev}/ecn/roce_rp/enable/{prio}", "0")
    write(tree, f"{netdev}/qos/trust", "dscp")
    return tree / netdev


def test_a_roce_nic_with_ecn_off_on_every_priority_warns(tree: Path) -> None:
    roce(tree)
    doc = check(tree)["_doc"]
    ecn = next(c for c in doc["checks"] if c["id"] == "rdma.roce.ecn")
    assert statuses(ecn) == {"eth2 (mlx4_0)": "fail"}
    assert [(w["fault_code"], w["message"]) for w in doc["warnings"]] == [
        ("NT4025", "eth2 (mlx4_0) ECN off on every priority (reaction point on none, "
                   "notification point on none)")]
    assert not drains(doc)


def test_ecn_on_the_roce_priority_passes(tree: Path) -> None:
    netdev = roce(tree)
    (netdev / "ecn/roce_np/enable/3").write_text("1\n")
    (netdev / "ecn/roce_rp/enable/3").write_text("1\n")
    (netdev / "ecn/roce_np/enable/5").write_text("1\n")  # notification alone is not DCQCN
    doc = check(tree)["_doc"]
    ecn = next(c for c in doc["checks"] if c["id"] == "rdma.roce.ecn")
    assert statuses(ecn) == {"eth2 (mlx4_0)": "pass"}
    facts = run(CheckRequest(root=str(tree)), cache=False).report
    assert facts is not None
    item = facts.health["roce_ecn"][0]
    assert (item["rp_enabled"], item["np_enabled"]) == ("3", "3,5")


def test_without_the_ecn_directory_ecn_is_unknown_with_the_reason(tree: Path) -> None:
    netdev = roce(tree)
    shutil.rmtree(netdev / "ecn")
    doc = check(tree)["_doc"]
    finding = next(c for c in doc["checks"] if c["id"] == "rdma.roce.ecn")["findings"][0]
    assert finding["status"] == "unknown"
    assert "ecn is not present (MLNX_OFED's mlx5_core has it" in finding["actual"]


def test_an_infiniband_port_has_no_roce_ecn_to_check(tree: Path) -> None:
    doc = check(tree)["_doc"]
    ecn = next(c for c in doc["checks"] if c["id"] == "rdma.roce.ecn")
    assert ecn["status"] == "skipped"


def test_the_nic_collector_reads_ecn_and_qos_of_roce_interfaces(tree: Path) -> None:
    netdev = roce(tree)
    (netdev / "ecn/roce_rp/enable/3").write_text("1\n")
    (netdev / "ecn/roce_np/enable/7").unlink()  # unreadable priority: not counted
    facts = {i.name: i for i in NicCollector().collect(context(tree)).interfaces}
    ecn = facts["eth2"].ecn
    assert ecn is not None
    assert (ecn.rp_enabled, ecn.np_enabled, ecn.priorities_read) == ([3], [], 7)
    assert facts["eth2"].qos == {"trust": "dscp"}
    assert facts["eth0"].ecn is None and facts["eth0"].qos is None  # not an RDMA interface


# -- the agent's cycles -----------------------------------------------------------------------

def test_two_agent_cycles_see_errors_rising_and_the_prolog_agrees(tree: Path) -> None:
    """The agent's own cycle (audit and check, as `nodetune agent` runs it) records the
    counters; the next cycle drains on their growth, and so does a `nodetune check` after it."""
    opts = CycleOptions(root=str(tree), profile="base")
    first = run_cycle(opts)
    assert first["summary"]["healthy"]
    write(tree, f"{PORT}/counters/local_link_integrity_errors", "2")
    write(tree, f"{PORT}/counters/link_downed", "1")
    second = run_cycle(opts)
    faults = [(f["fault_code"], f["subject"]) for f in second["check"]["faults"]]
    assert ("NT4022", "mlx4_0/1") in faults
    assert not second["summary"]["healthy"]
    assert "NT4022" in {code for code, _ in drains(check(tree)["_doc"])}
    history = readings.load(str(tree))
    assert [r["ports"]["mlx4_0/1"]["link_downed"] for r in history.readings] == [0, 1]


# -- the synthetic DGX H100 (8 ConnectX-7 InfiniBand; with storage_nics, ConnectX-7 RoCE) ----

def dgx_checks(synth: Any, dest: Path, **knobs: Any) -> dict[str, dict[str, Any]]:
    host = synth.build_dgx_h100(dest, synth.Options(storage_nics=True, **knobs))
    result = run(CheckRequest(root=str(host.root), nvml=str(host.nvml), profile="dgx-h100"),
                 cache=False)
    return {c["id"]: c for c in result.doc["checks"] if c["id"] in OUR_CHECKS}


def test_the_clean_synthetic_dgx_passes_the_sm_and_ecn_checks(synth, synth_tmp: Path,
                                                             tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path))
    out = dgx_checks(synth, synth_tmp)
    sm = statuses(out["rdma.port.sm"])
    assert list(sm.values()).count("pass") == 8
    roce = {s for s, v in sm.items() if v == "skipped"}
    assert len(roce) == 4  # the storage NICs: RoCE, no subnet manager
    ecn = statuses(out["rdma.roce.ecn"])
    assert set(ecn.values()) == {"pass"}
    assert {s.split("(")[1].rstrip(")") + "/1" for s in ecn} == roce


@pytest.mark.parametrize(("priorities", "status"), [((), "fail"), (None, "unknown")])
def test_a_synthetic_dgx_without_roce_ecn(synth, synth_tmp: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          priorities: tuple[int, ...] | None,
                                          status: str) -> None:
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path))
    out = dgx_checks(synth, synth_tmp, roce_ecn_priorities=priorities)
    assert set(statuses(out["rdma.roce.ecn"]).values()) == {status}


def test_the_agent_keeps_only_the_readings_of_the_longest_window(tree: Path) -> None:
    check(tree, record=True)
    age_readings(tree, 901)  # past rdma_counter_window_s 900 and link_flap_window_s 600
    check(tree, record=True)
    check(tree, record=True)
    kept = readings.load(str(tree)).readings
    assert len(kept) == 2  # the aged one dropped, the two recent ones kept
