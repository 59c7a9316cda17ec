"""Fact paths: their syntax, and the registry of every path the facts contract promises.

A fact path is a dotted path into the facts document (`nodetune facts --json`) plus the
`derived` section (`nodetune.facts.derived.derive`):

- `cpu.governor`: a key.
- `gpus[*].pcie.current_width`: every item of a list (one subject per item).
- `gpus[0].name`: one item by position.
- `pci.devices[kind=nic|infiniband,vendor=0x15b3].max_read_request_bytes`: the items whose
  fields match (`|` = any of these values, `,` = and).
- Keys that contain dots (sysctl names, kernel arguments such as `iommu.passthrough`) are
  written plainly and resolve by longest match: `kernel.sysctl.vm.swappiness`.

The paths the contract promises come from nodetune/facts/contract.py, generated from the typed
facts (nodetune.facts.shapes). `is_known(path)` says whether a path is promised by the
contract; profile and check loaders use it so that a typo in a rule is an error at load time,
not an eternal "unknown" at run time.
"""

from __future__ import annotations

import functools

from nodetune.facts.contract import CONTRACT
from nodetune.facts.record import record

# Contract types: int, num, str, bool, list, dict, any, numstr (a string holding a number,
# such as sysctl values). `<name>` in a path matches any key (dotted keys too); a path may
# continue below a `dict` or `any` leaf.

NUMERIC_TYPES = frozenset({"int", "num", "numstr", "any"})


@record(frozen=True)
class Token:
    """One step of a fact path: a key, every item (`[*]`), an index, or a filter."""

    key: str | None = None
    index: int | None = None
    each: bool = False
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def is_list(self) -> bool:
        return self.key is None

    def text(self) -> str:
        if self.key is not None:
            return self.key
        if self.index is not None:
            return f"[{self.index}]"
        if self.filters:
            return "[" + ",".join(f"{k}={'|'.join(v)}" for k, v in self.filters) + "]"
        return "[*]"


class PathSyntaxError(ValueError):
    """A fact path that cannot be parsed."""


@functools.lru_cache(maxsize=4096)
def parse(path: str) -> tuple[Token, ...]:
    """Split a fact path into tokens; raise PathSyntaxError on bad syntax."""
    if not isinstance(path, str) or not path.strip():
        raise PathSyntaxError("empty fact path")
    tokens: list[Token] = []
    i, n = 0, len(path)
    expect_key = True
    while i < n:
        ch = path[i]
        if ch == "[":
            end = path.find("]", i)
            if end < 0:
                raise PathSyntaxError(f"unclosed '[' in {path!r}")
            tokens.append(_bracket(path[i + 1:end], path))
            i = end + 1
            expect_key = False
            continue
        if ch == ".":
            if expect_key:
                raise PathSyntaxError(f"empty key in {path!r}")
            i += 1
            expect_key = True
            continue
        j = i
        while j < n and path[j] not in ".[":
            j += 1
        if not expect_key:
            raise PathSyntaxError(f"missing '.' before {path[i:j]!r} in {path!r}")
        key = path[i:j]
        if "]" in key or not key.strip():
            raise PathSyntaxError(f"bad key {key!r} in {path!r}")
        tokens.append(Token(key=key))
        i = j
        expect_key = False
    if expect_key:
        raise PathSyntaxError(f"fact path {path!r} ends with '.'")
    if tokens[0].key is None:
        raise PathSyntaxError(f"fact path {path!r} must start with a key")
    return tuple(tokens)


def _bracket(inner: str, path: str) -> Token:
    inner = inner.strip()
    if inner == "*":
        return Token(each=True)
    if inner.isdigit():
        return Token(index=int(inner))
    filters = []
    for part in inner.split(","):
        key, eq, values = part.partition("=")
        if not eq or not key.strip() or not values.strip():
            raise PathSyntaxError(f"bad selector [{inner}] in {path!r}: "
                                  "use [*], [N] or [key=value]")
        filters.append((key.strip(), tuple(v.strip() for v in values.split("|"))))
    return Token(each=True, filters=tuple(filters))


def canonical(tokens: tuple[Token, ...]) -> str:
    """The path with every list step written `[*]` (how per-item bindings are keyed)."""
    out = ""
    for tok in tokens:
        if tok.key is not None:
            out += ("." if out else "") + tok.key
        else:
            out += "[*]"
    return out


# -- the registry ------------------------------------------------------------------------

_ANY = "<"  # registry keys starting with "<" match any key


@record
class _Node:
    children: dict[str, _Node]
    type: str | None = None


def _insert(root: _Node, spec_path: str, type_: str) -> None:
    node = root
    for tok in parse(spec_path):
        name = "[*]" if tok.is_list else tok.key
        assert name is not None
        node = node.children.setdefault(name, _Node({}))
    node.type = type_


@functools.lru_cache(maxsize=1)
def _registry() -> _Node:
    root = _Node({})
    for path, (type_, _filled_by) in CONTRACT.items():
        _insert(root, path, type_)
    return root


def fact_type(path: str) -> str | None:
    """The registered type of a fact path ("int", "str", ...), or None when not promised."""
    try:
        tokens = parse(path)
    except PathSyntaxError:
        return None
    found = _match(_registry(), tokens, 0)
    return found[0] if found else None


def is_known(path: str) -> bool:
    return fact_type(path) is not None


def _match(node: _Node, tokens: tuple[Token, ...], i: int) -> tuple[str, bool] | None:
    """(type, whether the path ends on a leaf) for the best match, or None."""
    if i == len(tokens):
        if node.type is not None:
            return node.type, True
        if node.children:  # a container on the way to promised facts
            return ("list" if "[*]" in node.children else "dict"), False
        return None
    if not node.children and node.type in ("dict", "any"):
        return "any", True  # below a free-form dict, anything goes
    tok = tokens[i]
    if not node.children and node.type == "list" and tok.is_list and i == len(tokens) - 1:
        return "any", True  # one element of a list of values (netdevs[0])
    if tok.is_list:
        child = node.children.get("[*]")
        return _match(child, tokens, i + 1) if child else None
    candidates: list[tuple[str, bool]] = []
    child = node.children.get(tok.key or "")
    if child is not None:
        found = _match(child, tokens, i + 1)
        if found is not None:
            candidates.append(found)
    for name, wild in node.children.items():
        if not name.startswith(_ANY):
            continue
        # a `<name>` key may span several dotted tokens (sysctl names): longest first
        end = i
        while end < len(tokens) and not tokens[end].is_list:
            end += 1
        for stop in range(end, i, -1):
            found = _match(wild, tokens, stop)
            if found is not None:
                candidates.append(found)
    leaves = [c for c in candidates if c[1]]
    best = leaves or candidates
    return best[0] if best else None
