"""Writing results: JSON for tools, rich tables for people (rich is imported only when used)."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(doc: dict[str, Any], schema: str) -> None:
    """Print a JSON document whose first key is its schema version."""
    out = {"schema": schema, **{k: v for k, v in doc.items() if k != "schema"}}
    # one write: json.dump writes every token on its own (~0.3 s for a 10,000-node fleet)
    sys.stdout.write(json.dumps(out, indent=2, sort_keys=False, default=str) + "\n")


def console(stderr: bool = False) -> Any:
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)
