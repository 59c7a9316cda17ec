"""Micro-benchmarks that verify tuning: memcpy, allreduce, fio, cpu-mem, gpu.

Each suite is a Runner (`nodetune.bench.base`) registered by name below, in the order
`nodetune bench all` runs them.
"""

from __future__ import annotations

import importlib

from nodetune.bench.base import Runner

# suite name -> (module, class)
SUITES: dict[str, tuple[str, str]] = {
    "cpu-mem": ("cpumem", "CpuMemRunner"),
    "memcpy": ("memcpy", "MemcpyRunner"),
    "allreduce": ("allreduce", "AllReduceRunner"),
    "fio": ("fio", "FioRunner"),
    "gpu": ("gpucompute", "GpuComputeRunner"),
}


def runner(name: str) -> Runner:
    module, cls = SUITES[name]
    runner_cls: type[Runner] = getattr(importlib.import_module(f"nodetune.bench.{module}"), cls)
    return runner_cls()
