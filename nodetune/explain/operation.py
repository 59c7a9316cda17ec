"""Explain one id: a profile setting (`gpu.nvlink_inactive`), a health check (`nvlink.inactive`)
or a check's fault code (`NT3001`).

Everything comes from what nodetune ships and loads anyway: every profile with its inheritance
resolved (tunable settings included, so their fix and Ansible remediation follow from the
declaration), the check suites of every tier, and the source keys of `profiles/SOURCES.md`
that each `why` cites in brackets (`[V2]`, `[N2, N1]`). An id known as both a setting and a
check (`gpu.count`) gives both entries.

A profile changes a setting's severity, expectation or why; each profile that has the setting
is listed with its own values, and the entry itself shows the profile that defines it (the
one nearest the root of `extends`). A check takes its expectation from profile variables
(`${gpu_count}`): the profiles that set them are listed with the value each gives.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune import __version__
from nodetune.audit import tuned
from nodetune.check.suite import TIERS, load_suite
from nodetune.errors import NodetuneError
from nodetune.facts.model import to_jsonable
from nodetune.node.resources import data_dir
from nodetune.profiles.catalog import Library, Profile, load_all
from nodetune.rules.operators import describe, format_value
from nodetune.rules.rule import Condition, Rule
from nodetune.rules.templating import VAR, variables_used
from nodetune.schemas import EXPLAIN_SCHEMA

SOURCES_FILE = "SOURCES.md"
FAULT_CODE = re.compile(r"^NT\d{4}$", re.IGNORECASE)
CITATION = re.compile(r"\[([A-Z]\d+(?:\s*,\s*[A-Z]\d+)*)\]")
SOURCE_LINE = re.compile(r"^([A-Z]\d+) (.+?)[;.]?$")
SUGGESTIONS = 5


class UnknownId(NodetuneError):
    """No setting, check or fault code has this id (exit code 3, with the closest ids)."""


@dataclass(frozen=True)
class Source:
    key: str
    title: str  # the full line of profiles/SOURCES.md ("" when the key is not listed there)


@dataclass(frozen=True)
class Use:
    """One profile that has the setting (or sets a check's variables), with its own values."""

    name: str
    severity: str | None
    expected: str
    defined_in: str | None  # file:line of the profile that last changed the setting
    why: str | None = None  # only where it differs from the entry's
    fix: str | None = None


@dataclass(frozen=True)
class Entry:
    kind: str  # setting | check
    id: str
    area: str
    severity: str
    fact: str
    expected: str
    expectation: dict[str, Any]
    when: list[dict[str, Any]]
    why: str
    sources: list[Source]
    fix: str
    tunable: str | None  # "sysctl vm.swappiness": the fix follows from this declaration
    remediation: dict[str, Any] | None  # the Ansible role, task and vars `nodetune apply` runs
    disruption: str
    persisted: str | None  # the fact saying whether the value survives a reboot
    defined_in: str
    profiles: list[Use]
    fault_code: str | None = None
    action: str | None = None
    message: str | None = None
    tiers: list[str] = field(default_factory=list)
    variables: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = to_jsonable(self)
        return doc


@dataclass(frozen=True)
class Explanation:
    query: str
    entries: list[Entry]

    def to_json(self) -> dict[str, Any]:
        return {"schema": EXPLAIN_SCHEMA, "nodetune_version": __version__, "query": self.query,
                "entries": [e.to_json() for e in self.entries]}


@dataclass(frozen=True)
class Catalog:
    """Every setting of every profile and every check of every tier, by id."""

    profiles: list[Profile]
    checks: dict[str, tuple[Rule, list[str], dict[str, Any]]]  # id -> rule, tiers, variables
    sources: dict[str, str]
    shipped: Path

    def setting_ids(self) -> list[str]:
        return sorted({r.id for p in self.profiles for r in p.rules} | {tuned.SETTING_ID})

    def ids(self) -> list[tuple[str, str]]:
        """(id, kind) of everything `explain` knows, fault codes included."""
        out = [(sid, "setting") for sid in self.setting_ids()]
        for cid, (rule, _tiers, _vars) in sorted(self.checks.items()):
            out.append((cid, "check"))
            if rule.fault_code:
                out.append((rule.fault_code, "fault code"))
        return out


def load_catalog(profiles_dirs: Sequence[str] = ()) -> Catalog:
    library = Library(profiles_dirs)
    checks: dict[str, tuple[Rule, list[str], dict[str, Any]]] = {}
    for tier in TIERS:
        suite = load_suite(tier)
        for check in suite.checks:
            if check.id in checks:
                checks[check.id][1].append(tier)
                continue
            rule = Rule.from_dict(check.rule, source=f"checks/{check.source}")
            checks[check.id] = (rule, [tier], suite.variables)
    shipped = data_dir("profiles")
    return Catalog(profiles=load_all(library), checks=checks,
                   sources=read_sources(shipped / SOURCES_FILE), shipped=shipped)


def read_sources(path: Path) -> dict[str, str]:
    """key -> its full line ("V2" -> "docs.nvidia.com/health-validation/...")."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = SOURCE_LINE.match(line.strip())
        if m:
            out[m[1]] = m[2].strip()
    return out


def explain(query: str, catalog: Catalog) -> Explanation:
    """The entries for `query`, or UnknownId naming the closest ids."""
    text = query.strip()
    entries: list[Entry] = []
    settings = [(p, r) for p in catalog.profiles for r in p.rules if r.id == text]
    if settings:
        entries.append(_setting_entry(text, settings, catalog))
    elif text == tuned.SETTING_ID:
        entries.append(_tuned_entry(catalog))
    check_id = text
    if FAULT_CODE.match(text):
        code = text.upper()
        check_id = next((cid for cid, (rule, _t, _v) in catalog.checks.items()
                         if rule.fault_code == code), text)
    if check_id in catalog.checks:
        entries.append(_check_entry(check_id, catalog))
    if not entries:
        raise UnknownId(f"no setting, check or fault code {query!r}",
                        fix=_suggestion(text, catalog))
    return Explanation(query=query, entries=entries)


def close_matches(text: str, catalog: Catalog) -> list[str]:
    """Ids spelt like `text` (difflib), then ids containing it."""
    ids = [i for i, _kind in catalog.ids()]
    lowered = {i.lower(): i for i in ids}
    close = [lowered[m] for m in difflib.get_close_matches(text.lower(), list(lowered),
                                                           n=SUGGESTIONS, cutoff=0.6)]
    containing = [i for i in ids if text.lower() in i.lower() and i not in close]
    return (close + containing)[:SUGGESTIONS]


def _suggestion(text: str, catalog: Catalog) -> str:
    matches = close_matches(text, catalog)
    listing = "`nodetune explain --list` prints every id"
    if matches:
        return f"did you mean {', '.join(matches)}? ({listing})"
    return listing


# -- settings ----------------------------------------------------------------------------

def _setting_entry(sid: str, found: list[tuple[Profile, Rule]], catalog: Catalog) -> Entry:
    # the defining profile: the one whose own file declares the setting, nearest the root
    own = [(p, r) for p, r in found if Path(r.source.rsplit(":", 1)[0]).stem == p.name]
    main_profile, rule = min(own or found, key=lambda pr: (len(pr[0].chain), pr[0].name))
    why = rule.why
    uses = []
    for profile, r in sorted(found, key=lambda pr: pr[0].name):
        uses.append(Use(name=profile.name, severity=r.severity.value,
                        expected=_expected(r.expect, profile.variables),
                        defined_in=_where(r.source, catalog),
                        why=None if r.why == why else r.why,
                        fix=None if r.fix == rule.fix else r.fix))
    whys = [why, *(u.why for u in uses if u.why)]
    remedy = rule.remedy
    return Entry(
        kind="setting", id=sid, area=rule.area, severity=rule.severity.value, fact=rule.fact,
        expected=_expected(rule.expect, main_profile.variables),
        expectation=dict(rule.expect), when=_conditions(rule.when),
        why=why, sources=_sources(whys, catalog), fix=rule.fix,
        tunable=remedy.name if remedy is not None else None,
        remediation=dict(rule.remediation) if rule.remediation else None,
        disruption=rule.disruption.value,
        persisted=rule.persisted.fact if rule.persisted is not None else None,
        defined_in=_where(rule.source, catalog), profiles=uses)


def _tuned_entry(catalog: Catalog) -> Entry:
    """The audit's TuneD check: every profile has it; it compares the profile's settings."""
    return Entry(
        kind="setting", id=tuned.SETTING_ID, area="cpu", severity="warning", fact=tuned.FACT,
        expected="no option of TuneD's active profile undoing a tunable setting",
        expectation={}, when=[{"fact": "services.units.tuned.state", "expected": "running",
                               "reason": "TuneD neither runs nor is enabled"}],
        why=tuned.WHY, sources=_sources([tuned.WHY], catalog), fix=tuned.FIX, tunable=None,
        remediation=None, disruption="none", persisted=None, defined_in="nodetune/audit/tuned.py",
        profiles=[Use(name=p.name, severity="warning", expected="-", defined_in=None)
                  for p in sorted(catalog.profiles, key=lambda p: p.name)])


# -- checks ------------------------------------------------------------------------------

def _check_entry(cid: str, catalog: Catalog) -> Entry:
    rule, tiers, suite_vars = catalog.checks[cid]
    needed = sorted(variables_used(dict(rule.expect)))
    uses = []
    for profile in sorted(catalog.profiles, key=lambda p: p.name):
        if needed and all(v in profile.variables for v in needed):
            uses.append(Use(name=profile.name, severity=None,
                            expected=_expected(rule.expect, {**suite_vars, **profile.variables}),
                            defined_in=_where(profile.path, catalog)))
    return Entry(
        kind="check", id=cid, area=rule.area, severity=rule.severity.value, fact=rule.fact,
        expected=_expected(rule.expect, suite_vars), expectation=dict(rule.expect),
        when=_conditions(rule.when), why=rule.why, sources=_sources([rule.why], catalog),
        fix=rule.fix, tunable=None,
        remediation=dict(rule.remediation) if rule.remediation else None,
        disruption=rule.disruption.value, persisted=None, defined_in=rule.source,
        profiles=uses, fault_code=rule.fault_code, action=rule.action or "drain",
        message=rule.message, tiers=list(tiers), variables=needed)


# -- text --------------------------------------------------------------------------------

def _expected(expect: Mapping[str, Any], variables: Mapping[str, Any]) -> str:
    """The expectation in words, with the variables this profile (or suite) gives filled in."""
    return describe({op: _operand(v, variables) for op, v in expect.items()})


class _Shown(str):
    """An operand already in words: format_value prints it as it is."""


def _operand(value: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = VAR.fullmatch(value.strip())
        if whole and whole[1] in variables:
            return variables[whole[1]]
        return VAR.sub(lambda m: format_value(variables[m[1]]) if m[1] in variables
                       else m[0], value)
    if isinstance(value, Mapping):
        if set(value) == {"fact"}:
            return _Shown(f"the value of {value['fact']}")
        if set(value) == {"per_subject"}:
            table = value["per_subject"]
            return _Shown("per subject: " + ", ".join(
                f"{k} {format_value(_operand(v, variables))}" for k, v in table.items()))
        return {k: _operand(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_operand(v, variables) for v in value]
    return value


def _conditions(conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    return [{"fact": c.fact, "expected": describe(dict(c.expect)),
             **({"reason": c.reason} if c.reason else {})} for c in conditions]


def _sources(whys: Sequence[str], catalog: Catalog) -> list[Source]:
    keys: list[str] = []
    for why in whys:
        for group in CITATION.findall(why or ""):
            keys += [k.strip() for k in group.split(",") if k.strip() not in keys]
    return [Source(key=k, title=catalog.sources.get(k, "")) for k in dict.fromkeys(keys)]


def _where(source: str, catalog: Catalog) -> str:
    """A shipped profile's file:line relative to the checkout or wheel ("profiles/base.yaml:60");
    a site profile's as it is."""
    path = Path(source.rsplit(":", 1)[0]) if ":" in source else Path(source)
    try:
        relative = path.resolve().relative_to(catalog.shipped.resolve())
    except ValueError:
        return source
    line = source[len(str(path)):]
    return f"profiles/{relative}{line}"
