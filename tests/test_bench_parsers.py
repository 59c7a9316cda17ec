"""Benchmark output parsers against real captured outputs (tests/fixtures/bench)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from nodetune.bench import fio, importer, nccltests, nvbw
from nodetune.errors import BenchError

BENCH = Path(__file__).parent / "fixtures" / "bench"
A100_LOG = BENCH / "a100x8-nccl-allreduce.log"


def a100_text() -> str:
    return A100_LOG.read_text()


# -- nccl-tests --------------------------------------------------------------------------------
def test_nccl_tests_real_log_rows_and_summary() -> None:
    [table] = nccltests.parse(a100_text())
    assert len(table.rows) == 34  # every data row, the NCCL INFO line inside the table skipped
    assert table.ranks == 8 and set(table.hosts) == {"localhost"}
    assert table.devices[0] == "A100-SXM4-40GB"
    assert table.iters == 20
    assert table.avg_busbw_gbps == pytest.approx(68.4048)
    assert table.out_of_bounds == 0
    assert table.wrong_total is None  # validation off: every #wrong is N/A
    row = next(r for r in table.rows if r.size_bytes == 1 << 30)
    assert (row.count, row.type, row.redop, row.root) == (268435456, "float", "sum", None)
    assert (row.time_us, row.algbw_gbps, row.busbw_gbps) == (8159.5, 131.59, 230.29)
    assert row.in_place is not None and row.in_place.busbw_gbps == 229.81


def test_older_nccl_tests_layouts_without_the_redop_column() -> None:
    """nccl-tests before 2.10 on an 8x A100 node: all_gather prints "type time ...", broadcast
    "type root time ...", both with N/A in the error column (-c 0)."""
    [gather] = nccltests.parse((BENCH / "a100x8-nccl-tests-old-all_gather.txt").read_text(),
                               name_hint="a100x8-nccl-tests-old-all_gather.txt")
    assert gather.collective == "all_gather" and gather.ranks == 8 and len(gather.rows) == 34
    big = gather.rows[-1]
    assert (big.size_bytes, big.count, big.type, big.redop, big.root) == (
        8589934592, 268435456, "float", "none", None)
    assert (big.time_us, big.algbw_gbps, big.busbw_gbps, big.wrong) == (33646, 255.31, 223.39,
                                                                       None)
    assert big.busbw_gbps == pytest.approx(big.algbw_gbps * 7 / 8, rel=1e-3)
    assert gather.avg_busbw_gbps == pytest.approx(58.2651) and gather.wrong_total is None
    [bcast] = nccltests.parse((BENCH / "a100x8-nccl-tests-old-broadcast.txt").read_text(),
                              name_hint="broadcast")
    assert bcast.collective == "broadcast" and len(bcast.rows) == 34
    assert {r.root for r in bcast.rows} == {0} and {r.redop for r in bcast.rows} == {"none"}
    assert bcast.rows[-1].in_place is not None and bcast.rows[-1].in_place.busbw_gbps == 234.70


def test_nccl_tests_busbw_is_algbw_times_2_n_minus_1_over_n() -> None:
    """The log's own numbers obey nccl-tests' formula, which the built-in runner reuses."""
    from nodetune.bench.allreduce import busbw

    [table] = nccltests.parse(a100_text())
    for row in table.rows:
        if row.size_bytes >= 1 << 20:
            algbw, bus = busbw(row.size_bytes, row.time_us, 8)
            assert algbw == pytest.approx(row.algbw_gbps, rel=0.01)
            assert bus == pytest.approx(row.busbw_gbps, rel=0.01)


def test_collective_inferred_from_the_bus_bandwidth_factor() -> None:
    """No name in the text: busbw/algbw = 2(n-1)/n with 8 ranks identifies all-reduce."""
    assert nccltests.parse(a100_text(), name_hint="run1.txt")[0].collective == "all_reduce"
    assert nccltests.parse(a100_text(), name_hint="all_gather_perf.out")[0].collective \
        == "all_gather"


@pytest.mark.parametrize("prefix", ["[1,0]<stdout>:", "0: ",
                                    "(head, rank=0, pid=3808) [1,0]<stdout>:"])
def test_nccl_tests_launcher_prefixed_lines(prefix: str) -> None:
    """mpirun --tag-output, srun -l and Ray prefix every line; the rows are the same."""
    plain = nccltests.parse(a100_text())[0]
    prefixed = "\n".join(prefix + line for line in a100_text().splitlines())
    [table] = nccltests.parse(prefixed)
    assert table.rows == plain.rows
    assert table.ranks == 8 and table.avg_busbw_gbps == plain.avg_busbw_gbps


def test_nccl_tests_stray_lines_from_other_ranks_inside_the_table() -> None:
    lines = a100_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("1048576"))
    lines.insert(at, "[1,3]<stderr>:node7:3442:3460 [3] NCCL INFO Channel 00/0 : 3[3] -> 4[4] "
                     "via P2P/IPC")
    lines.insert(at + 2, "[1,5]<stdout>:some other tool printed 12 3 things here")
    [table] = nccltests.parse("\n".join(lines))
    assert len(table.rows) == 34


def test_nccl_tests_root_column_and_wrong_counts() -> None:
    """nccl-tests >= 2.12 prints a root column and numeric #wrong; a failed check counts."""
    text = re.sub(r"(float\s+sum)(\s+)", r"\1      -1\2", a100_text()).replace("N/A", "0")
    lines = text.splitlines()
    idx = next(i for i, line in enumerate(lines) if line.strip().startswith("1073741824"))
    lines[idx] = lines[idx][: lines[idx].rindex("0")] + "7"  # 7 wrong in-place elements
    [table] = nccltests.parse("\n".join(lines))
    row = next(r for r in table.rows if r.size_bytes == 1 << 30)
    assert row.root == -1 and row.wrong == 0 and row.in_place.wrong == 7
    assert table.wrong_total == 7


def test_two_runs_in_one_file_are_two_tables() -> None:
    [first, second] = nccltests.parse(a100_text() + "\n" + a100_text())
    assert len(first.rows) == len(second.rows) == 34


def test_nccl_tests_argv() -> None:
    argv = nccltests.build_argv("all_reduce_perf", gpus=2, min_bytes=1 << 20, max_bytes=1 << 30,
                                iters=20, warmup=5)
    assert argv == ["all_reduce_perf", "-b", "1048576", "-e", "1073741824", "-f", "2", "-g", "2",
                    "-n", "20", "-w", "5", "-c", "1"]


def test_not_nccl_output_gives_no_table() -> None:
    assert nccltests.parse("hello\n1 2 3\n# size count\n") == []


# -- fio -------------------------------------------------------------------------------------
def test_fio2_json_bandwidth_in_bytes() -> None:
    """fio 2.x reports bw in KiB/s only; the parser returns bytes/s."""
    version, jobs = fio.parse((BENCH / "fio2-sample.json").read_text())
    assert version == "fio-2.1.4"
    by_name = {j.name: j for j in jobs}
    assert set(by_name) == {"sequential_write", "sequential_read", "random_write_test",
                            "random_read_test", "random_read_test_parallel"}
    seqw = by_name["sequential_write"]
    assert seqw.write_bw_bytes == 68118 * 1024 and seqw.write_iops == 133
    assert seqw.read_bw_bytes == 0 and seqw.read_iops == 0
    assert by_name["sequential_read"].read_bw_bytes == 129836 * 1024
    assert by_name["random_read_test"].read_iops == 317
    assert by_name["random_read_test"].read_clat_p99_us == 3728  # clat in usec in fio 2.x


def run_real_fio(tmp_path: Path) -> str:
    argv = fio.build_argv(str(tmp_path / "t.dat"), device=False, size=8 << 20, runtime_s=1,
                          direct=False)
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_fio3_json_from_this_machine(tmp_path: Path) -> None:
    """Debian's fio (3.x) run here: bw_bytes agrees with bw (KiB/s), latencies from clat_ns."""
    stdout = run_real_fio(tmp_path)
    raw = json.loads(stdout[stdout.index("{"):])
    version, jobs = fio.parse(stdout)
    assert version.startswith("fio-3")
    assert [j.name for j in jobs] == ["seqwrite", "seqread", "randread"]
    for raw_job, job in zip(raw["jobs"], jobs, strict=True):
        assert job.read_bw_bytes == raw_job["read"]["bw_bytes"]
        assert job.read_bw_bytes == pytest.approx(raw_job["read"]["bw"] * 1024, rel=0.01, abs=1024)
        assert job.write_bw_bytes == raw_job["write"]["bw_bytes"]
        assert job.options["rw"] == {"seqwrite": "write", "seqread": "read",
                                     "randread": "randread"}[job.name]
    assert jobs[0].write_bw_bytes > 0 and jobs[0].read_bw_bytes == 0
    assert jobs[2].read_iops > 0
    p99_ns = raw["jobs"][2]["read"]["clat_ns"]["percentile"]["99.000000"]
    assert jobs[2].read_clat_p99_us == pytest.approx(p99_ns / 1000)


def test_fio_json_after_warning_lines_and_malformed_json() -> None:
    text = "fio: this platform does not support process shared mutexes\n" + \
        (BENCH / "fio2-sample.json").read_text()
    assert len(fio.parse(text)[1]) == 5
    with pytest.raises(BenchError, match="malformed"):
        fio.parse('{"jobs": [')
    with pytest.raises(BenchError, match="no JSON"):
        fio.parse("fio: failed to open file")


def test_fio_argv_never_writes_a_device_without_destructive() -> None:
    argv = fio.build_argv("/dev/nvme0n1", device=True, size=1 << 30, runtime_s=10)
    assert "--readonly" in argv
    assert not any(a in argv for a in ("--rw=write", "--rw=randwrite"))
    argv = fio.build_argv("/dev/nvme0n1", device=True, size=1 << 30, runtime_s=10,
                          destructive=True)
    assert "--readonly" not in argv and "--rw=write" in argv
    argv = fio.build_argv("/data/x.tmp", device=False, size=1 << 30, runtime_s=10)
    assert "--rw=write" in argv and "--direct=1" in argv and "--size=1073741824" in argv


# -- nvbandwidth -----------------------------------------------------------------------------
def test_nvbandwidth_readme_matrices() -> None:
    run = nvbw.parse((BENCH / "nvbandwidth-readme-8gpu.txt").read_text())
    names = [m.name for m in run.matrices]
    assert names == ["device_to_device_memcpy_write_ce", "host_to_device_memcpy_ce",
                     "host_to_device_bidirectional_memcpy_ce"]
    d2d, h2d, _ = run.matrices
    assert d2d.row_kind == d2d.col_kind == "GPU" and d2d.direction == "<-"
    assert len(d2d.cells) == 8 and d2d.cells[6][0] == 274.89
    assert h2d.row_ids == ("0",) and h2d.cells[0][4] == 26.19
    metrics = {m.key: m.value for m in nvbw.metrics(run)}
    assert metrics["nvbandwidth.h2d_pinned.GPU4"] == 26.19
    # "GPU(row) <- GPU(column)": row 6, column 0 is data flowing from GPU0 to GPU6
    assert metrics["nvbandwidth.p2p_write.GPU0->GPU6"] == 274.89
    assert "nvbandwidth.p2p_write.GPU0->GPU0" not in metrics  # the 0.00 diagonal is not measured


def test_nvbandwidth_header_and_sum() -> None:
    run = nvbw.parse((BENCH / "nvbandwidth-v0.5-a10.txt").read_text())
    assert run.versions == {"nvbandwidth": "v0.5", "cuda_runtime": "12040", "driver": "550.54.15"}
    assert run.devices == ["NVIDIA A10"]
    [h2d] = run.matrices
    assert h2d.total == 25.17 and h2d.cells == ((25.17,),)


def test_nvbandwidth_malformed_sum_is_no_total() -> None:
    text = (BENCH / "nvbandwidth-v0.5-a10.txt").read_text()
    line = next(x for x in text.splitlines() if x.strip().startswith("SUM"))
    bad = line.replace(line.split()[-1], "1.2.3")
    [h2d] = nvbw.parse(text.replace(line, bad)).matrices
    assert h2d.total is None and h2d.cells == ((25.17,),)


def test_nvbandwidth_argv() -> None:
    assert nvbw.build_argv("nvbandwidth", buffer_mib=256, samples=3) == [
        "nvbandwidth", "-t", "host_to_device_memcpy_ce", "-t", "device_to_host_memcpy_ce",
        "-t", "device_to_device_memcpy_write_ce", "-b", "256", "-i", "3"]


# -- import ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "kind"), [("a100x8-nccl-allreduce.log", "nccl-tests"),
                                            ("fio2-sample.json", "fio"),
                                            ("nvbandwidth-readme-8gpu.txt", "nvbandwidth"),
                                            ("nvbandwidth-v0.5-a10.txt", "nvbandwidth"),
                                            ("a100x8-nccl-tests-old-all_gather.txt", "nccl-tests"),
                                            ("a100x8-nccl-tests-old-broadcast.txt", "nccl-tests")])
def test_import_detects_format(name: str, kind: str) -> None:
    assert importer.detect((BENCH / name).read_text()) == kind


def test_import_rejects_other_files(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(BenchError, match="not nccl-tests output"):
        importer.import_file(str(other))
    with pytest.raises(BenchError, match="cannot read"):
        importer.import_file(str(tmp_path / "missing.log"))


def test_nccl_rows_with_inf_or_nan_are_no_measurement() -> None:
    """Real a100x8 row with `inf` in the #wrong columns (was OverflowError) or the time."""
    parse_row = nccltests.parse_row
    real = ("           0             0   float     sum    35.20    0.00    0.00    N/A"
            "    34.05    0.00    0.00    N/A")
    assert parse_row(real) is not None
    row = parse_row(real.replace("N/A", "inf"))
    assert row is not None and row.wrong is None and row.in_place is not None
    assert row.in_place.wrong is None
    assert parse_row(real.replace("35.20", "inf")) is None
    assert parse_row(real.replace("0.00    0.00    N/A    34", "nan    0.00    N/A    34")) is None
