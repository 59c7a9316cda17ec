#!/usr/bin/python
"""Ansible module: write a value into sysfs or procfs, with check mode and diff."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nodetune_sysfs
short_description: Write a runtime value into /sys or /proc
description:
  - Writes C(value) into every file matching C(path) with a plain open-for-write, never a
    rename (procfs and sysfs files cannot be replaced).
  - Choice files such as C(always [madvise] never) compare and report the bracketed choice.
  - On the live host the file is read back after writing; when the kernel keeps another value
    (a hugepage pool it cannot fill, a size the kernel lacks) the write is reported as rejected.
  - Under a C(root) other than C(/) the files are plain copies, so the module writes what the
    kernel would show afterwards (the bracket moved, or the value and a newline); a path that
    a link leads out of the root is refused (the task fails, nothing is written).
options:
  path:
    description: Host path, or a glob when C(glob) is true.
    type: str
  value:
    description: The value to write.
    type: str
  items:
    description: Several C(path)/C(value) pairs written in one module run (instead of
      C(path) and C(value)).
    type: list
    elements: dict
    default: []
  root:
    description: Directory the host paths live under; empty for the live host.
    type: str
    default: ""
  glob:
    description: Treat C(path) as a glob and write every match.
    type: bool
    default: false
  raw:
    description: Write C(value) byte for byte, without comparing choices or reading back
      (restoring a copied tree).
    type: bool
    default: false
  missing:
    description: C(reject) treats a missing file (or a glob that matches nothing) as a
      rejection; C(skip) leaves it alone (one of several alternative files, such as the boost
      switch of acpi-cpufreq and intel_pstate).
    type: str
    choices: [reject, skip]
    default: reject
  on_reject:
    description: C(fail) fails the task when the kernel rejects the value or the file is
      missing; C(report) returns C(rejected=true) and lets the play go on.
    type: str
    choices: [fail, report]
    default: fail
"""

EXAMPLES = r"""
- name: Turn transparent hugepages off
  nodetune_sysfs:
    path: /sys/kernel/mm/transparent_hugepage/enabled
    value: never
"""

RETURN = r"""
paths:
  description: One entry per file, with C(path), C(pattern) (the path or glob it came from),
    C(raw) (the file's text before), C(before) and C(after) (the values), C(changed) and
    C(rejected) (why, when the kernel refused); nodetune keeps C(raw) for rollback.
  type: list
  returned: always
rejected:
  description: Whether the kernel refused the value, or no file matched.
  type: bool
  returned: always
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nodetune.node.plugins.module_utils.nodetune_host import (  # noqa: E402
    Escape,
    choices,
    emulated,
    expand,
    is_live,
    read_raw,
    same,
    selected,
    writable,
)


def _write(root: str, hostpath: str, text: str) -> None:
    # open(..., "w") and one write: procfs/sysfs take the value in a single write() call.
    with open(writable(root, hostpath), "w", encoding="utf-8") as fh:
        fh.write(text)


def _one(module: AnsibleModule, hostpath: str, value: str) -> dict | None:
    params = module.params
    root = params["root"]
    raw = read_raw(root, hostpath)
    if raw is None:
        if params["missing"] == "skip":
            return None
        return {"path": hostpath, "changed": False, "rejected": f"{hostpath} does not exist"}
    if params["raw"]:
        entry = {"path": hostpath, "raw": raw, "before": raw, "after": value,
                 "changed": raw != value}
        if entry["changed"] and not module.check_mode:
            try:
                _write(root, hostpath, value)
            except Escape as exc:
                module.fail_json(msg=str(exc))
        return entry
    before = selected(raw)
    options = choices(raw)
    if options and value not in options:
        return {"path": hostpath, "raw": raw, "before": before, "after": before, "changed": False,
                "rejected": f"{value!r} is not one of {options} in {hostpath}"}
    entry = {"path": hostpath, "raw": raw, "before": before, "after": value,
             "changed": not same(raw, value)}
    if not entry["changed"] or module.check_mode:
        return entry
    text = value if is_live(root) else emulated(raw, value)
    try:
        _write(root, hostpath, text)
    except Escape as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        entry.update(changed=False, rejected=f"writing {value!r} to {hostpath}: "
                                             f"{exc.strerror or exc}")
        return entry
    after = read_raw(root, hostpath) or ""
    entry["after"] = selected(after)
    if not same(after, value):
        entry["rejected"] = (f"the kernel kept {selected(after)!r} in {hostpath} "
                             f"after {value!r} was written")
    return entry


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "str"},
            "value": {"type": "str"},
            "items": {"type": "list", "elements": "dict", "default": []},
            "root": {"type": "str", "default": ""},
            "glob": {"type": "bool", "default": False},
            "raw": {"type": "bool", "default": False},
            "missing": {"type": "str", "choices": ["reject", "skip"], "default": "reject"},
            "on_reject": {"type": "str", "choices": ["fail", "report"], "default": "fail"},
        },
        required_together=[("path", "value")],
        required_one_of=[("path", "items")],
        supports_check_mode=True,
    )
    params = module.params
    root = params["root"]
    if not is_live(root) and not os.path.isdir(root):
        module.fail_json(msg=f"root {root} is not a directory")
    pairs = [(str(i["path"]), str(i["value"])) for i in params["items"]]
    if params["path"] is not None:
        pairs.insert(0, (params["path"], params["value"]))
    entries, problems = [], []
    for pattern, value in pairs:
        paths = expand(root, pattern) if params["glob"] else [pattern]
        found = [e for e in (_one(module, p, value) for p in paths) if e is not None]
        if not found and params["missing"] == "reject":
            problems.append(f"nothing matches {pattern} on this host")
        for entry in found:
            entry["pattern"] = pattern
        entries += found
    problems += [e["rejected"] for e in entries if e.get("rejected")]
    changed = any(e["changed"] for e in entries)
    diff = [{"before_header": e["path"], "after_header": e["path"],
             "before": e["before"].rstrip("\n") + "\n", "after": e["after"].rstrip("\n") + "\n"}
            for e in entries if e["changed"]]
    result = {"changed": changed, "paths": entries, "rejected": bool(problems), "diff": diff}
    if problems:
        message = "kernel rejected: " + "; ".join(problems)
        if params["on_reject"] == "fail":
            module.fail_json(msg=message, **result)
        result["msg"] = message
        module.warn(message)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
