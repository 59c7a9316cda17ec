"""A node report's fleet summary: what `fleet report` takes from a node, stored with it.

`fleet collect` reduces each host's documents to what `fleet report` computes from them (its
`NodeReport`) and writes that as the report's last member, `fleet_summary` (schema
`nodetune.node-summary/1`), like a file footer: with the nodetune version that computed it
and the CRC-32 of the report's text before it. `fleet report` of the same version reads only
the footer of a file whose text still has that checksum; a report edited since, one of another
version, or one without a footer (the agent's /report) is read whole: the same answer.

The parts that repeat from node to node (the settings table and the drift digest) are
decoded once per distinct text, so a fleet of like nodes holds them once. The metric layout
(each metric's key, name, unit and direction: most of a bench result's text) is named by its
BLAKE2b digest only; the first report of each layout is read whole, and its layout, if it has
that digest, serves the reports that name it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from typing import Any

from nodetune import __version__
from nodetune.fleet import drift
from nodetune.fleet.nodereport import Layout, NodeReport
from nodetune.schemas import NODE_SUMMARY_SCHEMA

FIELD = "fleet_summary"
_MEMBER = b',"' + FIELD.encode() + b'":'
KEPT = 4096  # distinct texts of each repeated part kept decoded


def layout_digest(layout: Layout) -> str:
    text = json.dumps([list(m) for m in layout], separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def with_footer(head: bytes, node: NodeReport) -> bytes:
    """The report's text: HEAD (a JSON object's text without its closing brace) and the
    node's summary as its last member."""
    footer = {
        "schema": NODE_SUMMARY_SCHEMA, "nodetune_version": __version__,
        "crc32": zlib.crc32(head), "kind": node.kind, "collected_at": node.collected_at,
        "profile": node.profile, "failed": node.failed, "compliance": node.compliance,
        "healthy": node.healthy, "health_faults": node.health_faults,
        "health_summary": node.health_summary, "errors": node.errors,
        "settings": [[rule, *entry] for rule, entry in node.settings.items()],
        "drift": list(node.drift),
        "metric_layout": layout_digest(node.metric_layout),
        "metric_values": node.metric_values,
    }
    return b"".join((head, _MEMBER, json.dumps(footer, separators=(",", ":"),
                                               default=str).encode(), b"}\n"))


class Reader:
    """Footers to NodeReports (msgspec decodes them)."""

    def __init__(self) -> None:
        import msgspec  # deferred: an extra ([fleet]); load.py uses a Reader only with it

        raw = msgspec.Raw
        self._footer = msgspec.json.Decoder(msgspec.defstruct("Footer", [
            ("schema", str), ("nodetune_version", str), ("crc32", int), ("kind", str),
            ("collected_at", str | None), ("profile", str), ("failed", dict[str, int]),
            ("compliance", float | None), ("healthy", bool | None), ("health_faults", int),
            ("health_summary", str | None), ("errors", list[str]), ("settings", raw),
            ("drift", raw), ("metric_layout", str), ("metric_values", list[float])]))
        self._settings = msgspec.json.Decoder(list[tuple[str, Any, Any, int, int, Any]])
        self._drift = msgspec.json.Decoder(list[str | None])
        self._seen: dict[tuple[int, bytes], Any] = {}
        self._layouts: dict[str, Layout] = {}

    def node(self, host: str, data: bytes) -> tuple[NodeReport | None, str | None]:
        """(the NodeReport of a report's footer, None) or (None, None) where it has none, it
        does not decode, it is of another version or the text before it has changed; (None,
        digest) where its layout is not known yet: read the report whole and learn() it."""
        at = data.rfind(_MEMBER)
        if at < 0:
            return None, None
        end = data.rstrip().rfind(b"}")
        try:
            footer: Any = self._footer.decode(data[at + len(_MEMBER):end])
            if (footer.schema != NODE_SUMMARY_SCHEMA or footer.nodetune_version != __version__
                    or footer.crc32 != zlib.crc32(memoryview(data)[:at])):
                return None, None
            layout = self._layouts.get(footer.metric_layout)
            if layout is None:
                return None, footer.metric_layout
            if len(layout) != len(footer.metric_values):
                return None, None
            return NodeReport(
                host=host, kind=footer.kind, profile=footer.profile,
                collected_at=footer.collected_at, failed=footer.failed,
                compliance=footer.compliance, healthy=footer.healthy,
                health_faults=footer.health_faults, health_summary=footer.health_summary,
                errors=footer.errors,
                settings=self._part(0, footer.settings, self._decode_settings),
                drift=self._part(1, footer.drift, self._decode_drift),
                metric_layout=layout, metric_values=footer.metric_values), None
        except ValueError:  # msgspec's DecodeError and ValidationError; a part of another shape
            return None, None

    def learn(self, digest: str, node: NodeReport) -> None:
        """Keep the layout of a report read whole, where it is the one its footer named."""
        if len(self._layouts) < KEPT and layout_digest(node.metric_layout) == digest:
            self._layouts[digest] = node.metric_layout

    def _part(self, which: int, raw: Any, decode: Any) -> Any:
        key = (which, bytes(raw))
        value = self._seen.get(key)
        if value is None:
            value = decode(key[1])
            if len(self._seen) < 2 * KEPT:
                self._seen[key] = value
        return value

    def _decode_settings(self, data: bytes) -> dict[str, list[Any]]:
        return {rule: list(entry) for rule, *entry in self._settings.decode(data)}

    def _decode_drift(self, data: bytes) -> tuple[str | None, ...]:
        values = self._drift.decode(data)
        if len(values) != len(drift.FACTS):
            raise ValueError(f"{len(values)} drift facts, not {len(drift.FACTS)}")
        return tuple(None if v is None else sys.intern(v) for v in values)
