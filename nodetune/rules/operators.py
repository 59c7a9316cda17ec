"""Operators: how a fact value is compared with an expectation, and how both read as text.

Numbers compare numerically also when the fact is a string ("0" equals 0); booleans accept
"1/0/yes/no/on/off/true/false". `check(op, actual, expected)` is one comparison;
`satisfied(value, expect)` all of a rule's; `describe(expect)` the expectation in words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

OPERATORS = ("equals", "min", "max", "one_of", "not_one_of", "regex", "present", "absent",
             "contains", "not_contains")
_TRUE = {"1", "y", "yes", "on", "true", "enabled"}
_FALSE = {"0", "n", "no", "off", "false", "disabled"}


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) and abs(value) >= 2**1023:  # float() would raise OverflowError
        return math.inf if value > 0 else -math.inf
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def as_text(value: Any) -> str:
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
    na, ne = number(actual), number(expected)
    if na is not None and ne is not None and (
            not isinstance(actual, str) or not isinstance(expected, str)):
        return na == ne
    if isinstance(expected, (list, dict)) or isinstance(actual, (list, dict)):
        return bool(actual == expected)
    return as_text(actual) == as_text(expected)


def _truth(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = as_text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _contains(actual: Any, needle: Any) -> bool:
    if isinstance(actual, str):
        return as_text(needle) in actual
    if isinstance(actual, Mapping):
        return as_text(needle) in {as_text(k) for k in actual}
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
        na, ne = number(actual), number(expected)
        if na is None or ne is None:
            return False
        return na >= ne if op == "min" else na <= ne
    if op == "one_of":
        return any(_equal(actual, e) for e in expected)
    if op == "not_one_of":
        return not any(_equal(actual, e) for e in expected)
    if op == "regex":
        text = " ".join(map(as_text, actual)) if isinstance(actual, list) else as_text(actual)
        return re.search(str(expected), text) is not None
    if op == "contains":
        return all(_contains(actual, n) for n in as_list(expected))
    if op == "not_contains":
        return not any(_contains(actual, n) for n in as_list(expected))
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


def satisfied(value: Any, expect: Mapping[str, Any]) -> bool:
    presence = {"present", "absent"}
    if value is None and not set(expect) <= presence:
        return False
    return all(check(op, value, v) for op, v in expect.items())



def target(expect: Mapping[str, Any], current: Any = None) -> Any:
    """The value a fix writes so that `expect` holds, or None when the expectation names none.

    `equals` gives its value, `one_of` its first item, `min` or `max` the bound itself; with
    both bounds, the bound nearest the current value (`max` when it is above the range, `min`
    otherwise, also when it is unknown). A value that still fails the whole expectation (a
    contradictory one, such as min 20 and max 5) gives None.
    """
    if "equals" in expect:
        value = expect["equals"]
    elif "one_of" in expect:
        value = expect["one_of"][0] if expect["one_of"] else None
    elif "min" in expect or "max" in expect:
        low, high = expect.get("min"), expect.get("max")
        now, top = number(current), number(high)
        above = now is not None and top is not None and now > top
        value = high if low is None or above else low
    else:
        return None
    return value if value is not None and satisfied(value, expect) else None
