"""The cpu-mem triad kernels: the C triad gcc builds (cached) and the numpy fallback.

These run the kernels for real on small arrays; they check arithmetic, which kernel ran and
what the result says, never speed (tests/bench/stream_vs_c.py measures that).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodetune.bench import cpumem, stream
from nodetune.bench.base import RunContext, RunOptions
from nodetune.bench.results import MIB

GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc is not installed")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(directory))
    return directory


@needs_gcc
def test_the_c_triad_computes_what_numpy_computes(cache: Path) -> None:
    np = pytest.importorskip("numpy")
    lib, built = stream.build_kernel(GCC, cache)
    assert lib is not None and Path(lib).parent == cache and built.startswith("gcc ")
    rng = np.random.default_rng(7)
    b, c = rng.standard_normal(1001), rng.standard_normal(1001) * 1e3
    # in a process of its own: OpenMP's threads stay out of the test process
    code = ("import json, sys; from nodetune.bench import stream; b, c = json.load(sys.stdin); "
            f"print(json.dumps(stream.c_triad({lib!r}, b, c, 3.7, cpus=[0])))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps([b.tolist(), c.tolist()]),
                         capture_output=True, text=True, check=True, timeout=120).stdout
    got = np.array(json.loads(out))
    want = np.add(b, np.multiply(c, 3.7))  # numpy's triad arithmetic: multiply, then add
    assert np.array_equal(got, want)  # bit for bit: no fused multiply-add in the C kernel


@needs_gcc
def test_the_library_is_built_once_and_reused(cache: Path) -> None:
    lib, built = stream.build_kernel(GCC, cache)
    again, cached = stream.build_kernel(GCC, cache)
    assert again == lib and cached == f"{built} (cached)"
    assert [p.name for p in cache.iterdir()] == [Path(lib).name]  # no leftover source


@needs_gcc
def test_a_directory_others_can_write_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    lib, why = stream.build_kernel(GCC, shared)
    assert lib is None and "not a private directory" in why


@needs_gcc
def test_the_worker_runs_the_c_kernel_and_says_so(cache: Path) -> None:
    lib, _ = stream.build_kernel(GCC, cache)
    out = subprocess.run([sys.executable, "-m", "nodetune.bench.stream", "--elements",
                          str(MIB // 8), "--iters", "3", "--cpus", "0", "--kernel", str(lib)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    doc = json.loads(out)
    assert doc["kernel"] == "c-openmp" and doc["check"] is True and doc["procs"] == 1
    assert len(doc["gbps"]) == 3 and all(g > 0 for g in doc["gbps"])
    assert doc["bytes_per_iter"] == 3 * 8 * (MIB // 8)


@needs_gcc
def test_cpu_mem_names_the_c_kernel(cache: Path) -> None:
    ctx = RunContext(facts={}, options=RunOptions(quick=True, sizes=(8 * MIB,)))
    result = cpumem.CpuMemRunner().run(ctx)
    doc = result.to_json()
    assert doc["runner"] == "c-openmp" and doc["tool_versions"]["gcc"]
    assert "--kernel" in doc["argv"] and "numpy" not in doc["tool_versions"]
    [triad] = result.metrics
    assert triad.value > 0.1 and triad.binding.mem_nodes_seen == (0,)


def test_without_gcc_on_path_numpy_measures(cache: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numpy")
    bare = tmp_path / "bin"  # a PATH with no gcc (nor numactl: the worker binds itself)
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    ctx = RunContext(facts={}, options=RunOptions(quick=True, sizes=(8 * MIB,)))
    assert cpumem.CpuMemRunner().check_enabled(ctx) is None
    result = cpumem.CpuMemRunner().run(ctx)
    doc = result.to_json()
    assert doc["runner"] == "numpy" and "--kernel" not in doc["argv"]
    assert "numpy triad: no gcc" in doc["note"] and "gcc" not in doc["tool_versions"]
    assert not cache.exists() or list(cache.iterdir()) == []
    [triad] = result.metrics
    assert triad.value > 0.1 and triad.binding.method == "sched_setaffinity+set_mempolicy"


def test_a_library_that_does_not_load_falls_back_to_numpy(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    broken = tmp_path / "triad.so"
    broken.write_text("not a library")
    out = subprocess.run([sys.executable, "-m", "nodetune.bench.stream", "--elements",
                          str(MIB // 8), "--iters", "2", "--cpus", "0", "--kernel", str(broken)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    doc = json.loads(out)
    assert doc["kernel"] == "numpy" and doc["check"] is True
    assert doc["kernel_note"].startswith("C triad not loaded")
