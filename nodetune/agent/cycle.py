"""One agent cycle: facts, audit and the quick health check of the node, as one report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune import __version__, exitcodes
from nodetune.agent.benchcycle import BenchSchedule
from nodetune.agent.kube import Verdict
from nodetune.audit.operation import run_audit
from nodetune.check import fromagent
from nodetune.check.operation import CheckRequest
from nodetune.check.operation import run as run_check
from nodetune.fleet.lean import facts as lean_facts
from nodetune.node.resources import data_dir
from nodetune.node.source import open_node
from nodetune.profiles.catalog import Library, Profile
from nodetune.schemas import AGENT_REPORT_SCHEMA, utc_timestamp


@dataclass(frozen=True)
class CycleOptions:
    root: str | None = None
    snapshot: str | None = None
    nvml: str = "auto"
    profile: str | None = None
    profiles_dirs: tuple[str, ...] = ()
    overrides: str | None = None
    check_timeout: float = 30.0
    tier: str = "quick"
    check_file: str | None = None  # where each check answer goes, for the prolog to reuse
    extra: dict[str, Any] = field(default_factory=dict)


class CachedLibrary(Library):
    """A Library that keeps every profile it loaded."""

    def __init__(self, user_dirs: tuple[str, ...]) -> None:
        super().__init__(user_dirs)
        self.loaded: dict[tuple[str, Any], Profile] = {}

    def load(self, name: str, overrides: str | Path | None = None) -> Profile:
        key = (name, overrides)
        if key not in self.loaded:
            self.loaded[key] = super().load(name, overrides)
        return self.loaded[key]


class LibraryCache:
    """Profiles parsed and validated once across cycles, again when a profile file (or the
    overrides file) changes."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.library: CachedLibrary | None = None

    def get(self, dirs: tuple[str, ...], overrides: str | None = None) -> CachedLibrary:
        folders = [*(Path(d) for d in dirs), data_dir("profiles")]
        files = [p for d in folders for p in sorted(d.glob("*.yaml"))]
        if overrides:
            files.append(Path(overrides))
        key = (dirs, *((str(p), p.stat().st_mtime_ns if p.exists() else None) for p in files))
        if self.library is None or key != self.key:
            self.library, self.key = CachedLibrary(dirs), key
        return self.library


LIBRARIES = LibraryCache()
log = logging.getLogger("nodetune.agent")
_WRITE_ERRORS: set[str] = set()  # each distinct failure to write the answer is logged once


def run_cycle(opts: CycleOptions, bench: BenchSchedule | None = None) -> dict[str, Any]:
    """Audit and check the node once; the report the agent serves on /report.

    The facts are gathered once: the audit reads them, the check (`nodetune.check.operation.run`)
    is handed them, and so are the quick benchmarks when `bench` says they are due."""
    started = time.time()
    library = LIBRARIES.get(opts.profiles_dirs, opts.overrides)
    with open_node(root=opts.root, snapshot=opts.snapshot, nvml=opts.nvml) as node:
        node_facts = node.facts()
        facts = node_facts.to_json()
        audit = run_audit(
            facts,
            profile=opts.profile,
            library=library,
            overrides=opts.overrides,
            source=node.origin,
        )
        request = CheckRequest(
            root=opts.root,
            snapshot=opts.snapshot,
            nvml=opts.nvml,
            tier=opts.tier,
            timeout=opts.check_timeout,
            profile=audit.profile.name,
            profiles_dirs=opts.profiles_dirs,
            overrides=opts.overrides,
        )
        # hints={}: the agent has none of check's expectation options; profiles set them
        check = run_check(request, node_facts, node=node, library=library, cache=False, hints={},
                          record_readings=True)
        check_doc = check.doc
        if opts.check_file:  # before the benchmarks: the answer is as fresh as the check
            store_answer(opts, request, check_doc)
        bench_doc = bench.maybe_run(facts, node.root.is_live) if bench is not None else None
    audit_doc = audit.to_json()
    return {
        "schema": AGENT_REPORT_SCHEMA,
        "nodetune_version": __version__,
        "node": check_doc.get("node"),
        "started_at": utc_timestamp(started),
        "finished_at": utc_timestamp(time.time()),
        "summary": {
            "profile": audit.profile.name,
            "compliant": audit.exit_code == 0,
            "healthy": bool(check_doc["healthy"]),
            "compliance_score": audit_doc["summary"]["compliance_score"],  # as audit/1: 0..100
            "check_summary": check_doc["summary"],
        },
        "collectors": facts.get("collectors") or {},
        # the facts `nodetune fleet report` compares across nodes (drift), not the whole document
        "facts": lean_facts(facts),
        "audit": audit_doc,
        "check": check_doc,
        "bench": bench_doc,
    }


def store_answer(opts: CycleOptions, request: CheckRequest, doc: dict[str, Any]) -> None:
    """Write the check answer that `nodetune check` may answer from (nodetune.check.fromagent);
    a failure is logged (once per reason), never fatal: the prolog then runs the full check."""
    path = opts.check_file or ""
    try:
        fromagent.write(path, request.fields(), doc,
                        profile_matched=opts.profile in (None, "auto"))
    except OSError as exc:
        reason = f"{path}: {exc.strerror or exc}"
        if reason not in _WRITE_ERRORS:
            _WRITE_ERRORS.add(reason)
            log.warning("cannot write the check answer file (the prolog will check the node "
                        "itself): %s", reason)


def verdict(report: dict[str, Any]) -> Verdict:
    summary = report["summary"]
    return Verdict(
        profile=summary.get("profile"),
        compliant=bool(summary["compliant"]),
        healthy=bool(summary["healthy"]),
        reason="" if summary["healthy"] else str(summary.get("check_summary") or ""),
        checked=(report.get("check") or {}).get("exit_code", exitcodes.OK) != exitcodes.ERROR,
    )
