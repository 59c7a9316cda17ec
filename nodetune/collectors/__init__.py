"""Collector registry and runner.

Each collector reads one subsystem through a HostRoot and returns a typed FactSet. Collectors
never exec and never write. Registration is explicit: `_MODULES` below names every module.
Each collector runs within its time limit (`nodetune.collectors.limits`).
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from dataclasses import field
from typing import Any, Protocol

from nodetune import __version__
from nodetune.collectors import limits
from nodetune.errors import NoData, NodetuneError
from nodetune.facts.model import FactSet, to_jsonable
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot
from nodetune.schemas import FACTS_SCHEMA

# Collector modules, in the order their sections appear in `nodetune facts`.
_MODULES = (
    "cpu",
    "numa",
    "memory",
    "kernel",
    "system",
    "pci",
    "gpu",
    "nic",
    "rdma",
    "storage",
    "services",
    "kernel_log",
    "nvidia_driver",
    "gpudirect_stack",
)


@record
class Context:
    """What a collector may use: the host tree, NVML (or a recording of it), earlier results."""

    root: HostRoot
    nvml: Any = None  # an nodetune.node.nvml.NvmlBackend, or None when NVML is not to be used
    nvml_note: str | None = None  # why NVML is not used, when it is not
    results: dict[str, FactSet] = field(default_factory=dict)


class Collector(Protocol):
    name: str
    requires: tuple[str, ...]
    timeout_s: float  # seconds it may take (limits.DEFAULT_S unless it says otherwise)

    def collect(self, ctx: Context) -> FactSet: ...

    def to_sections(self, facts: FactSet) -> dict[str, Any]: ...


_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: register a collector under a unique name."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"collector {name!r} registered twice")
        setattr(cls, "name", name)  # noqa: B010  (set on any class, whatever it declares)
        if not hasattr(cls, "requires"):
            setattr(cls, "requires", ())  # noqa: B010
        if not hasattr(cls, "timeout_s"):
            setattr(cls, "timeout_s", limits.DEFAULT_S)  # noqa: B010
        if not hasattr(cls, "to_sections"):
            setattr(cls, "to_sections",  # noqa: B010
                    lambda self, facts: {self.name: to_jsonable(facts)})
        _REGISTRY[name] = cls
        return cls

    return wrap


def load_all(only: tuple[str, ...] | None = None) -> dict[str, type]:
    """Import the collector modules (only those named `only`, when each names a module: every
    dataclass a module defines costs start-up time) and return the registry, in the order of
    `_MODULES` whatever imported a module first (a snapshot imports some for their paths)."""
    wanted = _MODULES if only is None or not set(only) <= set(_MODULES) else only
    for module in _MODULES:
        if module in wanted:
            importlib.import_module(f"nodetune.collectors.{module}")
    return dict(sorted(_REGISTRY.items(), key=lambda item: _module_rank(item[1])))


def _module_rank(cls: type) -> int:
    module = cls.__module__.rpartition(".")[2]
    return _MODULES.index(module) if module in _MODULES else len(_MODULES)


@record
class CollectorStatus:
    ok: bool
    seconds: float
    error: str | None = None
    no_data: bool = False
    timed_out: bool = False  # abandoned at its time limit (in JSON only when true)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = to_jsonable(self)
        if not self.timed_out:
            del doc["timed_out"]
        return doc


@record
class NodeFacts:
    """All facts of one node: the typed results and how each collector fared."""

    results: dict[str, FactSet]
    status: dict[str, CollectorStatus]
    sections: dict[str, Any]
    root: str

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schema": FACTS_SCHEMA, "nodetune_version": __version__,
                               "root": self.root}
        doc.update(self.sections)
        doc["collectors"] = {n: s.to_json() for n, s in self.status.items()}
        return doc


def gather(ctx: Context, only: tuple[str, ...] | None = None, *,
           time_limits: bool = True) -> NodeFacts:
    """Run every collector (or `only` these) on its own, each within its time limit; one
    failure or time-out never drops the rest. Without `time_limits` the caller bounds the time
    (`nodetune check` runs each collector as a unit with the timeout of its checks)."""
    registry = load_all(only)
    status: dict[str, CollectorStatus] = {}
    sections: dict[str, Any] = {}
    for name, cls in registry.items():
        if only is not None and name not in only:
            continue
        collector = cls()
        seconds = limits.limit(collector) if time_limits else None
        start = time.perf_counter()
        try:
            if seconds is not None:
                facts = limits.call_within(name, functools.partial(collector.collect, ctx), seconds)
            else:
                facts = collector.collect(ctx)
        except limits.TimedOut as exc:
            status[name] = CollectorStatus(False, time.perf_counter() - start, exc.message,
                                           timed_out=True)
            continue
        except NoData as exc:
            status[name] = CollectorStatus(True, time.perf_counter() - start, exc.message, True)
            continue
        except NodetuneError as exc:
            status[name] = CollectorStatus(False, time.perf_counter() - start, exc.one_line())
            continue
        except Exception as exc:  # a collector bug must not cost the other collectors
            status[name] = CollectorStatus(False, time.perf_counter() - start,
                                           f"{type(exc).__name__}: {exc}")
            continue
        ctx.results[name] = facts
        sections.update(collector.to_sections(facts))
        status[name] = CollectorStatus(True, time.perf_counter() - start)
    return NodeFacts(results=ctx.results, status=status, sections=sections, root=ctx.root.name)
