"""Hardware profiles: load profiles/*.yaml, resolve `extends`, validate, pick one for a node.

A profile file (profiles/<name>.yaml):

    summary: One line saying what hardware this is for
    extends: gpu-common              # a name or a list; parents merge left to right
    variables: {gpu_pcie_width: 16}  # used as ${gpu_pcie_width} in settings
    replace: false                   # true: inherit nothing (variables included)
    <section>:                       # cpu numa memory gpu pcie nic rdma storage kernel
      replace: false                 # true: drop the settings inherited in this section
      <setting>:                     # id "<section>.<setting>"
        tunable: {sysctl: NAME}      # a knob (profiles/tunables.py): check and fix follow
        max: 10                      # from it; or a free-form rule: fact, operators, when,
                                     # or, severity, why, fix, remediation, persisted
        replace: false               # true: drop every inherited key of this setting
        disable: false               # true: drop the setting

A child setting changes only the keys it names; naming any operator replaces the inherited
expectation as a whole. Merging is one pure function, `merge(parent, child)`. The language is
described in docs/profiles.md.

Loading validates the whole resolved profile (unknown keys, unknown fact paths, wrong types,
undefined variables, cycles in `extends`, a tunable setting whose fix could not satisfy its
expectation) and raises ProfileError naming file:line and key.

Profiles are found in `--profiles-dir` directories first, then in the shipped profiles/; a user
profile with a shipped name replaces it. `recommend.yaml` in those directories holds the ordered
match rules (TuneD recommend.conf style: the first rule whose conditions all hold wins):

    rules:
      - profile: cloud-vm
        why: a virtual machine with NVIDIA GPUs
        when: [{fact: derived.virtualized, equals: true}, {fact: derived.gpu_found, equals: true}]

A site override file (`--overrides FILE`) changes single settings of whatever profile runs:

    variables: {swappiness: 1}
    settings:
      memory.swappiness: {severity: warning}
      cpu.governor: {disable: true}
      storage.read_ahead: {min: 8192}
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

from nodetune.errors import ProfileError
from nodetune.facts import paths as factpaths
from nodetune.facts.paths import is_known
from nodetune.facts.record import record
from nodetune.node.resources import data_dir
from nodetune.profiles import tunables
from nodetune.profiles.names import NAME_RULE, is_profile_name
from nodetune.profiles.yamldoc import YamlDoc, load
from nodetune.rules.evaluation import conditions_hold
from nodetune.rules.operators import OPERATORS, describe, satisfied
from nodetune.rules.rule import Condition, Rule
from nodetune.rules.schema import condition_problems, rule_problems
from nodetune.rules.templating import fact_references, variables_used

SECTIONS: dict[str, str] = {  # section -> finding area
    "cpu": "cpu", "numa": "numa-memory", "memory": "numa-memory", "gpu": "gpu",
    "pcie": "pcie-topology", "nic": "nic-rdma", "rdma": "nic-rdma", "storage": "storage",
    "kernel": "kernel",
}
TOP_KEYS = ("summary", "extends", "variables", "replace")
SETTING_KEYS = ("replace", "disable")
# keys of a setting on a tunable, and the rule keys that follow from the tunable instead
TUNABLE_KEYS = ("tunable", "write")
FROM_TUNABLE = ("fact", "persisted", "remediation", "disruption")
# Ansible roles of playbooks/ that `nodetune apply` runs for a setting's remediation.
REMEDIATION_ROLES = ("cpu", "memory", "kernel", "gpu", "nic", "storage", "modules", "services")
OVERRIDE_KEYS = ("severity", "disable", "write", *OPERATORS)
RECOMMEND_FILE = "recommend.yaml"
FIX = "correct the profile (see `nodetune profiles show NAME` and docs/profiles.md)"


@record
class Profile:
    name: str
    summary: str
    path: str
    chain: tuple[str, ...]  # ancestors first, this profile last
    variables: dict[str, Any]
    rules: list[Rule]
    user: bool = False  # from --profiles-dir

    @property
    def extends(self) -> tuple[str, ...]:
        return self.chain[:-1]


@record
class Match:
    profile: str
    reason: str  # why, in words, with the facts that decided it
    automatic: bool = True


# -- merging (pure) ----------------------------------------------------------------------

def merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """The profile `child` over `parent` (both raw profile mappings); the last one wins."""
    if child.get("replace"):
        out = {k: copy.deepcopy(v) for k, v in child.items() if k != "replace"}
        out.pop("extends", None)
        return out
    out = copy.deepcopy(dict(parent))
    out.pop("extends", None)
    for key, value in child.items():
        if key in ("extends", "replace"):
            continue
        if key == "variables":
            out["variables"] = {**(out.get("variables") or {}), **(value or {})}
        elif key in SECTIONS:
            out[key] = merge_section(out.get(key) or {}, value or {})
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_section(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    out = {} if child.get("replace") is True else copy.deepcopy(dict(parent))
    for key, setting in child.items():
        if key == "replace" and isinstance(setting, bool):
            continue
        if not isinstance(setting, Mapping):
            out[key] = copy.deepcopy(setting)
            continue
        if setting.get("disable"):
            out.pop(key, None)
            continue
        if setting.get("replace") or key not in out:
            out[key] = {k: copy.deepcopy(v) for k, v in setting.items() if k != "replace"}
            continue
        merged = dict(out[key])
        if "fact" in setting:  # declared anew as a free-form setting
            merged = {k: v for k, v in merged.items() if k not in TUNABLE_KEYS}
        if "tunable" in setting:  # declared anew on a tunable: the rest follows from it
            merged = {k: v for k, v in merged.items() if k not in (*FROM_TUNABLE, "fix")}
        if any(op in setting for op in OPERATORS):  # a new expectation: a new value to write
            merged = {k: v for k, v in merged.items() if k not in (*OPERATORS, "write")}
        merged.update(copy.deepcopy(dict(setting)))
        out[key] = merged
    return out


# -- finding and reading files -----------------------------------------------------------

class Library:
    """Profiles from user directories (first) and the shipped profiles/ directory."""

    def __init__(self, user_dirs: Sequence[str | Path] = ()) -> None:
        self.user_dirs = [Path(d) for d in user_dirs]
        for d in self.user_dirs:
            if not d.is_dir():
                raise ProfileError(f"--profiles-dir {d} is not a directory",
                                   fix="point --profiles-dir at a directory of <name>.yaml files")
        self.dirs = [*self.user_dirs, data_dir("profiles")]
        self._docs: dict[str, YamlDoc] = {}

    def names(self) -> list[str]:
        found: set[str] = set()
        for d in self.dirs:
            found |= {p.stem for p in d.glob("*.yaml") if p.name != RECOMMEND_FILE}
        return sorted(found)

    def path(self, name: str) -> Path:
        if not is_profile_name(name):
            raise ProfileError(f"{name!r} is not a profile name", fix=NAME_RULE)
        for d in self.dirs:
            candidate = d / f"{name}.yaml"
            if candidate.is_file() and candidate.name != RECOMMEND_FILE:
                return candidate
        raise ProfileError(f"unknown profile {name!r} (known: {', '.join(self.names())})",
                           fix="run `nodetune profiles list`, or add --profiles-dir DIR")

    def is_user(self, name: str) -> bool:
        return self.path(name).parent in self.user_dirs

    def doc(self, name: str) -> YamlDoc:
        if name not in self._docs:
            doc = load(self.path(name), fix=FIX)
            _check_structure(doc)
            self._docs[name] = doc
        return self._docs[name]

    def load(self, name: str, overrides: str | Path | None = None) -> Profile:
        """The profile `name` with inheritance resolved, validated; overrides applied last."""
        raw, origins, chain = self._resolve(name, ())
        if overrides is not None:
            override_doc = load(overrides, fix="correct the overrides file")
            raw, origins = _apply_overrides(raw, origins, override_doc)
        return _build_profile(name, raw, origins, chain, str(self.path(name)),
                              self.is_user(name))

    def _resolve(self, name: str, stack: tuple[str, ...]
                 ) -> tuple[dict[str, Any], dict[tuple[str, str], Origin], tuple[str, ...]]:
        if name in stack:
            cycle = " -> ".join((*stack[stack.index(name):], name))
            child = self.doc(stack[-1])
            raise ProfileError(f"{child.where(('extends',))}: extends: cycle {cycle}", fix=FIX)
        doc = self.doc(name)
        data = doc.data or {}
        parents = data.get("extends") or []
        parents = [parents] if isinstance(parents, str) else list(parents)
        raw: dict[str, Any] = {}
        origins: dict[tuple[str, str], Origin] = {}
        chain: tuple[str, ...] = ()
        for i, parent in enumerate(parents):
            try:
                self.path(parent)
            except ProfileError as exc:
                at = ("extends", str(i)) if isinstance(data.get("extends"), list) else ("extends",)
                raise ProfileError(f"{doc.where(at)}: extends: {exc.message}",
                                   fix=exc.fix) from None
            p_raw, p_origins, p_chain = self._resolve(parent, (*stack, name))
            raw = merge(raw, p_raw)
            origins.update(p_origins)
            chain += tuple(c for c in p_chain if c not in chain)
        if data.get("replace"):
            origins = {}
        merged = merge(raw, data)
        origins = _track(origins, merged, data, doc)
        return merged, origins, (*chain, name)

    def recommend_rules(self) -> list[tuple[YamlDoc, int, dict[str, Any]]]:
        """Match rules from every directory's recommend.yaml, user directories first."""
        out = []
        for d in self.dirs:
            path = d / RECOMMEND_FILE
            if not path.is_file():
                continue
            doc = load(path, fix=FIX)
            rules = (doc.data or {}).get("rules") if isinstance(doc.data, dict) else None
            if not isinstance(rules, list) or set(doc.data) - {"rules"}:
                raise ProfileError(f"{doc.where()}: {RECOMMEND_FILE} must hold only `rules:`, "
                                   "a list of {profile, why, when}", fix=FIX)
            for i, rule in enumerate(rules):
                _check_recommend_rule(doc, i, rule, self)
                out.append((doc, i, rule))
        return out

    def match(self, facts: Mapping[str, Any]) -> Match:
        """The first recommend rule whose conditions all hold for these facts."""
        for _doc, _i, rule in self.recommend_rules():
            conds = [Condition.from_value(c) for c in _as_list(rule.get("when"))]
            ok, notes = conditions_hold(conds, facts)
            if ok:
                because = "; ".join(notes) if notes else "no conditions"
                return Match(profile=rule["profile"], reason=f"{rule.get('why', '')} ({because})"
                             if rule.get("why") else because)
        raise ProfileError("no profile matches this node and recommend.yaml has no catch-all",
                           fix="pass --profile NAME")


# -- validation --------------------------------------------------------------------------

@record(frozen=True)
class Origin:
    """Which file last defined a setting, and the key path of the setting inside it."""

    doc: YamlDoc = field(compare=False)
    prefix: tuple[str, ...]

    def where(self, keys: tuple[str, ...] = ()) -> str:
        return self.doc.where((*self.prefix, *keys))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _fail(doc: YamlDoc, keys: tuple[str, ...], text: str) -> ProfileError:
    return ProfileError(f"{doc.where(keys)}: {'.'.join(keys) or 'profile'}: {text}", fix=FIX)


def _check_structure(doc: YamlDoc) -> None:
    """What one file alone can get wrong: its shape, its keys, the types of its top keys."""
    data = doc.data
    if data is None:
        raise _fail(doc, (), "the file is empty")
    if not isinstance(data, dict):
        raise _fail(doc, (), "a profile must be a mapping of summary, extends, variables "
                             f"and sections ({', '.join(SECTIONS)})")
    for key, value in data.items():
        key = str(key)
        if key not in TOP_KEYS and key not in SECTIONS:
            raise _fail(doc, (key,), f"unknown key {key!r} (allowed: {', '.join(TOP_KEYS)} "
                                     f"and sections {', '.join(SECTIONS)})")
        if key == "summary" and not isinstance(value, str):
            raise _fail(doc, (key,), "summary must be text")
        if key == "replace" and not isinstance(value, bool):
            raise _fail(doc, (key,), "replace must be true or false")
        if key == "extends" and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise _fail(doc, (key,), "extends must be a profile name or a list of names")
        if key == "variables" and not isinstance(value, dict):
            raise _fail(doc, (key,), "variables must be a mapping of name: value")
        if key in SECTIONS:
            _check_section(doc, key, value)


def _check_section(doc: YamlDoc, section: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _fail(doc, (section,), "a section must be a mapping of setting: {fact, ...}")
    for key, setting in value.items():
        key = str(key)
        if key == "replace":
            if not isinstance(setting, bool):
                raise _fail(doc, (section, key), "replace must be true or false")
            continue
        if not isinstance(setting, dict):
            raise _fail(doc, (section, key), "a setting must be a mapping {fact, <operator>, "
                                             "severity, why, fix, ...}")
        for flag in SETTING_KEYS:
            if flag in setting and not isinstance(setting[flag], bool):
                raise _fail(doc, (section, key, flag), f"{flag} must be true or false")
        # keys and types of what this file says; completeness is checked after merging
        for keys, text in rule_problems(setting, need_id=False, need_area=False,
                                        extra_keys=(*SETTING_KEYS, *TUNABLE_KEYS),
                                        partial=True):
            raise _fail(doc, (section, key, *keys), text)


def _track(origins: dict[tuple[str, str], Origin], merged: Mapping[str, Any],
           data: Mapping[str, Any], doc: YamlDoc) -> dict[tuple[str, str], Origin]:
    """Record the file behind each setting key this profile defines; forget dropped ones."""
    out = {k: v for k, v in origins.items()
           if k[0] in merged and isinstance(merged[k[0]], Mapping) and k[1] in merged[k[0]]}
    for section in SECTIONS:
        for key, setting in (data.get(section) or {}).items():
            if isinstance(setting, Mapping) and key in (merged.get(section) or {}):
                out[(section, str(key))] = Origin(doc, (section, str(key)))
    return out


def _apply_overrides(raw: dict[str, Any], origins: dict[tuple[str, str], Origin],
                     doc: YamlDoc) -> tuple[dict[str, Any], dict[tuple[str, str], Origin]]:
    data = doc.data
    fix = "overrides look like {settings: {<setting id>: {severity|disable|<operator>: ...}}}"
    if not isinstance(data, dict) or set(data) - {"settings", "variables"}:
        raise ProfileError(f"{doc.where()}: overrides: {fix}", fix="correct the overrides file")
    if not isinstance(data.get("variables", {}), dict):
        raise ProfileError(f"{doc.where(('variables',))}: variables must be a mapping",
                           fix="correct the overrides file")
    child: dict[str, Any] = {"variables": data.get("variables") or {}}
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ProfileError(f"{doc.where(('settings',))}: settings: {fix}",
                           fix="correct the overrides file")
    for sid, change in settings.items():
        section, _, key = str(sid).partition(".")
        where = doc.where(("settings", str(sid)))
        if key not in (raw.get(section) or {}):
            raise ProfileError(f"{where}: settings.{sid}: no such setting in this profile",
                               fix="see `nodetune profiles show NAME` for the setting ids")
        if not isinstance(change, dict):
            raise ProfileError(f"{where}: settings.{sid}: {fix}", fix="correct the overrides file")
        for name in change:
            if name not in OVERRIDE_KEYS:
                raise ProfileError(f"{doc.where(('settings', str(sid), str(name)))}: "
                                   f"settings.{sid}.{name}: cannot override {name!r} (allowed: "
                                   f"{', '.join(OVERRIDE_KEYS)})", fix="correct the overrides file")
        child.setdefault(section, {})[key] = change
    merged = merge(raw, child)
    origins = dict(origins)
    for sid in settings:
        section, _, key = str(sid).partition(".")
        if key in (merged.get(section) or {}):
            origins[(section, key)] = Origin(doc, ("settings", str(sid)))
    return merged, origins


def _build_profile(name: str, raw: Mapping[str, Any], origins: Mapping[tuple[str, str], Origin],
                   chain: tuple[str, ...], path: str, user: bool) -> Profile:
    variables = dict(raw.get("variables") or {})
    rules: list[Rule] = []
    for section, area in SECTIONS.items():
        for key, setting in (raw.get(section) or {}).items():
            if key == "replace" and isinstance(setting, bool):
                continue
            origin = origins.get((section, key))
            where = origin.where if origin else (lambda keys=(): path)
            body = {k: v for k, v in setting.items() if k not in SETTING_KEYS}
            sid = f"{section}.{key}"
            bound = None
            if "tunable" in body:
                body, bound = _tunable_body(sid, body, variables, where)
            if "fact" not in body:
                raise ProfileError(f"{where()}: {section}.{key}: changes {', '.join(body)} of a "
                                   "setting that no profile it extends defines",
                                   fix="give the setting a fact and an expectation, or fix "
                                       "its name")
            _refuse_problems(sid, rule_problems(body, need_id=False, need_area=False), where)
            if bound is None:
                _check_free_form_remediation(sid, body, variables, where)
            role = (body.get("remediation") or {}).get("role")
            if role is not None and role not in REMEDIATION_ROLES:
                raise ProfileError(f"{where(('remediation', 'role'))}: {section}.{key}."
                                   f"remediation.role: unknown role {role!r} (one of "
                                   f"{', '.join(REMEDIATION_ROLES)})", fix=FIX)
            for ref in fact_references(body):
                if not is_known(ref):
                    raise ProfileError(f"{where(_key_using(body, ref, 'fact:'))}: {section}.{key}: "
                                       f"unknown fact path {ref!r} in ${{fact:...}}", fix=FIX)
            for var in sorted(variables_used(body)):
                if var not in variables:
                    raise ProfileError(f"{where(_key_using(body, var))}: {section}.{key}: "
                                       f"undefined variable ${{{var}}}",
                                       fix="define it under `variables:` in this profile "
                                           "or one it extends")
            rule = Rule.from_dict(body, id=sid, area=body.get("area", area), source=where())
            if bound is not None:
                rule = dataclasses.replace(rule, remedy=bound.remedy, remediation=(
                    None if bound.example is None else bound.remedy.remediation(bound.example)))
            rules.append(rule)
    summary = str(raw.get("summary") or "")
    return Profile(name=name, summary=summary, path=path, chain=chain, variables=variables,
                   rules=rules, user=user)


Where = Callable[..., str]


def _tunable_body(sid: str, body: Mapping[str, Any], variables: Mapping[str, Any],
                  where: Where) -> tuple[dict[str, Any], tunables.Bound]:
    """The rule mapping of a setting on a tunable, and the tunable bound to its expectation;
    refuses a setting whose fix could not satisfy its own expectation."""
    for key in FROM_TUNABLE:
        if key in body:
            raise ProfileError(f"{where((key,))}: {sid}.{key}: follows from the tunable; "
                               "remove it", fix=FIX)
    try:
        tunable = tunables.parse(body["tunable"])
    except tunables.TunableError as exc:
        keys = ("tunable", *exc.keys)
        raise ProfileError(f"{where(keys)}: {sid}.{'.'.join(keys)}: {exc.text}", fix=FIX) from None
    provisional = {k: v for k, v in body.items() if k not in TUNABLE_KEYS}
    _refuse_problems(sid, rule_problems({**provisional, "fact": tunable.fact()}, need_id=False,
                                        need_area=False), where)
    try:
        bound = tunables.bind(tunable, body, variables)
    except tunables.TunableError as exc:
        dotted = "".join("." + k for k in exc.keys)
        raise ProfileError(f"{where(exc.keys)}: {sid}{dotted}: {exc.text}",
                           fix="state a value the tunable can take (equals, one_of, min, max "
                               "or write)") from None
    out = {k: v for k, v in body.items() if k not in (*TUNABLE_KEYS, *OPERATORS)}
    out.update(bound.expect, fact=tunable.fact(), disruption=tunable.disruption.value)
    if tunable.persisted() is not None:
        out["persisted"] = tunable.persisted()
    if bound.example is not None:
        out["fix"] = bound.remedy.fix(bound.example)
    return out, bound


def _refuse_problems(sid: str, problems: Sequence[tuple[tuple[str, ...], str]],
                     where: Where) -> None:
    if problems:
        keys, text = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ProfileError(f"{where(keys)}: {sid}{'.' if keys else ''}{'.'.join(keys)}: "
                           f"{text}{more}", fix=FIX)


def _check_free_form_remediation(sid: str, body: Mapping[str, Any],
                                 variables: Mapping[str, Any], where: Where) -> None:
    """Refuse a remediation that writes, to the very knob the setting checks, a value that
    does not satisfy the setting (a profile, or an override of its expectation)."""
    remediation = body.get("remediation") or {}
    role_vars = remediation.get("vars") if isinstance(remediation, Mapping) else None
    if not isinstance(role_vars, Mapping):
        return
    fact = _list_free(body["fact"])
    expect = {op: body[op] for op in OPERATORS if op in body}
    for tunable, value in tunables.written_by(role_vars):
        if _list_free(tunable.fact()) != fact:
            continue
        for one in tunables.static_expectations(expect, variables):
            if not satisfied(value, one):
                raise ProfileError(
                    f"{where(('remediation',))}: {sid}: the remediation writes {value!r} to "
                    f"{tunable.name}, which does not satisfy {describe(one)}",
                    fix="declare the setting with `tunable:` so the value written follows "
                        "from the expectation, or correct the remediation")


def _list_free(path: str) -> str:
    """A fact path with every list step written `[*]` (selectors dropped)."""
    return factpaths.canonical(factpaths.parse(path))


def _key_using(body: Mapping[str, Any], name: str, prefix: str = "") -> tuple[str, ...]:
    """The first key of a setting whose value mentions ${<prefix><name>}."""
    for key, value in body.items():
        if "${" + prefix + name + "}" in str(value):
            return (str(key),)
    return ()


def _check_recommend_rule(doc: YamlDoc, i: int, rule: Any, library: Library) -> None:
    keys = ("rules", str(i))
    if not isinstance(rule, dict) or "profile" not in rule:
        raise _fail(doc, keys, "a rule is a mapping {profile, why, when}")
    for key in rule:
        if key not in ("profile", "why", "when"):
            raise _fail(doc, (*keys, str(key)),
                        f"unknown key {key!r} (allowed: profile, why, when)")
    try:
        library.path(str(rule["profile"]))
    except ProfileError as exc:
        raise _fail(doc, (*keys, "profile"), exc.message) from None
    for j, cond in enumerate(_as_list(rule.get("when"))):
        problems = condition_problems(cond)
        if problems:
            sub, text = problems[0]
            raise _fail(doc, (*keys, "when", str(j), *sub), text)


def load_all(library: Library) -> list[Profile]:
    return [library.load(name) for name in library.names()]


def describe_rules(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    """Settings as plain data (for `profiles show --json`)."""
    out = []
    for r in rules:
        out.append({
            "id": r.id, "area": r.area, "fact": r.fact, "expectation": dict(r.expect),
            "expected": describe(r.expect), "severity": r.severity.value,
            "when": [{"fact": c.fact, **c.expect, **({"reason": c.reason} if c.reason else {})}
                     for c in r.when],
            "or": [{"fact": c.fact, **c.expect} for c in r.alternatives],
            "why": r.why, "fix": r.fix, "remediation": r.remediation,
            "disruption": r.disruption.value,
            "persisted": r.persisted.fact if r.persisted else None, "source": r.source,
            "tunable": r.remedy.name if r.remedy else None,
        })
    return out

