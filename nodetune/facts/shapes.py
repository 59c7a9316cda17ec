"""The facts document's layout, and the facts contract generated from its types.

Every section of `nodetune facts --json`, the `derived` section and the `health` view is a typed
declaration: a collector's dataclasses (nodetune/collectors/*.py), `Derived` and `Health`
(nodetune/facts/sections.py). `sections()` below says which type each top-level key has and
what fills it; `contract()` walks those types into {fact path: (type, filled by)}. Adding a
field to one of the types adds its fact.

The result is written to nodetune/facts/contract.py so that start-up never imports the
collectors to know the contract: regenerate it with `python -m nodetune.facts.shapes`
(tests/test_conformance.py fails while it is out of date).

How Python types become contract types: bool -> bool, int -> int, float (or int | float) -> num,
str -> str, other unions and Any -> any, a list of scalars -> list, a list of dataclasses or
TypedDicts -> `[*]` and their fields, a `dict` marked `Keyed("name")` -> `<name>` and its
values, any other dict -> dict (free-form: any path below it is accepted). `FactKind` and
`JsonKey` markers (nodetune.facts.model) give a contract type or JSON key the Python type
cannot say.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict, Union

from nodetune.collectors import CollectorStatus, load_all
from nodetune.facts.model import FactKind, JsonKey, Keyed
from nodetune.facts.sections import CheckRunnerHealth, Derived, Health

CONTRACT_VERSION = 1
CONTRACT_MODULE = Path(__file__).with_name("contract.py")


class Envelope(TypedDict):
    """The keys `nodetune facts --json` puts before the sections."""

    schema: str
    nodetune_version: str
    root: str


class CheckCollectorRun(TypedDict):
    """What `check` adds to each collector's status."""

    timed_out: bool


@dataclass(frozen=True)
class Section:
    """One top-level key of the document: its type and what fills it."""

    key: str
    filled_by: str  # a collector's name, or "runner", "derived", "health", "check"
    shape: Any
    only: str | None = None  # just this field of `shape` (a collector's list made a section)
    omit: tuple[str, ...] = ()


def _collector_sections() -> list[Section]:
    """One section per collector, named after it and typed by what its collect() returns;
    the gpu collector's list of GPUs is a section of its own (`gpus`)."""
    out: list[Section] = []
    for name, cls in load_all().items():
        facts_type = _return_type(cls)
        if name == "gpu":
            out.append(Section("gpus", name, facts_type, only="gpus"))
            out.append(Section("gpu", name, facts_type, omit=("gpus",)))
        else:
            out.append(Section(name, name, facts_type))
    return out


def _return_type(cls: type) -> Any:
    """What a collector's collect() returns (its parameters may name types imported only
    for type checking, so only the return annotation is evaluated)."""
    annotation = cls.collect.__annotations__["return"]  # type: ignore[attr-defined]
    if isinstance(annotation, str):
        return eval(annotation, vars(sys.modules[cls.__module__]))
    return annotation


def sections() -> list[Section]:
    return [
        Section("", "runner", Envelope),
        *_collector_sections(),
        Section("collectors", "runner", Annotated[dict[str, CollectorStatus], Keyed("collector")]),
        Section("collectors", "check", Annotated[dict[str, CheckCollectorRun], Keyed("collector")]),
        Section("derived", "derived", Derived),
        Section("health", "health", Health),
        Section("health", "check", CheckRunnerHealth),
    ]


# -- walking types into paths ------------------------------------------------------------------

_SCALARS = {bool: "bool", int: "int", float: "num", str: "str"}


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """(the type without Annotated and None, the markers found on the way)."""
    marks: list[Any] = []
    while True:
        if typing.get_origin(tp) is Annotated:
            marks.extend(tp.__metadata__)
            tp = tp.__origin__
            continue
        if typing.get_origin(tp) in (Union, types.UnionType):
            rest = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(rest) == 1:
                tp = rest[0]
                continue
            inner = [_unwrap(a) for a in rest]
            for _, m in inner:
                marks.extend(m)
            names = {_SCALARS.get(t) for t, _ in inner}
            return ("num" if names <= {"int", "num"} else "any"), marks
        return tp, marks


def _fields(tp: Any) -> list[tuple[str, Any]]:
    """(JSON key, type) of a dataclass's or a TypedDict's fields, in declaration order."""
    hints = typing.get_type_hints(tp, include_extras=True)
    if dataclasses.is_dataclass(tp):
        names = [f.name for f in dataclasses.fields(tp)]
    else:
        names = list(hints)
    out = []
    for name in names:
        _, marks = _unwrap(hints[name])
        key = next((m.name for m in marks if isinstance(m, JsonKey)), name)
        out.append((key, hints[name]))
    return out


def _is_record(tp: Any) -> bool:
    return (dataclasses.is_dataclass(tp) and isinstance(tp, type)) or typing.is_typeddict(tp)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def walk(tp: Any, prefix: str) -> list[tuple[str, str]]:
    """Every leaf path below `prefix` of a value of type `tp`, with its contract type."""
    tp, marks = _unwrap(tp)
    kind = next((m.name for m in marks if isinstance(m, FactKind)), None)
    if kind is not None:
        return [(prefix, kind)]
    if isinstance(tp, str):  # a union already named by _unwrap
        return [(prefix, tp)]
    if tp in _SCALARS:
        return [(prefix, _SCALARS[tp])]
    if tp is Any or tp is object:
        return [(prefix, "any")]
    if _is_record(tp):
        out: list[tuple[str, str]] = []
        for key, ftype in _fields(tp):
            out += walk(ftype, _join(prefix, key))
        return out
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list or origin is tuple:
        item, _ = _unwrap(args[0]) if args else (Any, [])
        return walk(args[0], prefix + "[*]") if _is_record(item) else [(prefix, "list")]
    if origin is dict:
        keyed = next((m.name for m in marks if isinstance(m, Keyed)), None)
        if keyed is None:
            return [(prefix, "dict")]
        return walk(args[1], _join(prefix, f"<{keyed}>"))
    raise TypeError(f"{prefix}: no contract type for {tp!r}")


def contract() -> dict[str, tuple[str, str]]:
    """{fact path: (contract type, filled by)} for the whole document."""
    out: dict[str, tuple[str, str]] = {}
    for section in sections():
        if section.only is not None:
            hints = dict(_fields(section.shape))
            leaves = walk(hints[section.only], section.key)
        elif section.omit:
            leaves = [leaf for key, ftype in _fields(section.shape) if key not in section.omit
                      for leaf in walk(ftype, _join(section.key, key))]
        else:
            leaves = walk(section.shape, section.key)
        for path, type_ in leaves:
            if path in out and out[path][0] != type_:
                raise TypeError(f"{path}: typed {out[path][0]} and {type_}")
            out.setdefault(path, (type_, section.filled_by))
    return out


def render() -> str:
    """The source of nodetune/facts/contract.py."""
    lines = [
        '"""The facts contract: every fact path nodetune promises, its type and what fills it.',
        "",
        "GENERATED by `python -m nodetune.facts.shapes` from the typed declarations that",
        "nodetune/facts/shapes.py lists. Do not edit: change the types and regenerate.",
        '"""',
        "",
        f"VERSION = {CONTRACT_VERSION}",
        f'SCHEMA_ID = "nodetune.facts-contract/{CONTRACT_VERSION}"',
        "",
        "# path: (type, filled by)",
        "CONTRACT: dict[str, tuple[str, str]] = {",
    ]
    lines += [f"    {path!r}: ({type_!r}, {by!r})," for path, (type_, by) in contract().items()]
    lines += ["}", ""]
    return "\n".join(lines).replace("'", '"')


def main(argv: list[str]) -> int:
    text = render()
    if argv[:1] == ["--check"]:
        current = CONTRACT_MODULE.read_text() if CONTRACT_MODULE.exists() else ""
        if current != text:
            print(f"{CONTRACT_MODULE} is out of date: run python -m nodetune.facts.shapes",
                  file=sys.stderr)
            return 1
        return 0
    CONTRACT_MODULE.write_text(text)
    print(f"wrote {CONTRACT_MODULE} ({text.count(chr(10)) - 12} paths)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
