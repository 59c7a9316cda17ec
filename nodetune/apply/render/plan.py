"""From failing settings to role variables: what a rendered playbook will ask the roles to do.

Each failing Finding with a remediation becomes a `Change`; the changes' variables merge into
one mapping per role (dicts by key, lists by union). Two settings that want different values
for the same variable are an error, never a silent last-wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodetune.apply.render import roles
from nodetune.errors import RenderError
from nodetune.facts.model import Disruption, Finding, Status
from nodetune.profiles import tunables
from nodetune.rules.operators import format_value


@dataclass(frozen=True, kw_only=True)
class Change:
    """One setting to fix on one subject."""

    id: str
    subject: str | None
    area: str
    severity: str
    current: str
    wanted: str
    disruption: Disruption
    variables: Mapping[str, Any]
    why: str = ""

    @property
    def key(self) -> str:
        return f"{self.id}[{self.subject}]" if self.subject else self.id

    @property
    def roles(self) -> list[str]:
        return sorted({roles.owner(v) or "" for v in self.variables} - {""},
                      key=roles.ROLE_ORDER.index)


@dataclass
class Plan:
    """The changes to make, the settings that need a manual fix, and the merged variables."""

    changes: list[Change] = field(default_factory=list)
    manual: list[Finding] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        used = {roles.owner(v) for v in self.variables}
        return [r for r in roles.ROLE_ORDER if r in used]


def change_of(finding: Finding) -> Change | None:
    """The change that fixes a failing finding, or None when it has no remediation."""
    if finding.status is not Status.FAIL or not finding.remediation:
        return None
    variables = finding.remediation.get("vars") or {}
    if not isinstance(variables, Mapping) or not variables:
        return None
    unknown = [v for v in variables if roles.owner(str(v)) is None]
    if unknown:
        raise RenderError(f"setting {finding.id}: remediation variable {unknown[0]!r} belongs "
                          "to no nodetune role",
                          fix="use a variable declared in a role's defaults/main.yml "
                              f"({roles.roles_dir()})")
    wanted = written_value(finding.remediation, variables) or finding.expected
    return Change(id=finding.id, subject=finding.subject, area=finding.area,
                  severity=finding.severity.value, current=finding.actual,
                  wanted=wanted, disruption=finding.disruption,
                  variables=dict(variables), why=finding.why)


def written_value(remediation: Mapping[str, Any], variables: Mapping[str, Any]) -> str:
    """The exact value a remediation writes ("10", "iommu=pt"), "" when it names none.

    A tunable's remediation carries it; a free-form one is read from its role variables through
    the same tunable declarations (`tunables.written_by`)."""
    if "value" in remediation:
        return format_value(remediation["value"])
    written = [t.shown(v) for t, v in tunables.written_by(variables)]
    return ", ".join(written)


def build(findings: Iterable[Finding], facts: Mapping[str, Any] | None = None) -> Plan:
    """The plan for these findings (failing ones with a remediation become changes).

    `facts` (the node's facts document, when the plan is for this node) lets persistent
    sysctl values go into the file that already sets them, so the new value keeps winning.
    """
    plan = Plan()
    owners: dict[tuple[str, ...], str] = {}
    for finding in findings:
        if finding.status is not Status.FAIL:
            continue
        change = change_of(finding)
        if change is None:
            plan.manual.append(finding)
            continue
        plan.changes.append(change)
        for name, value in change.variables.items():
            _merge(plan.variables, str(name), value, change.key, owners)
    if facts is not None and plan.variables.get("kernel_sysctl"):
        files = sysctl_files(plan.variables["kernel_sysctl"], facts)
        if files:
            plan.variables["kernel_sysctl_files"] = files
    return plan


def _merge(into: dict[str, Any], name: str, value: Any, by: str,
           owners: dict[tuple[str, ...], str]) -> None:
    default = roles.role_defaults()[roles.owner(name) or ""].get(name)
    if isinstance(default, dict) or isinstance(value, Mapping):
        if not isinstance(value, Mapping):
            raise RenderError(f"setting {by}: {name} must be a mapping, not {value!r}",
                              fix=f"see the defaults of role {roles.COLLECTION}."
                                  f"{roles.owner(name)}")
        _merge_mapping(into.setdefault(name, {}), value, (name,), by, owners)
    elif isinstance(default, list) or isinstance(value, list):
        items = value if isinstance(value, list) else [value]
        target_list = into.setdefault(name, [])
        target_list.extend(i for i in items if i not in target_list)
    else:
        _set_once(into, name, value, (name,), by, owners)


def _merge_mapping(target: dict[str, Any], value: Mapping[str, Any], where: tuple[str, ...],
                   by: str, owners: dict[tuple[str, ...], str]) -> None:
    """Merge nested mappings key by key ({nvme0n1: {scheduler}} + {nvme0n1: {read_ahead_kb}})."""
    for key, item in value.items():
        path = (*where, str(key))
        if isinstance(item, Mapping) and isinstance(target.get(str(key)), dict):
            _merge_mapping(target[str(key)], item, path, by, owners)
        elif isinstance(item, Mapping) and str(key) not in target:
            target[str(key)] = {}
            _merge_mapping(target[str(key)], item, path, by, owners)
        else:
            _set_once(target, str(key), item, path, by, owners)


def _set_once(target: dict[str, Any], key: str, value: Any, where: tuple[str, ...], by: str,
              owners: dict[tuple[str, ...], str]) -> None:
    if key in target and target[key] != value:
        raise RenderError(f"settings {owners[where]} and {by} want different values for "
                          f"{'.'.join(where)} ({target[key]!r} and {value!r})",
                          fix="fix the profile, or apply one of them with --only")
    target[key] = value
    owners.setdefault(where, by)



def sysctl_files(sysctl: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, str]:
    """sysctl name -> file under /etc that persists it now (edited in place so it still wins
    over nodetune's own sysctl.d file)."""
    persisted = ((facts.get("kernel") or {}).get("persisted") or {}).get("sysctl") or {}
    own = roles.role_defaults()["kernel"]["kernel_sysctl_file"]
    out = {}
    for name in sysctl:
        entry = persisted.get(name) or {}
        path = entry.get("file") if isinstance(entry, Mapping) else None
        if isinstance(path, str) and path.startswith("/etc/") and path != own:
            out[str(name)] = path
    return out
