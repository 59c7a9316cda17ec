"""Templating: `${var}`, `${fact:PATH}`, `${subject}`, `${actual}` references and operands.

A string that is only a reference keeps the referenced value's type; an operand may also be
`{fact: PATH}` (another fact, from the same item when PATH shares the rule's `[*]`) or
`{per_subject: {...}}` (a documented value per subject).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from nodetune.errors import ProfileError
from nodetune.facts.record import record
from nodetune.rules.operators import format_value
from nodetune.rules.resolve import resolve

BUILTIN_VARS = ("subject", "actual", "wanted")

VAR = re.compile(r"\$\{([^}]+)\}")


def references(value: Any) -> list[str]:
    """Every `${...}` reference anywhere inside value (keys included)."""
    if isinstance(value, str):
        return VAR.findall(value)
    if isinstance(value, Mapping):
        return [r for k, v in value.items() for r in (*references(k), *references(v))]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in references(v)]
    return []


def fact_references(value: Any) -> set[str]:
    """Fact paths named by `${fact:PATH}` anywhere inside value."""
    return {r[5:].strip() for r in references(value) if r.startswith("fact:")}


def variables_used(value: Any) -> set[str]:
    """Names of `${...}` variables referenced anywhere inside value (built-ins excluded)."""
    return {r for r in references(value) if r not in BUILTIN_VARS and not r.startswith("fact:")}


@record
class Context:
    """What references resolve against: the facts, the variables, the item being evaluated."""

    doc: Mapping[str, Any]
    variables: Mapping[str, Any]
    rule_id: str
    source: str = ""  # where the rule is written, for errors
    subject: str | None = None
    bindings: Mapping[str, int] = field(default_factory=dict)
    actual: Any = None
    wanted: Any = None  # the value a tunable's fix writes


def _lookup(name: str, ctx: Context) -> Any:
    if name == "subject":
        return ctx.subject
    if name == "actual":
        return ctx.actual
    if name == "wanted":
        return ctx.wanted
    if name.startswith("fact:"):
        items = resolve(ctx.doc, name[5:].strip(), ctx.bindings)
        return items[0].value if items else None
    if name in ctx.variables:
        return ctx.variables[name]
    raise ProfileError(f"{ctx.source or ctx.rule_id}: undefined variable ${{{name}}} in "
                       f"setting {ctx.rule_id}", fix="define it under `variables:`")


def substitute(value: Any, ctx: Context) -> Any:
    """Replace `${...}` references; a string that is only a reference keeps the value's type."""
    if isinstance(value, str):
        whole = VAR.fullmatch(value.strip())
        if whole:
            return _lookup(whole.group(1), ctx)
        if "${" not in value:
            return value
        return VAR.sub(lambda m: format_value(_lookup(m.group(1), ctx)), value)
    if isinstance(value, Mapping):
        return {VAR.sub(lambda m: format_value(_lookup(m.group(1), ctx)), k)
                if isinstance(k, str) else k: substitute(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, ctx) for v in value]
    return value


class NoOperand(Exception):
    """The operand has no value for this subject (a per_subject map without it)."""


def operand(value: Any, ctx: Context) -> Any:
    value = substitute(value, ctx)
    if isinstance(value, Mapping):
        if set(value) == {"fact"}:
            items = resolve(ctx.doc, value["fact"], ctx.bindings)
            if not items or items[0].value is None:
                raise NoOperand(f"{value['fact']} unknown" + (
                    f" ({items[0].reason})" if items and items[0].reason else ""))
            return items[0].value
        if set(value) == {"per_subject"}:
            table = value["per_subject"]
            if ctx.subject not in table:
                raise NoOperand(f"no documented value for {ctx.subject}")
            return operand(table[ctx.subject], ctx)
    return value


def expectation(expect: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    return {op: operand(v, ctx) for op, v in expect.items()}

