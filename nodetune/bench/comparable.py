"""Whether two runs of a metric can be compared at all: same suite parameters, same sizes,
same number of samples, same binding, same GPU set and the same tool versions.

A pair that differs in any of these is "incomparable", with the differences named; its change
is never reported as improved or regressed (a `--quick` triad on a 268 MB array with one
sample is not a slower full triad on 814 MB with three).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodetune.bench.results import Binding, Metric, SuiteResult

# run options that change what a suite measures (RunOptions fields); "repeat" is covered by
# the sample count of each metric
RUN_OPTIONS = ("quick", "sizes", "gpus", "nvbandwidth", "fio_dir", "fio_device", "destructive",
               "nodes", "launcher")


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


def option_mismatches(before: Mapping[str, Any] | None,
                      after: Mapping[str, Any] | None) -> list[str]:
    """Run options that differ, when both documents are runs (imports carry no options)."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return []
    if "files" in before or "files" in after:
        return []
    out = []
    for name in RUN_OPTIONS:
        b, a = before.get(name), after.get(name)
        if isinstance(b, list | tuple):
            b = list(b)
        if isinstance(a, list | tuple):
            a = list(a)
        if b != a:
            out.append(f"option {name} {_fmt(b)} vs {_fmt(a)}")
    return out


def suite_mismatches(before: SuiteResult, after: SuiteResult) -> list[str]:
    """What differs between two runs of one suite: runner, tool versions, ranks and hosts."""
    out = []
    if before.runner and after.runner and before.runner != after.runner:
        out.append(f"runner {before.runner} vs {after.runner}")
    for tool in sorted(set(before.tool_versions) & set(after.tool_versions)):
        b, a = before.tool_versions[tool], after.tool_versions[tool]
        if b != a:
            out.append(f"{tool} {b} vs {a}")
    if before.ranks is not None and after.ranks is not None and before.ranks != after.ranks:
        out.append(f"GPU set: {before.ranks} vs {after.ranks} ranks")
    if before.hosts and after.hosts and sorted(before.hosts) != sorted(after.hosts):
        out.append(f"hosts {_fmt(sorted(before.hosts))} vs {_fmt(sorted(after.hosts))}")
    return out


def _binding_text(binding: Binding | None) -> str:
    if binding is None:
        return "unbound"
    parts = [binding.method]
    if binding.cpus:
        parts.append(f"cpus {binding.cpus}")
    if binding.mem_node is not None:
        parts.append(f"mem node{binding.mem_node}")
    return " ".join(parts)


def metric_mismatches(before: Metric, after: Metric) -> list[str]:
    """What differs between two runs of one metric: size, sample count, binding, subject."""
    out = []
    if before.size_bytes != after.size_bytes:
        out.append(f"size {_fmt(before.size_bytes)} vs {_fmt(after.size_bytes)} bytes")
    if len(before.samples) != len(after.samples):
        out.append(f"samples {len(before.samples)} vs {len(after.samples)}")
    b, a = before.binding, after.binding
    if (b is None) != (a is None) or (b is not None and a is not None and (
            b.method, b.cpus, b.mem_node) != (a.method, a.cpus, a.mem_node)):
        out.append(f"binding {_binding_text(b)} vs {_binding_text(a)}")
    if before.subject and after.subject and before.subject != after.subject:
        out.append(f"subject {before.subject} vs {after.subject}")
    if before.unit != after.unit:
        out.append(f"unit {before.unit} vs {after.unit}")
    return out
