"""Findings: what one evaluated rule says about one subject (status, texts, persisted, fix)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodetune.facts.model import Disruption, Finding, Status
from nodetune.rules.operators import describe, format_value, satisfied
from nodetune.rules.resolve import Item, resolve
from nodetune.rules.rule import Rule
from nodetune.rules.templating import Context, NoOperand, expectation, substitute


def finding(rule: Rule, ctx: Context, status: Status, item: Item | None,
             expect: Mapping[str, Any] | None, message: str = "") -> Finding:
    if expect is None:
        try:
            expect = expectation(rule.expect, ctx)
        except NoOperand:
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
    fix, remediation = _fix(rule, ctx, status, expect, item)
    return Finding(
        id=rule.id, area=rule.area, severity=rule.severity, status=status,
        subject=item.subject if item else None, fact=rule.fact, expected=expected,
        actual=actual, message=message, why=rule.why,
        fix=fix,
        persisted=persisted_text, needs_reboot=needs_reboot, disruption=rule.disruption,
        remediation=remediation, fault_code=rule.fault_code, action=rule.action)


def _fix(rule: Rule, ctx: Context, status: Status, expect: Mapping[str, Any],
         item: Item | None) -> tuple[str, dict[str, Any] | None]:
    """The fix text and (for a failure) the remediation; a tunable derives both from the
    value it writes, so the fix always satisfies the expectation it is reported against."""
    if rule.remedy is None:
        remediation = None
        if rule.remediation is not None and status is Status.FAIL:
            remediation = substitute(dict(rule.remediation), ctx)
        return (substitute(rule.fix, ctx) if rule.fix else ""), remediation
    ctx.wanted = rule.remedy.wanted(expect, item.value if item else None)
    if ctx.wanted is None:  # an operand this node lacks: nothing to write
        return (substitute(rule.fix, ctx) if rule.fix else ""), None
    fix = substitute(rule.remedy.fix(ctx.wanted), ctx)
    remediation = None
    if status is Status.FAIL:
        remediation = substitute(rule.remedy.remediation(ctx.wanted), ctx)
    return fix, remediation


def _label(path: str) -> str:
    """The part of a fact path people need next to a subject: `pcie.current_width`."""
    return path.rsplit("]", 1)[-1].lstrip(".") or path


def _persisted(rule: Rule, ctx: Context, expect: Mapping[str, Any]) -> tuple[str, bool | None]:
    """(persisted value as text, whether it satisfies the setting; None when unreadable)."""
    assert rule.persisted is not None
    items = resolve(ctx.doc, rule.persisted.fact, ctx.bindings)
    item = items[0] if items else None
    if item is None or item.value is None:
        if item is not None and item.reason:
            return f"unknown ({item.reason})", None
        return "not persisted", None
    want = expectation(rule.persisted.expect, ctx) if rule.persisted.expect else expect
    return format_value(item.value), satisfied(item.value, want)
