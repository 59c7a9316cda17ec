"""YAML files that remember where each value came from, for errors that name file:line.

`load(path)` composes the document to nodes (libyaml when available), builds plain Python data
from them and keeps the line of every mapping key and list item, so a loader can say
"profiles/x.yaml:12: cpu.governor.equals: ..." instead of "bad value".

Every YAML file nodetune reads (profiles, overrides, recommend files, check suites) goes through
`load`, which is total: a file over `MAX_YAML_BYTES`, not UTF-8, with aliases (`*name`, which
make "billion laughs" and recursive documents possible) or nested deeper than `MAX_DEPTH` is one
ProfileError naming file:line, never a traceback, a hang or a memory blow-up.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

from nodetune.errors import ProfileError
from nodetune.facts.record import record

Keys = tuple[str, ...]

MAX_YAML_BYTES = 1 << 20  # the largest shipped YAML file is ~21 KB
MAX_DEPTH = 64


@record
class YamlDoc:
    path: str
    data: Any
    lines: dict[Keys, int] = field(default_factory=dict)

    def line(self, keys: Keys) -> int:
        """Line of the deepest known key on `keys` (1 when none is known)."""
        for end in range(len(keys), -1, -1):
            if keys[:end] in self.lines:
                return self.lines[keys[:end]]
        return 1

    def where(self, keys: Keys = ()) -> str:
        return f"{self.path}:{self.line(keys)}"


def load(path: str | Path, *, fix: str = "correct the YAML") -> YamlDoc:
    """Parse a YAML file; raise ProfileError with file:line on bad YAML or duplicate keys."""
    # deferred: PyYAML costs 16 ms at start-up; a cached check never parses YAML
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    name = str(path)
    text = read_text_capped(path, MAX_YAML_BYTES, fix=fix)
    try:
        node = yaml.compose(text, Loader=loader)
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["too deep"])[0]
        raise ProfileError(f"{name}:{line}: bad YAML: {problem}", fix=fix) from exc
    doc = YamlDoc(path=name, data=None)
    if node is not None:
        doc.data = _build(node, (), doc, yaml.constructor.SafeConstructor(), fix, set())
    return doc


def read_text_capped(path: str | Path, limit: int, *, fix: str) -> str:
    """The UTF-8 text of `path`, at most `limit` bytes; ProfileError (one line) otherwise."""
    name = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ProfileError(f"cannot read {name}: {exc.strerror or exc}", fix=fix) from exc
    if len(data) > limit:
        raise ProfileError(f"{name}: larger than {limit // 1024} KiB, too large for this kind "
                           "of file", fix=fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ProfileError(f"{name}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})",
                           fix="save the file as UTF-8") from None


def _build(node: Any, keys: Keys, doc: YamlDoc, constructor: Any, fix: str,
           seen: set[int]) -> Any:
    # deferred: PyYAML costs 16 ms at start-up; a cached check never parses YAML
    import yaml

    if id(node) in seen:  # composed nodes are shared only through an alias
        raise ProfileError(f"{name_at(doc, node)}: YAML aliases (*name) are not supported",
                           fix="write the value out instead of referring to an &anchor")
    if len(keys) > MAX_DEPTH:
        raise ProfileError(f"{name_at(doc, node)}: nested deeper than {MAX_DEPTH} levels",
                           fix=fix)
    seen.add(id(node))
    doc.lines.setdefault(keys, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _build(key_node, keys, doc, constructor, fix, seen)
            if not isinstance(key, (str, int, float, bool)):
                raise ProfileError(f"{name_at(doc, key_node)}: a mapping key must be a plain "
                                   "value", fix=fix)
            if key in out:
                raise ProfileError(f"{name_at(doc, key_node)}: {'.'.join((*keys, str(key)))}: "
                                   "duplicate key", fix=fix)
            child = (*keys, str(key))
            doc.lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, doc, constructor, fix, seen)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*keys, str(i)), doc, constructor, fix, seen)
                for i, item in enumerate(node.value)]
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{name_at(doc, node)}: bad value: {exc}", fix=fix) from exc
    except ValueError:  # an integer of over 4300 digits (Python's int(str) limit)
        raise ProfileError(f"{name_at(doc, node)}: bad value: a number too long to read",
                           fix=fix) from None


def name_at(doc: YamlDoc, node: Any) -> str:
    return f"{doc.path}:{node.start_mark.line + 1}"
