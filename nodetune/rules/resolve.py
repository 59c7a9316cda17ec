"""Fact-path resolution: every value a path names in a facts document, with its subject.

`gpus[*].x` gives one Item per GPU, each named from the item (GPU3, NUMA1, mlx5_0/port1,
nvme0n1, a PCI address); `[kind=nic|infiniband]` selects items; `[0]` one item; keys holding
dots resolve by longest match. A null value carries the reason its collector recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import field, replace
from typing import Any

from nodetune.facts import paths as factpaths
from nodetune.facts.record import record
from nodetune.rules.operators import as_text


@record
class Item:
    """One value a fact path resolved to: the subject it belongs to and why it is unknown."""

    subject: str | None
    value: Any
    reason: str | None = None  # why the value is null/missing, when it is
    bindings: dict[str, int] = field(default_factory=dict)  # "gpus[*]" -> list index
    path: str = ""  # the concrete path, e.g. "gpus.3.pcie.current_width"
    absent: bool = False  # a key the node's mapping does not have: "not set", not unknown


_SUBJECT_KEYS = {"gpus": ("GPU", "index"), "nodes": ("NUMA", "id"), "numa_nodes": ("NUMA", "id"),
                 "cpus": ("CPU", "id"), "links": ("link", "link"), "ports": ("port", "port")}
_SECTION_ALIASES = {"gpus": "gpu"}


def subject_of(list_key: str, item: Any, index: int) -> str:
    """How an item of the list `list_key` is named in findings."""
    if isinstance(item, Mapping):
        if list_key in _SUBJECT_KEYS:
            prefix, key = _SUBJECT_KEYS[list_key]
            if item.get(key) is not None:
                return f"{prefix}{item[key]}"
        if list_key == "hugepages" and item.get("size_kb") is not None:
            return f"{item['size_kb']}kB"
        for key in ("subject", "name", "address", "pci_address", "mountpoint", "id", "index"):
            if item.get(key) is not None:
                return str(item[key])
    return f"{list_key}[{index}]"


def resolve(doc: Mapping[str, Any], path: str,
            bindings: Mapping[str, int] | None = None) -> list[Item]:
    """Every value `path` names in `doc`: one Item, or one per list item for `[*]` paths.

    A `[*]` over an empty list gives no items, unless the collector said why the list is
    empty (then one unknown Item); a missing container gives one Item with a null value and
    the recorded reason.
    """
    walker = _Walker(doc, factpaths.parse(path), dict(bindings or {}))
    walker.walk(doc, 0, _Trail())
    return walker.out


@record(frozen=True)
class _Trail:
    """Where the walk is: concrete parts ("nodes", "0"), the same with item names
    ("interfaces", "eth0") for collectors that key reasons by name, subjects, bindings, and
    the `unknown` maps passed on the way (with the depth each is relative to)."""

    parts: tuple[str, ...] = ()
    named: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    bindings: tuple[tuple[str, int], ...] = ()
    contexts: tuple[tuple[Mapping[str, Any], int], ...] = ()
    absent: bool = False

    def down(self, key: str, name: str | None = None, subject: str | None = None,
             binding: tuple[str, int] | None = None) -> _Trail:
        return replace(self, parts=(*self.parts, key), named=(*self.named, name or key),
                       subjects=self.subjects + ((subject,) if subject else ()),
                       bindings=self.bindings + ((binding,) if binding else ()))

    def with_context(self, unknown: Mapping[str, Any], depth: int) -> _Trail:
        return replace(self, contexts=(*self.contexts, (unknown, depth)))


class _Walker:
    def __init__(self, doc: Mapping[str, Any], tokens: tuple[factpaths.Token, ...],
                 bindings: dict[str, int]) -> None:
        self.doc, self.tokens, self.bindings = doc, tokens, bindings
        self.out: list[Item] = []

    def walk(self, obj: Any, i: int, trail: _Trail) -> None:
        if isinstance(obj, Mapping) and isinstance(obj.get("unknown"), Mapping):
            trail = trail.with_context(obj["unknown"], len(trail.parts))
        if i == len(self.tokens):
            self.emit(obj, trail)
            return
        tok = self.tokens[i]
        if obj is None and any(t.key is None for t in self.tokens[i:]):
            reason = _why_unknown(self.doc, trail)
            if reason:  # a list we cannot see into; with no reason, there are no items
                self.out.append(Item(subject="/".join(trail.subjects) or None, value=None,
                                     reason=reason, bindings=dict(trail.bindings),
                                     path=".".join(trail.parts)))
            return
        if tok.key is not None:
            self.walk_key(obj, i, trail)
        elif isinstance(obj, list):
            self.walk_list(obj, i, trail)
        else:
            self.emit(None, trail)

    def walk_key(self, obj: Any, i: int, trail: _Trail) -> None:
        key0 = self.tokens[i].key or ""
        if isinstance(obj, list) and key0.isdigit():
            idx = int(key0)
            self.walk(obj[idx] if idx < len(obj) else None, i + 1, trail.down(key0))
            return
        if not isinstance(obj, Mapping):
            self.emit(None, trail)
            return
        end = i
        while end < len(self.tokens) and self.tokens[end].key is not None:
            end += 1
        for stop in range(end, i, -1):  # longest dotted key first
            key = ".".join(t.key for t in self.tokens[i:stop] if t.key is not None)
            if key in obj:
                if not trail.parts and key in _SECTION_ALIASES:
                    section = self.doc.get(_SECTION_ALIASES[key])
                    if isinstance(section, Mapping) and isinstance(section.get("unknown"), Mapping):
                        trail = trail.with_context(section["unknown"], 0)
                self.walk(obj[key], stop, trail.down(key))
                return
        self.walk(None, i + 1, replace(trail.down(key0), absent=bool(trail.parts)))

    def walk_list(self, obj: list[Any], i: int, trail: _Trail) -> None:
        tok = self.tokens[i]
        canon = factpaths.canonical(self.tokens[:i + 1])
        list_key = trail.parts[-1] if trail.parts else ""
        if tok.index is not None:
            indices: Iterable[int] = [tok.index] if tok.index < len(obj) else []
        elif canon in self.bindings:
            indices = [self.bindings[canon]] if self.bindings[canon] < len(obj) else []
        else:
            indices = range(len(obj))
        if not obj:
            reason = _why_unknown(self.doc, trail, exact=True)
            if reason:  # an empty list the collector could not fill
                self.out.append(Item(subject=None, value=None, reason=reason,
                                     path=".".join(trail.parts)))
            return
        for idx in indices:
            item = obj[idx]
            if tok.filters and not _selected(item, tok.filters):
                continue
            name = item.get("name") if isinstance(item, Mapping) else None
            self.walk(item, i + 1, trail.down(str(idx), str(name) if name else None,
                                              subject_of(list_key, item, idx), (canon, idx)))

    def emit(self, value: Any, trail: _Trail) -> None:
        reason = None
        if value is None or value == "unknown" or value == [] or value == {}:
            reason = _why_unknown(self.doc, trail, exact=value is not None)
            if value == "unknown":
                value, reason = None, reason or "reported as unknown"
            elif reason is not None:
                value = None  # an empty value the collector says it could not read
        self.out.append(Item(subject="/".join(trail.subjects) or None, value=value,
                             reason=reason, bindings=dict(trail.bindings),
                             path=".".join(trail.parts),
                             absent=value is None and reason is None and trail.absent))


def _selected(item: Any, filters: tuple[tuple[str, tuple[str, ...]], ...]) -> bool:
    if not isinstance(item, Mapping):
        return False
    return all(as_text(item.get(key)) in values for key, values in filters)


def _why_unknown(doc: Mapping[str, Any], trail: _Trail, exact: bool = False) -> str | None:
    """The reason a collector recorded for this path (or, unless `exact`, a parent of it)."""
    for unknown, start in reversed(trail.contexts):
        named = trail.named[start:]
        variants = {trail.parts[start:], named,
                    tuple("*" if p.isdigit() else p for p in trail.parts[start:]),
                    tuple(p for p in named if not p.isdigit())}  # "devices.mlx5_0.ports.x"
        for rel in variants:
            for k in range(len(rel), 0 if not exact else len(rel) - 1, -1):
                key = ".".join(rel[:k])
                if key in unknown:
                    return str(unknown[key])
    if exact or not trail.parts:
        return None
    head = trail.parts[0].split(".")[0]
    section = _SECTION_ALIASES.get(head, head)
    if head not in doc or doc.get(head) is None:
        status = (doc.get("collectors") or {}).get(section)
        if isinstance(status, Mapping) and status.get("no_data"):
            return None  # the subsystem is absent: nothing to report, nothing unknown
        if isinstance(status, Mapping) and status.get("error"):
            return f"{section} collector: {status['error']}"
        if section != "derived":
            return f"the {section} collector did not report"
    return None

