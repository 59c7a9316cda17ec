"""Write an Ansible project: a thin playbook, its variables, an inventory, and the roles it uses.

    DIR/apply.yml (or rollback.yml)   the playbook: vars_files + role includes
    DIR/vars/nodetune.yml             every role variable, computed by nodetune
    DIR/host_vars/<host>.yml          per-host values (rollback records)
    DIR/inventory.ini                 localhost, unless an inventory was given
    DIR/roles/, DIR/library/, DIR/module_utils/   copies of nodetune's static roles and modules

The same layout serves `nodetune apply --render-only DIR` and the project ansible-runner runs.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune import __version__
from nodetune.apply.render import roles
from nodetune.apply.render.plan import Change
from nodetune.node.resources import data_dir
from nodetune.views.templating import render

APPLY_PLAYBOOK = "apply.yml"
ROLLBACK_PLAYBOOK = "rollback.yml"
VARS_FILE = "vars/nodetune.yml"
INVENTORY_FILE = "inventory.ini"

# roles that other roles include
_ROLE_DEPENDENCIES = {"gpu": ("setpci",), "nic": ("setpci",)}


@dataclass(frozen=True)
class Inventory:
    """Where to run: this machine (`local`), or a user's inventory file or directory."""

    path: Path | None = None
    python: str = sys.executable  # interpreter for the local connection
    copy: bool = False  # copy the user's inventory into the project (--render-only)

    def local_host(self) -> dict[str, Any]:
        return {"name": "localhost",
                "vars": {"ansible_connection": "local", "ansible_python_interpreter": self.python}}


@dataclass
class Project:
    directory: Path
    playbook: Path
    inventory: Path
    files: list[Path] = field(default_factory=list)


def write_inventory(directory: Path, inventory: Inventory) -> Path:
    """The user's inventory (copied into `directory` with its group_vars/ and host_vars/
    when `inventory.copy`), or the localhost one written there."""
    if inventory.path is not None and not inventory.copy:
        return inventory.path
    if inventory.path is not None:
        target = directory / inventory.path.name
        if inventory.path.is_dir():
            shutil.copytree(inventory.path, target, dirs_exist_ok=True)
            return target
        shutil.copyfile(inventory.path, target)
        for sub in ("group_vars", "host_vars"):
            if (inventory.path.parent / sub).is_dir():
                shutil.copytree(inventory.path.parent / sub, directory / sub, dirs_exist_ok=True)
        return target
    target = directory / INVENTORY_FILE
    target.write_text(render("ansible/hosts.ini.j2", hosts=[inventory.local_host()],
                             comment="nodetune: run on this machine"), encoding="utf-8")
    return target


def copy_roles(directory: Path, names: Sequence[str]) -> None:
    """Copy the named roles (with the roles they include) and nodetune's modules."""
    source = data_dir("playbooks")
    wanted = list(dict.fromkeys(n for r in names for n in (r, *_ROLE_DEPENDENCIES.get(r, ()))))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in wanted:
        shutil.copytree(source / "roles" / name, directory / "roles" / name,
                        dirs_exist_ok=True, ignore=ignore)
    for sub in ("library", "module_utils"):
        shutil.copytree(source / sub, directory / sub, dirs_exist_ok=True, ignore=ignore)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_apply(directory: Path, *, changes: Sequence[Change], variables: Mapping[str, Any],
                profile: str, root: str, inventory: Inventory, become: bool,
                hosts: str = "all") -> Project:
    """Write the apply project for these changes into `directory`."""
    used = [r for r in roles.ROLE_ORDER if any(roles.owner(v) == r for v in variables)]
    directory.mkdir(parents=True, exist_ok=True)
    playbook = _write(directory / APPLY_PLAYBOOK, render(
        "ansible/apply.yml.j2", version=__version__, profile=profile, changes=changes,
        hosts=hosts, become=become, roles=used))
    all_vars = {"nodetune_root": root, **variables}
    vars_file = _write(directory / VARS_FILE, render(
        "ansible/vars.yml.j2", variables=all_vars,
        comment=f"nodetune {__version__}: role variables for {APPLY_PLAYBOOK} "
                f"(profile {profile})"))
    copy_roles(directory, used)
    inv = write_inventory(directory, inventory)
    return Project(directory, playbook, inv, [playbook, vars_file, inv])


def write_rollback(directory: Path, *, per_host: Mapping[str, Mapping[str, Any]], root: str,
                   inventory: Inventory, become: bool, state_file: str, created: str) -> Project:
    """Write the rollback project: the rollback role, fed per host with what was recorded."""
    directory.mkdir(parents=True, exist_ok=True)
    hosts = ",".join(per_host) or "all"
    playbook = _write(directory / ROLLBACK_PLAYBOOK, render(
        "ansible/rollback.yml.j2", version=__version__, hosts=hosts, become=become,
        state_file=state_file, created=created))
    files = [playbook, _write(directory / VARS_FILE, render(
        "ansible/vars.yml.j2", variables={"nodetune_root": root},
        comment=f"nodetune {__version__}: variables for {ROLLBACK_PLAYBOOK}"))]
    for host, values in per_host.items():
        files.append(_write(directory / "host_vars" / f"{host}.yml", render(
            "ansible/vars.yml.j2", variables=dict(values),
            comment=f"nodetune: what {host} held before the apply of {created}")))
    copy_roles(directory, ["rollback"])
    inv = write_inventory(directory, inventory)
    return Project(directory, playbook, inv, [*files, inv])
