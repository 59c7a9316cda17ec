#!/usr/bin/python
"""Ansible module: record files, modules and units before nodetune changes them."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nodetune_backup
short_description: Record what nodetune is about to change, for rollback
description:
  - Read-only. Returns the content (or absence) of persistent files, whether kernel modules
    are loaded and whether systemd units are active and enabled. (Runtime sysfs/procfs values
    are recorded by nodetune_sysfs itself, which returns each file's previous text.)
  - nodetune runs the play in check mode first and keeps these results in its state file;
    C(nodetune rollback) restores them.
options:
  root:
    description: Directory the host paths live under; empty for the live host.
    type: str
    default: ""
  files:
    description: Persistent files (globs allowed) whose content or absence to record.
    type: list
    elements: str
    default: []
  kmods:
    description: Kernel modules whose loaded state to record.
    type: list
    elements: str
    default: []
  units:
    description: systemd units whose active state to record (live host only).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Record the sysctl file
  nodetune_backup:
    files: [/etc/sysctl.d/99-nodetune.conf]
"""

RETURN = r"""
files:
  description: Host path to C(state) (file, link, absent), C(content_b64), C(mode), C(target)
    and C(missing_dirs) (ancestors that did not exist, outermost first).
  type: dict
  returned: always
kmods:
  description: Module name to loaded (bool).
  type: dict
  returned: always
units:
  description: Unit name to C(active) and C(enabled) (bools), live host only.
  type: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nodetune.node.plugins.module_utils.nodetune_host import (  # noqa: E402
    expand,
    is_live,
    read_raw,
    record_file,
)


def loaded_modules(root: str) -> set[str]:
    text = read_raw(root, "/proc/modules") or ""
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "str", "default": ""},
            "files": {"type": "list", "elements": "str", "default": []},
            "kmods": {"type": "list", "elements": "str", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    root = module.params["root"]
    files = {path: record_file(root, path)
             for pattern in module.params["files"] for path in expand(root, pattern)}
    loaded = loaded_modules(root) if module.params["kmods"] else set()
    kmods = {name: name.replace("-", "_") in loaded for name in module.params["kmods"]}
    units = {}
    if is_live(root):
        for unit in module.params["units"]:
            active, _, _ = module.run_command(["systemctl", "is-active", "--quiet", unit])
            enabled, _, _ = module.run_command(["systemctl", "is-enabled", "--quiet", unit])
            units[unit] = {"active": active == 0, "enabled": enabled == 0}
    module.exit_json(changed=False, files=files, kmods=kmods, units=units)


if __name__ == "__main__":
    main()
