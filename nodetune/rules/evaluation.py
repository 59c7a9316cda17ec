"""Evaluation: rules against a facts document -> Findings (`when`, `or`, per-item subjects)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nodetune.facts import paths as factpaths
from nodetune.facts.derived import derive
from nodetune.facts.model import Finding, Status
from nodetune.rules.findings import finding
from nodetune.rules.operators import describe, format_value, satisfied
from nodetune.rules.resolve import Item, resolve
from nodetune.rules.rule import Condition, Rule
from nodetune.rules.templating import Context, NoOperand, expectation


def _condition(cond: Condition, ctx: Context) -> tuple[bool | None, str]:
    """(True/False, explanation), or (None, why unknown) when its fact is unknown.

    A condition over several items (not bound to the rule's item) holds if any item holds.
    A presence-only condition (`present`/`absent`) is never unknown: a fact the node could not
    report counts as absent.
    """
    expect = expectation(cond.expect, ctx)
    items = resolve(ctx.doc, cond.fact, ctx.bindings)
    presence_only = set(expect) <= {"present", "absent"}
    unknown = None
    for item in items:
        if item.value is None and not presence_only and not item.absent:
            unknown = unknown or item.reason or f"{cond.fact} unknown"
            continue
        # a presence guard treats an unreadable fact as absent: "if the node reports X"
        if satisfied(item.value, expect):
            return True, f"{cond.fact} = {format_value(item.value)}"
    if not items and not presence_only:
        return False, f"no {cond.fact}"
    if not items:
        return satisfied(None, expect), f"{cond.fact} absent"
    if unknown is not None:
        return None, f"{cond.fact} unknown ({unknown})"
    shown = format_value(items[0].value) if len(items) == 1 else "no item matches"
    return False, f"{cond.fact} is {shown}, not {describe(expect)}"


def conditions_hold(conditions: Sequence[Condition], facts: Mapping[str, Any],
                    variables: Mapping[str, Any] | None = None) -> tuple[bool, list[str]]:
    """Whether every condition holds (unknown counts as not holding), with explanations."""
    doc = _with_derived(facts, [c.fact for c in conditions])
    ctx = Context(doc=doc, variables=variables or {}, rule_id="match")
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
    base = Context(doc=doc, variables=variables, rule_id=rule.id, source=rule.source)
    node_conds = [c for c in rule.when if not _bound(c.fact, rule.fact)]
    item_conds = [c for c in rule.when if _bound(c.fact, rule.fact)]
    for cond in node_conds:
        ok, note = _condition(cond, base)
        if ok is None:
            return [finding(rule, base, Status.UNKNOWN, None, None,
                             message=f"cannot tell whether this applies: {note}")]
        if not ok:
            return [finding(rule, base, Status.SKIPPED, None, None,
                             message=cond.reason or f"does not apply: {note}")]
    items = resolve(doc, rule.fact)
    if not items:
        return [finding(rule, base, Status.SKIPPED, None, None,
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


def _evaluate_item(rule: Rule, base: Context, item: Item, item_conds: list[Condition]) -> Finding:
    ctx = Context(doc=base.doc, variables=base.variables, rule_id=rule.id, source=rule.source,
                  subject=item.subject, bindings=item.bindings, actual=item.value)
    for cond in item_conds:
        ok, note = _condition(cond, ctx)
        if ok is None:
            return finding(rule, ctx, Status.UNKNOWN, item, None,
                            message=f"cannot tell whether this applies: {note}")
        if not ok:
            return finding(rule, ctx, Status.SKIPPED, item, None,
                            message=cond.reason or f"does not apply: {note}")
    try:
        expect = expectation(rule.expect, ctx)
    except NoOperand as exc:
        return finding(rule, ctx, Status.SKIPPED, item, None, message=str(exc))
    presence_only = set(expect) <= {"present", "absent"}
    if item.value is None and (not presence_only or item.reason) and not item.absent:
        status = Status.UNKNOWN
    else:
        status = Status.PASS if satisfied(item.value, expect) else Status.FAIL
    note = ""
    if status is not Status.PASS:
        for alt in rule.alternatives:
            ok, alt_note = _condition(alt, ctx)
            if ok:
                status, note = Status.PASS, f"satisfied by {alt_note}"
                break
    return finding(rule, ctx, status, item, expect, message=note)

