"""One node to read: its host tree, its NVML backend (or recording) and where it came from.

`nodetune.node.source.open_node` makes one for the live host or a --root tree, and
`nodetune.node.snapshot.open_snapshot` for a --from snapshot; the commands read its facts.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from nodetune.collectors import Context, NodeFacts, gather
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot


@record
class Node:
    root: HostRoot
    nvml: Any = None  # a nodetune.node.nvml backend, or None when NVML is not used
    nvml_note: str | None = None
    origin: str = "live"  # "live", "root:DIR", "snapshot:FILE"
    meta: dict[str, Any] = field(default_factory=dict)
    _facts: NodeFacts | None = None

    def context(self) -> Context:
        return Context(root=self.root, nvml=self.nvml, nvml_note=self.nvml_note)

    def facts(self, only: tuple[str, ...] | None = None) -> NodeFacts:
        """All facts (cached for the life of this Node when `only` is None)."""
        if only is not None:
            return gather(self.context(), only)
        if self._facts is None:
            self._facts = gather(self.context())
        return self._facts
