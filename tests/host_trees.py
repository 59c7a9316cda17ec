"""Small host trees written in tmp_path for edge cases, and collector contexts over them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from nodetune.collectors import Context
from nodetune.node.hostroot import HostRoot


def write_tree(root: Path, files: dict[str, str], dedent: bool = False) -> Path:
    """Write {host path: text} under `root` (parents created); return `root`."""
    for rel, text in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text) if dedent else text)
    return root


def context(path: Path | str) -> Context:
    return Context(root=HostRoot(str(path)))
