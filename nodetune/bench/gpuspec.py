"""What a GPU's math units and HBM should reach: the SKU's published peak and the clock it
holds at.

Dense tensor-core rates are FLOP per clock per SM x SMs x clock. NVIDIA's datasheet peaks are
that product at the SKU's spec clock: H100/H200 SXM 132 SMs x 4096 bf16 FLOP/clk x 1830 MHz =
989.4 TFLOP/s (fp8: 8192 FLOP/clk, 1978.9). The expectation scales the published peak by the
SMs the device reports (a cut-down part) and gives the same figure at the clock the GPU held
during the run, so a GPU that throttles shows as "clock-bound", not as broken.

HBM: the datasheet bandwidth (H200 4.8 TB/s); a device copy counts bytes read plus written.

`min_ratio`: healthy GPUs measure cuBLAS bf16 at 0.78-0.81 of the peak (H200, 8192^3, power
capped at 700 W) and a device copy at 0.88-0.91 of HBM peak; a GPU below GEMM_MIN_RATIO /
HBM_MIN_RATIO is "low" (DCGM #122: a GPU at a third of its FLOPS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nodetune.bench.results import Expected

GEMM_MIN_RATIO = 0.55
HBM_MIN_RATIO = 0.75
# noise bound for "below the node's median": GPUs of one node agree within a few percent
FLEET_NOISE = 0.05


@dataclass(frozen=True)
class Sku:
    pattern: str
    label: str
    sms: int
    spec_clock_mhz: float
    bf16_flop_per_clk_sm: int  # dense
    fp8_flop_per_clk_sm: int | None  # dense; None where the GPU has no fp8 tensor cores
    hbm_gbps: float
    source: str


# the first match wins: more specific names first
SKUS: tuple[Sku, ...] = (
    Sku(r"GB200", "B200 (GB200)", 148, 1965.0, 8192, 16384, 8000.0, "NVIDIA GB200 NVL72 datasheet"),
    Sku(r"B200", "B200", 148, 1965.0, 8192, 16384, 8000.0, "NVIDIA DGX B200 datasheet"),
    Sku(r"H200 NVL", "H200 NVL", 132, 1545.0, 4096, 8192, 4800.0, "NVIDIA H200 NVL datasheet"),
    Sku(r"H200", "H200 SXM", 132, 1830.0, 4096, 8192, 4800.0, "NVIDIA H200 datasheet"),
    Sku(r"GH200", "GH200", 132, 1830.0, 4096, 8192, 4000.0, "NVIDIA GH200 datasheet"),
    Sku(r"H100 NVL", "H100 NVL", 132, 1545.0, 4096, 8192, 3900.0, "NVIDIA H100 NVL datasheet"),
    Sku(r"H100 PCIe", "H100 PCIe", 114, 1620.0, 4096, 8192, 2000.0, "NVIDIA H100 datasheet"),
    Sku(r"H100", "H100 SXM", 132, 1830.0, 4096, 8192, 3350.0, "NVIDIA H100 datasheet"),
    Sku(r"H800", "H800 SXM", 132, 1830.0, 4096, 8192, 3350.0, "NVIDIA H800 datasheet"),
    Sku(r"L40S", "L40S", 142, 2520.0, 1024, 2048, 864.0, "NVIDIA L40S datasheet"),
    Sku(r"A100.*80GB", "A100 80GB SXM", 108, 1410.0, 2048, None, 2039.0, "NVIDIA A100 datasheet"),
    Sku(r"A100", "A100 40GB", 108, 1410.0, 2048, None, 1555.0, "NVIDIA A100 datasheet"),
)


def sku(name: str | None) -> Sku | None:
    for s in SKUS:
        if name and re.search(s.pattern, name):
            return s
    return None


def peak_tflops(s: Sku, dtype: str, sms: int | None,
                clock_mhz: float | None = None) -> float | None:
    per_clk = s.bf16_flop_per_clk_sm if dtype == "bf16" else s.fp8_flop_per_clk_sm
    if per_clk is None:
        return None
    return per_clk * (sms or s.sms) * (clock_mhz or s.spec_clock_mhz) * 1e6 / 1e12


def gemm(name: str | None, dtype: str, sms: int | None) -> Expected | None:
    s = sku(name)
    if s is None:
        return None
    value = peak_tflops(s, dtype, sms)
    if value is None:
        return None
    per_clk = s.bf16_flop_per_clk_sm if dtype == "bf16" else s.fp8_flop_per_clk_sm
    basis = (f"{s.label} dense {dtype}: {sms or s.sms} SMs x {per_clk} FLOP/clk x "
             f"{s.spec_clock_mhz:g} MHz = {value:.1f} TFLOP/s ({s.source})")
    return Expected(value=round(value, 1), basis=basis, min_ratio=GEMM_MIN_RATIO)


def hbm(name: str | None) -> Expected | None:
    s = sku(name)
    if s is None:
        return None
    return Expected(value=s.hbm_gbps, basis=f"{s.label} HBM {s.hbm_gbps / 1000:g} TB/s "
                    f"({s.source}), bytes read + written", min_ratio=HBM_MIN_RATIO)


def has_fp8(capability: tuple[int, int]) -> bool:
    """fp8 tensor cores: Ada (8.9), Hopper (9.0) and later."""
    return capability >= (8, 9)
