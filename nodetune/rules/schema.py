"""Schema checks for rule mappings: keys, types, operands, fact paths, remediation shape.

Loaders (profiles, checks) call `rule_problems(mapping)` and `condition_problems(mapping)` and turn
each (key path, text) problem into an error naming file:line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from nodetune.facts import paths as factpaths
from nodetune.facts.model import Disruption, Severity
from nodetune.rules.operators import OPERATORS, as_list
from nodetune.rules.templating import VAR

AREAS = ("cpu", "numa-memory", "gpu", "pcie-topology", "nic-rdma", "storage", "kernel")
RULE_KEYS = frozenset({"id", "area", "fact", "when", "or", "severity", "why", "fix", "message",
                       "remediation", "disruption", "persisted", "fault_code", "action",
                       *OPERATORS})
CONDITION_KEYS = frozenset({"fact", "reason", *OPERATORS})


Problem = tuple[tuple[str, ...], str]  # (key path inside the rule, what is wrong)


def rule_problems(data: Any, *, need_id: bool = True, need_area: bool = True,
                  extra_keys: Iterable[str] = (), partial: bool = False) -> list[Problem]:
    """Everything wrong with a rule mapping, each with the key path it concerns.

    `partial`: the mapping changes an inherited rule, so it may lack `fact` and operators.
    """
    if not isinstance(data, Mapping):
        return [((), f"a rule must be a mapping, not {type_name(data)}")]
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
        for i, cond in enumerate(as_list(data.get(key))):
            problems += _condition_problems((key, str(i)), cond)
    if "persisted" in data:
        persisted = data["persisted"]
        if isinstance(persisted, str):
            problems += _fact_problems(("persisted",), persisted)
        else:
            problems += _condition_problems(("persisted",), persisted, need_op=False)
    for key, enum in (("severity", Severity), ("disruption", Disruption)):
        if key in data and data[key] not in [e.value for e in enum]:  # a list: dicts too
            problems.append(((key,), f"{key} must be one of {', '.join(e.value for e in enum)}, "
                                     f"not {data[key]!r}"))
    for key in ("why", "fix", "message", "id"):
        if key in data and not isinstance(data[key], str):
            problems.append(((key,), f"{key} must be text, not {type_name(data[key])}"))
    if "remediation" in data:
        problems += _remediation_problems(data["remediation"])
    return problems


def _fact_problems(keys: tuple[str, ...], path: Any) -> list[Problem]:
    if not isinstance(path, str):
        return [(keys, f"fact must be a path string, not {type_name(path)}")]
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
    if isinstance(value, str) and VAR.fullmatch(value.strip()):
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
            return [(keys, f"{op} needs a number, not {type_name(value)} {value!r}")]
        if ftype is not None and ftype not in factpaths.NUMERIC_TYPES:
            return [(keys, f"{op} compares numbers but the fact is a {ftype}")]
    if op in ("one_of", "not_one_of") and not isinstance(value, list):
        return [(keys, f"{op} needs a list, not {type_name(value)}")]
    if op in ("present", "absent") and not isinstance(value, bool):
        return [(keys, f"{op} needs true or false, not {value!r}")]
    if op == "regex":
        if not isinstance(value, str):
            return [(keys, f"regex needs a string, not {type_name(value)}")]
        if "${" not in value:
            try:
                re.compile(value)
            except re.error as exc:
                return [(keys, f"bad regex {value!r}: {exc}")]
    if op in ("contains", "not_contains") and ftype is not None and ftype not in (
            "list", "str", "dict", "any"):
        return [(keys, f"{op} needs a list, text or mapping fact, but the fact is a {ftype}")]
    if op in ("contains", "not_contains") and isinstance(value, (dict, set)):
        return [(keys, f"{op} needs a value or a list, not {type_name(value)}")]
    return []


def _condition_problems(keys: tuple[str, ...], cond: Any, need_op: bool = True) -> list[Problem]:
    if isinstance(cond, str):
        return _fact_problems(keys, cond)
    if not isinstance(cond, Mapping):
        return [(keys, f"a condition must be a mapping {{fact: PATH, <operator>: VALUE}}, "
                       f"not {type_name(cond)}")]
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
                                   f"not {type_name(rem)}")]
    out: list[Problem] = []
    for key in rem:
        if key not in ("role", "task", "vars"):
            out.append((("remediation", str(key)), f"unknown key {key!r} in remediation "
                                                   "(allowed: role, task, vars)"))
    if not isinstance(rem.get("role"), str):
        out.append((("remediation", "role"), "remediation needs a role name"))
    if "vars" in rem and not isinstance(rem["vars"], Mapping):
        out.append((("remediation", "vars"),
                    f"vars must be a mapping, not {type_name(rem['vars'])}"))
    return out


def type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)

