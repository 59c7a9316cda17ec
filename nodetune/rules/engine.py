"""The rule engine: evaluate profile settings and health checks against facts -> Findings.

One engine serves `nodetune audit` (profile settings: how a node should be configured) and
`nodetune check` (health checks: the node is not broken). Both are `Rule`s; both yield the same
`nodetune.facts.model.Finding`.

A rule, as written in YAML (profiles/*.yaml, checks/*.yaml) or built with `Rule.from_dict`:

    id: memory.numa_balancing          # stable id (profiles: "<section>.<key>")
    area: numa-memory                  # cpu numa-memory gpu pcie-topology nic-rdma storage kernel
    fact: numa.balancing               # fact path (see below)
    equals: 0                          # one or more operators, all must hold
    when:                              # optional: the rule applies only if these hold
      - {fact: derived.numa.node_count, min: 2, reason: "one NUMA node: nothing to balance"}
    or:                                # optional: the rule also passes if any of these holds
      - {fact: services.units.nvidia-persistenced.state, equals: running}
    severity: warning                  # critical | warning | info
    why: "[T1] page migration stalls GPU feeders"   # impact, citing its source
    fix: "sysctl -w kernel.numa_balancing=0"
    remediation: {role: kernel, task: sysctl, vars: {kernel_sysctl: {kernel.numa_balancing: "0"}}}
    disruption: none                   # none | service-restart | reboot | kubelet-state-reset
    persisted: kernel.persisted.sysctl.kernel.numa_balancing.value   # three-state settings
    message: "..."                     # optional one-line template for failures

Fact paths (`nodetune.facts.paths`): dotted paths into the facts document plus `derived.*`
(`derive(facts)`, added automatically when a rule needs it). `gpus[*].x` evaluates per item, each
item a subject named from the item: GPU3, NUMA1, mlx5_0, mlx5_0/port1, nvme0n1, eth0, a PCI
address. `[kind=nic|infiniband,vendor=0x15b3]` selects items; `[0]` one item. Keys containing
dots resolve by longest match: `kernel.sysctl.vm.swappiness`.

Operators: `equals`, `min`, `max`, `one_of`, `not_one_of`, `regex` (re.search), `present`,
`absent` (true/false), `contains`, `not_contains` (a value or a list: all of / none of).
Numbers compare numerically also when the fact is a string ("0" equals 0); booleans accept
"1/0/yes/no/on/off/true/false". An operand may be:
- a literal; `${var}` (a variable; a whole-string reference keeps the variable's type);
- `{fact: PATH}`: another fact, taken from the same item when PATH shares the rule's `[*]`;
- `{per_subject: {GPU0: 0, GPU4: 1, ...}}`: a documented value per subject (a subject not
  listed is skipped).
`fix`, `message` and remediation vars may also use `${subject}`, `${actual}` and `${fact:PATH}`.

Conditions (`when`, `or`, `persisted` in mapping form) use the same operators on other facts. A
condition path whose `[*]` matches the rule's binds to the same item; otherwise it holds when any
item satisfies it.

Outcomes (`nodetune.facts.model.Status`): PASS; FAIL; UNKNOWN when the fact (or a condition's fact)
is null or missing, with the reason the collector recorded in its section's `unknown` map (or why
the collector failed); SKIPPED when a `when` condition is false or the rule has no subjects on this
node (no GPUs), with the reason.

Three states: when `persisted` names where the setting is persisted (sysctl.d, modprobe.d, the
boot command line), the Finding carries the persisted value; a failure whose fix is already
persisted but needs a reboot to take effect has `needs_reboot`.

API: `evaluate(rules, facts, variables=None) -> list[Finding]`; `derive(facts)`;
`Rule.from_dict(mapping, source=)`; `rule_problems(mapping)` (validation, for loaders);
`conditions_hold(conditions, facts)` (profile matching); `resolve(doc, path)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nodetune.errors import ProfileError
from nodetune.facts import paths as factpaths
from nodetune.facts.derived import derive
from nodetune.facts.model import Disruption, Finding, Severity, Status

__all__ = ["AREAS", "OPERATORS", "Condition", "Item", "Rule", "condition_problems",
           "conditions_hold", "derive", "describe", "evaluate", "format_value", "resolve",
           "rule_problems"]

OPERATORS = ("equals", "min", "max", "one_of", "not_one_of", "regex", "present", "absent",
             "contains", "not_contains")
AREAS = ("cpu", "numa-memory", "gpu", "pcie-topology", "nic-rdma", "storage", "kernel")
RULE_KEYS = frozenset({"id", "area", "fact", "when", "or", "severity", "why", "fix", "message",
                       "remediation", "disruption", "persisted", "fault_code", "action",
                       *OPERATORS})
CONDITION_KEYS = frozenset({"fact", "reason", *OPERATORS})
BUILTIN_VARS = ("subject", "actual")

_VAR = re.compile(r"\$\{([^}]+)\}")
_TRUE = {"1", "y", "yes", "on", "true", "enabled"}
_FALSE = {"0", "n", "no", "off", "false", "disabled"}


# -- rules -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    """`fact` must satisfy every operator in `expect`; `reason` says why a rule is skipped."""

    fact: str
    expect: Mapping[str, Any]
    reason: str = ""

    @classmethod
    def from_value(cls, data: Any) -> Condition:
        if isinstance(data, str):
            return cls(fact=data, expect={"present": True})
        return cls(fact=data["fact"], expect={k: v for k, v in data.items() if k in OPERATORS},
                   reason=str(data.get("reason") or ""))


@dataclass(frozen=True, kw_only=True)
class Rule:
    id: str
    area: str
    fact: str
    expect: Mapping[str, Any]
    severity: Severity = Severity.WARNING
    why: str = ""
    fix: str = ""
    message: str = ""
    when: tuple[Condition, ...] = ()
    alternatives: tuple[Condition, ...] = ()  # YAML key `or`
    persisted: Condition | None = None
    remediation: Mapping[str, Any] | None = None
    disruption: Disruption = Disruption.NONE
    fault_code: str | None = None
    action: str | None = None
    source: str = ""  # "profiles/base.yaml:12", for errors

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, id: str | None = None,
                  area: str | None = None, source: str = "") -> Rule:
        """Build a rule from its YAML mapping; raise ProfileError naming the first problem."""
        problems = rule_problems(data, need_id=id is None, need_area=area is None)
        if problems:
            keys, text = problems[0]
            where = f"{source}: " if source else ""
            raise ProfileError(f"{where}{'.'.join(keys) or 'rule'}: {text}",
                               fix="see the rule format in nodetune/rules/engine.py")
        persisted = data.get("persisted")
        return cls(
            id=str(id if id is not None else data["id"]),
            area=str(area if area is not None else data["area"]),
            fact=data["fact"],
            expect={k: data[k] for k in OPERATORS if k in data},
            severity=Severity(data.get("severity", "warning")),
            why=str(data.get("why") or "").strip(),
            fix=str(data.get("fix") or "").strip(),
            message=str(data.get("message") or ""),
            when=tuple(Condition.from_value(c) for c in _as_list(data.get("when"))),
            alternatives=tuple(Condition.from_value(c) for c in _as_list(data.get("or"))),
            persisted=None if persisted is None else (
                Condition(fact=persisted, expect={}) if isinstance(persisted, str)
                else Condition.from_value(persisted)),
            remediation=data.get("remediation"),
            disruption=Disruption(data.get("disruption", "none")),
            fault_code=data.get("fault_code"),
            action=data.get("action"),
            source=source,
        )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# -- validation --------------------------------------------------------------------------

Problem = tuple[tuple[str, ...], str]  # (key path inside the rule, what is wrong)


def rule_problems(data: Any, *, need_id: bool = True, need_area: bool = True,
                  extra_keys: Iterable[str] = (), partial: bool = False) -> list[Problem]:
    """Everything wrong with a rule mapping, each with the key path it concerns.

    `partial`: the mapping changes an inherited rule, so it may lack `fact` and operators.
    """
    if not isinstance(data, Mapping):
        return [((), f"a rule must be a mapping, not {_type_name(data)}")]
    problems: list[Problem] = []
    allowed = RULE_KEYS | set(extra_keys)
    for key in data:
        if key not in allowed:
            problems.append(((str(key),), f"unknown key {key!r} "
                                          f"(allowed: {', '.join(sorted(allowed))})"))
    for key, needed in (("id", need_id), ("area", need_area)):
        if needed and key not in data:
            problems.append(((key,), f"missing {key!r}"))
    if "area" in data and data["area"] not in AREAS:
        problems.append((("area",), f"unknown area {data['area']!r} (one of {', '.join(AREAS)})"))
    if "fact" in data:
        problems += _fact_problems(("fact",), data["fact"])
    elif not partial:
        problems.append((("fact",), "missing 'fact'"))
    ops = [k for k in OPERATORS if k in data]
    if not ops and not partial:
        problems.append(((), f"no expectation: give one of {', '.join(OPERATORS)}"))
    ftype = factpaths.fact_type(data["fact"]) if isinstance(data.get("fact"), str) else None
    for op in ops:
        problems += _operand_problems((op,), op, data[op], ftype)
    for key in ("when", "or"):
        for i, cond in enumerate(_as_list(data.get(key))):
            problems += _condition_problems((key, str(i)), cond)
    if "persisted" in data:
        persisted = data["persisted"]
        if isinstance(persisted, str):
            problems += _fact_problems(("persisted",), persisted)
        else:
            problems += _condition_problems(("persisted",), persisted, need_op=False)
    for key, enum in (("severity", Severity), ("disruption", Disruption)):
        if key in data and data[key] not in {e.value for e in enum}:
            problems.append(((key,), f"{key} must be one of {', '.join(e.value for e in enum)}, "
                                     f"not {data[key]!r}"))
    for key in ("why", "fix", "message", "id"):
        if key in data and not isinstance(data[key], str):
            problems.append(((key,), f"{key} must be text, not {_type_name(data[key])}"))
    if "remediation" in data:
        problems += _remediation_problems(data["remediation"])
    return problems


def _fact_problems(keys: tuple[str, ...], path: Any) -> list[Problem]:
    if not isinstance(path, str):
        return [(keys, f"fact must be a path string, not {_type_name(path)}")]
    try:
        factpaths.parse(path)
    except factpaths.PathSyntaxError as exc:
        return [(keys, str(exc))]
    if not factpaths.is_known(path):
        return [(keys, f"unknown fact path {path!r} (not in the facts contract; see "
                       f"`nodetune facts --json` and nodetune/facts/paths.py)")]
    return []


def _operand_problems(keys: tuple[str, ...], op: str, value: Any,
                      ftype: str | None) -> list[Problem]:
    if isinstance(value, str) and _VAR.fullmatch(value.strip()):
        return []  # a variable: checked against the profile's variables by the loader
    if isinstance(value, Mapping):
        if set(value) == {"fact"}:
            return _fact_problems((*keys, "fact"), value["fact"])
        if set(value) == {"per_subject"} and isinstance(value["per_subject"], Mapping):
            out: list[Problem] = []
            for subject, item in value["per_subject"].items():
                out += _operand_problems((*keys, "per_subject", str(subject)), op, item, ftype)
            return out
        return [(keys, f"{op} takes a value, {{fact: PATH}} or {{per_subject: {{...}}}}, not a "
                       f"mapping with {', '.join(map(str, value))}")]
    if op in ("min", "max"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [(keys, f"{op} needs a number, not {_type_name(value)} {value!r}")]
        if ftype is not None and ftype not in factpaths.NUMERIC_TYPES:
            return [(keys, f"{op} compares numbers but the fact is a {ftype}")]
    if op in ("one_of", "not_one_of") and not isinstance(value, list):
        return [(keys, f"{op} needs a list, not {_type_name(value)}")]
    if op in ("present", "absent") and not isinstance(value, bool):
        return [(keys, f"{op} needs true or false, not {value!r}")]
    if op == "regex":
        if not isinstance(value, str):
            return [(keys, f"regex needs a string, not {_type_name(value)}")]
        if "${" not in value:
            try:
                re.compile(value)
            except re.error as exc:
                return [(keys, f"bad regex {value!r}: {exc}")]
    if op in ("contains", "not_contains") and ftype is not None and ftype not in (
            "list", "str", "dict", "any"):
        return [(keys, f"{op} needs a list, text or mapping fact, but the fact is a {ftype}")]
    if op in ("contains", "not_contains") and isinstance(value, (dict, set)):
        return [(keys, f"{op} needs a value or a list, not {_type_name(value)}")]
    return []


def _condition_problems(keys: tuple[str, ...], cond: Any, need_op: bool = True) -> list[Problem]:
    if isinstance(cond, str):
        return _fact_problems(keys, cond)
    if not isinstance(cond, Mapping):
        return [(keys, f"a condition must be a mapping {{fact: PATH, <operator>: VALUE}}, "
                       f"not {_type_name(cond)}")]
    out: list[Problem] = []
    for key in cond:
        if key not in CONDITION_KEYS:
            out.append(((*keys, str(key)), f"unknown key {key!r} in a condition "
                                           f"(allowed: fact, reason, {', '.join(OPERATORS)})"))
    if "fact" not in cond:
        out.append((keys, "condition without 'fact'"))
        return out
    out += _fact_problems((*keys, "fact"), cond["fact"])
    ftype = factpaths.fact_type(cond["fact"]) if isinstance(cond["fact"], str) else None
    ops = [k for k in OPERATORS if k in cond]
    if need_op and not ops:
        out.append((keys, f"condition on {cond['fact']} has no operator"))
    for op in ops:
        out += _operand_problems((*keys, op), op, cond[op], ftype)
    return out


def condition_problems(cond: Any) -> list[Problem]:
    """Everything wrong with one condition mapping {fact, <operator>: value, reason}."""
    return _condition_problems((), cond)


def _remediation_problems(rem: Any) -> list[Problem]:
    if rem is None:
        return []
    if not isinstance(rem, Mapping):
        return [(("remediation",), f"remediation must be a mapping {{role, task, vars}}, "
                                   f"not {_type_name(rem)}")]
    out: list[Problem] = []
    for key in rem:
        if key not in ("role", "task", "vars"):
            out.append((("remediation", str(key)), f"unknown key {key!r} in remediation "
                                                   "(allowed: role, task, vars)"))
    if not isinstance(rem.get("role"), str):
        out.append((("remediation", "role"), "remediation needs a role name"))
    if "vars" in rem and not isinstance(rem["vars"], Mapping):
        out.append((("remediation", "vars"),
                    f"vars must be a mapping, not {_type_name(rem['vars'])}"))
    return out


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def _references(value: Any) -> list[str]:
    """Every `${...}` reference anywhere inside value (keys included)."""
    if isinstance(value, str):
        return _VAR.findall(value)
    if isinstance(value, Mapping):
        return [r for k, v in value.items() for r in (*_references(k), *_references(v))]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _references(v)]
    return []


def fact_references(value: Any) -> set[str]:
    """Fact paths named by `${fact:PATH}` anywhere inside value."""
    return {r[5:].strip() for r in _references(value) if r.startswith("fact:")}


def variables_used(value: Any) -> set[str]:
    """Names of `${...}` variables referenced anywhere inside value (built-ins excluded)."""
    return {r for r in _references(value) if r not in BUILTIN_VARS and not r.startswith("fact:")}


# -- resolving fact paths ----------------------------------------------------------------

@dataclass
class Item:
    """One value a fact path resolved to: the subject it belongs to and why it is unknown."""

    subject: str | None
    value: Any
    reason: str | None = None  # why the value is null/missing, when it is
    bindings: dict[str, int] = field(default_factory=dict)  # "gpus[*]" -> list index
    path: str = ""  # the concrete path, e.g. "gpus.3.pcie.current_width"
    absent: bool = False  # a key the node's mapping does not have: "not set", not unknown


_SUBJECT_KEYS = {"gpus": ("GPU", "index"), "nodes": ("NUMA", "id"), "numa_nodes": ("NUMA", "id"),
                 "cpus": ("CPU", "id"), "links": ("link", "link"), "ports": ("port", "port")}
_SECTION_ALIASES = {"gpus": "gpu"}


def subject_of(list_key: str, item: Any, index: int) -> str:
    """How an item of the list `list_key` is named in findings."""
    if isinstance(item, Mapping):
        if list_key in _SUBJECT_KEYS:
            prefix, key = _SUBJECT_KEYS[list_key]
            if item.get(key) is not None:
                return f"{prefix}{item[key]}"
        if list_key == "hugepages" and item.get("size_kb") is not None:
            return f"{item['size_kb']}kB"
        for key in ("subject", "name", "address", "pci_address", "mountpoint", "id", "index"):
            if item.get(key) is not None:
                return str(item[key])
    return f"{list_key}[{index}]"


def resolve(doc: Mapping[str, Any], path: str,
            bindings: Mapping[str, int] | None = None) -> list[Item]:
    """Every value `path` names in `doc`: one Item, or one per list item for `[*]` paths.

    A `[*]` over an empty list gives no items, unless the collector said why the list is
    empty (then one unknown Item); a missing container gives one Item with a null value and
    the recorded reason.
    """
    walker = _Walker(doc, factpaths.parse(path), dict(bindings or {}))
    walker.walk(doc, 0, _Trail())
    return walker.out


@dataclass(frozen=True)
class _Trail:
    """Where the walk is: concrete parts ("nodes", "0"), the same with item names
    ("interfaces", "eth0") for collectors that key reasons by name, subjects, bindings, and
    the `unknown` maps passed on the way (with the depth each is relative to)."""

    parts: tuple[str, ...] = ()
    named: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    bindings: tuple[tuple[str, int], ...] = ()
    contexts: tuple[tuple[Mapping[str, Any], int], ...] = ()
    absent: bool = False

    def down(self, key: str, name: str | None = None, subject: str | None = None,
             binding: tuple[str, int] | None = None) -> _Trail:
        return replace(self, parts=(*self.parts, key), named=(*self.named, name or key),
                       subjects=self.subjects + ((subject,) if subject else ()),
                       bindings=self.bindings + ((binding,) if binding else ()))

    def with_context(self, unknown: Mapping[str, Any], depth: int) -> _Trail:
        return replace(self, contexts=(*self.contexts, (unknown, depth)))


class _Walker:
    def __init__(self, doc: Mapping[str, Any], tokens: tuple[factpaths.Token, ...],
                 bindings: dict[str, int]) -> None:
        self.doc, self.tokens, self.bindings = doc, tokens, bindings
        self.out: list[Item] = []

    def walk(self, obj: Any, i: int, trail: _Trail) -> None:
        if isinstance(obj, Mapping) and isinstance(obj.get("unknown"), Mapping):
            trail = trail.with_context(obj["unknown"], len(trail.parts))
        if i == len(self.tokens):
            self.emit(obj, trail)
            return
        tok = self.tokens[i]
        if obj is None and any(t.key is None for t in self.tokens[i:]):
            reason = _why_unknown(self.doc, trail)
            if reason:  # a list we cannot see into; with no reason, there are no items
                self.out.append(Item(subject="/".join(trail.subjects) or None, value=None,
                                     reason=reason, bindings=dict(trail.bindings),
                                     path=".".join(trail.parts)))
            return
        if tok.key is not None:
            self.walk_key(obj, i, trail)
        elif isinstance(obj, list):
            self.walk_list(obj, i, trail)
        else:
            self.emit(None, trail)

    def walk_key(self, obj: Any, i: int, trail: _Trail) -> None:
        key0 = self.tokens[i].key or ""
        if isinstance(obj, list) and key0.isdigit():
            idx = int(key0)
            self.walk(obj[idx] if idx < len(obj) else None, i + 1, trail.down(key0))
            return
        if not isinstance(obj, Mapping):
            self.emit(None, trail)
            return
        end = i
        while end < len(self.tokens) and self.tokens[end].key is not None:
            end += 1
        for stop in range(end, i, -1):  # longest dotted key first
            key = ".".join(t.key for t in self.tokens[i:stop] if t.key is not None)
            if key in obj:
                if not trail.parts and key in _SECTION_ALIASES:
                    section = self.doc.get(_SECTION_ALIASES[key])
                    if isinstance(section, Mapping) and isinstance(section.get("unknown"), Mapping):
                        trail = trail.with_context(section["unknown"], 0)
                self.walk(obj[key], stop, trail.down(key))
                return
        self.walk(None, i + 1, replace(trail.down(key0), absent=bool(trail.parts)))

    def walk_list(self, obj: list[Any], i: int, trail: _Trail) -> None:
        tok = self.tokens[i]
        canon = factpaths.canonical(self.tokens[:i + 1])
        list_key = trail.parts[-1] if trail.parts else ""
        if tok.index is not None:
            indices: Iterable[int] = [tok.index] if tok.index < len(obj) else []
        elif canon in self.bindings:
            indices = [self.bindings[canon]] if self.bindings[canon] < len(obj) else []
        else:
            indices = range(len(obj))
        if not obj:
            reason = _why_unknown(self.doc, trail, exact=True)
            if reason:  # an empty list the collector could not fill
                self.out.append(Item(subject=None, value=None, reason=reason,
                                     path=".".join(trail.parts)))
            return
        for idx in indices:
            item = obj[idx]
            if tok.filters and not _selected(item, tok.filters):
                continue
            name = item.get("name") if isinstance(item, Mapping) else None
            self.walk(item, i + 1, trail.down(str(idx), str(name) if name else None,
                                              subject_of(list_key, item, idx), (canon, idx)))

    def emit(self, value: Any, trail: _Trail) -> None:
        reason = None
        if value is None or value == "unknown" or value == [] or value == {}:
            reason = _why_unknown(self.doc, trail, exact=value is not None)
            if value == "unknown":
                value, reason = None, reason or "reported as unknown"
            elif reason is not None:
                value = None  # an empty value the collector says it could not read
        self.out.append(Item(subject="/".join(trail.subjects) or None, value=value,
                             reason=reason, bindings=dict(trail.bindings),
                             path=".".join(trail.parts),
                             absent=value is None and reason is None and trail.absent))


def _selected(item: Any, filters: tuple[tuple[str, tuple[str, ...]], ...]) -> bool:
    if not isinstance(item, Mapping):
        return False
    return all(_text(item.get(key)) in values for key, values in filters)


def _why_unknown(doc: Mapping[str, Any], trail: _Trail, exact: bool = False) -> str | None:
    """The reason a collector recorded for this path (or, unless `exact`, a parent of it)."""
    for unknown, start in reversed(trail.contexts):
        named = trail.named[start:]
        variants = {trail.parts[start:], named,
                    tuple("*" if p.isdigit() else p for p in trail.parts[start:]),
                    tuple(p for p in named if not p.isdigit())}  # "devices.mlx5_0.ports.x"
        for rel in variants:
            for k in range(len(rel), 0 if not exact else len(rel) - 1, -1):
                key = ".".join(rel[:k])
                if key in unknown:
                    return str(unknown[key])
    if exact or not trail.parts:
        return None
    head = trail.parts[0].split(".")[0]
    section = _SECTION_ALIASES.get(head, head)
    if head not in doc or doc.get(head) is None:
        status = (doc.get("collectors") or {}).get(section)
        if isinstance(status, Mapping) and status.get("no_data"):
            return None  # the subsystem is absent: nothing to report, nothing unknown
        if isinstance(status, Mapping) and status.get("error"):
            return f"{section} collector: {status['error']}"
        if section != "derived":
            return f"the {section} collector did not report"
    return None


# -- operators ---------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return " ".join(str(value).split()) if value is not None else ""


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        a = actual if isinstance(actual, bool) else _truth(actual)
        e = expected if isinstance(expected, bool) else _truth(expected)
        return a is not None and a == e
    na, ne = _number(actual), _number(expected)
    if na is not None and ne is not None and (
            not isinstance(actual, str) or not isinstance(expected, str)):
        return na == ne
    if isinstance(expected, (list, dict)) or isinstance(actual, (list, dict)):
        return bool(actual == expected)
    return _text(actual) == _text(expected)


def _truth(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _contains(actual: Any, needle: Any) -> bool:
    if isinstance(actual, str):
        return _text(needle) in actual
    if isinstance(actual, Mapping):
        return _text(needle) in {_text(k) for k in actual}
    if isinstance(actual, (list, tuple)):
        return any(_equal(a, needle) for a in actual)
    return False


def check(op: str, actual: Any, expected: Any) -> bool:
    """Whether `actual` satisfies `op expected` (actual is never None here except for
    present/absent)."""
    if op == "present":
        return (actual is not None) == bool(expected)
    if op == "absent":
        return (actual is None) == bool(expected)
    if op == "equals":
        return _equal(actual, expected)
    if op in ("min", "max"):
        na, ne = _number(actual), _number(expected)
        if na is None or ne is None:
            return False
        return na >= ne if op == "min" else na <= ne
    if op == "one_of":
        return any(_equal(actual, e) for e in expected)
    if op == "not_one_of":
        return not any(_equal(actual, e) for e in expected)
    if op == "regex":
        text = " ".join(map(_text, actual)) if isinstance(actual, list) else _text(actual)
        return re.search(str(expected), text) is not None
    if op == "contains":
        return all(_contains(actual, n) for n in _as_list(expected))
    if op == "not_contains":
        return not any(_contains(actual, n) for n in _as_list(expected))
    raise ValueError(f"unknown operator {op!r}")


def format_value(value: Any) -> str:
    """A fact value as people read it."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value) if value else "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) if value else "none"
    text = str(value)
    return text if text else '""'


_OP_TEXT = {"min": ">= {}", "max": "<= {}", "one_of": "one of {}", "not_one_of": "not {}",
            "regex": "matches /{}/", "contains": "includes {}", "not_contains": "excludes {}",
            "equals": "{}"}


def describe(expect: Mapping[str, Any]) -> str:
    """An expectation as people read it: ">= 4096", "one of none, noop", "present"."""
    parts = []
    for op, value in expect.items():
        if op in ("present", "absent"):
            parts.append(op if value else ("absent" if op == "present" else "present"))
        elif op == "not_one_of" and isinstance(value, list) and len(value) == 1:
            parts.append(f"not {format_value(value[0])}")
        else:
            parts.append(_OP_TEXT[op].format(format_value(value) if op != "regex" else value))
    return " and ".join(parts)


# -- evaluation --------------------------------------------------------------------------

@dataclass
class _Ctx:
    doc: Mapping[str, Any]
    variables: Mapping[str, Any]
    rule: Rule
    subject: str | None = None
    bindings: Mapping[str, int] = field(default_factory=dict)
    actual: Any = None


def _lookup(name: str, ctx: _Ctx) -> Any:
    if name == "subject":
        return ctx.subject
    if name == "actual":
        return ctx.actual
    if name.startswith("fact:"):
        items = resolve(ctx.doc, name[5:].strip(), ctx.bindings)
        return items[0].value if items else None
    if name in ctx.variables:
        return ctx.variables[name]
    raise ProfileError(f"{ctx.rule.source or ctx.rule.id}: undefined variable ${{{name}}} in "
                       f"setting {ctx.rule.id}", fix="define it under `variables:`")


def substitute(value: Any, ctx: _Ctx) -> Any:
    """Replace `${...}` references; a string that is only a reference keeps the value's type."""
    if isinstance(value, str):
        whole = _VAR.fullmatch(value.strip())
        if whole:
            return _lookup(whole.group(1), ctx)
        if "${" not in value:
            return value
        return _VAR.sub(lambda m: format_value(_lookup(m.group(1), ctx)), value)
    if isinstance(value, Mapping):
        return {_VAR.sub(lambda m: format_value(_lookup(m.group(1), ctx)), k)
                if isinstance(k, str) else k: substitute(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, ctx) for v in value]
    return value


class _NoOperand(Exception):
    """The operand has no value for this subject (a per_subject map without it)."""


def _operand(value: Any, ctx: _Ctx) -> Any:
    value = substitute(value, ctx)
    if isinstance(value, Mapping):
        if set(value) == {"fact"}:
            items = resolve(ctx.doc, value["fact"], ctx.bindings)
            if not items or items[0].value is None:
                raise _NoOperand(f"{value['fact']} unknown" + (
                    f" ({items[0].reason})" if items and items[0].reason else ""))
            return items[0].value
        if set(value) == {"per_subject"}:
            table = value["per_subject"]
            if ctx.subject not in table:
                raise _NoOperand(f"no documented value for {ctx.subject}")
            return _operand(table[ctx.subject], ctx)
    return value


def _expectation(expect: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    return {op: _operand(v, ctx) for op, v in expect.items()}


def _satisfied(value: Any, expect: Mapping[str, Any]) -> bool:
    presence = {"present", "absent"}
    if value is None and not set(expect) <= presence:
        return False
    return all(check(op, value, v) for op, v in expect.items())


def _condition(cond: Condition, ctx: _Ctx) -> tuple[bool | None, str]:
    """(True/False, explanation), or (None, why unknown) when its fact is unknown.

    A condition over several items (not bound to the rule's item) holds if any item holds.
    A presence-only condition (`present`/`absent`) is never unknown: a fact the node could not
    report counts as absent.
    """
    expect = _expectation(cond.expect, ctx)
    items = resolve(ctx.doc, cond.fact, ctx.bindings)
    presence_only = set(expect) <= {"present", "absent"}
    unknown = None
    for item in items:
        if item.value is None and not presence_only and not item.absent:
            unknown = unknown or item.reason or f"{cond.fact} unknown"
            continue
        # a presence guard treats an unreadable fact as absent: "if the node reports X"
        if _satisfied(item.value, expect):
            return True, f"{cond.fact} = {format_value(item.value)}"
    if not items and not presence_only:
        return False, f"no {cond.fact}"
    if not items:
        return _satisfied(None, expect), f"{cond.fact} absent"
    if unknown is not None:
        return None, f"{cond.fact} unknown ({unknown})"
    shown = format_value(items[0].value) if len(items) == 1 else "no item matches"
    return False, f"{cond.fact} is {shown}, not {describe(expect)}"


def conditions_hold(conditions: Sequence[Condition], facts: Mapping[str, Any],
                    variables: Mapping[str, Any] | None = None) -> tuple[bool, list[str]]:
    """Whether every condition holds (unknown counts as not holding), with explanations."""
    doc = _with_derived(facts, [c.fact for c in conditions])
    rule = Rule(id="match", area="kernel", fact="cpu.architecture", expect={})
    ctx = _Ctx(doc=doc, variables=variables or {}, rule=rule)
    notes = []
    for cond in conditions:
        ok, note = _condition(cond, ctx)
        notes.append(note)
        if not ok:
            return False, notes
    return True, notes


def _bound(cond_fact: str, rule_fact: str) -> bool:
    """Whether a condition's `[*]` shares a list with the rule's fact (evaluated per item)."""
    mine = _wild_prefixes(rule_fact)
    return any(p in mine for p in _wild_prefixes(cond_fact))


def _wild_prefixes(path: str) -> set[str]:
    tokens = factpaths.parse(path)
    return {factpaths.canonical(tokens[:i + 1]) for i, t in enumerate(tokens)
            if t.key is None and t.index is None}


def _with_derived(facts: Mapping[str, Any], paths: Iterable[str]) -> Mapping[str, Any]:
    if "derived" in facts or not any(p.startswith("derived") for p in paths):
        return facts
    return {**facts, "derived": derive(dict(facts))}


def _rule_paths(rule: Rule) -> list[str]:
    paths = [rule.fact, *(c.fact for c in rule.when), *(c.fact for c in rule.alternatives)]
    if rule.persisted:
        paths.append(rule.persisted.fact)
    for value in rule.expect.values():
        if isinstance(value, Mapping) and "fact" in value:
            paths.append(str(value["fact"]))
    return paths


def evaluate(rules: Iterable[Rule], facts: Mapping[str, Any],
             variables: Mapping[str, Any] | None = None) -> list[Finding]:
    """Evaluate rules against a facts document; `derived` is added when a rule needs it."""
    rules = list(rules)
    doc = _with_derived(facts, [p for r in rules for p in _rule_paths(r)])
    out: list[Finding] = []
    for rule in rules:
        out.extend(_evaluate_rule(rule, doc, variables or {}))
    return out


def _evaluate_rule(rule: Rule, doc: Mapping[str, Any],
                   variables: Mapping[str, Any]) -> list[Finding]:
    base = _Ctx(doc=doc, variables=variables, rule=rule)
    node_conds = [c for c in rule.when if not _bound(c.fact, rule.fact)]
    item_conds = [c for c in rule.when if _bound(c.fact, rule.fact)]
    for cond in node_conds:
        ok, note = _condition(cond, base)
        if ok is None:
            return [_finding(rule, base, Status.UNKNOWN, None, None,
                             message=f"cannot tell whether this applies: {note}")]
        if not ok:
            return [_finding(rule, base, Status.SKIPPED, None, None,
                             message=cond.reason or f"does not apply: {note}")]
    items = resolve(doc, rule.fact)
    if not items:
        return [_finding(rule, base, Status.SKIPPED, None, None,
                         message=f"nothing to check: no {_list_name(rule.fact)} on this node")]
    return [_evaluate_item(rule, base, item, item_conds) for item in items]


def _list_name(path: str) -> str:
    """The list a per-item path walks, as written: "gpus", "storage.block[kind=nvme]"."""
    out = ""
    for tok in factpaths.parse(path):
        if tok.key is None:
            return out + (tok.text() if tok.filters else "")
        out += ("." if out else "") + tok.key
    return out


def _evaluate_item(rule: Rule, base: _Ctx, item: Item, item_conds: list[Condition]) -> Finding:
    ctx = _Ctx(doc=base.doc, variables=base.variables, rule=rule, subject=item.subject,
               bindings=item.bindings, actual=item.value)
    for cond in item_conds:
        ok, note = _condition(cond, ctx)
        if ok is None:
            return _finding(rule, ctx, Status.UNKNOWN, item, None,
                            message=f"cannot tell whether this applies: {note}")
        if not ok:
            return _finding(rule, ctx, Status.SKIPPED, item, None,
                            message=cond.reason or f"does not apply: {note}")
    try:
        expect = _expectation(rule.expect, ctx)
    except _NoOperand as exc:
        return _finding(rule, ctx, Status.SKIPPED, item, None, message=str(exc))
    presence_only = set(expect) <= {"present", "absent"}
    if item.value is None and (not presence_only or item.reason) and not item.absent:
        status = Status.UNKNOWN
    else:
        status = Status.PASS if _satisfied(item.value, expect) else Status.FAIL
    note = ""
    if status is not Status.PASS:
        for alt in rule.alternatives:
            ok, alt_note = _condition(alt, ctx)
            if ok:
                status, note = Status.PASS, f"satisfied by {alt_note}"
                break
    return _finding(rule, ctx, status, item, expect, message=note)


def _finding(rule: Rule, ctx: _Ctx, status: Status, item: Item | None,
             expect: Mapping[str, Any] | None, message: str = "") -> Finding:
    if expect is None:
        try:
            expect = _expectation(rule.expect, ctx)
        except _NoOperand:
            expect = rule.expect
    expected = describe(expect)
    if item is None:
        actual = ""
    elif item.absent:
        actual = "not set"
    elif item.value is None and status is Status.UNKNOWN:
        actual = f"unknown ({item.reason})" if item.reason else "unknown"
    else:
        actual = format_value(item.value)
    persisted_text, needs_reboot = None, False
    if rule.persisted is not None and item is not None and status in (Status.PASS, Status.FAIL):
        persisted_text, persisted_ok = _persisted(rule, ctx, expect)
        needs_reboot = (status is Status.FAIL and bool(persisted_ok)
                        and rule.disruption is Disruption.REBOOT)
        if status is Status.FAIL and persisted_ok and not message:
            message = ("persisted but not in effect: reboot to apply" if needs_reboot else
                       "persisted but not in effect: reload it (sysctl --system, modprobe)")
        elif status is Status.PASS and persisted_ok is False and not message:
            message = f"in effect, but the persisted value ({persisted_text}) undoes it at boot"
    label = _label(rule.fact)
    if status is Status.FAIL and not message:
        message = substitute(rule.message, ctx) if rule.message else (
            f"{label} is {actual}, expected {expected}")
    if status is Status.UNKNOWN and not message:
        message = f"{label} is {actual}"
    remediation = None
    if rule.remediation is not None and status is Status.FAIL:
        remediation = substitute(dict(rule.remediation), ctx)
    return Finding(
        id=rule.id, area=rule.area, severity=rule.severity, status=status,
        subject=item.subject if item else None, fact=rule.fact, expected=expected,
        actual=actual, message=message, why=rule.why,
        fix=substitute(rule.fix, ctx) if rule.fix else "",
        persisted=persisted_text, needs_reboot=needs_reboot, disruption=rule.disruption,
        remediation=remediation, fault_code=rule.fault_code, action=rule.action)


def _label(path: str) -> str:
    """The part of a fact path people need next to a subject: `pcie.current_width`."""
    return path.rsplit("]", 1)[-1].lstrip(".") or path


def _persisted(rule: Rule, ctx: _Ctx, expect: Mapping[str, Any]) -> tuple[str, bool | None]:
    """(persisted value as text, whether it satisfies the setting; None when unreadable)."""
    assert rule.persisted is not None
    items = resolve(ctx.doc, rule.persisted.fact, ctx.bindings)
    item = items[0] if items else None
    if item is None or item.value is None:
        if item is not None and item.reason:
            return f"unknown ({item.reason})", None
        return "not persisted", None
    want = _expectation(rule.persisted.expect, ctx) if rule.persisted.expect else expect
    return format_value(item.value), _satisfied(item.value, want)
