"""`nodetune check` without click: the start-up fast path and the text rendering.

`nodetune check` runs before every job, so its start-up counts: `nodetune.cli` hands a
`nodetune check ...` command line to `fast_main` before importing click. `fast_main` parses
the documented options itself and runs the check; for anything it does not recognise (--help,
a misspelt option, a value click would reject) it returns and the click command takes over, so
usage errors and help read exactly as for every other command.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

TIERS = ("quick", "standard")
# option -> (field of CheckRequest, value kind)
OPTIONS = {
    "--tier": ("tier", "tier"), "--timeout": ("timeout", "timeout"),
    "--max-age": ("max_age", "age"), "--profile": ("profile", "text"),
    "--expect-gpus": ("expect_gpus", "count"), "--expect-model": ("expect_model", "text"),
    "--mount": ("mounts", "many"), "--require-module": ("modules", "many"),
    "--cache-file": ("cache_file", "file"), "--root": ("root", "dir"),
    "--from": ("snapshot", "file"), "--nvml": ("nvml", "text"),
}
FLAGS = {"--json": "as_json", "--write-probe": "write_probe", "-v": "verbose",
         "--verbose": "verbose"}


def _value(kind: str, text: str) -> Any:
    """The option's value, or ValueError where click would refuse it."""
    if kind == "tier":
        if text not in TIERS:
            raise ValueError(text)
        return text
    if kind in ("timeout", "age"):
        number = float(text)
        if number != number or number < (0.1 if kind == "timeout" else 0):  # NaN or too small
            raise ValueError(text)
        return number
    if kind == "count":
        count = int(text)
        if count < 0:
            raise ValueError(text)
        return count
    if (kind == "dir" and os.path.isfile(text)) or (kind == "file" and os.path.isdir(text)):
        raise ValueError(text)
    return text


def parse(argv: list[str]) -> dict[str, Any] | None:
    """The options of `nodetune check ARGV`, or None when click should handle them."""
    opts: dict[str, Any] = {"mounts": [], "modules": []}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in FLAGS:
            opts[FLAGS[arg]] = True
            continue
        name, eq, text = arg.partition("=")
        if name not in OPTIONS:
            return None
        if not eq:
            if not args:
                return None
            text = args.pop(0)
        field, kind = OPTIONS[name]
        try:
            value = _value(kind, text)
        except ValueError:
            return None
        if kind == "many":
            opts[field].append(value)
        else:
            opts[field] = value
    if "root" not in opts and os.environ.get("NODETUNE_ROOT"):
        opts["root"] = os.environ["NODETUNE_ROOT"]
    return opts


def fast_main(argv: list[str]) -> None:
    """Run `nodetune check ARGV` and exit; return only when click should take over."""
    opts = parse(argv)
    if opts is None:
        return
    from nodetune.check.operation import CheckRequest, check
    from nodetune.errors import NodetuneError

    as_json = bool(opts.pop("as_json", False))
    verbose = bool(opts.pop("verbose", False))
    opts["mounts"], opts["modules"] = tuple(opts["mounts"]), tuple(opts["modules"])
    try:
        code = check(CheckRequest(**opts), emitter(as_json, verbose))
    except NodetuneError as exc:
        sys.stderr.write(f"nodetune: error: {exc.one_line()}\n")
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("nodetune: interrupted\n")
        code = 130
    except BrokenPipeError:
        code = 0
    sys.exit(code)


def emitter(as_json: bool, verbose: bool) -> Any:
    def emit(doc: dict[str, Any]) -> None:
        if as_json:
            from nodetune.schemas import CHECK_SCHEMA
            from nodetune.views.output import emit_json

            emit_json(doc, CHECK_SCHEMA)
        else:
            sys.stdout.write(render_text(doc, verbose))
        sys.stdout.flush()
    return emit


def render_text(doc: dict[str, Any], verbose: bool = False) -> str:
    """The summary line, then one line per fault, warning, timeout and error."""
    lines = [doc["summary"]]
    for kind, items in (("FAIL", doc["faults"]), ("WARN", doc["warnings"])):
        for item in items:
            subject = f"{item['subject']}: " if item.get("subject") else ""
            lines.append(f"  {kind} {item['fault_code']} {item['id']}: {subject}"
                         f"{_detail(item)}")
    lines += [f"  ERROR {e}" for e in doc.get("errors") or []]
    if verbose:
        for c in doc["checks"]:
            note = f" ({c['note']})" if c.get("note") else ""
            lines.append(f"  {c['status']:<8} {c['fault_code']} {c['id']}{note}")
    if doc.get("cached"):
        lines.append(f"  (cached result, {doc.get('cache_age_s')} s old)")
    return "\n".join(lines) + "\n"


def _detail(item: dict[str, Any]) -> str:
    if item.get("timed_out"):
        return str(item["message"])
    return f"{item['message']} [actual {item.get('actual')}, expected {item.get('expected')}]"
