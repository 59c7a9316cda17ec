"""JSON Schemas (draft 2020-12) built from the facts contract: the facts document, and profile
files whose `fact:` keys complete to the contract's paths in an editor.

`facts_schema()` describes what `nodetune facts --json` (plus `derived` and `health`, which
rules see) may hold; every value may be null (a fact that could not be read). `profile_schema()`
describes a profile file; it takes the profile language's vocabulary as arguments so that this
module stays below the profile loader.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Any

from nodetune.facts.contract import CONTRACT, VERSION
from nodetune.facts.paths import parse
from nodetune.facts.record import record

DRAFT = "https://json-schema.org/draft/2020-12/schema"
FACTS_CONTRACT_ID = f"nodetune.facts-contract/{VERSION}"
PROFILE_SCHEMA_ID = f"nodetune.profile-schema/{VERSION}"

_JSON_TYPES = {"int": "integer", "num": "number", "str": "string", "numstr": "string",
               "bool": "boolean", "list": "array", "dict": "object"}


@record
class ContractNode:
    """One step of a contract path: its children and, where a path ends here, its type."""

    children: dict[str, ContractNode] = field(default_factory=dict)
    path: str | None = None  # the contract path ending here
    type: str | None = None
    filled_by: str = ""


def contract_tree() -> ContractNode:
    """The contract as a tree of path steps (`[*]` for a list's items)."""
    root = ContractNode()
    for path, (type_, filled_by) in CONTRACT.items():
        node = root
        for tok in parse(path):
            node = node.children.setdefault("[*]" if tok.is_list else str(tok.key),
                                            ContractNode())
        node.path, node.type, node.filled_by = path, type_, filled_by
    return root


def _nullable(json_type: str) -> list[str]:
    return [json_type, "null"]


def _node_schema(node: ContractNode) -> dict[str, Any]:
    if node.type is not None:
        out: dict[str, Any] = {"description": f"{node.type}, from {node.filled_by}"}
        if node.type in _JSON_TYPES:
            out["type"] = _nullable(_JSON_TYPES[node.type])
        return out
    if "[*]" in node.children:
        return {"type": _nullable("array"), "items": _node_schema(node.children["[*]"])}
    wild = [k for k in node.children if k.startswith("<")]
    out = {"type": _nullable("object")}
    named = {k: _node_schema(c) for k, c in node.children.items() if not k.startswith("<")}
    if named:
        out["properties"] = named
    if wild:
        out["additionalProperties"] = _node_schema(node.children[wild[0]])
        out["description"] = f"keys: {wild[0]}"
    else:
        out["additionalProperties"] = False
    return out


def facts_schema() -> dict[str, Any]:
    """The facts contract as a JSON Schema of the facts document."""
    body = _node_schema(contract_tree())
    body["type"] = "object"
    return {"$schema": DRAFT, "$id": FACTS_CONTRACT_ID, "title": FACTS_CONTRACT_ID,
            "description": "Every fact path nodetune promises (generated from the typed facts; "
                           "see docs/facts.md). A fact that could not be read is null.",
            **body}


# -- fact paths as strings -------------------------------------------------------------------

def fact_paths() -> list[str]:
    """Every promised path and every container on the way to one, as written in rules."""
    out: dict[str, None] = {}
    for path in CONTRACT:
        tokens = parse(path)
        for end in range(1, len(tokens) + 1):
            text = ""
            for tok in tokens[:end]:
                text += "[*]" if tok.is_list else ("." if text else "") + str(tok.key)
            out[text] = None
    return list(out)


def _path_regex(path: str, type_: str | None) -> str:
    out = ""
    for tok in parse(path):
        if tok.is_list:
            out += r"\[[^\]]*\]"  # [*], [N] or [key=value,...]
        elif str(tok.key).startswith("<"):
            out += (r"\." if out else "") + r"[^.\[\]]+(\.[^.\[\]]+)*"  # dotted keys too
        else:
            out += (r"\." if out else "") + re.escape(str(tok.key))
    if type_ in ("dict", "any"):
        out += r"([.\[].*)?"  # anything below a free-form value
    elif type_ == "list":
        out += r"(\[\d+\])?"  # one element of a list of values
    return out


def fact_path_pattern() -> str:
    """A regular expression that a known fact path (selectors included) matches."""
    types = {path: type_ for path, (type_, _) in CONTRACT.items()}
    alternatives = dict.fromkeys(_path_regex(p, types.get(p)) for p in fact_paths())
    return "^(" + "|".join(alternatives) + ")$"


# -- profile files ---------------------------------------------------------------------------

@record(frozen=True)
class ProfileLanguage:
    """The words of the profile language (nodetune.profiles.catalog, nodetune.rules.schema)."""

    sections: Iterable[str]
    top_keys: Iterable[str]
    setting_keys: Iterable[str]  # replace, disable: flags on a setting
    rule_keys: Iterable[str]
    condition_keys: Iterable[str]
    operators: Iterable[str]
    areas: Iterable[str]
    severities: Iterable[str]
    disruptions: Iterable[str]
    tunables: Mapping[str, Iterable[str]]  # tunable kind -> the qualifier keys it takes


def profile_schema(lang: ProfileLanguage) -> dict[str, Any]:
    """A JSON Schema of a profile file; `fact:` values complete to the contract's paths."""
    fact = {"description": "a fact path (`nodetune facts --schema` lists them)",
            "anyOf": [{"enum": fact_paths()},
                      {"type": "string", "pattern": fact_path_pattern()}]}
    operand: dict[str, Any] = {"anyOf": [
        {"type": ["string", "number", "boolean", "array", "null"]},
        {"type": "object", "properties": {"fact": {"$ref": "#/$defs/fact"}},
         "required": ["fact"], "additionalProperties": False},
        {"type": "object", "properties": {"per_subject": {"type": "object"}},
         "required": ["per_subject"], "additionalProperties": False},
    ]}
    operators = list(lang.operators)
    condition = {"anyOf": [
        {"$ref": "#/$defs/fact"},
        {"type": "object", "required": ["fact"], "additionalProperties": False,
         "properties": {**{k: {} for k in lang.condition_keys},
                        "fact": {"$ref": "#/$defs/fact"}, "reason": {"type": "string"},
                        **{op: {"$ref": "#/$defs/operand"} for op in operators}}},
    ]}
    conditions = {"anyOf": [{"$ref": "#/$defs/condition"},
                            {"type": "array", "items": {"$ref": "#/$defs/condition"}}]}
    known: Mapping[str, Any] = {
        "fact": {"$ref": "#/$defs/fact"},
        "when": {"$ref": "#/$defs/conditions"},
        "or": {"$ref": "#/$defs/conditions"},
        "persisted": {"anyOf": [{"$ref": "#/$defs/fact"}, {"$ref": "#/$defs/condition"}]},
        "severity": {"enum": list(lang.severities)},
        "disruption": {"enum": list(lang.disruptions)},
        "area": {"enum": list(lang.areas)},
        **{k: {"type": "string"} for k in ("id", "why", "fix", "message")},
        **{k: {"type": "boolean"} for k in lang.setting_keys},
        **{op: {"$ref": "#/$defs/operand"} for op in operators},
    }
    kinds = sorted(lang.tunables)
    qualifiers = sorted({q for kind in kinds for q in lang.tunables[kind]})
    tunable = {"description": "what the setting tunes: one kind (docs/profiles.md)",
               "type": "object", "additionalProperties": False,
               "properties": {k: {"type": "string"} for k in [*kinds, *qualifiers]},
               "anyOf": [{"required": [kind]} for kind in kinds]}
    known = {**known, "tunable": tunable,
             "write": {"description": "the value apply writes, when the expectation allows "
                                      "several"}}
    setting_keys = [*lang.rule_keys, *lang.setting_keys, "tunable", "write"]
    setting = {"type": "object", "additionalProperties": False,
               "properties": {k: known.get(k, {}) for k in sorted(set(setting_keys))}}
    section = {"type": "object", "properties": {"replace": {"type": "boolean"}},
               "additionalProperties": {"$ref": "#/$defs/setting"}}
    top: dict[str, Any] = {
        "summary": {"type": "string"},
        "extends": {"anyOf": [{"type": "string"},
                              {"type": "array", "items": {"type": "string"}}]},
        "variables": {"type": "object"},
        "replace": {"type": "boolean"},
    }
    properties = {k: top.get(k, {}) for k in lang.top_keys}
    properties.update({s: {"$ref": "#/$defs/section"} for s in lang.sections})
    return {
        "$schema": DRAFT, "$id": PROFILE_SCHEMA_ID, "title": PROFILE_SCHEMA_ID,
        "description": "A nodetune hardware profile (profiles/*.yaml); see docs/facts.md for "
                       "editor completion.",
        "type": "object", "additionalProperties": False, "properties": properties,
        "$defs": {"fact": fact, "operand": operand, "condition": condition,
                  "conditions": conditions, "setting": setting, "section": section},
    }
