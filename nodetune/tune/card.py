"""The before/after card of a tuning cycle, for a change ticket, and the full JSON report.

The card names the node (hostname, facts fingerprint and the identity it hashes), the
settings changed, each metric before and after with its verdict, the decision and what was
done. `card_id` is a hash of the rest of the card, so an edited card no longer matches.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from nodetune import __version__, exitcodes
from nodetune.bench import session
from nodetune.facts.model import to_jsonable
from nodetune.schemas import utc_timestamp
from nodetune.tune import CARD_SCHEMA, TUNE_SCHEMA
from nodetune.tune.decide import INCOMPARABLE, REGRESSED
from nodetune.tune.operation import TuneResult
from nodetune.views import apply_text


def action(result: TuneResult) -> str:
    if result.applied is None:
        return "nothing applied"
    if result.rollback is not None:
        return "rolled back"
    if result.kept:
        return "kept (--keep) despite the regression"
    return "kept"


def card_id(card: dict[str, Any]) -> str:
    body = {k: v for k, v in card.items() if k != "card_id"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_card(result: TuneResult, node: dict[str, Any], options: Any,
               created: str | None = None) -> dict[str, Any]:
    created = created or utc_timestamp(time.time())
    settings = result.applied.settings if result.applied else (
        result.plan.settings if result.plan else [])
    comparison = result.comparison or {}
    card: dict[str, Any] = {
        "schema": CARD_SCHEMA,
        "created": created,
        "node": node,
        "profile": result.profile,
        "suites": result.suites,
        "options": to_jsonable(options),
        "changes": [{"setting": s.change.key, "from": s.change.current, "to": s.change.wanted,
                     "status": s.status} for s in settings],
        "metrics": [{k: m[k] for k in ("key", "name", "unit", "before", "after",
                                       "change_percent", "noise_percent", "verdict")}
                    for m in comparison.get("metrics") or []],
        "decision": result.decision.verdict if result.decision else None,
        "reasons": list(result.decision.reasons) if result.decision else [],
        "action": action(result),
        "state_file": str(result.state_file) if result.state_file else None,
        "notes": list(result.notes),
    }
    card["card_id"] = card_id(card)
    return card


def report(result: TuneResult, facts: dict[str, Any], node: dict[str, Any], options: Any,
           card: dict[str, Any]) -> dict[str, Any]:
    """The nodetune.tune/1 document: both runs, the comparison, the decision, the state file."""
    def bench_doc(suites: list[Any]) -> dict[str, Any] | None:
        return session.document(suites, facts, options) if suites else None

    return {
        "schema": TUNE_SCHEMA,
        "nodetune_version": __version__,
        "created": card["created"],
        "node": node,
        "profile": result.profile,
        "root": result.request.host_root,
        "suites": result.suites,
        "options": to_jsonable(options),
        "plan": apply_text.to_json(result.plan, result.prepared) if result.plan else None,
        "applied": apply_text.to_json(result.applied) if result.applied else None,
        "baseline": bench_doc(result.baseline),
        "after": bench_doc(result.after),
        "comparison": result.comparison,
        "decision": result.decision.to_json() if result.decision else None,
        "action": card["action"],
        "state_file": card["state_file"],
        "rollback": apply_text.to_json(result.rollback) if result.rollback else None,
        "notes": list(result.notes),
        "card": card,
    }


def exit_code(result: TuneResult) -> int:
    """0 kept (improved or unchanged) or nothing to do; 1 regressed (rolled back, or kept with
    --keep) or a setting failed; 3 the runs could not be compared."""
    if result.decision is not None and result.decision.verdict == INCOMPARABLE:
        return exitcodes.ERROR
    if result.decision is not None and result.decision.verdict == REGRESSED:
        return exitcodes.FAILED
    if result.applied is not None and (result.applied.failed or result.applied.rejected):
        return exitcodes.FAILED
    return exitcodes.OK
