"""The node a benchmark ran on: a fingerprint of its stable facts.

Two runs with the same fingerprint ran on the same hardware and software base (CPU model, GPU
models and UUIDs, driver, kernel); `--compare` warns when fingerprints differ.
"""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any


def stable_facts(facts: dict[str, Any]) -> dict[str, Any]:
    cpu = facts.get("cpu") or {}
    gpu = facts.get("gpu") or {}
    return {
        "cpu_model": cpu.get("model_name"),
        "sockets": cpu.get("sockets"),
        "cores": cpu.get("cores"),
        "gpus": [{"name": g.get("name"), "uuid": g.get("uuid"), "pci_address": g.get("pci_address")}
                 for g in facts.get("gpus") or []],
        "driver_version": gpu.get("driver_version"),
        "kernel": (facts.get("kernel") or {}).get("release"),
    }


def fingerprint(facts: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the stable facts, canonically serialised."""
    text = json.dumps(stable_facts(facts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def node_json(facts: dict[str, Any]) -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "fingerprint": fingerprint(facts),
            "identity": stable_facts(facts)}
