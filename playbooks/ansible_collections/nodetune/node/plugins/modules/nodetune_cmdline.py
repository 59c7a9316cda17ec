#!/usr/bin/python
"""Ansible module: set or remove kernel command line arguments in the bootloader config."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nodetune_cmdline
short_description: Edit the kernel command line the bootloader will use
description:
  - Edits C(GRUB_CMDLINE_LINUX) in C(/etc/default/grub), or the single line of
    C(/etc/kernel/cmdline) (systemd-boot, kernel-install), keeping every other argument and
    their order. Regenerating the bootloader menu is left to the caller (C(update-grub),
    C(grub2-mkconfig), C(grubby)); the change takes effect at the next boot.
  - Under a C(root), a file that a link leads out of the root is refused (nothing written).
options:
  root:
    description: Directory the host paths live under; empty for the live host.
    type: str
    default: ""
  file:
    description: Host path of the file to edit; empty picks C(/etc/default/grub), else
      C(/etc/kernel/cmdline).
    type: str
    default: ""
  variable:
    description: The grub variable to edit.
    type: str
    default: GRUB_CMDLINE_LINUX
  set:
    description: Arguments to add or replace; a value of true (or empty) writes a bare flag,
      false removes the argument.
    type: dict
    default: {}
  remove:
    description: Argument names to remove.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Turn off automatic NUMA balancing at boot
  nodetune_cmdline:
    set:
      numa_balancing: disable
"""

RETURN = r"""
file:
  description: Host path of the file edited.
  type: str
  returned: always
cmdline:
  description: The arguments after the edit.
  type: str
  returned: always
"""

import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nodetune.node.plugins.module_utils.nodetune_host import (  # noqa: E402
    Escape,
    real,
    writable,
)

CANDIDATES = ("/etc/default/grub", "/etc/kernel/cmdline")


def edit_args(args: list[str], settings: dict, remove: list[str]) -> list[str]:
    """Apply `settings` and `remove` to a list of "key" / "key=value" arguments."""
    out = list(args)
    for key, value in settings.items():
        flag = value is True or value is None or value == ""
        drop = value is False
        word = str(key) if flag else f"{key}={value}"
        slots = [i for i, a in enumerate(out) if a.split("=", 1)[0] == key]
        if drop:
            out = [a for a in out if a.split("=", 1)[0] != key]
        elif slots:
            out[slots[0]] = word
            for i in reversed(slots[1:]):
                del out[i]
        else:
            out.append(word)
    for item in remove:
        key, _, value = item.partition("=")
        out = [a for a in out if not (a.split("=", 1)[0] == key and (not value or a == item))]
    return out


def edit_grub(text: str, variable: str, settings: dict, remove: list[str]) -> tuple[str, str]:
    """The new /etc/default/grub text and the new value of `variable`."""
    pattern = re.compile(rf"^(\s*(?:export\s+)?{re.escape(variable)}=)(.*)$")
    lines = text.splitlines(keepends=True)
    index = max((i for i, line in enumerate(lines) if pattern.match(line)), default=None)
    if index is None:
        args = edit_args([], settings, remove)
        joined = " ".join(args)
        prefix = "" if not text or text.endswith("\n") else "\n"
        return f'{text}{prefix}{variable}="{joined}"\n', joined
    match = pattern.match(lines[index].rstrip("\n"))
    assert match is not None
    rhs = match.group(2).strip()
    words = shlex.split(rhs, comments=True) if rhs else []
    args = edit_args(" ".join(words).split(), settings, remove)
    joined = " ".join(args)
    quote = "'" if rhs.startswith("'") and "'" not in joined else '"'
    lines[index] = f"{match.group(1)}{quote}{joined}{quote}\n"
    return "".join(lines), joined


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "str", "default": ""},
            "file": {"type": "str", "default": ""},
            "variable": {"type": "str", "default": "GRUB_CMDLINE_LINUX"},
            "set": {"type": "dict", "default": {}},
            "remove": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    root = params["root"]
    hostpath = params["file"] or next(
        (c for c in CANDIDATES if os.path.isfile(real(root, c))), "")
    if not hostpath:
        module.fail_json(msg="no bootloader configuration: neither /etc/default/grub nor "
                             "/etc/kernel/cmdline exists; set kernel_cmdline_file")
    realpath = real(root, hostpath)
    try:
        with open(realpath, encoding="utf-8") as fh:
            before = fh.read()
    except OSError as exc:
        module.fail_json(msg=f"cannot read {hostpath}: {exc.strerror or exc}")
    if hostpath.endswith("/grub"):
        after, cmdline = edit_grub(before, params["variable"], params["set"], params["remove"])
    else:
        cmdline = " ".join(edit_args(before.split(), params["set"], params["remove"]))
        after = cmdline + "\n"
    changed = after != before
    if changed and not module.check_mode:
        # a regular file in /etc: written in place so its owner, mode and links are kept
        try:
            target = writable(root, hostpath)
        except Escape as exc:
            module.fail_json(msg=str(exc))
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(after)
    diff = {"before_header": hostpath, "after_header": hostpath, "before": before,
            "after": after}
    module.exit_json(changed=changed, file=hostpath, cmdline=cmdline, diff=diff)


if __name__ == "__main__":
    main()
