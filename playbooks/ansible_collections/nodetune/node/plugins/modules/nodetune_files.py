#!/usr/bin/python
"""Ansible module: put files, links and absences in a given state (install and restore)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nodetune_files
short_description: Put files and links in a given state, and take them back
description:
  - Each record gives a host path and the C(state) it should have - C(file) with
    C(content_b64) (or C(content)) and C(mode), C(link) with C(target), or C(absent) with the
    C(missing_dirs) to remove when they are empty. Records are the form nodetune_backup
    returns, so the same module installs files (unit files, their links) and restores them.
  - Writes content byte for byte and creates missing directories. Under a C(root), refuses
    (fails, writing nothing) a path that a link leads out of the root. Returns, in C(previous),
    how each path was before (nodetune keeps it for rollback). Supports check mode and diff.
options:
  root:
    description: Directory the host paths live under; empty for the live host.
    type: str
    default: ""
  records:
    description: List of records with C(path), C(state), C(content_b64) or C(content),
      C(mode), C(target), C(missing_dirs).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Remove a file nodetune created
  nodetune_files:
    records:
      - {path: /etc/sysctl.d/99-nodetune.conf, state: absent, missing_dirs: []}
- name: Install and enable a unit
  nodetune_files:
    records:
      - {path: /etc/systemd/system/x.service, state: file, content: "[Unit]\n", mode: "0644"}
      - path: /etc/systemd/system/multi-user.target.wants/x.service
        state: link
        target: /etc/systemd/system/x.service
"""

RETURN = r"""
restored:
  description: Host paths whose content, link or presence changed.
  type: list
  returned: always
previous:
  description: Host path to how it was before, in the form nodetune_backup returns.
  type: dict
  returned: always
"""

import base64  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nodetune.node.plugins.module_utils.nodetune_host import (  # noqa: E402
    Escape,
    real,
    record_file,
    writable,
)


def _current(realpath: str) -> tuple[str, bytes | str | None]:
    if os.path.islink(realpath):
        return "link", os.readlink(realpath)
    if not os.path.lexists(realpath):
        return "absent", None
    if os.path.isdir(realpath):
        return "directory", None
    with open(realpath, "rb") as fh:
        return "file", fh.read()


def _text(state: str, value: bytes | str | None) -> str:
    if state == "file" and isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if state == "link":
        return f"-> {value}\n"
    return ""


def _put_file(realpath: str, content: bytes, mode: int) -> None:
    directory = os.path.dirname(realpath)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".nodetune-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.chmod(tmp, mode)
        if os.path.islink(realpath):
            os.unlink(realpath)
        os.replace(tmp, realpath)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _restore(module: AnsibleModule, root: str, record: dict) -> dict | None:
    """Restore one record; the diff entry when it changed something, else None."""
    hostpath = record["path"]
    realpath = real(root, hostpath)
    state, value = _current(realpath)
    want = record["state"]
    if want == "file" and record.get("content") is not None:
        wanted: bytes | str | None = str(record["content"]).encode("utf-8")
    elif want == "file":
        try:
            wanted = base64.b64decode(record.get("content_b64") or "", validate=True)
        except ValueError:  # binascii.Error is a ValueError
            module.fail_json(msg=f"content_b64 of {hostpath} is not base64; nothing written")
    elif want == "link":
        wanted = record["target"]
    else:
        wanted = None
    if state == want and value == wanted:
        return None
    if state == "directory":
        module.fail_json(msg=f"{hostpath} is a directory now; nodetune recorded a {want}")
    if not module.check_mode:
        try:
            writable(root, hostpath, follow_last=False)
        except Escape as exc:
            module.fail_json(msg=str(exc))
        if want == "file":
            _put_file(realpath, wanted, int(record.get("mode") or "0644", 8))
        else:
            if state != "absent":
                os.unlink(realpath)
            if want == "link":
                os.makedirs(os.path.dirname(realpath), exist_ok=True)
                os.symlink(wanted, realpath)
    return {"before_header": hostpath, "after_header": hostpath,
            "before": _text(state, value), "after": _text(want, wanted)}


def _remove_dirs(module: AnsibleModule, root: str, records: list[dict],
                 gone: set[str]) -> list[str]:
    """Remove, deepest first, the directories nodetune created, when they are empty.

    `gone` holds host paths removed by this run (in check mode: that would be removed).
    """
    created = {d for r in records if r["state"] == "absent" for d in r.get("missing_dirs") or []}
    dirs = sorted(created, key=lambda d: d.count("/"), reverse=True)
    removed = []
    for hostpath in dirs:
        realpath = real(root, hostpath)
        if not os.path.isdir(realpath) or os.path.islink(realpath):
            continue
        left = [n for n in os.listdir(realpath) if f"{hostpath}/{n}" not in gone]
        if left:
            module.warn(f"{hostpath} was created by nodetune but holds other files now; kept")
            continue
        if not module.check_mode:
            try:
                writable(root, hostpath, follow_last=False)
            except Escape as exc:
                module.fail_json(msg=str(exc))
            os.rmdir(realpath)
        removed.append(hostpath)
        gone.add(hostpath)
    return removed


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "str", "default": ""},
            "records": {"type": "list", "elements": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    root = module.params["root"]
    records = module.params["records"]
    previous = {r["path"]: record_file(root, r["path"]) for r in records}
    diff, restored = [], []
    for record in records:
        entry = _restore(module, root, record)
        if entry is not None:
            diff.append(entry)
            restored.append(record["path"])
    gone = {r["path"] for r in records if r["state"] == "absent" and r["path"] in restored}
    removed = _remove_dirs(module, root, records, gone)
    module.exit_json(changed=bool(restored or removed), restored=restored,
                     removed_dirs=removed, diff=diff, previous=previous)


if __name__ == "__main__":
    main()
