#!/usr/bin/python
"""Ansible module: ensure many lines in one configuration file in a single step."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nodetune_lines
short_description: Ensure lines in a configuration file (batched lineinfile)
description:
  - For each entry, the last line matching C(regexp) is replaced by C(line); when no line
    matches, C(line) is appended. Other lines are kept as they are.
  - The same job as ansible.builtin.lineinfile in a loop, done in one module run per file
    (a node has dozens of block devices and CPUs; one run per line is slow).
  - Creates the file and its directories when needed. Supports check mode and diff.
  - Under a C(root), refuses (fails, writing nothing) a path that a link leads out of the root.
options:
  root:
    description: Directory the host paths live under; empty for the live host.
    type: str
    default: ""
  path:
    description: Host path of the file.
    type: str
    required: true
  lines:
    description: Entries with C(regexp) (Python regular expression) and C(line).
    type: list
    elements: dict
    required: true
  mode:
    description: Mode of a file the module creates.
    type: str
    default: "0644"
"""

EXAMPLES = r"""
- name: Persist two sysctl values
  nodetune_lines:
    path: /etc/sysctl.d/99-nodetune.conf
    lines:
      - {regexp: '^\s*vm\.swappiness\s*=', line: vm.swappiness = 10}
      - {regexp: '^\s*kernel\.numa_balancing\s*=', line: kernel.numa_balancing = 0}
"""

RETURN = r"""
added:
  description: Lines appended.
  type: list
  returned: always
replaced:
  description: Lines that replaced a matching line.
  type: list
  returned: always
previous:
  description: The file as it was before, keyed by its path, in the form nodetune_backup
    returns (nodetune keeps it for rollback).
  type: dict
  returned: always
"""

import os  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nodetune.node.plugins.module_utils.nodetune_host import (  # noqa: E402
    Escape,
    real,
    record_file,
    writable,
)


def ensure(text: str, entries: list[dict]) -> tuple[str, list[str], list[str]]:
    """The text with every entry's line present; (new text, added, replaced)."""
    lines = text.splitlines()
    added, replaced = [], []
    for entry in entries:
        pattern = re.compile(entry["regexp"])
        wanted = entry["line"]
        matches = [i for i, line in enumerate(lines) if pattern.search(line)]
        if matches:
            if lines[matches[-1]] != wanted:
                lines[matches[-1]] = wanted
                replaced.append(wanted)
        else:
            lines.append(wanted)
            added.append(wanted)
    new = "\n".join(lines) + "\n" if lines else ""
    return (new if (added or replaced) else text), added, replaced


def _write(realpath: str, text: str, new_mode: int) -> None:
    directory = os.path.dirname(realpath)
    os.makedirs(directory, exist_ok=True)
    mode = os.stat(realpath).st_mode & 0o7777 if os.path.exists(realpath) else new_mode
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".nodetune-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, realpath)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "str", "default": ""},
            "path": {"type": "str", "required": True},
            "lines": {"type": "list", "elements": "dict", "required": True},
            "mode": {"type": "str", "default": "0644"},
        },
        supports_check_mode=True,
    )
    params = module.params
    realpath = real(params["root"], params["path"])
    previous = record_file(params["root"], params["path"])
    try:
        with open(realpath, encoding="utf-8") as fh:
            before = fh.read()
        exists = True
    except FileNotFoundError:
        before, exists = "", False
    except OSError as exc:
        module.fail_json(msg=f"cannot read {params['path']}: {exc.strerror or exc}")
    for entry in params["lines"]:
        if not isinstance(entry.get("regexp"), str) or not isinstance(entry.get("line"), str):
            module.fail_json(msg=f"each entry needs a regexp and a line, not {entry!r}")
    after, added, replaced = ensure(before, params["lines"])
    changed = after != before or (not exists and bool(params["lines"]))
    if changed and not module.check_mode:
        try:
            writable(params["root"], params["path"], follow_last=False)
            _write(realpath, after, int(params["mode"], 8))
        except Escape as exc:
            module.fail_json(msg=str(exc))
        except OSError as exc:
            module.fail_json(msg=f"cannot write {params['path']}: {exc.strerror or exc}")
    diff = {"before_header": params["path"], "after_header": params["path"],
            "before": before, "after": after}
    module.exit_json(changed=changed, added=added, replaced=replaced, diff=diff,
                     previous={params["path"]: previous})


if __name__ == "__main__":
    main()
