"""Lean copies of the facts, audit, check and bench documents: only what the fleet view reads.

A DGX-class node's facts document is ~330 KB and its audit ~110 KB; a fleet report keeps
~10 KB of them, under the same paths where it keeps a field (`facts.gpu.driver_version`,
`audit.summary`, `audit.findings[*].actual`), so `fleet report` reads ten thousand nodes in
seconds. `fleet collect --full` keeps the
whole documents instead.
"""

from __future__ import annotations

from typing import Any

# What to keep: None keeps the value whole, a dict keeps those keys of a dict, a one-element
# list applies its spec to every item of a list.
FACTS_KEEP: dict[str, Any] = {
    "schema": None, "nodetune_version": None,
    "cpu": {k: None for k in (
        "architecture", "vendor", "model_name", "sockets", "cores", "threads_per_core",
        "smt_active", "hypervisor", "frequency_driver", "governor",
        "energy_performance_preference", "boost", "max_freq_khz", "freq_limits",
        "cstates_enabled")},
    "numa": {"nodes": [{"id": None, "cpus": None, "has_cpus": None}],
             "cpuless_nodes": None, "balancing": None},
    "memory": {"total_bytes": None, "hugepages": None, "thp": None},
    "kernel": {"release": None, "cmdline": None, "modules": None, "iommu": None,
               "virtualization": None, "clocksource": None},
    "system": {"dmi": None, "os": None},
    "gpu": {"count": None, "driver_version": None, "cuda_driver_version": None},
    "gpus": [{k: None for k in ("index", "pci_address", "name", "uuid", "vbios_version",
                                "memory_total_bytes", "fabric")}],
    "rdma": {"devices": [{k: None for k in ("name", "pci_address", "fw_ver", "hca_type",
                                            "board_id")}]},
}

_FINDING_KEEP = ("id", "area", "severity", "status", "subject", "fact", "expected", "actual",
                 "message")
_METRIC_KEEP = ("key", "name", "unit", "value", "higher_is_better")
_FAULT_KEEP = ("fault_code", "id", "subject", "message", "actual", "expected")


def _keep(value: Any, spec: Any) -> Any:
    if spec is None:
        return value
    if isinstance(spec, list):
        return [_keep(item, spec[0]) for item in value] if isinstance(value, list) else value
    if not isinstance(value, dict):
        return value
    return {k: _keep(value[k], sub) for k, sub in spec.items() if k in value}


def facts(doc: dict[str, Any]) -> dict[str, Any]:
    """The facts document reduced to the fields fleet drift compares."""
    out: dict[str, Any] = _keep(doc, FACTS_KEEP)
    return out


def audit(doc: dict[str, Any]) -> dict[str, Any]:
    """The audit document without explanations or passing findings: `findings` lists the
    failing and unknown ones (what was expected and found); `settings` counts, per setting
    id, its subjects by status."""
    profile = doc.get("profile") or {}
    out: dict[str, Any] = {k: doc[k] for k in ("schema", "nodetune_version", "source", "match",
                                               "gpu_found", "notes", "summary") if k in doc}
    out["profile"] = {k: profile[k] for k in ("name", "chain") if k in profile}
    settings: dict[str, dict[str, Any]] = {}
    findings = []
    for f in doc.get("findings") or []:
        if not isinstance(f, dict) or not f.get("id"):
            continue
        status = str(f.get("status"))
        entry = settings.setdefault(f["id"], {"area": f.get("area"),
                                              "severity": f.get("severity")})
        entry[status] = entry.get(status, 0) + 1
        if status not in ("pass", "skipped"):
            findings.append({k: f.get(k) for k in _FINDING_KEEP})
    out["findings"] = findings
    out["settings"] = settings
    return out


def check(doc: dict[str, Any]) -> dict[str, Any]:
    """The check document's verdict, summary line and faults, without the per-check list,
    collectors and variables."""
    out: dict[str, Any] = {k: doc[k] for k in ("schema", "nodetune_version", "tier", "profile",
                                               "healthy", "exit_code", "summary", "counts",
                                               "errors") if k in doc}
    for key in ("faults", "warnings"):
        out[key] = [{k: f.get(k) for k in _FAULT_KEEP}
                    for f in doc.get(key) or [] if isinstance(f, dict)]
    return out


def bench(doc: dict[str, Any]) -> dict[str, Any]:
    """The bench document with each metric's value but not its samples, tables or binding."""
    out: dict[str, Any] = {k: doc[k] for k in ("schema", "kind", "nodetune_version", "created",
                                               "node", "options") if k in doc}
    out["suites"] = [
        {**{k: s.get(k) for k in ("suite", "status", "runner", "note")},
         "metrics": [{k: m.get(k) for k in _METRIC_KEEP} for m in s.get("metrics") or []]}
        for s in doc.get("suites") or [] if isinstance(s, dict)]
    return out
