"""Shape of a `nodetune.nvml/1` recording, checked on load so that no consumer meets a wrong type.

A recording comes from a file (`--nvml FILE`), a snapshot's nvml.json or a converted support
ticket: any of them may be hand-edited or truncated. `problems(doc)` names the first value of
the wrong type ("devices[0].pcie.current_gen: expected an integer, got 'x'"); every field may be
null (not read), keys it does not know are left alone, and NaN/infinities or nesting deeper
than MAX_DEPTH are refused wherever they are.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 16

INT, NUM, BOOL, STR = "an integer", "a number", "true or false", "a string"
INTS, STRS = ("list", INT), ("list", STR)
COUNTERS: dict[str, Any] = {"corrected": INT, "uncorrected": INT}
LINK: dict[str, Any] = {"link": INT, "active": BOOL, "remote_pci_bus_id": STR,
                        "remote_kind": STR,
                        "counters": {"symbol_errors": INT, "effective_errors": INT,
                                     "recovery_successful": INT, "recovery_failed": INT,
                                     "recovery_events": INT, "fec_history": INTS}}
DEVICE: dict[str, Any] = {
    "index": INT, "pci_bus_id": STR, "name": STR, "uuid": STR, "minor_number": INT,
    "vbios_version": STR,
    "memory_total_bytes": INT, "persistence_mode": BOOL,
    "ecc": {"current": BOOL, "pending": BOOL, "volatile": COUNTERS, "aggregate": COUNTERS},
    "retired_pages": {"single_bit": INT, "double_bit": INT, "pending": BOOL},
    "remapped_rows": {"correctable": INT, "uncorrectable": INT, "pending": BOOL,
                      "failure": BOOL},
    "clocks": {"sm_mhz": INT, "mem_mhz": INT, "sm_max_mhz": INT, "mem_max_mhz": INT},
    "clock_event_reasons_mask": INT, "clock_event_reasons": STRS,
    "performance_state": INT, "power_draw_w": NUM, "power_limit_w": NUM, "temperature_c": INT,
    "mig": {"current": BOOL, "pending": BOOL},
    "pcie": {"current_gen": INT, "max_gen": INT, "current_width": INT, "max_width": INT},
    "numa_node": INT, "cpu_affinity": INTS,
    "nvlink": ("list", LINK), "nvlink_peers": ("map", INT),
    "fabric": {"state": STR, "status": STR, "cluster_uuid": STR, "clique_id": INT},
    "errors": ("map", STR),
}
RECORDING: dict[str, Any] = {"schema": STR, "captured_from": STR, "driver_version": STR,
                             "cuda_driver_version": INT, "devices": ("list", DEVICE)}


def loads(data: str | bytes) -> Any:
    """json.loads that refuses NaN and Infinity (Python's json takes them by default)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")
    return json.loads(data, parse_constant=refuse)


def problems(doc: Any) -> str | None:
    """The first shape problem of a recording, or None."""
    deep = _too_deep(doc, 0)
    if deep:
        return deep
    return _check(doc, RECORDING, "")


def _too_deep(value: Any, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) \
        else ()
    for item in items:
        found = _too_deep(item, depth + 1)
        if found:
            return found
    return None


def _check(value: Any, spec: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return _wrong(where, "an object", value)
        for key, sub in spec.items():
            found = _check(value.get(key), sub, f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    if isinstance(spec, tuple):
        kind, item = spec
        if kind == "list":
            if not isinstance(value, list):
                return _wrong(where, "a list", value)
            pairs = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        else:
            if not isinstance(value, dict):
                return _wrong(where, "an object", value)
            pairs = [(f"{where}.{k}", v) for k, v in value.items()]
        for at, v in pairs:
            found = _check(v, item, at) if v is not None or kind == "map" else \
                _wrong(at, item if isinstance(item, str) else "a value", v)
            if found:
                return found
        return None
    if not _leaf_ok(value, spec):
        return _wrong(where, spec, value)
    return None


def _leaf_ok(value: Any, spec: str) -> bool:
    if spec == BOOL:
        return isinstance(value, bool)
    if spec == STR:
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if spec == INT:
        return isinstance(value, int) and abs(value) < 1 << 63
    if isinstance(value, int):  # math.isfinite(10**400) raises OverflowError
        return abs(value) < 1 << 63
    return isinstance(value, float) and math.isfinite(value)


def _wrong(where: str, wanted: str, value: Any) -> str:
    shown = json.dumps(value)[:40] if not isinstance(value, (dict, list)) else \
        type(value).__name__.replace("dict", "an object").replace("list", "a list")
    return f"{where or 'the document'}: expected {wanted}, got {shown}"
