"""The package layout shows the data flow: a thin top level, one documented sub-package per stage,
and no import cycles (function-level imports included, because they only hide a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nodetune"
TOP_LEVEL_MODULES = {"__init__", "__main__", "cli", "errors", "exitcodes", "schemas"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def owning_module(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def is_type_checking_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING")


def imported_modules(module: str, path: Path) -> set[str]:
    """Every nodetune module `module` imports, at any depth, outside TYPE_CHECKING blocks."""
    found: set[str] = set()
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if is_type_checking_block(child):
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package_parts[: len(package_parts) - (child.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                names = [base] + [f"{base}.{alias.name}" for alias in child.names]
            for name in names:
                target = owning_module(name) if name.startswith("nodetune") else None
                if target and target != module and not module.startswith(target + "."):
                    found.add(target)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_cycles() -> list[list[str]]:
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongly_connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                strongly_connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            strongly_connect(name)
    return cycles


def test_no_import_cycles() -> None:
    assert import_cycles() == []


def test_cycle_detection_sees_function_level_imports(tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from nodetune.cli import main\n", encoding="utf-8")
    assert "nodetune.cli" in imported_modules("nodetune.errors", path)


def test_top_level_holds_only_the_face_of_the_package() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL_MODULES


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")))
def test_every_sub_package_says_what_it_does(package: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text("utf-8")))
    assert doc and len(doc.split()) >= 5, f"nodetune/{package}/__init__.py needs a docstring"


def undocumented_deferred_imports(text: str) -> list[int]:
    """Lines of imports inside functions with no comment saying why they are not at module top
    (on the line, or above the block of imports the line belongs to)."""
    lines = text.splitlines()
    found = set()
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if not isinstance(inner, ast.Import | ast.ImportFrom):
                continue
            row = inner.lineno - 1
            while row > 0 and lines[row - 1].strip().startswith(("import ", "from ")):
                row -= 1  # the first import of this block
            if "#" not in lines[inner.lineno - 1] and not lines[row - 1].strip().startswith("#"):
                found.add(inner.lineno)
    return sorted(found)


def test_imports_inside_functions_say_why() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for line in undocumented_deferred_imports(path.read_text(encoding="utf-8"))]
    assert found == []


def test_an_undocumented_deferred_import_is_found() -> None:
    text = ("def f():\n    import json\n    return json\n\n"
            "def g():\n    # deferred: a reason\n    import csv\n    import re\n"
            "    return csv, re\n")
    assert undocumented_deferred_imports(text) == [2]
