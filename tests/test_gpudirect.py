"""GPUDirect RDMA readiness in depth: the stack's facts (kernel dma-buf build, rdma-core, NCCL),
the DMA-BUF path's parts in NT4003's message, and the cited table of known-bad combinations
(NT4011). Failure stories are planted in the synthetic DGX H100 tree; real captures give
unknown facts with their reasons, never a failure."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from nodetune.cli import main
from nodetune.collectors import Context
from nodetune.collectors.gpudirect_stack import (
    GpuDirectStackCollector,
    parse_kernel_config,
    rdma_core_upstream,
)
from nodetune.errors import NoData
from nodetune.facts import gpudirect
from nodetune.node.hostroot import HostRoot

FIXTURES = Path(__file__).parent / "fixtures"
DGX_ARGS = ("--profile", "dgx-h100", "--mount", "/raid", "--expect-idle")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))


def collect(root: Path) -> Any:
    return GpuDirectStackCollector().collect(Context(root=HostRoot(str(root))))


def run_check(capsys: pytest.CaptureFixture[str], host: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--json", "--root", str(host.root), "--nvml", str(host.nvml), *DGX_ARGS])
    return int(exit_info.value.code or 0), json.loads(capsys.readouterr().out)


def check(doc: dict[str, Any], check_id: str) -> dict[str, Any]:
    return next(c for c in doc["checks"] if c["id"] == check_id)


# -- the collector ------------------------------------------------------------------------------

def test_real_h100_infiniband_tree_has_unknown_stack_facts_with_reasons(tmp_path: Path) -> None:
    """Only /sys/class/infiniband of a real H100 node: RDMA devices, but no /boot, no libraries."""
    with tarfile.open(FIXTURES / "rdma" / "h100x8-sys-class-infiniband.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    (tmp_path / "root/sys/class").mkdir(parents=True)
    (tmp_path / "x/sys-class-infiniband-h100.0").rename(tmp_path / "root/sys/class/infiniband")
    facts = collect(tmp_path / "root")
    assert facts.kernel_config is None and facts.rdma_core is None and facts.nccl == []
    assert "/proc/config.gz" in facts.unknown["kernel_config"]
    assert "libibverbs" in facts.unknown["rdma_core"]
    assert "container image" in facts.unknown["nccl_version"]
    assert "libibverbs.so.1 link" in facts.unknown["rdma_core"]


def test_real_vm_without_rdma_has_no_stack_to_read(host_tree: Any) -> None:
    with pytest.raises(NoData, match="no RDMA devices"):
        collect(host_tree("h200x2-vm-gather"))


def test_library_names_config_and_wheel(tmp_path: Path) -> None:
    (tmp_path / "sys/class/infiniband/mlx5_0").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.8.0-1021-nvidia\n")
    (tmp_path / "proc/config.gz").write_bytes(gzip.compress(b"CONFIG_DMA_SHARED_BUFFER=y\n"))
    lib = tmp_path / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    for soname, name in (("libibverbs.so.1", "libibverbs.so.1.14.2410mlnx54.0"),
                         ("libnccl.so.2", "libnccl.so.2.21.5")):
        (lib / name).write_text("")
        (lib / soname).symlink_to(name)
    wheel = tmp_path / "usr/local/lib/python3.12/dist-packages/nvidia_nccl_cu12-2.27.3.dist-info"
    wheel.mkdir(parents=True)
    facts = collect(tmp_path)
    assert facts.kernel_config.file == "/proc/config.gz"
    assert facts.kernel_config.dma_shared_buffer is True
    assert facts.kernel_config.dmabuf_move_notify is False
    assert (facts.rdma_core.release, facts.rdma_core.upstream) == ("2410mlnx54", 54)
    assert [n.version for n in facts.nccl] == ["2.21.5", "2.27.3"]
    assert facts.nccl_version == "2.27.3"
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/config-6.8.0-1021-nvidia").write_text("# CONFIG_DMA_SHARED_BUFFER is "
                                                            "not set\n")
    assert collect(tmp_path).kernel_config.dma_shared_buffer is False  # the release's own wins


def test_parsers() -> None:
    assert parse_kernel_config("CONFIG_DMA_SHARED_BUFFER=y\nCONFIG_DMABUF_MOVE_NOTIFY=m\n") == {
        "CONFIG_DMA_SHARED_BUFFER": True, "CONFIG_DMABUF_MOVE_NOTIFY": True}
    assert parse_kernel_config("# CONFIG_DMA_SHARED_BUFFER is not set\n")[
        "CONFIG_DMA_SHARED_BUFFER"] is False
    assert [rdma_core_upstream(r) for r in ("50", "2410mlnx54", "58mlnx43", "x")] == [
        50, 54, 43, None]


# -- readiness (NT4003) -------------------------------------------------------------------------

def test_dmabuf_parts_name_each_requirement() -> None:
    facts = {"nvidia_driver": {"open_kernel_modules": True, "version": "510.47.03"},
             "kernel": {"release": "5.15.0-1063-nvidia"},
             "gpudirect_stack": {"kernel_config": None, "rdma_core": {"upstream": 33}}}
    assert gpudirect.dmabuf_parts(facts) == {
        "open kernel modules": True, "driver R515+": False, "Linux 5.12+": True,
        "CONFIG_DMA_SHARED_BUFFER": None, "rdma-core 34+": False}


READINESS = [
    # (story, synth options, NT4003 status, message or None)
    ("proprietary driver, no peermem", {"open_kernel_modules": False,
                                        "missing_modules": ("nvidia_peermem",)}, "fail",
     "no GPUDirect RDMA: nvidia_peermem not loaded; DMA-BUF lacks open kernel modules"),
    ("rdma-core before v34", {"rdma_core_library": "libibverbs.so.1.11.33.0",
                              "missing_modules": ("nvidia_peermem",)}, "fail",
     "no GPUDirect RDMA: nvidia_peermem not loaded; DMA-BUF lacks rdma-core 34+"),
    ("driver before R515", {"driver_version": "510.108.03",
                            "missing_modules": ("nvidia_peermem",)}, "fail",
     "no GPUDirect RDMA: nvidia_peermem not loaded; DMA-BUF lacks driver R515+"),
    ("kernel built without dma-buf", {"kernel_dma_shared_buffer": False,
                                      "missing_modules": ("nvidia_peermem",)}, "fail",
     "no GPUDirect RDMA: nvidia_peermem not loaded; DMA-BUF lacks CONFIG_DMA_SHARED_BUFFER"),
    ("kernel config unreadable", {"kernel_dma_shared_buffer": None,
                                  "missing_modules": ("nvidia_peermem",)}, "unknown", None),
    ("no libibverbs found", {"rdma_core_library": None,
                             "missing_modules": ("nvidia_peermem",)}, "unknown", None),
    ("registered peermem covers a missing DMA-BUF", {"open_kernel_modules": False,
                                                     "rdma_core_library": None}, "pass", None),
    ("DMA-BUF complete without peermem", {"missing_modules": ("nvidia_peermem",)}, "pass", None),
]


@pytest.mark.parametrize(("story", "options", "status", "message"), READINESS,
                         ids=[r[0] for r in READINESS])
def test_gpudirect_readiness(story: str, options: dict[str, Any], status: str,
                             message: str | None, synth: Any, synth_tmp: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(**options))
    code, doc = run_check(capsys, host)
    result = check(doc, "rdma.gpudirect")
    assert result["status"] == status, (story, result)
    if status == "fail":
        assert code == 1
        assert [f["message"] for f in doc["faults"] if f["fault_code"] == "NT4003"] == [message]
    else:
        assert code == 0, doc["summary"]
    if status == "unknown":
        what = "CONFIG_DMA_SHARED_BUFFER" if "config" in story else "rdma-core 34+"
        assert result["findings"][0]["message"] == (
            "health.gpudirect.available is unknown (nvidia_peermem not loaded; "
            f"DMA-BUF unknown: {what} not readable)")


# -- the known-issues table (NT4011) ------------------------------------------------------------

def test_the_shipped_table_loads_and_cites_every_entry() -> None:
    version, entries = gpudirect.load_table()
    assert version == "2026-12-04"
    assert len(entries) >= 2
    assert all(e["source"].startswith("https://") for e in entries)


def test_the_table_is_parsed_once_then_read_from_the_runtime_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path))
    gpudirect.load_table.cache_clear()
    first = gpudirect.load_table()
    cached = list(tmp_path.glob("gpudirect-issues-*.json"))
    assert len(cached) == 1
    gpudirect.load_table.cache_clear()
    monkeypatch.setitem(sys.modules, "yaml", None)  # importing PyYAML now fails
    assert gpudirect.load_table() == first
    # a cache whose source stamps no longer match is not trusted: it is parsed again
    doc = json.loads(cached[0].read_text())
    doc["stamps"][0][1] += 1
    cached[0].write_text(json.dumps(doc))
    gpudirect.load_table.cache_clear()
    with pytest.raises(ImportError):
        gpudirect.load_table()
    gpudirect.load_table.cache_clear()


BAD_TABLES = [
    ({"schema": "other/1", "version": 1, "issues": []}, "schema is not"),
    ({"schema": gpudirect.TABLE_SCHEMA, "version": 1, "issues": [{"id": "x"}]}, "keys must be"),
    ({"schema": gpudirect.TABLE_SCHEMA, "version": 1, "issues": [
        {"id": "x", "severity": "warning", "when": {"nccl": ["~2.1"]}, "summary": "s",
         "fix": "f", "source": "https://example.org"}]}, "not a version constraint"),
    ({"schema": gpudirect.TABLE_SCHEMA, "version": 1, "issues": [
        {"id": "x", "severity": "warning", "when": {"kernel": ">=5"}, "summary": "s",
         "fix": "f", "source": "https://example.org"}]}, "conditions among"),
    ({"schema": gpudirect.TABLE_SCHEMA, "version": 1, "issues": [
        {"id": "x", "severity": "warning", "when": {"path": "dma-buf"}, "summary": "s",
         "fix": "f", "source": "a forum post"}]}, "an https URL"),
]


@pytest.mark.parametrize(("doc", "error"), BAD_TABLES, ids=[b[1] for b in BAD_TABLES])
def test_a_table_off_its_schema_is_refused_in_one_line(doc: dict[str, Any], error: str) -> None:
    with pytest.raises(gpudirect.KnownIssuesError, match=error):
        gpudirect.check_table(doc)


ISSUES = [
    # (story, synth options, {entry id: applies})
    ("legacy nv_peer_mem on R570", {"missing_modules": ("nvidia_peermem",),
                                    "extra_modules": ("nv_peer_mem",)},
     {"nv_peer_mem.legacy": True, "nccl.gin.nv_peer_mem": False}),
    ("NCCL 2.28.9 GIN with nv_peer_mem only", {
        "missing_modules": ("nvidia_peermem",), "extra_modules": ("nv_peer_mem",),
        "open_kernel_modules": False, "nccl_library": "libnccl.so.2.28.9"},
     {"nv_peer_mem.legacy": True, "nccl.gin.nv_peer_mem": True}),
    ("nv_peer_mem only, NCCL not on the host", {
        "missing_modules": ("nvidia_peermem",), "extra_modules": ("nv_peer_mem",),
        "open_kernel_modules": False},
     {"nv_peer_mem.legacy": True, "nccl.gin.nv_peer_mem": None}),
    ("NCCL 2.28.3, before GIN, with nv_peer_mem only", {
        "missing_modules": ("nvidia_peermem",), "extra_modules": ("nv_peer_mem",),
        "open_kernel_modules": False, "nccl_library": "libnccl.so.2.28.3"},
     {"nv_peer_mem.legacy": True, "nccl.gin.nv_peer_mem": False}),
    ("NCCL 2.27 with nv_peer_mem only", {
        "missing_modules": ("nvidia_peermem",), "extra_modules": ("nv_peer_mem",),
        "open_kernel_modules": False, "nccl_library": "libnccl.so.2.27.7"},
     {"nv_peer_mem.legacy": True, "nccl.gin.nv_peer_mem": False}),
]


@pytest.mark.parametrize(("story", "options", "applies"), ISSUES, ids=[i[0] for i in ISSUES])
def test_known_bad_combinations_warn(story: str, options: dict[str, Any],
                                     applies: dict[str, bool | None], synth: Any,
                                     synth_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(**options))
    code, doc = run_check(capsys, host)
    assert code == 0, doc["summary"]  # a warning keeps the node in service
    result = check(doc, "rdma.gpudirect.known_issue")
    got = {f["subject"]: {"fail": True, "pass": False, "unknown": None}[f["status"]]
           for f in result["findings"]}
    assert got == applies, story
    for finding in result["findings"]:
        if finding["status"] == "unknown":
            assert "NCCL version unknown: no libnccl.so.2 link" in finding["message"]
    warned = {w["subject"] for w in doc["warnings"] if w["fault_code"] == "NT4011"}
    assert warned == {k for k, v in applies.items() if v}
    assert all("source: https://" in w["fix"] for w in doc["warnings"]
               if w["fault_code"] == "NT4011")


def test_clean_dgx_has_no_known_issue(synthetic_host: Any,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_check(capsys, synthetic_host("synthetic-dgx-h100"))
    assert code == 0
    assert check(doc, "rdma.gpudirect.known_issue")["status"] == "pass"
    assert check(doc, "rdma.gpudirect")["status"] == "pass"
