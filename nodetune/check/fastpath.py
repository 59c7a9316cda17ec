"""`nodetune check` without click: the start-up fast path.

`nodetune check` runs before every job, so its start-up counts: `nodetune.cli` hands a
`nodetune check ...` command line to `fast_main` before importing click. `fast_main` parses
it with the options table (`nodetune.check.options`, which the click command is built from)
and runs the check; for anything the table's parser leaves to click (--help, a misspelt
option, a value click would reject) it returns and the click command takes over, so usage
errors and help read exactly as for every other command.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from nodetune import exitcodes
from nodetune.check import fromagent, npd
from nodetune.check.options import parse, request_fields
from nodetune.errors import NodetuneError
from nodetune.schemas import CHECK_SCHEMA
from nodetune.views.check_text import render_text

if TYPE_CHECKING:
    from collections.abc import Callable


def fast_main(argv: list[str]) -> None:
    """Run `nodetune check ARGV` and exit; return only when click should take over."""
    values = parse(argv)
    if values is None:
        return
    emit = Emitter(bool(values["as_json"]), bool(values["verbose"]), bool(values["npd"]))
    fields = request_fields(values)
    try:
        stored = stored_answer(values, fields)
        if stored is not None:
            emit(stored)
            code = int(stored.get("exit_code", exitcodes.ERROR))
        else:
            _start_nvml_early(fields)
            code = _run(run_fields(values, fields), emit)
        code = emit.npd_status if values["npd"] else code
    except NodetuneError as exc:
        code = error(exc, bool(values["npd"]))
    except KeyboardInterrupt:
        sys.stderr.write("nodetune: interrupted\n")
        code = npd.UNKNOWN if values["npd"] else 130
    except BrokenPipeError:
        code = 0
    sys.exit(code)


def error(exc: NodetuneError, as_npd: bool) -> int:
    """nodetune's own failure: its one line on stderr, and with --npd on stdout too, as NPD's
    Unknown status."""
    text = f"nodetune: error: {exc.one_line()}"
    sys.stderr.write(text + "\n")
    if not as_npd:
        return exc.exit_code
    sys.stdout.write(npd.one_line(text))
    sys.stdout.flush()
    return npd.UNKNOWN


def stored_answer(values: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any] | None:
    """The agent's answer (--from-agent) or a cached result (--max-age) when one may be reused,
    else None. When the agent's answer may not be used, one stderr line says why."""
    if values.get("from_agent"):
        doc, why = fromagent.read(fields, fields["max_age"])
        if doc is None:
            sys.stderr.write(f"nodetune: not using the agent's answer: {why}; "
                             "running the full check\n")
        return doc
    # deferred: tempfile and zlib, which an answer from the agent does not need
    from nodetune.check.cache import reuse

    return reuse(fields)


def run_fields(values: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The request to run when no stored answer was used. After --from-agent the node is
    checked: its --max-age bounded the agent's answer, not a cached result's."""
    return {**fields, "max_age": None} if values.get("from_agent") else fields


def _start_nvml_early(fields: dict[str, Any]) -> None:
    """On the live host, start NVML while the check's modules load (see nvml.start_early)."""
    import os  # deferred with the rest of this path: a stored answer needs none of it

    if fields.get("root") or fields.get("snapshot") or os.environ.get("NODETUNE_ROOT"):
        return
    if fields.get("nvml", "auto") in ("auto", "live"):
        from nodetune.node import nvml  # deferred: only a full check on the live host

        nvml.start_early(thin=True)


def _run(fields: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> int:
    # Imported only when no stored answer could be reused: the dataclasses module alone costs
    # about a third of a cached answer's start-up. (`run` looks for a stored answer again;
    # after a miss that is one more stat or a small JSON read.)
    from nodetune.check.operation import CheckRequest, run

    return run(CheckRequest(**fields), emit=emit).exit_code


class Emitter:
    """Prints a check document as text, JSON or NPD's one line, and keeps NPD's status."""

    def __init__(self, as_json: bool, verbose: bool, as_npd: bool = False) -> None:
        self.as_json, self.verbose, self.as_npd = as_json, verbose, as_npd
        self.npd_status = npd.UNKNOWN  # nothing printed yet

    def __call__(self, doc: dict[str, Any]) -> None:
        if self.as_npd:
            self.npd_status = npd.status(doc)
            sys.stdout.write(npd.line(doc))
        elif self.as_json:
            # deferred: rich costs 30-45 ms at start-up; only --json output needs this
            from nodetune.views.output import emit_json

            emit_json(doc, CHECK_SCHEMA)
        else:
            sys.stdout.write(render_text(doc, self.verbose))
        sys.stdout.flush()
