"""Rules and conditions: the typed form of a profile setting or health check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from nodetune.errors import ProfileError
from nodetune.facts.model import Disruption, Severity
from nodetune.facts.record import record
from nodetune.rules.operators import OPERATORS, as_list


@record(frozen=True)
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


class Remedy(Protocol):
    """How a setting's fix follows from the value it writes (a tunable declaration).

    A rule with a remedy computes its fix text and remediation when it is evaluated, from
    the value that makes the expectation hold; `nodetune.profiles.tunables` implements it.
    """

    @property
    def name(self) -> str:
        """The tunable in words: "sysctl vm.swappiness"."""
        ...

    def wanted(self, expect: Mapping[str, Any], current: Any) -> Any:
        """The value the fix writes (None when the expectation names no value)."""
        ...

    def fix(self, value: Any) -> str:
        """The fix text for writing `value` (may hold ${subject})."""
        ...

    def remediation(self, value: Any) -> dict[str, Any]:
        """{role, task, vars, value}: the Ansible remediation writing `value`."""
        ...


@record(frozen=True, kw_only=True)
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
    remedy: Remedy | None = None  # a tunable: fix and remediation follow from the value

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, id: str | None = None,
                  area: str | None = None, source: str = "", checked: bool = False) -> Rule:
        """Build a rule from its YAML mapping; raise ProfileError naming the first problem.
        `checked`: the mapping passed `rule_problems` already (a loaded check suite's rule),
        so it is not checked again."""
        problems = []
        if not checked:
            # deferred: the facts contract it checks paths against costs `nodetune check`
            # (whose suite was checked when it was loaded) a tenth of its start-up
            from nodetune.rules.schema import rule_problems

            problems = rule_problems(data, need_id=id is None, need_area=area is None)
        if problems:
            keys, text = problems[0]
            where = f"{source}: " if source else ""
            raise ProfileError(f"{where}{'.'.join(keys) or 'rule'}: {text}",
                               fix="see the rule format in docs/profiles.md")
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
            when=tuple(Condition.from_value(c) for c in as_list(data.get("when"))),
            alternatives=tuple(Condition.from_value(c) for c in as_list(data.get("or"))),
            persisted=None if persisted is None else (
                Condition(fact=persisted, expect={}) if isinstance(persisted, str)
                else Condition.from_value(persisted)),
            remediation=data.get("remediation"),
            disruption=Disruption(data.get("disruption", "none")),
            fault_code=data.get("fault_code"),
            action=data.get("action"),
            source=source,
        )

