"""GPUDirect RDMA readiness of a node, and the known-bad combinations of its stack.

A NIC reaches GPU memory through one of two kernel paths:

- nvidia_peermem (or the legacy nv_peer_mem) registered with the RDMA core's peer-memory API
  (MLNX_OFED / DOCA-OFED; /sys/kernel/mm/memory_peers/nv_mem);
- DMA-BUF: the open GPU kernel modules at R515 or later (NCCL refuses DMA-BUF below CUDA driver
  11.7, NVIDIA/nccl src/init.cc `dmaBufSupported`), Linux 5.12+ built with
  CONFIG_DMA_SHARED_BUFFER (RDMA's dma-buf import, drivers/infiniband/core/umem_dmabuf.c), and
  rdma-core 34+ for `ibv_reg_dmabuf_mr` (NVIDIA GPU Operator and CUDA GPUDirect RDMA docs).

`gpudirect(facts, modules, has_gpu)` is the `health.gpudirect` section: which path is usable,
and what is missing or unknown in words. `known_issues(facts, path)` judges the cited table in
`data/gpudirect_known_issues.yaml` (checked against its schema on load).
"""

from __future__ import annotations

import os
import re
from functools import cache
from typing import Any

from nodetune.errors import NodetuneError

TABLE = "gpudirect_known_issues.yaml"
TABLE_SCHEMA = "nodetune.gpudirect-known-issues/1"
MIN_DRIVER = 515
MIN_KERNEL = (5, 12)
MIN_RDMA_CORE = 34
PEERMEM_MODULES = ("nvidia_peermem", "nv_peer_mem")
PATHS = ("nvidia_peermem", "nv_peer_mem", "dma-buf", "none")
_CONSTRAINT = re.compile(r"^(>=|<=|==|>|<)\s*(\d+(?:\.\d+)*)$")
_ENTRY_KEYS = {"id", "severity", "when", "summary", "fix", "source"}
_WHEN_KEYS = {"nccl", "driver", "module", "path"}


class KnownIssuesError(NodetuneError):
    """The shipped known-issues table does not match its schema (a packaging fault)."""


def _version(text: str | None) -> tuple[int, ...] | None:
    numbers = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in numbers) if numbers else None


def _kernel_at_least(release: str, wanted: tuple[int, int]) -> bool | None:
    match = re.match(r"(\d+)\.(\d+)", release)
    if match is None:
        return None
    return (int(match.group(1)), int(match.group(2))) >= wanted


def dmabuf_parts(facts: dict[str, Any]) -> dict[str, bool | None]:
    """Each requirement of the DMA-BUF path: True met, False not met, None unknown."""
    driver = facts.get("nvidia_driver") or {}
    version = _version(driver.get("version") or (facts.get("gpu") or {}).get("driver_version"))
    release = str((facts.get("kernel") or {}).get("release") or "")
    stack = facts.get("gpudirect_stack") or {}
    config = stack.get("kernel_config")
    rdma_core = (stack.get("rdma_core") or {}).get("upstream")
    return {
        "open kernel modules": driver.get("open_kernel_modules"),
        f"driver R{MIN_DRIVER}+": None if version is None else version[0] >= MIN_DRIVER,
        "Linux 5.12+": _kernel_at_least(release, MIN_KERNEL) if release else None,
        "CONFIG_DMA_SHARED_BUFFER": None if config is None else bool(
            config.get("dma_shared_buffer")),
        f"rdma-core {MIN_RDMA_CORE}+": None if rdma_core is None else rdma_core >= MIN_RDMA_CORE,
    }


def _words(parts: dict[str, bool | None], value: bool | None) -> str:
    return ", ".join(name for name, ok in parts.items() if ok is value)


def gpudirect(facts: dict[str, Any], modules: list[str] | None, has_gpu: bool) -> dict[str, Any]:
    """The `health.gpudirect` section (nodetune.facts.sections.GpuDirect)."""
    rdma = (facts.get("rdma") or {}).get("devices") or []
    needed = bool(has_gpu and any(d.get("pci_address") for d in rdma))
    parts = dmabuf_parts(facts)
    ready = False if False in parts.values() else None if None in parts.values() else True
    out: dict[str, Any] = {
        "needed": needed, "available": None, "via": None, "problem": "",
        "dmabuf_ready": ready, "dmabuf_missing": _words(parts, False),
        "dmabuf_unknown": _words(parts, None),
    }
    if modules is None:
        out["problem"] = "the loaded modules could not be read"
        return out
    peers = (facts.get("nvidia_driver") or {}).get("peer_memory_clients")
    peermem = next((m for m in PEERMEM_MODULES if m in modules), None)
    registered = None if peers is None else "nv_mem" in peers
    if peermem and registered:
        return {**out, "available": True, "via": peermem}
    if ready:
        return {**out, "available": True, "via": "dma-buf"}
    if peermem is None:
        peer_text = "nvidia_peermem not loaded"
    elif registered is None:
        peer_text = (f"{peermem} loaded but whether it registered with the RDMA core is "
                     "unknown (no /sys/kernel/mm in the tree)")
    else:
        peer_text = (f"{peermem} loaded but not registered with the RDMA core (no "
                     "/sys/kernel/mm/memory_peers/nv_mem)")
    if ready is False:
        dmabuf_text = f"DMA-BUF lacks {out['dmabuf_missing']}"
    else:
        dmabuf_text = f"DMA-BUF unknown: {out['dmabuf_unknown']} not readable"
    peer_known = peermem is None or registered is not None
    out["available"] = False if ready is False and peer_known else None
    out["problem"] = f"{peer_text}; {dmabuf_text}"
    return out


def path_in_use(section: dict[str, Any]) -> str | None:
    """The GPUDirect path NCCL can take: dma-buf when DMA-BUF is complete (NCCL falls back to
    it where peer memory does not serve, src/transport/net_ib/gin.cc), else the registered
    peer-memory module, else none; None when that is unknown."""
    if section.get("dmabuf_ready"):
        return "dma-buf"
    if section.get("available"):
        return str(section["via"])
    if section.get("available") is False:
        return "none"
    return None


# -- the known-issues table ----------------------------------------------------------------
def _check_constraints(where: str, value: Any) -> list[tuple[str, tuple[int, ...]]]:
    if not isinstance(value, list) or not value:
        raise KnownIssuesError(f"{where}: a list of constraints such as \">=2.28\"",
                               fix="correct the shipped table")
    out = []
    for item in value:
        match = _CONSTRAINT.match(str(item))
        if not match:
            raise KnownIssuesError(f"{where}: {item!r} is not a version constraint",
                                   fix="write >=, >, <=, < or == and a version")
        out.append((match.group(1), tuple(int(n) for n in match.group(2).split("."))))
    return out


def check_table(doc: Any) -> list[dict[str, Any]]:
    """The table's entries after checking every key and value against the schema."""
    fix = "correct nodetune/facts/data/" + TABLE
    if not isinstance(doc, dict) or doc.get("schema") != TABLE_SCHEMA:
        raise KnownIssuesError(f"{TABLE}: schema is not {TABLE_SCHEMA}", fix=fix)
    if not doc.get("version") or not isinstance(doc.get("issues"), list):
        raise KnownIssuesError(f"{TABLE}: needs a version and a list of issues", fix=fix)
    entries: list[dict[str, Any]] = []
    for pos, entry in enumerate(doc["issues"]):
        where = f"{TABLE} issues[{pos}]"
        if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
            raise KnownIssuesError(f"{where}: keys must be {', '.join(sorted(_ENTRY_KEYS))}",
                                   fix=fix)
        when = entry["when"]
        if not isinstance(when, dict) or not when or not set(when) <= _WHEN_KEYS:
            raise KnownIssuesError(f"{where}.when: conditions among "
                                   f"{', '.join(sorted(_WHEN_KEYS))}", fix=fix)
        if entry["severity"] not in ("warning", "critical"):
            raise KnownIssuesError(f"{where}.severity: warning or critical", fix=fix)
        if not str(entry["source"]).startswith("https://"):
            raise KnownIssuesError(f"{where}.source: an https URL", fix=fix)
        if "module" in when and when["module"] not in PEERMEM_MODULES:
            raise KnownIssuesError(f"{where}.when.module: one of {PEERMEM_MODULES}", fix=fix)
        if "path" in when and when["path"] not in PATHS:
            raise KnownIssuesError(f"{where}.when.path: one of {PATHS}", fix=fix)
        constraints = {k: _check_constraints(f"{where}.when.{k}", when[k])
                       for k in ("nccl", "driver") if k in when}
        entries.append({**entry, "constraints": constraints})
    return entries


@cache
def load_table() -> tuple[str, list[dict[str, Any]]]:
    """(version, entries) of the shipped table; parsed once into the runtime cache, since
    PyYAML's import and parse cost `nodetune check` ~35 ms on every GPU node with RDMA NICs."""
    # deferred: the parsed-file cache lives with the check's; only RDMA nodes read the table
    from nodetune.check import cache as parsed

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", TABLE)
    cache_file = parsed.parsed_cache_path(parsed.runtime_dir(), "gpudirect-issues",
                                          {"file": path})
    cached = parsed.read_parsed(cache_file)
    doc = cached.get("table") if cached else None
    if doc is None:
        import yaml  # deferred: only when the cache misses (the same reason)

        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        if isinstance(doc, dict) and "version" in doc:
            doc = {**doc, "version": str(doc["version"])}  # a YAML date: JSON has none
        if cache_file:
            parsed.write_json_atomic(cache_file, {"stamps": parsed.stamps([path]),
                                                  "table": doc})
    return str(doc.get("version") if isinstance(doc, dict) else ""), check_table(doc)


_OPS = {">=": tuple.__ge__, ">": tuple.__gt__, "<=": tuple.__le__, "<": tuple.__lt__,
        "==": tuple.__eq__}


def _satisfies(version: tuple[int, ...] | None,
               constraints: list[tuple[str, tuple[int, ...]]]) -> bool | None:
    if version is None:
        return None
    return all(_OPS[op](version[:len(bound)], bound) for op, bound in constraints)


def known_issues(facts: dict[str, Any], modules: list[str] | None,
                 path: str | None) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Each table entry with whether it applies here (None: a fact it needs is unknown), and
    why, by entry position, for those that are unknown."""
    _, entries = load_table()
    driver = facts.get("nvidia_driver") or {}
    stack = facts.get("gpudirect_stack") or {}
    versions = {
        "nccl": _version(stack.get("nccl_version")),
        "driver": _version(driver.get("version") or (facts.get("gpu") or {}).get(
            "driver_version")),
    }
    reasons = {
        "nccl": "NCCL version unknown: " + str((stack.get("unknown") or {}).get(
            "nccl_version") or "the GPUDirect stack was not read"),
        "driver": "GPU driver version unknown",
        "module": "the loaded modules could not be read",
        "path": "whether a GPUDirect path is usable is unknown",
    }
    out, whys = [], {}
    for pos, entry in enumerate(entries):
        when = entry["when"]
        results: dict[str, bool | None] = {k: _satisfies(versions[k], c)
                                           for k, c in entry["constraints"].items()}
        if "module" in when:
            results["module"] = None if modules is None else when["module"] in modules
        if "path" in when:
            results["path"] = None if path is None else path == when["path"]
        values = list(results.values())
        applies = False if False in values else None if None in values else True
        if applies is None:
            whys[pos] = "; ".join(reasons[k] for k, v in results.items() if v is None)
        out.append({"subject": entry["id"], "applies": applies, "severity": entry["severity"],
                    "summary": " ".join(str(entry["summary"]).split()),
                    "fix": " ".join(str(entry["fix"]).split()), "source": entry["source"]})
    return out, whys
