"""`nodetune audit` as an operation: facts + profile -> findings, summary, exit code, JSON.

The command (`nodetune/commands/audit.py`) only parses options and renders; everything that
decides what the audit says is here, so tests and other commands call `run_audit` directly.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodetune import __version__, exitcodes
from nodetune.audit import tuned
from nodetune.errors import ProfileError
from nodetune.facts.derived import derive
from nodetune.facts.model import Finding, Severity, Status, to_jsonable
from nodetune.profiles.catalog import Library, Match, Profile
from nodetune.rules.evaluation import evaluate
from nodetune.rules.rule import Rule
from nodetune.rules.schema import AREAS

AREA_TITLES = {"cpu": "CPU", "numa-memory": "NUMA/memory", "gpu": "GPU",
               "pcie-topology": "PCIe/topology", "nic-rdma": "NIC/RDMA", "storage": "storage",
               "kernel": "kernel"}
_STATUS_ORDER = {Status.FAIL: 0, Status.UNKNOWN: 1, Status.PASS: 2, Status.SKIPPED: 3}


@dataclass
class AuditResult:
    profile: Profile
    match: Match
    findings: list[Finding]
    gpu_found: bool
    notes: list[str] = field(default_factory=list)
    source: str = "live"
    overrides: str | None = None

    def count(self, status: Status, severity: Severity | None = None) -> int:
        return sum(1 for f in self.findings if f.status is status
                   and (severity is None or f.severity is severity))

    @property
    def compliance(self) -> float:
        """Percent of checked settings that pass, weighted by severity (critical 3, warning 2,
        info 1); unknown and skipped settings do not count. 0 when no setting could be checked
        but some are unknown: a tree nodetune cannot read is not compliant."""
        checked = [f for f in self.findings if f.status in (Status.PASS, Status.FAIL)]
        total = sum(f.severity.rank for f in checked)
        if not total:
            return 0.0 if self.nothing_checked else 100.0
        passed = sum(f.severity.rank for f in checked if f.status is Status.PASS)
        return round(100.0 * passed / total, 1)

    @property
    def verdict(self) -> str:
        return {exitcodes.CRITICAL: "critical findings", exitcodes.WARNINGS: "warnings",
                exitcodes.ERROR: "not checked (no setting could be read)"}.get(
                    self.exit_code, "compliant")

    @property
    def nothing_checked(self) -> bool:
        """Every setting is unknown (or skipped): the audit could not read the node."""
        return bool(self.count(Status.UNKNOWN)) and not any(
            f.status in (Status.PASS, Status.FAIL) for f in self.findings)

    @property
    def exit_code(self) -> int:
        if self.nothing_checked:
            return exitcodes.ERROR
        if self.count(Status.FAIL, Severity.CRITICAL):
            return exitcodes.CRITICAL
        if self.count(Status.FAIL, Severity.WARNING):
            return exitcodes.WARNINGS
        return exitcodes.OK

    def summary(self) -> dict[str, Any]:
        return {
            "pass": self.count(Status.PASS), "fail": self.count(Status.FAIL),
            "unknown": self.count(Status.UNKNOWN), "skipped": self.count(Status.SKIPPED),
            "failed": {s.value: self.count(Status.FAIL, s) for s in Severity},
            "needs_reboot": sum(1 for f in self.findings if f.needs_reboot),
            "compliance_score": self.compliance,
            "exit_code": self.exit_code,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "nodetune_version": __version__,
            "source": self.source,
            "profile": {"name": self.profile.name, "summary": self.profile.summary,
                        "chain": list(self.profile.chain), "path": self.profile.path,
                        "user": self.profile.user, "overrides": self.overrides},
            "match": {"profile": self.match.profile, "automatic": self.match.automatic,
                      "reason": self.match.reason},
            "gpu_found": self.gpu_found,
            "notes": self.notes,
            "summary": self.summary(),
            "findings": [to_jsonable(f) for f in self.findings],
        }


def sort_key(f: Finding) -> tuple[Any, ...]:
    """Worst first: failures, then unknowns, by severity, then in area order; subjects in
    natural order (GPU2 before GPU10)."""
    subject = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", f.subject or "")]
    return (_STATUS_ORDER[f.status], -f.severity.rank,
            AREAS.index(f.area) if f.area in AREAS else len(AREAS), f.id, subject)


def _patterns(values: Iterable[str]) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _select(rules: Sequence[Rule], only: list[str], skip: list[str],
            profile: str) -> tuple[list[Rule], list[Rule]]:
    """(rules to evaluate, rules skipped by --skip); a pattern matching nothing is an error."""
    for flag, patterns in (("--only", only), ("--skip", skip)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(i, pattern)
                       for i in (*(r.id for r in rules), tuned.SETTING_ID)):
                raise ProfileError(f"{flag} {pattern}: no setting of profile {profile} matches",
                                   fix=f"see the ids in `nodetune profiles show {profile}`")
    chosen = [r for r in rules if not only or any(fnmatch.fnmatchcase(r.id, p) for p in only)]
    skipped = [r for r in chosen if any(fnmatch.fnmatchcase(r.id, p) for p in skip)]
    return [r for r in chosen if r not in skipped], skipped


def _kept(setting: str, only: list[str], skip: list[str]) -> bool:
    """Whether --only and --skip keep a setting no profile rule declares."""
    return (not only or any(fnmatch.fnmatchcase(setting, p) for p in only)) and \
        not any(fnmatch.fnmatchcase(setting, p) for p in skip)


def run_audit(facts: Mapping[str, Any], *, profile: str | None = None,
              profiles_dirs: Sequence[str] = (), library: Library | None = None,
              overrides: str | None = None,
              only: Iterable[str] = (), skip: Iterable[str] = (),
              severity: str = "info", source: str = "live") -> AuditResult:
    """Audit a facts document against `profile` (or the profile its facts match)."""
    if "derived" not in facts:  # derive once: profile matching and every rule read it
        facts = {**facts, "derived": derive(dict(facts))}
    library = library or Library(profiles_dirs)
    if not profile:
        _can_match(facts)
    match = Match(profile=profile, reason="chosen with --profile", automatic=False) if profile \
        else library.match(facts)
    prof = library.load(match.profile, overrides)
    only_ids, skip_ids = _patterns(only), _patterns(skip)
    rules, skipped = _select(prof.rules, only_ids, skip_ids, prof.name)
    findings = evaluate(rules, facts, prof.variables)
    if _kept(tuned.SETTING_ID, only_ids, skip_ids):
        findings += tuned.check(rules, findings, facts, prof.variables)
    findings += [Finding(id=r.id, area=r.area, severity=r.severity, status=Status.SKIPPED,
                         fact=r.fact, message="skipped with --skip", why=r.why)
                 for r in skipped]
    threshold = Severity(severity).rank
    findings = sorted((f for f in findings if f.severity.rank >= threshold), key=sort_key)
    gpu_found = bool(facts.get("gpus"))
    result = AuditResult(profile=prof, match=match, findings=findings, gpu_found=gpu_found,
                         notes=_notes(facts, gpu_found), source=source, overrides=overrides)
    if result.nothing_checked:
        result.notes.append(f"no setting could be checked ({result.count(Status.UNKNOWN)} "
                               "unknown): not compliant, exit 3")
    return result


# Collectors whose facts recommend.yaml matches on: when one of them failed, the first rule
# that matches may be the catch-all `base` only because the GPUs or CPUs were not read.
MATCH_COLLECTORS = ("cpu", "pci", "gpu")


def _can_match(facts: Mapping[str, Any]) -> None:
    """Refuse to pick a profile automatically from facts a failed collector left out."""
    collectors = facts.get("collectors") or {}
    failed = [f"{name} collector failed: {str(status.get('error')).split('; fix:')[0]}"
              for name in MATCH_COLLECTORS
              if isinstance(status := collectors.get(name), Mapping) and not status.get("ok", True)]
    if failed:
        raise ProfileError("cannot pick this node's profile: " + "; ".join(failed),
                           fix="pass --profile NAME, or correct what the collector reports")


def _notes(facts: Mapping[str, Any], gpu_found: bool) -> list[str]:
    notes = []
    if not gpu_found:
        notes.append("no NVIDIA GPU found: auditing CPU, NUMA/memory, kernel, NIC and storage")
    else:
        nvml = (facts.get("gpu") or {}).get("nvml") or {}
        if nvml.get("available") is False:
            notes.append(f"NVML not used ({nvml.get('note') or 'unavailable'}): GPU state "
                         "settings (persistence, clocks, NVLink, fabric) are unknown")
    for name, status in (facts.get("collectors") or {}).items():
        if isinstance(status, Mapping) and not status.get("ok"):
            notes.append(f"{name} collector failed: {status.get('error')}")
    return notes
