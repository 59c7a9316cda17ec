"""`health.bench.gpu`: what the gpu suite measured, per GPU, for `check --tier standard`.

Fact paths (one item per GPU):

    health.bench.gpu[*].subject              str   "GPU0"
    health.bench.gpu[*].name                 str   "NVIDIA H200"
    health.bench.gpu[*].gemm_bf16_tflops     num   median bf16 GEMM rate
    health.bench.gpu[*].gemm_floor_tflops    num   SKU peak x min ratio (or a profile's
                                                   gpu_gemm_min_tflops / gpu_gemm_min_ratio)
    health.bench.gpu[*].hbm_copy_gbps        num   median device copy, read + written
    health.bench.gpu[*].hbm_floor_gbps       num   HBM peak x min ratio (gpu_hbm_min_gbps /
                                                   gpu_hbm_min_ratio)
    health.bench.gpu[*].slow                 bool  flagged: low, or below the node's median
    health.bench.gpu[*].why                  str   why it was flagged ("" when not)
    health.bench.gpu[*].sm_clock_mhz         num   median SM clock during the run
    health.bench.gpu[*].throttled            str   throttle reasons seen ("" when none)

The short form the standard tier runs is QUICK_OPTIONS (about 1 s per GPU).
"""

from __future__ import annotations

from typing import Any

QUICK_OPTIONS: dict[str, Any] = {"quick": True, "repeat": 1}


def _floor(metric: Any, absolute: Any, ratio: Any) -> float | None:
    if absolute is not None:
        return float(absolute)
    if metric is None or metric.expected is None:
        return None
    use = ratio if ratio is not None else metric.expected.min_ratio
    return None if use is None else round(metric.expected.value * float(use), 1)


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
                                        variables.get("gpu_gemm_min_ratio")),
            "hbm_copy_gbps": None if copy is None else round(copy.value, 1),
            "hbm_floor_gbps": _floor(copy, variables.get("gpu_hbm_min_gbps"),
                                     variables.get("gpu_hbm_min_ratio")),
            "slow": gpu in flagged,
            "why": "; ".join(flagged.get(gpu, [])),
            "sm_clock_mhz": (seen.get("sm_clock_mhz") or {}).get("median"),
            "throttled": ",".join(seen.get("throttled") or []),
        })
    return items
