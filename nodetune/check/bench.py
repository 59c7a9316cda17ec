"""The standard tier's quick benchmarks, and the `health.bench` facts checks read from them.

A benchmark unit runs one `nodetune.bench` suite (memcpy, allreduce) in its quick form on the
node's facts gathered so far. Thresholds come from the topology (`nodetune.bench.expect`: the
GPU's PCIe link, its NVLink links) times the suite's minimum ratio, unless a profile sets an
absolute floor (`memcpy_min_gbps`, `allreduce_min_busbw_gbps`) or another ratio
(`memcpy_min_ratio`, `allreduce_min_ratio`). The gpu suite gives one `health.bench.gpu` item per
GPU: bf16 GEMM and HBM copy against the SKU's peak times the suite's minimum ratio (or
`gpu_gemm_min_tflops` / `gpu_hbm_min_gbps`, `gpu_gemm_min_ratio` / `gpu_hbm_min_ratio`), whether
it was flagged slow, its SM clock and throttle reasons during the run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MIB = 1 << 20
QUICK_OPTIONS: dict[str, dict[str, Any]] = {
    "memcpy": {"quick": True, "repeat": 1, "sizes": (64 * MIB,)},
    "allreduce": {"quick": True, "repeat": 1, "sizes": (512 * MIB,)},
    "gpu": {"quick": True, "repeat": 1},  # about 1 s per GPU after a 0.5 s ramp
}


def bench_unit(suite: str, facts: dict[str, Any], live: bool) -> Callable[[], Any]:
    """A unit that runs `suite` quickly; a SuiteResult (status "skipped" when it cannot run).

    Benchmarks measure the machine nodetune runs on, so they run only for the live host."""

    def run() -> Any:
        # deferred: the bench package costs 13.8 ms of every check start
        from nodetune.bench import SUITES, runner
        from nodetune.bench.base import RunContext, RunOptions
        from nodetune.bench.results import SuiteResult

        if not live:
            return SuiteResult(suite=suite, status="skipped",
                               note=f"{suite}: benchmarks run only on the live host, not on "
                                    "--root or --from")
        if suite not in SUITES:
            return SuiteResult(suite=suite, status="skipped", note=f"no benchmark suite {suite}")
        bench = runner(suite)
        ctx = RunContext(facts=dict(facts), options=RunOptions(**QUICK_OPTIONS.get(suite, {})))
        why = bench.check_enabled(ctx)
        if why is not None:
            return SuiteResult(suite=suite, status="skipped", note=why)
        return bench.run(ctx)

    return run


def _floor(metric: Any, absolute: Any, ratio: Any, digits: int = 2) -> float | None:
    """A profile's absolute floor, else the metric's expectation times a ratio (the profile's,
    else the suite's minimum); None when neither is known."""
    if absolute is not None:
        return float(absolute)
    expected = None if metric is None else metric.expected
    if expected is None:
        return None
    use = ratio if ratio is not None else expected.min_ratio
    return None if use is None else round(expected.value * float(use), digits)


_HOST = re.compile(r"memcpy\.(h2d|d2h)_pinned\.(GPU\d+)\.")


def memcpy_items(result: Any, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """Per GPU: best pinned H2D / D2H bandwidth from a local NUMA node, and its floor."""
    items: dict[str, dict[str, Any]] = {}
    for metric in result.metrics:
        match = _HOST.match(metric.key)
        if not match or metric.expected is None or metric.expected.min_ratio is None:
            continue  # remote NUMA nodes carry no minimum
        direction, gpu = match.groups()
        item = items.setdefault(gpu, {"subject": gpu, "h2d_gbps": None, "d2h_gbps": None,
                                      "floor_gbps": None})
        key = f"{direction}_gbps"
        item[key] = max(item[key] or 0.0, round(metric.value, 2))
        item["floor_gbps"] = _floor(metric, variables.get("memcpy_min_gbps"),
                                    variables.get("memcpy_min_ratio"))
    return list(items.values())


def allreduce_item(result: Any, variables: dict[str, Any]) -> dict[str, Any]:
    """Bus bandwidth at the largest message size that has an expectation, and its floor."""
    with_expectation = [m for m in result.metrics if m.expected is not None]
    picked = max(with_expectation or result.metrics, key=lambda m: m.size_bytes or 0, default=None)
    return {
        "busbw_gbps": None if picked is None else round(picked.value, 2),
        "floor_gbps": None if picked is None else _floor(
            picked, variables.get("allreduce_min_busbw_gbps"),
            variables.get("allreduce_min_ratio")),
        "gpus": result.ranks,
        "result_ok": result.status == "ok",
        "note": result.note or "",
    }


def gpu_items(result: Any, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """One item per GPU the suite measured; a suite that did not run gives none (unknown)."""
    if result is None or result.status != "ok":
        return []
    by_gpu: dict[str, dict[str, Any]] = {}
    for m in result.metrics:
        by_gpu.setdefault(m.subject or "", {})[m.key.split(".")[1]] = m
    flagged: dict[str, list[str]] = {}
    for f in result.flags or []:
        flagged.setdefault(f["subject"], []).append(f["why"])
    telemetry = result.telemetry or {}
    items = []
    for gpu, metrics in by_gpu.items():
        gemm, copy = metrics.get("gemm_bf16"), metrics.get("hbm_copy")
        seen = telemetry.get(gpu) or {}
        items.append({
            "subject": gpu,
            "name": seen.get("name") or "",
            "gemm_bf16_tflops": None if gemm is None else round(gemm.value, 1),
            "gemm_floor_tflops": _floor(gemm, variables.get("gpu_gemm_min_tflops"),
                                        variables.get("gpu_gemm_min_ratio"), digits=1),
            "hbm_copy_gbps": None if copy is None else round(copy.value, 1),
            "hbm_floor_gbps": _floor(copy, variables.get("gpu_hbm_min_gbps"),
                                     variables.get("gpu_hbm_min_ratio"), digits=1),
            "slow": gpu in flagged,
            "why": "; ".join(flagged.get(gpu, [])),
            "sm_clock_mhz": (seen.get("sm_clock_mhz") or {}).get("median"),
            "throttled": ",".join(seen.get("throttled") or []),
        })
    return items


def bench_section(results: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """`health.bench`: what each benchmark measured. A suite that did not run gives no memcpy
    or gpu items and null all-reduce figures (unknown, never a failure)."""
    memcpy = results.get("memcpy")
    allreduce = results.get("allreduce")
    ran = [r is not None and r.status != "skipped" for r in (memcpy, allreduce)]
    return {
        "memcpy": memcpy_items(memcpy, variables) if ran[0] else [],
        "allreduce": allreduce_item(allreduce, variables) if ran[1] else dict.fromkeys(
            ("busbw_gbps", "floor_gbps", "gpus", "result_ok", "note")),
        "gpu": gpu_items(results.get("gpu"), variables),
    }
