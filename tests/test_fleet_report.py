"""`nodetune fleet report`: compliance, ranking, drift and outliers over reports of real nodes.

Node reports are made the way `fleet collect` makes them: `nodetune facts` and `audit` on the
real H200/H100 VM trees and on synthetic DGX H100 trees (one planted fault each), reduced by
`nodetune.fleet.lean`. The synthetic-fleet test runs the generator of the speed benchmark
(tests/bench/fleet_synth.py) at 500 nodes and checks recall and precision the same way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from nodetune import __version__
from nodetune.audit.operation import run_audit
from nodetune.cli import main
from nodetune.fleet import drift, lean, load, outliers, report
from nodetune.node.source import open_node
from nodetune.schemas import (
    AUDIT_SCHEMA,
    FLEET_COLLECT_SCHEMA,
    FLEET_REPORT_SCHEMA,
    FLEET_SCHEMA,
)

BENCH = Path(__file__).parent / "bench"
NVML = Path(__file__).parent / "fixtures" / "nvml"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


fleet_synth = _module("fleet_synth")
fleet_bench = _module("fleet_report")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def node_docs(root: Path, nvml: Path) -> tuple[dict, dict]:
    """(facts, audit) documents of a tree, as `nodetune facts/audit --json` print them."""
    with open_node(root=str(root), nvml=str(nvml)) as node:
        facts = node.facts().to_json()
        origin = node.origin
    return facts, {"schema": AUDIT_SCHEMA, **run_audit(facts, source=origin).to_json()}


def fleet_report_doc(host: str, facts: dict, audit: dict, *, full: bool = False) -> dict:
    return {"schema": FLEET_REPORT_SCHEMA, "host": host,
            "collected_at": "2025-06-01T12:00:00+00:00", "lean": not full,
            "facts": facts if full else lean.facts(facts),
            "audit": audit if full else lean.audit(audit), "bench": None, "errors": []}


def write(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def ram_dir(tmp_path_factory):
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="nodetune-fleet-test-", dir=shm)) \
        if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.mktemp("fleet")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def seeds(host_tree, synth, ram_dir):
    """Seed reports of the speed benchmark: the H200 VM tree and three synthetic DGX H100."""
    return fleet_synth.build_seeds(ram_dir / "seeds", h200_tree=host_tree("h200x2-vm-gather"),
                                   synth=synth)


@pytest.fixture(scope="module")
def real_docs(host_tree, synthetic_host):
    """(facts, audit) of the two real VM trees and the tuned synthetic DGX H100."""
    dgx = synthetic_host("synthetic-dgx-h100")
    return {"vm-h200": node_docs(host_tree("h200x2-vm-gather"), NVML / "h200x2-vm.json"),
            "vm-h100": node_docs(host_tree("h100x2-fc-vm-gather"), NVML / "h100x2-fc-vm.json"),
            "dgx": node_docs(dgx.root, dgx.nvml)}


# -- robust statistics ---------------------------------------------------------------------

def test_identical_values_have_no_outliers_thanks_to_the_mad_floor() -> None:
    stats = outliers.analyse([370.0] * 50 + [369.0])
    assert stats.mad == 0.0 and stats.mad_used == pytest.approx(3.7)
    assert stats.outliers == ()


def test_a_node_20_percent_low_is_an_outlier_with_its_robust_z() -> None:
    values = [100.0 + (i % 7 - 3) * 0.5 for i in range(40)] + [80.0]
    stats = outliers.analyse(values)
    assert [o.index for o in stats.outliers] == [40]
    o = stats.outliers[0]
    assert o.relative == pytest.approx(-0.2, abs=0.002)
    assert o.z == pytest.approx(0.6745 * (80.0 - stats.median) / stats.mad_used, abs=0.01)
    assert stats.threshold < 95.0 < stats.median


def test_noise_is_never_flagged_and_the_floor_sets_the_smallest_drop() -> None:
    noisy = [100.0 * (1 + d / 100) for d in (-3, -2, -1, 0, 1, 2, 3) * 10]
    assert outliers.analyse(noisy).outliers == ()
    tight = [100.0 + d / 10 for d in (-3, -2, -1, 0, 1, 2, 3) * 10]  # MAD 0.2 < floor 1.0
    stats = outliers.analyse([*tight, 95.5, 94.4])
    assert stats.mad_used == pytest.approx(1.0)
    assert stats.threshold == pytest.approx(100.0 - 3.5 / 0.6745)  # 5.19% below the median
    assert [o.value for o in stats.outliers] == [94.4]


def test_latencies_flag_the_slow_side_and_too_few_nodes_flag_nothing() -> None:
    lat = [10.0] * 20 + [14.0, 6.0]
    stats = outliers.analyse(lat, higher_is_better=False)
    assert [o.value for o in stats.outliers] == [14.0]
    assert outliers.analyse([100.0, 50.0]).outliers == ()


def test_mad_and_outliers_match_their_definitions_on_odd_values() -> None:
    """The MAD by bisection equals the median of the sorted deviations, and the candidate cut
    loses no outlier, on ties, infinities, NaN and tight spreads."""
    import random
    import statistics

    rng = random.Random(5)
    specials = (0.5, 0.8, 1.2, 2.0, 0.0, float("inf"), -float("inf"), float("nan"))
    for _ in range(2000):
        n = rng.randint(1, 60)
        values = [rng.gauss(100, rng.choice((0.01, 1, 5))) for _ in range(n)]
        for _ in range(rng.randint(0, 3)):
            values[rng.randrange(n)] *= rng.choice(specials)
        if rng.random() < 0.1:
            values = [rng.choice((1.0, 2.0, 2.5)) for _ in range(n)]
        for higher in (True, False):
            stats = outliers.analyse(values, higher_is_better=higher, k=2.0, mad_floor=0.0)
            if any(v != v for v in values) or any(abs(v) == float("inf") for v in values):
                continue  # NaN deviations have no order to compare with
            median = statistics.median(values)
            assert stats.median == median
            assert stats.mad == statistics.median(sorted(abs(v - median) for v in values))
            sign = 1 if higher else -1
            want = [i for i, v in enumerate(values) if stats.mad_used > 0 and n >= 3
                    and sign * 0.6745 * (v - median) / stats.mad_used < -2.0]
            assert sorted(o.index for o in stats.outliers) == want


# -- drift digest --------------------------------------------------------------------------

def test_drift_digest_of_real_trees_reads_their_facts(real_docs) -> None:
    keys = [f.key for f in drift.FACTS]
    for name, (facts, _) in real_docs.items():
        d = dict(zip(keys, drift.digest(facts), strict=True))
        gpus = facts["gpus"]
        assert d["gpus"] == f"{len(gpus)}x {gpus[0]['name']}", name
        assert d["gpu_driver"] == facts["gpu"]["driver_version"]
        assert d["kernel"] == facts["kernel"]["release"]
        cpu_nodes = [n for n in facts["numa"]["nodes"] if n["cpus"]]
        assert d["numa_layout"].startswith(f"{len(cpu_nodes)} node")
        assert d["memory"] == f"{round(facts['memory']['total_bytes'] / 2**30)} GiB"
        # the lean facts a fleet report keeps give the same digest
        assert drift.digest(lean.facts(facts)) == drift.digest(facts)
    dgx = dict(zip(keys, drift.digest(real_docs["dgx"][0]), strict=True))
    fw = {d["fw_ver"] for d in real_docs["dgx"][0]["rdma"]["devices"]}
    assert len(fw) == 1 and dgx["nic_firmware"].endswith(f"fw {fw.pop()}")
    assert "nvidia_peermem" in dgx["modules"]


def test_per_node_kernel_arguments_are_not_drift(real_docs) -> None:
    facts = real_docs["dgx"][0]
    base = facts["kernel"]["cmdline"]
    a = {**facts, "kernel": {**facts["kernel"], "cmdline": "BOOT_IMAGE=/vmlinuz-6.8 root=UUID="
                             "0b6e2f4c-1d2a-4c55-9c1e-2f1d8a7b6c5d BOOTIF=01-0c-42-a1-00-00-01 "
                             f"ip=10.1.2.3::10.1.0.1:255.255.0.0 {base}"}}
    b = {**facts, "kernel": {**facts["kernel"], "cmdline": f"{base} BOOTIF=01-0c-42-a1-00-00-02"
                             " root=UUID=9f0c2a77-5e4d-4b3a-8c2b-1a0f9e8d7c6b"}}
    assert drift.digest(a) == drift.digest(b) == drift.digest(facts)
    c = {**facts, "kernel": {**facts["kernel"], "cmdline": base.replace("iommu=pt", "")}}
    found = drift.find_drift(["n1", "n2", "n3"], [drift.digest(facts)] * 2 + [drift.digest(c)])
    assert [f["fact"] for f in found] == ["cmdline"]
    assert found[0]["minority"][0]["diff"] == "-iommu=pt"
    assert found[0]["minority"][0]["nodes"] == ["n3"] and not found[0]["tie"]


# -- reports of real nodes -----------------------------------------------------------------

def test_lean_and_full_reports_give_the_same_fleet(real_docs, tmp_path: Path) -> None:
    for full in (False, True):
        d = tmp_path / ("full" if full else "lean")
        d.mkdir()
        for name, (facts, audit) in real_docs.items():
            write(d / f"{name}.json", fleet_report_doc(name, facts, audit, full=full))
    lean_doc, _ = report.build(tmp_path / "lean")
    full_doc, _ = report.build(tmp_path / "full")
    for key in ("settings", "nodes", "drift", "summary"):
        assert lean_doc[key] == full_doc[key], key
    size = sum(p.stat().st_size for p in (tmp_path / "lean").iterdir())
    assert size * 10 < sum(p.stat().st_size for p in (tmp_path / "full").iterdir())


def test_report_of_planted_faults_ranks_compliance_and_drift(seeds, tmp_path: Path) -> None:
    names = {"dgx-a": "dgx", "dgx-b": "dgx", "dgx-x8": "dgx-link-x8", "dgx-thp": "dgx-thp",
             "vm-1": "vm-h200", "vm-2": "vm-h200"}
    for host, seed in names.items():
        write(tmp_path / f"{host}.json", {**seeds[seed], "host": host})
    doc, _ = report.build(tmp_path)
    assert doc["summary"]["profiles"] == {"hgx-h100": 4, "cloud-vm": 2}
    width = next(s for s in doc["settings"] if s["id"] == "pcie.gpu_link_width")
    assert width["severity"] == "critical" and width["failed_nodes"] == ["dgx-x8"]
    assert width["nodes_checked"] == 6 and width["failing_values"] == [{"actual": "8",
                                                                         "nodes": 1}]
    assert doc["settings"][0]["id"] == "pcie.gpu_link_width"  # failing critical settings first
    thp = next(s for s in doc["settings"] if s["id"] == "memory.thp")
    assert thp["failed_nodes"] == ["dgx-thp"]
    assert doc["nodes"][0]["host"] == "dgx-x8" and doc["nodes"][0]["critical"] == 1
    dgx_drift = next(g for g in doc["drift"] if g["profile"] == "hgx-h100")
    assert [(f["fact"], f["majority_nodes"], f["minority"][0]["nodes"])
            for f in dgx_drift["facts"]] == [("thp", 3, ["dgx-thp"])]
    assert next(g for g in doc["drift"] if g["profile"] == "cloud-vm")["facts"] == []
    assert doc["summary"]["exit_code"] == 2


def test_agent_reports_unreadable_files_and_failed_hosts(seeds, host_tree,
                                                         tmp_path: Path) -> None:
    from nodetune.agent.cycle import CycleOptions, run_cycle

    agent = run_cycle(CycleOptions(root=str(host_tree("h200x2-vm-gather")),
                                   nvml=str(NVML / "h200x2-vm.json")))
    agent["facts"]["gpu"]["driver_version"] = "999.99"  # the agent's node runs another driver
    write(tmp_path / "vm-agent.json", agent)
    for host in ("vm-1", "vm-2"):
        write(tmp_path / f"{host}.json", {**seeds["vm-h200"], "host": host})
    (tmp_path / "broken.json").write_text('{"schema": "nodetune.fleet-report/1", "facts": ')
    write(tmp_path / "facts-only.json", {"schema": "nodetune.facts/1"})
    write(tmp_path / "_failed.json", {"schema": FLEET_COLLECT_SCHEMA, "failed": [
        {"host": "vm-2", "stage": "connect", "reason": "unreachable"},
        {"host": "gone", "stage": "facts", "reason": "exit 3"}]})
    doc, _ = report.build(tmp_path)
    assert doc["summary"]["by_kind"] == {"fleet-report": 2, "agent-report": 1}
    node = next(n for n in doc["nodes"] if n["host"] == "vm-agent")
    assert node["kind"] == "agent-report" and node["profile"] == agent["audit"]["profile"]["name"]
    assert node["healthy"] is agent["check"]["healthy"]
    assert node["compliance_score"] == agent["audit"]["summary"]["compliance_score"]
    unreadable = {u["file"]: u["reason"] for u in doc["unreadable"]}
    assert unreadable["broken.json"].startswith("not JSON")
    assert "not a node report" in unreadable["facts-only.json"]
    assert [(h["host"], h["stale_report"]) for h in doc["not_collected"]] == \
        [("vm-2", True), ("gone", False)]
    # an agent report's facts take part in drift like a collected report's
    driver = next(d for g in doc["drift"] if g["profile"] == "cloud-vm" for d in g["facts"]
                  if d["fact"] == "gpu_driver")
    assert [m["nodes"] for m in driver["minority"]] == [["vm-agent"]]
    settings = {s["id"]: s for s in doc["settings"]}
    assert settings["memory.swappiness"]["nodes_failed"] == 3
    assert doc["summary"]["exit_code"] == 1


@pytest.mark.slow
def test_synthetic_fleet_every_planted_problem_found_and_nothing_else(seeds,
                                                                      tmp_path: Path) -> None:
    truth = fleet_synth.generate(seeds, tmp_path / "planted", 500, inject=True, seed=3)
    assert sum(len(h) for h in truth.drift.values()) == 16
    doc, _ = report.build(tmp_path / "planted")
    assert fleet_bench.check(doc, truth) == []
    assert doc["summary"]["nodes"] == 500 and doc["summary"]["exit_code"] == 2
    one, _ = report.build(tmp_path / "planted", workers=1)
    two, _ = report.build(tmp_path / "planted", workers=2)
    for key in ("summary", "settings", "nodes", "drift", "outliers"):
        assert one[key] == two[key] == doc[key], key
    clean = fleet_synth.generate(seeds, tmp_path / "clean", 300, inject=False, seed=4)
    doc, _ = report.build(tmp_path / "clean")
    assert fleet_bench.check(doc, clean) == []
    s = doc["summary"]
    assert (s["drift_facts"], s["outliers"], s["nodes_failing"]["critical"]) == (0, 0, 0)
    assert s["exit_code"] == 0


# -- the command ---------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_json_html_terminal_and_exit_codes(seeds, tmp_path: Path, capsys) -> None:
    d = tmp_path / "fleet"
    d.mkdir()
    truth = fleet_synth.generate(seeds, d, 40, inject=False, seed=5)
    slow = sorted(h for h in (p.stem for p in d.iterdir())
                  if json.loads((d / f"{h}.json").read_text())["audit"]["profile"]["name"]
                  == "hgx-h100")[0]
    doc = json.loads((d / f"{slow}.json").read_text())
    for suite in doc["bench"]["suites"]:
        for m in suite["metrics"]:
            if m["key"].startswith("allreduce.busbw."):
                m["value"] *= 0.75
    write(d / f"{slow}.json", doc)
    sick = next(h for h in sorted(p.stem for p in d.iterdir()) if h != slow)
    doc = json.loads((d / f"{sick}.json").read_text())
    doc["check"] = {"healthy": False, "exit_code": 1, "faults": [{"code": "NT2001"}],
                    "summary": "nodetune: unhealthy: GPU3 <b>PCIe</b> x8 & falling"}
    write(d / f"{sick}.json", doc)
    assert truth.nodes == 40
    rc, out, err = run(["fleet", "report", str(d), "--json"], capsys)
    fleet = json.loads(out)
    assert rc == 1 and err == "" and next(iter(fleet)) == "schema"
    assert fleet["schema"] == FLEET_SCHEMA
    assert {o["host"] for m in fleet["outliers"]["metrics"] for o in m["outliers"]} == {slow}
    html = tmp_path / "fleet.html"
    rc, out, _ = run(["fleet", "report", str(d), "--html", str(html), "--top", "5"], capsys)
    assert rc == 1 and "Benchmark outliers" in out and slow in out
    text = html.read_text()
    assert text.count("data:image/png;base64,") >= 2 and slow in text
    assert "http://" not in text and "https://" not in text and "<script" not in text
    # the node's check summary is shown, and what a node reports is escaped, never markup
    assert "unhealthy (1 faults): unhealthy: GPU3 &lt;b&gt;PCIe&lt;/b&gt; x8 &amp; falling" in text
    assert "<b>PCIe" not in text
    rc, _, err = run(["fleet", "report", str(tmp_path / "missing")], capsys)
    assert rc == 3 and err.startswith("nodetune: error:") and err.count("\n") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run(["fleet", "report", str(empty), "--json"], capsys)
    assert rc == 3 and "no node reports" in err


def test_report_files_skip_the_collection_summary(tmp_path: Path) -> None:
    write(tmp_path / "_failed.json", {"schema": FLEET_COLLECT_SCHEMA, "failed": []})
    write(tmp_path / "a.json", {"schema": FLEET_REPORT_SCHEMA})
    assert [p.name for p in load.report_files(tmp_path)] == ["a.json"]
    node = load.read(tmp_path / "a.json")
    assert isinstance(node, load.NodeReport) and node.errors == ["no audit in this report"]


# -- the fast paths give the same answer ---------------------------------------------------

def _same(one: dict, two: dict) -> None:
    for key in ("summary", "settings", "nodes", "drift", "outliers", "unreadable"):
        assert json.dumps(one[key]) == json.dumps(two[key]), key  # as printed: NaN is NaN


def test_parallel_reading_gives_what_serial_reading_gives(seeds, tmp_path: Path,
                                                          monkeypatch) -> None:
    truth = fleet_synth.generate(seeds, tmp_path, 60, inject=True, seed=6)
    (tmp_path / "broken.json").write_text("{")
    serial, serial_fleet = report.build(tmp_path, workers=1)
    monkeypatch.setattr(report, "FILES_PER_WORKER", 10)  # 61 files: 2 workers, 8 chunks
    parallel, parallel_fleet = report.build(tmp_path, workers=2)
    _same(serial, parallel)
    assert fleet_bench.check(parallel, truth) == []
    assert [n.host for n in parallel_fleet.nodes] == [n.host for n in serial_fleet.nodes]
    for slot, m in serial_fleet.metrics.items():
        other = parallel_fleet.metrics[slot]
        assert (list(other.values), list(other.nodes)) == (list(m.values), list(m.nodes))


def _odd_documents(seed: dict) -> dict[str, object]:
    """Node reports the typed decoder must hand to json: odd shapes, NaN, UTF-16, no audit."""
    bench = json.loads(json.dumps(seed["bench"]))
    metrics = bench["suites"][0]["metrics"]
    metrics[0]["value"] = None
    metrics[1]["value"] = "fast"
    del metrics[2]["key"]
    metrics[3]["value"] = "12.5"
    metrics[4]["higher_is_better"] = False
    return {
        "odd-metrics": {**seed, "bench": bench},
        "no-audit": {**seed, "audit": {}},
        "audit-list": {**seed, "audit": [1, 2]},
        "audit-other-keys": {**seed, "audit": {"schema": "x"}},
        "facts-list": {**seed, "facts": [1]},
        "findings-dict": {**seed, "audit": {**seed["audit"], "findings": {"a": 1}}},
        "finding-string": {**seed, "audit": {**seed["audit"], "findings": ["x"]}},
        "bench-string": {**seed, "bench": "none"},
        "suite-number": {**seed, "bench": {"suites": [5]}},
        "metric-number": {**seed, "bench": {"suites": [{"metrics": [7]}]}},
        "errors-string": {**seed, "errors": "ab"},
        "not-object": [seed],
        "other-schema": {**seed, "schema": "nodetune.facts/1"},
    }


def test_typed_decoding_gives_what_json_gives(seeds, tmp_path: Path, monkeypatch) -> None:
    if load._DECODER is None:
        pytest.skip("msgspec is not installed: json reads every report")
    fleet_synth.generate(seeds, tmp_path, 60, inject=True, seed=7)
    for name, doc in _odd_documents(seeds["dgx"]).items():
        write(tmp_path / f"{name}.json", doc)
    (tmp_path / "nan.json").write_text(json.dumps({**seeds["dgx"], "bench": {"suites": [
        {"metrics": [{"key": "k", "value": float("nan")}]}]}}))
    (tmp_path / "utf16.json").write_bytes(json.dumps(seeds["vm-h200"]).encode("utf-16"))
    (tmp_path / "truncated.json").write_text(json.dumps(seeds["dgx"])[:-9])
    typed = {p.name: load.read(p) for p in load.report_files(tmp_path)}
    typed_doc, _ = report.build(tmp_path, workers=1)
    monkeypatch.setattr(load, "_DECODER", None)
    plain = {p.name: load.read(p) for p in load.report_files(tmp_path)}
    plain_doc, _ = report.build(tmp_path, workers=1)
    assert typed == plain
    _same(typed_doc, plain_doc)
    assert isinstance(plain["utf16.json"], load.NodeReport)
    odd = plain["odd-metrics.json"]  # no value, "fast", no key: left out; "12.5" read
    assert len(odd.metric_values) == len(load._metrics(seeds["dgx"]["bench"])) - 3
    assert odd.metric_values[0] == 12.5 and odd.metric_layout[1][3] is False


class Footers:
    """A footer reader as `fleet report` uses one: a layout is learnt from the first report
    that names it, read whole."""

    def __init__(self) -> None:
        if load._DECODER is None:
            pytest.skip("msgspec is not installed: json reads every report whole")
        from nodetune.fleet.summary import Reader

        self.reader = Reader()
        self.learnt = 0

    def node(self, host: str, data: bytes):
        node, layout = self.reader.node(host, data)
        if layout is not None:
            self.learnt += 1
            self.reader.learn(layout, load.from_document(f"{host}.json", json.loads(data)))
            node, layout = self.reader.node(host, data)  # still unknown: not the report's
        return node


def test_a_report_footer_gives_what_the_whole_report_gives(seeds, tmp_path: Path) -> None:
    footers = Footers()
    fleet_synth.generate(seeds, tmp_path, 60, inject=True, seed=8)
    for path in load.report_files(tmp_path):
        data = path.read_bytes()
        assert data.endswith(b"}\n") and b',"fleet_summary":{"schema":"nodetune.node-summary/1"' \
            in data
        from_footer = footers.node(path.stem, data)
        assert from_footer is not None, path.name
        whole = load.from_document(path.name, json.loads(data))
        assert from_footer == whole
        assert load.read(path) == whole
    assert footers.learnt == 2  # the DGX and the VM layouts; every other report by its footer
    with_footers, _ = report.build(tmp_path, workers=1)
    for path in load.report_files(tmp_path):  # the same reports without their footer
        doc = json.loads(path.read_bytes())
        del doc["fleet_summary"]
        write(path, doc)
        assert footers.node(path.stem, path.read_bytes()) is None
    without, _ = report.build(tmp_path, workers=1)
    _same(with_footers, without)


def test_a_report_edited_since_or_of_another_version_is_read_whole(seeds, tmp_path: Path,
                                                                   monkeypatch) -> None:
    footers = Footers()
    path = tmp_path / "node.json"
    path.write_bytes(load.report_text({**seeds["dgx"], "host": "node"}))
    data = path.read_bytes()
    assert footers.node("node", data) is not None
    # the driver changed by hand after collection: the footer's checksum no longer holds
    edited = data.replace(b'"driver_version":"', b'"driver_version":"9', 1)
    assert edited != data and footers.node("node", edited) is None
    path.write_bytes(edited)
    node = load.read(path)
    assert isinstance(node, load.NodeReport)
    assert node.drift[0].startswith("9") and node.drift[0] != footers.node("node", data).drift[0]
    # a footer a newer nodetune wrote: read whole
    newer = data.replace(b'"nodetune_version":"' + __version__.encode() + b'","crc32"',
                         b'"nodetune_version":"99.0","crc32"')
    assert newer != data and footers.node("node", newer) is None
    head, footer = data.split(b',"fleet_summary":')
    doc = json.loads(footer[:-2])
    for broken in ({**doc, "drift": doc["drift"][:-1]},  # a digest of other facts
                   {**doc, "metric_values": doc["metric_values"][:-1]},  # values without keys
                   {**doc, "metric_layout": "0" * 32},  # a layout the report does not have
                   {**doc, "settings": {"a": 1}}, {**doc, "failed": "none"}):
        text = head + b',"fleet_summary":' + json.dumps(broken).encode() + b"}\n"
        assert Footers().node("node", text) is None
        path.write_bytes(text)
        assert load.read(path) == load.from_document("node.json", json.loads(data))


def test_collect_progress_moves_with_each_answer() -> None:
    """The bar counts commands answered; a host that fails early fills its remaining share."""
    from nodetune.views.fleet_text import CollectProgress

    progress = CollectProgress(total=2, stages=3)
    task = progress.bar.tasks[0]
    progress.step("a", "facts")
    assert (task.completed, task.total, task.fields["done"]) == (1, 6, 0)
    progress.step("a", "audit")
    progress.step("a", "check")
    progress.host_done("a", collected=True)
    assert (task.completed, task.fields["done"], task.fields["failed"]) == (3, 1, 0)
    progress.host_done("b", collected=False)  # unreachable: no command answered
    assert (task.completed, task.fields["done"], task.fields["failed"]) == (6, 2, 1)
