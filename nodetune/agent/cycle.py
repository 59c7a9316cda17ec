"""One agent cycle: facts, audit and the quick health check of the node, as one report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from nodetune.agent.kube import Verdict


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
    extra: dict[str, Any] = field(default_factory=dict)


class LibraryCache:
    """Profiles parsed and validated once across cycles, again when a profile file (or the
    overrides file) changes."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.library: Any = None

    def get(self, dirs: tuple[str, ...], overrides: str | None = None) -> Any:
        from pathlib import Path

        from nodetune.profiles.catalog import Library

        class CachedLibrary(Library):
            def __init__(self, user_dirs: tuple[str, ...]) -> None:
                super().__init__(user_dirs)
                self.loaded: dict[tuple[str, Any], Any] = {}

            def load(self, name: str, overrides: Any = None) -> Any:
                key = (name, overrides)
                if key not in self.loaded:
                    self.loaded[key] = super().load(name, overrides)
                return self.loaded[key]

        library = self.library if self.library is not None else CachedLibrary(dirs)
        files = [p for d in library.dirs for p in sorted(d.glob("*.yaml"))]
        if overrides:
            files.append(Path(overrides))
        key = tuple((str(p), p.stat().st_mtime_ns if p.exists() else None) for p in files)
        if key != self.key or self.library is None:
            self.library, self.key = CachedLibrary(dirs), key
        return self.library


_LIBRARIES = LibraryCache()


def run_cycle(opts: CycleOptions) -> dict[str, Any]:
    """Audit and check the node once; the report the agent serves on /report."""
    from nodetune import __version__
    from nodetune.audit.operation import run_audit
    from nodetune.check.cache import runtime_dir
    from nodetune.check.evaluate import CheckRequest, request_variables, run_checks
    from nodetune.check.suite import load_suite
    from nodetune.fleet.lean import facts as lean_facts
    from nodetune.node.source import open_node
    from nodetune.schemas import AGENT_REPORT_SCHEMA

    started = time.time()
    with open_node(root=opts.root, snapshot=opts.snapshot, nvml=opts.nvml) as node:
        facts = node.facts().to_json()
        audit = run_audit(
            facts,
            profile=opts.profile,
            library=_LIBRARIES.get(opts.profiles_dirs, opts.overrides),
            overrides=opts.overrides,
            source=node.origin,
        )
        suite = load_suite(opts.tier, cache_dir=runtime_dir())
        variables = request_variables(
            CheckRequest(tier=opts.tier), suite.variables, dict(audit.profile.variables)
        )
        nvml_requested = opts.nvml != "off" and (
            opts.nvml != "auto" or node.root.is_live or node.nvml is not None
        )
        check = run_checks(
            node,
            suite,
            variables,
            total_timeout=opts.check_timeout,
            nvml_requested=nvml_requested,
            profile=audit.profile.name,
        )
        check_doc = check.to_json()
    audit_doc = audit.to_json()
    return {
        "schema": AGENT_REPORT_SCHEMA,
        "nodetune_version": __version__,
        "node": check_doc.get("node"),
        "started_at": round(started, 3),
        "finished_at": round(time.time(), 3),
        "summary": {
            "profile": audit.profile.name,
            "compliant": audit.exit_code == 0,
            "healthy": bool(check_doc["healthy"]),
            "compliance_score": round(audit.compliance / 100.0, 4),
            "check_summary": check_doc["summary"],
        },
        "collectors": facts.get("collectors") or {},
        # the facts `nodetune fleet report` compares across nodes (drift), not the whole document
        "facts": lean_facts(facts),
        "audit": audit_doc,
        "check": check_doc,
        "bench": None,
    }


def verdict(report: dict[str, Any]) -> Verdict:
    summary = report["summary"]
    return Verdict(
        profile=summary.get("profile"),
        compliant=bool(summary["compliant"]),
        healthy=bool(summary["healthy"]),
        reason="" if summary["healthy"] else str(summary.get("check_summary") or ""),
    )
