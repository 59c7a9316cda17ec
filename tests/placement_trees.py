"""Host trees and facts documents for the placement, manifests and bind tests.

Synthetic trees are built once per test process (they take a few seconds each); facts come
from nodetune's own collectors reading them, exactly as `nodetune manifests --root` does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from nodetune.node.source import open_node
from nodetune.placement import inputs
from nodetune.placement import plan as placement
from tests.fixtures import synth

# NVML as recorded on the real 2x H200 VM (tests/fixtures/hosts/h200x2-vm-gather.tar.gz).
H200_NVML = Path(__file__).parent / "fixtures" / "nvml" / "h200x2-vm.json"
_BUILT: dict[str, tuple[Path, str | None]] = {}
_FACTS: dict[str, dict[str, Any]] = {}

SYNTHETIC = {
    "dgx-h100": ("synthetic-dgx-h100", synth.Options()),
    "gb200": ("synthetic-gb200-tray", synth.Options()),
    "hgx-multirail": ("synthetic-dgx-h100", synth.Options(rails_per_gpu=2)),
    "dgx-h100-small": ("synthetic-dgx-h100", synth.Options(cores_per_socket=4, smt=False)),
}


def tree(request: Any, name: str) -> tuple[Path, str | None]:
    """(root, NVML recording) of a SYNTHETIC tree, built once per test process.

    Default trees come from the shared `synthetic_host` session fixture when conftest offers
    it, so other test modules in the process reuse the same build.
    """
    if name not in _BUILT:
        kind, options = SYNTHETIC[name]
        host = None
        if options == synth.Options():
            try:
                host = request.getfixturevalue("synthetic_host")(kind)
            except pytest.FixtureLookupError:
                host = None
        if host is None:
            host = synth.build(kind, request.getfixturevalue("tmp_path_factory").mktemp(name),
                               options)
        _BUILT[name] = (Path(host.root), str(host.nvml))
    return _BUILT[name]


def cli_args(root: Path, nvml: str | None) -> list[str]:
    return ["--root", str(root), "--nvml", nvml or "off"]


def facts(root: Path, nvml: str | None) -> dict[str, Any]:
    """A private copy of the facts document of a tree (tests may edit it)."""
    key = f"{root}:{nvml}"
    if key not in _FACTS:
        with open_node(root=str(root), nvml=nvml or "off") as node:
            _FACTS[key] = node.facts().to_json()
    return copy.deepcopy(_FACTS[key])


def plan(doc: dict[str, Any], **kw: Any) -> placement.Placement:
    return placement.compute(doc, inputs.topology_doc(doc), **kw)
