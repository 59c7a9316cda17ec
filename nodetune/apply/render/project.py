"""Write an Ansible project a site can commit: a thin playbook, its variables, an inventory,
its ansible.cfg, and the collection nodetune.node it uses.

    DIR/ansible.cfg                       collections_path ./collections, inventory, interpreter
    DIR/site.yml (or rollback.yml)        the playbook: role includes by FQCN (nodetune.node.kernel)
    DIR/group_vars/all/nodetune.yml       the profile's values, the same on every host
    DIR/host_vars/<host>.yml              what holds for one host only: its --root, the files that
                                          already persist a sysctl, its devices and PCI addresses
                                          (rollback: what each host held before)
    DIR/inventory.ini                     localhost, unless an inventory was given (then a copy)
    DIR/collections/ansible_collections/nodetune/node/   a copy of the shipped collection

The same layout serves `nodetune apply --render-only DIR` and the project ansible-runner runs.
Our variables go into group_vars/all/ (a directory), so a site's own group_vars/all.yml copied
with its inventory sits beside them.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodetune import __version__
from nodetune.apply.render import roles
from nodetune.apply.render.plan import Change
from nodetune.views.templating import render

APPLY_PLAYBOOK = "site.yml"
ROLLBACK_PLAYBOOK = "rollback.yml"
CONFIG_FILE = "ansible.cfg"
VARS_FILE = "group_vars/all/nodetune.yml"
INVENTORY_FILE = "inventory.ini"
COLLECTIONS_DIR = "collections"
LOCAL_HOST = "localhost"
# the interpreter of hosts that do not name their own (ansible_python_interpreter)
INTERPRETER = "/usr/bin/python3"
# the localhost of a rendered project runs modules with the Python that runs ansible-playbook
PLAYBOOK_PYTHON = "{{ ansible_playbook_python }}"
# role variables computed from one node's facts rather than from the profile
_HOST_FACT_VARIABLES = frozenset({"kernel_sysctl_files"})


@dataclass(frozen=True)
class Inventory:
    """Where to run: this machine (`local`), or a user's inventory file or directory."""

    path: Path | None = None
    python: str = sys.executable  # interpreter for the local connection
    copy: bool = False  # copy the user's inventory into the project (--render-only)

    @property
    def local(self) -> bool:
        return self.path is None

    def local_host(self) -> dict[str, Any]:
        return {"name": LOCAL_HOST,
                "vars": {"ansible_connection": "local",
                         "ansible_python_interpreter": shlex.quote(self.python)}}


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


def copy_collection(directory: Path) -> Path:
    """Copy the shipped collection nodetune.node into DIR/collections/; its path there."""
    target = directory / COLLECTIONS_DIR / roles.COLLECTION_PATH
    shutil.copytree(roles.collection_dir(), target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def write_config(directory: Path, inventory: Path) -> Path:
    """DIR/ansible.cfg: the copied collection first, the inventory, no interpreter discovery."""
    relative = inventory.relative_to(directory) if inventory.is_relative_to(directory) else None
    return _write(directory / CONFIG_FILE, render(
        "ansible/ansible.cfg.j2", version=__version__,
        inventory=str(relative) if relative is not None else str(inventory),
        interpreter=INTERPRETER))


def split_host_variables(changes: Sequence[Change], variables: Mapping[str, Any]
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the same on every host, one host's own): a variable that a change of one subject sets
    (a device, an interface, a PCI address of the audited node) or that comes from the node's
    facts belongs to that host."""
    own = {str(v) for c in changes if c.subject for v in c.variables} | _HOST_FACT_VARIABLES
    shared = {k: v for k, v in variables.items() if k not in own}
    host = {k: v for k, v in variables.items() if k in own}
    return shared, host


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_apply(directory: Path, *, changes: Sequence[Change], variables: Mapping[str, Any],
                profile: str, root: str, inventory: Inventory, become: bool,
                hosts: str = "all") -> Project:
    """Write the apply project for these changes into `directory`.

    On this machine (no inventory) the host's own values go to host_vars/localhost.yml; with
    an inventory the plan is one node's, for a uniform group, so all of it is group_vars."""
    used = [r for r in roles.ROLE_ORDER if any(roles.owner(v) == r for v in variables)]
    directory.mkdir(parents=True, exist_ok=True)
    shared, own = (split_host_variables(changes, variables) if inventory.local
                   else (dict(variables), {}))
    if root:
        own = {"nodetune_root": root, **own}
    host_files = [_write(directory / "host_vars" / f"{LOCAL_HOST}.yml", render(
        "ansible/vars.yml.j2", variables=own,
        comment=f"nodetune {__version__}: what holds for {LOCAL_HOST} only (profile {profile})"))
        ] if own else []
    playbook = _write(directory / APPLY_PLAYBOOK, render(
        "ansible/site.yml.j2", version=__version__, profile=profile, changes=changes,
        hosts=hosts, become=become, roles=used, host_files=bool(host_files)))
    vars_file = _write(directory / VARS_FILE, render(
        "ansible/vars.yml.j2", variables={"nodetune_root": "", **shared},
        comment=f"nodetune {__version__}: role variables for {APPLY_PLAYBOOK} "
                f"(profile {profile}), the same on every host"))
    copy_collection(directory)
    inv = write_inventory(directory, inventory)
    config = write_config(directory, inv)
    return Project(directory, playbook, inv, [config, playbook, vars_file, *host_files, inv])


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
    copy_collection(directory)
    inv = write_inventory(directory, inventory)
    return Project(directory, playbook, inv, [write_config(directory, inv), *files, inv])
