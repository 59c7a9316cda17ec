"""The variables nodetune's Ansible roles accept, read from each role's defaults/main.yml.

The roles are those of the collection nodetune.node, shipped as
playbooks/ansible_collections/nodetune/node (a playbooks/ that is itself a collections path).

A setting's remediation names role variables (`{kernel_sysctl: {vm.swappiness: 10}}`); the role
that owns a variable is the one whose defaults declare it, so a rendered playbook includes
exactly the roles its variables need.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from nodetune.node.resources import data_dir

# The order roles run in: kernel settings and boot configuration first, services last.
ROLE_ORDER = ("kernel", "memory", "cpu", "modules", "storage", "nic", "gpu", "services")


# Variables whose runtime half runs a command on the live host (modprobe, systemctl, setpci).
# Under a copied --root only their boot-time half is written: they take effect at the next boot.
LIVE_ONLY_RUNTIME = frozenset({"modules_load", "services_enabled", "services_disabled",
                               "gpu_acs_disable", "nic_max_read_request"})


COLLECTION = "nodetune.node"
COLLECTION_PATH = Path("ansible_collections", *COLLECTION.split("."))


def collection_dir() -> Path:
    """The shipped collection nodetune.node (galaxy.yml, roles/, plugins/)."""
    return data_dir("playbooks") / COLLECTION_PATH


def roles_dir() -> Path:
    return collection_dir() / "roles"


@functools.cache
def role_defaults() -> dict[str, dict[str, Any]]:
    """role -> {variable: default value} for every role in ROLE_ORDER."""
    # deferred: PyYAML costs 16 ms at start-up; a cached check never parses YAML
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for role in ROLE_ORDER:
        path = roles_dir() / role / "defaults" / "main.yml"
        out[role] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return out


def owner(variable: str) -> str | None:
    """The role that declares `variable`, or None."""
    for role, defaults in role_defaults().items():
        if variable in defaults:
            return role
    return None
