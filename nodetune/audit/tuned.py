"""Settings an active TuneD profile would set back: the audit's `cpu.tuned_overrides` check.

TuneD applies its profile whenever it starts (at boot, on `tuned-adm profile`), so a value it
sets differently from a profile setting undoes `nodetune apply`. For every setting that names
a tunable and applies to this node, the option of TuneD's active profile that sets the same
knob (nodetune.profiles.tuned) is compared with what the setting wants: one warning per
setting TuneD overrides, a pass when it overrides none, unknown when TuneD runs (or is enabled)
but its profile cannot be read. Nothing is reported while TuneD is neither running nor enabled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nodetune.facts.model import Finding, Severity, Status
from nodetune.profiles import tuned as tuned_terms
from nodetune.profiles.tunables import Tunable, TunableSetting, static_expectations
from nodetune.rules.operators import describe, format_value, target
from nodetune.rules.rule import Rule

SETTING_ID = "cpu.tuned_overrides"
FACT = "services.tuned.settings"
WHY = ("[T2] TuneD applies its active profile each time it starts (at boot, on tuned-adm "
       "profile): an option it sets differently puts back the value nodetune apply fixed")
FIX = ("keep TuneD and carry nodetune's values in a child profile (nodetune apply --as tuned "
       "DIR, then tuned-adm profile NAME), or stop it (tuned-adm off; systemctl disable --now "
       "tuned)")


@dataclass(frozen=True)
class Override:
    """A setting whose knob TuneD's active profile sets to a value the setting does not want."""

    setting: str  # the profile setting's id, e.g. "memory.thp"
    tunable: Tunable  # SysfsKnob(path="/sys/kernel/mm/transparent_hugepage/enabled")
    option: tuned_terms.Option  # TuneD's option, e.g. [vm] transparent_hugepages=always
    wanted: str  # what nodetune writes ("madvise"), or the expectation when it names none
    value: Any = None  # the value nodetune writes, None when the expectation names none

    @property
    def text(self) -> str:
        return f"{self.option.text}, over nodetune's {self.wanted} ({self.setting})"


def active(facts: Mapping[str, Any]) -> bool:
    """TuneD runs now or starts at boot."""
    unit = ((facts.get("services") or {}).get("units") or {}).get("tuned") or {}
    return unit.get("state") == "running" or unit.get("enabled") is True


def find(rules: Iterable[Rule], findings: Sequence[Finding], settings: Mapping[str, Any],
         variables: Mapping[str, Any]) -> list[Override]:
    """The settings among `rules` that TuneD's `settings` override (a rule whose findings are
    all skipped does not apply here and is left out)."""
    applies = {f.id for f in findings if f.status is not Status.SKIPPED}
    out = []
    for rule in rules:
        remedy = rule.remedy
        if rule.id not in applies or not isinstance(remedy, TunableSetting):
            continue
        option = tuned_terms.set_by(remedy.tunable, settings)
        if option is None:
            continue
        for expect in static_expectations(rule.expect, variables):
            written = remedy.static_value if remedy.static_value is not None else \
                remedy.write if remedy.write is not None else target(expect)
            if tuned_terms.overrides(remedy.tunable, option, expect, written) is not False:
                wanted = remedy.tunable.shown(written) if written is not None \
                    else describe(expect)
                out.append(Override(rule.id, remedy.tunable, option, wanted, written))
                break
    return out


def check(rules: Sequence[Rule], findings: Sequence[Finding], facts: Mapping[str, Any],
          variables: Mapping[str, Any]) -> list[Finding]:
    """The `cpu.tuned_overrides` findings of this audit (none while TuneD is inactive)."""
    if not active(facts):
        return []
    services = facts.get("services") or {}
    profile = services.get("tuned") or {}
    reason = (services.get("unknown") or {}).get("tuned.settings")
    if reason or not profile:
        reason = reason or "TuneD is running but neither /etc/tuned nor /usr/lib/tuned is here"
        return [_finding(Status.UNKNOWN, actual=f"unknown ({reason})",
                         message=f"cannot tell which settings TuneD sets back: {reason}")]
    name = profile.get("active") or ""
    if not name:
        return [_finding(Status.PASS, actual="no active TuneD profile",
                         message="TuneD has no active profile (tuned-adm off)")]
    found = find(rules, findings, profile.get("settings") or {}, variables)
    if not found:
        return [_finding(Status.PASS, actual=f"TuneD profile {name}",
                         message=f"TuneD profile {name} sets none of this profile's settings "
                                 "to another value")]
    return [_finding(Status.FAIL, subject=o.setting, expected=o.wanted,
                     actual=f"{format_value(o.option.value)} (TuneD {name})",
                     message=f"TuneD profile {name} sets {o.text}") for o in found]


def _finding(status: Status, *, actual: str, message: str, subject: str | None = None,
             expected: str = "") -> Finding:
    return Finding(id=SETTING_ID, area="cpu", severity=Severity.WARNING, status=status,
                   subject=subject, fact=FACT, expected=expected, actual=actual,
                   message=message, why=WHY, fix=FIX)


def for_changes(findings: Iterable[Finding], settings: Iterable[str]) -> list[Finding]:
    """This audit's TuneD findings that matter to changing `settings` (setting ids): the ones
    naming one of them, and an unknown one (TuneD runs, its profile cannot be read)."""
    wanted = set(settings)
    return [f for f in findings if f.id == SETTING_ID and (
        f.status is Status.UNKNOWN or (f.status is Status.FAIL and f.subject in wanted))]
