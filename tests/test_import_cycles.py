"""No import cycles inside the packages that read the node: every import counts, those inside
functions too (they hid the node.source <-> node.snapshot cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "nodetune"


def imports_within(package: str) -> dict[str, set[str]]:
    """module -> the modules of `nodetune.<package>` it imports, anywhere in its body."""
    prefix = f"nodetune.{package}"
    modules = {f"{prefix}.{p.stem}" if p.stem != "__init__" else prefix: p
               for p in (PACKAGE / package).glob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from nodetune.node import snapshot` imports the module nodetune.node.snapshot
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            found.update(n for n in names if n in modules and n != module)
        graph[module] = found
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for target in sorted(graph[module]):
            found = visit(target, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return None


@pytest.mark.parametrize("package", ["node", "collectors", "placement", "manifests"])
def test_no_import_cycle(package: str) -> None:
    graph = imports_within(package)
    assert len(graph) > 1
    assert cycle(graph) is None, " -> ".join(cycle(graph) or [])


def test_the_scan_finds_a_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
