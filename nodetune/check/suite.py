"""Health-check suites: checks/<tier>.yaml, loaded, validated and cached as JSON.

A suite file:

    tier: quick
    include: [quick]          # optional: suites whose checks come first (standard includes quick)
    variables: {...}          # defaults; a profile's variables and the command line override them
    checks:
      - id: gpu.pcie.width    # a rule in the rule-engine format (nodetune/rules/) ...
        fault_code: NT2001    # ... with a fault code and an action (drain | warn)
        action: drain
        timeout: 5            # seconds this check may take (default: variables.timeout_s)
        bench: {...}          # standard tier: a benchmark whose results the check reads

The parsed suite is cached as JSON next to the result cache (keyed by the files' paths, sizes
and modification times), so `nodetune check` does not import PyYAML on a warm start.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from nodetune.check.cache import parsed_cache_path, read_parsed, stamps, write_json_atomic
from nodetune.errors import ProfileError
from nodetune.facts.health import NEEDS
from nodetune.facts.record import record

if TYPE_CHECKING:
    from pathlib import Path

TIERS = ("quick", "standard")
ACTIONS = ("drain", "warn")
CHECK_KEYS = frozenset({"timeout", "bench", "needs"})  # keys the rule engine does not know
DEFAULT_TIMEOUT_S = 5.0
_SECTION_COLLECTORS = {"gpus": "gpu", "gpu": "gpu"}
BENCH_COLLECTORS = ("cpu", "numa", "pci", "gpu", "rdma")  # what benchmark expectations read


@record(frozen=True)
class CheckDef:
    """One health check: the rule-engine mapping plus what the runner needs to schedule it."""

    id: str
    rule: dict[str, Any]  # the rule mapping without CHECK_KEYS, for rules.Rule.from_dict
    timeout: float
    needs: tuple[str, ...]  # collectors whose facts it reads
    bench: dict[str, Any] | None
    source: str  # "checks/quick.yaml:#3", for errors

    @property
    def action(self) -> str:
        return str(self.rule.get("action") or "drain")


@record(frozen=True)
class Suite:
    tier: str
    variables: dict[str, Any]
    checks: tuple[CheckDef, ...]
    files: tuple[str, ...]


def checks_dir() -> Path:
    # imported here, as yamldoc and the rule schema below: a warm start reads the suite from
    # its JSON cache and needs none of them (importlib.resources, PyYAML, the facts contract)
    from nodetune.node.resources import data_dir

    return data_dir("checks")


def load_suite(tier: str, directory: Path | None = None, cache_dir: str | None = None) -> Suite:
    """The suite of `tier` with its includes; cached as JSON in `cache_dir` when given."""
    if tier not in TIERS:
        raise ProfileError(f"unknown check tier {tier!r}", fix=f"use one of {', '.join(TIERS)}")

    where = os.path.abspath(directory) if directory else "shipped"
    cache_file = parsed_cache_path(cache_dir, f"suite-{tier}", {"tier": tier, "dir": where})
    cached = _from_json(read_parsed(cache_file))
    if cached is not None:
        return cached
    raw = _load_raw(directory or checks_dir(), tier, ())
    suite = _build(tier, raw)
    if cache_file:
        _write_cache(cache_file, suite)
    return suite


# -- YAML -------------------------------------------------------------------------------

def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ProfileError(f"no check suite {path}", fix="reinstall nodetune, or use "
                           f"--tier {' or '.join(TIERS)}")
    from nodetune.profiles import yamldoc  # deferred, as in checks_dir()

    return yamldoc.load(path, fix="fix the YAML syntax").data


def _load_raw(directory: Path, tier: str, seen: tuple[str, ...]) -> dict[str, Any]:
    """The suite's mapping with its includes merged in (their checks first)."""
    if tier in seen:
        raise ProfileError(f"check suite {tier} includes itself ({' -> '.join((*seen, tier))})",
                           fix="remove the include cycle")
    path = directory / f"{tier}.yaml"
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("checks"), list):
        raise ProfileError(f"{path}: a check suite is a mapping with a `checks:` list",
                           fix="see checks/quick.yaml for the format")
    variables: dict[str, Any] = {}
    checks: list[tuple[str, Any]] = []
    files = [str(path)]
    includes = data.get("include") or []
    for name in [includes] if isinstance(includes, str) else includes:
        inner = _load_raw(directory, str(name), (*seen, tier))
        variables.update(inner["variables"])
        checks += inner["checks"]
        files += inner["files"]
    own_vars = data.get("variables") or {}
    if not isinstance(own_vars, dict):
        raise ProfileError(f"{path}: variables must be a mapping", fix="write `variables: {}`")
    variables.update(own_vars)
    checks += [(f"{path.name}:#{i + 1}", c) for i, c in enumerate(data["checks"])]
    return {"variables": variables, "checks": checks, "files": files}


# -- validation -------------------------------------------------------------------------

def _build(tier: str, raw: dict[str, Any]) -> Suite:
    from nodetune.rules.schema import rule_problems  # deferred, as in checks_dir()

    variables = raw["variables"]
    default_timeout = float(variables.get("timeout_s") or DEFAULT_TIMEOUT_S)
    seen: set[str] = set()
    checks = []
    for source, data in raw["checks"]:
        problems = rule_problems(data, extra_keys=CHECK_KEYS)
        where = f"{source} ({data.get('id')})" if isinstance(data, dict) else source
        if problems:
            keys, text = problems[0]
            raise ProfileError(f"checks/{where}: {'.'.join(keys) or 'check'}: {text}",
                               fix="see the check format in nodetune/check/suite.py")
        problem = _check_problem(data, seen)
        if problem:
            raise ProfileError(f"checks/{where}: {problem}",
                               fix="see the check format in nodetune/check/suite.py")
        seen.add(data["id"])
        rule = {k: v for k, v in data.items() if k not in CHECK_KEYS}
        needs = list(data.get("needs") or needed_collectors(rule))
        if data.get("bench"):
            needs += [c for c in BENCH_COLLECTORS if c not in needs]
            needs.append(f"bench:{data['bench']['suite']}")
        checks.append(CheckDef(id=data["id"], rule=rule,
                               timeout=float(data.get("timeout") or default_timeout),
                               needs=tuple(needs), bench=data.get("bench"), source=source))
    return Suite(tier=tier, variables=variables, checks=tuple(checks), files=tuple(raw["files"]))


def _check_problem(data: dict[str, Any], seen: set[str]) -> str | None:
    if data["id"] in seen:
        return f"duplicate check id {data['id']!r}"
    if not data.get("fault_code"):
        return "missing 'fault_code' (an NHC-style code such as NT2001)"
    if data.get("action", "drain") not in ACTIONS:
        return f"action must be one of {', '.join(ACTIONS)}, not {data['action']!r}"
    if not data.get("message"):
        return "missing 'message' (the one-line template shown as the drain reason)"
    timeout = data.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        return f"timeout must be a positive number of seconds, not {timeout!r}"
    bench = data.get("bench")
    if bench is not None and not (isinstance(bench, dict) and isinstance(bench.get("suite"), str)):
        return "bench must be a mapping with a `suite` name"
    return None


def rule_paths(rule: dict[str, Any]) -> list[str]:
    """Every fact path a rule mapping reads: its fact, conditions and {fact: PATH} operands."""
    paths = [str(rule["fact"])]
    for key in ("when", "or"):
        conds = rule.get(key) or []
        for cond in conds if isinstance(conds, list) else [conds]:
            paths.append(cond if isinstance(cond, str) else str(cond.get("fact")))
    for value in rule.values():
        if isinstance(value, dict) and set(value) == {"fact"}:
            paths.append(str(value["fact"]))
    return paths


def needed_collectors(rule: dict[str, Any]) -> tuple[str, ...]:
    """The collectors whose sections a rule reads (health.* through healthfacts.NEEDS)."""
    out: list[str] = []
    for path in rule_paths(rule):
        head, _, rest = path.partition(".")
        head = head.split("[", 1)[0]
        if head == "health":
            names: tuple[str, ...] = NEEDS.get(rest.split(".", 1)[0].split("[", 1)[0], ())
        elif head == "derived":
            names = ("cpu", "numa", "kernel", "pci", "gpu", "nic", "rdma")
        elif head == "collectors":
            names = ()
        else:
            names = (_SECTION_COLLECTORS.get(head, head),)
        out += [n for n in names if n not in out]
    return tuple(out)


# -- JSON cache -------------------------------------------------------------------------

def _write_cache(path: str, suite: Suite) -> None:
    write_json_atomic(path, {
        "stamps": stamps(list(suite.files)),
        "tier": suite.tier, "variables": suite.variables, "files": list(suite.files),
        "checks": [{"id": c.id, "rule": c.rule, "timeout": c.timeout, "needs": list(c.needs),
                    "bench": c.bench, "source": c.source} for c in suite.checks]})


def _from_json(doc: Any) -> Suite | None:
    """The cached suite, or None when the cache is absent or not in the shape written above
    (a corrupt or foreign cache is ignored and rebuilt, never trusted)."""
    try:
        checks = tuple(CheckDef(id=str(c["id"]), rule=dict(c["rule"]),
                                timeout=float(c["timeout"]), needs=tuple(map(str, c["needs"])),
                                bench=dict(c["bench"]) if c.get("bench") else None,
                                source=str(c["source"]))
                       for c in doc["checks"])
        suite = Suite(tier=str(doc["tier"]), variables=dict(doc["variables"]),
                      checks=checks, files=tuple(map(str, doc["files"])))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not checks or any(not isinstance(c.rule.get("fact"), str) or not c.timeout > 0
                         for c in checks):
        return None
    return suite
