"""nodetune apply and rollback never change anything outside their target.

Real state files written by a real apply (ansible-playbook against a copy of the
h200x2-vm-gather tree), then changed the ways a copied, tampered or foreign state file differs;
real links planted in the tree. Every case compares the tree and a sentinel directory outside
it (the "host" the links point at) before and after, byte for byte.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nodetune.apply import ansible, statefile
from tests.apply_runs import (
    STATE,
    Run,
    faulty_tree,
    lock_held_by,
    nodetune,
    one_line,
    snapshot,
    state_files,
)

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


def without_state(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snap.items() if not k.startswith("var")}


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A directory outside every tree, laid out like the files an apply touches: what a link
    escaping the tree would reach."""
    host = tmp_path / "host"
    for rel, text in (("etc/sysctl.d/99-nodetune.conf", "vm.swappiness = 60\n"),
                      ("etc/tmpfiles.d/nodetune.conf", "# host\n"),
                      ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
                      ("proc/sys/vm/swappiness", "60\n"),
                      ("sys/kernel/mm/transparent_hugepage/enabled",
                       "[always] madvise never\n")):
        (host / rel).parent.mkdir(parents=True, exist_ok=True)
        (host / rel).write_text(text)
    return host


@pytest.fixture(scope="module")
def applied(host_tree, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A tree nodetune applied to for real (memory.thp and memory.swappiness fixed), its
    state file, and the tree as it was before the apply."""
    root = tmp_path_factory.mktemp("applied") / "node"
    shutil.copytree(host_tree("h200x2-vm-gather"), root, symlinks=True)
    (root / "sys/kernel/mm/transparent_hugepage/enabled").write_text("[always] madvise never\n")
    before = snapshot(root)
    result = nodetune("apply", "--root", str(root), "--yes", "--json")
    assert result.returncode == 0, result.stderr
    state = Path(json.loads(result.stdout)["state_file"])
    assert state.parent == root / STATE
    return root, state, before


@pytest.fixture
def synthetic_applied(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A small tree and the state file an apply of memory.swappiness and memory.thp records
    there (synthetic: written by statefile.State itself, as record_state does, without
    running Ansible), the tree as it was before."""
    root = tmp_path / "synthetic" / "node"
    for rel, text in (("proc/sys/vm/swappiness", "10\n"),
                      ("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n"),
                      ("etc/sysctl.d/99-nodetune.conf", "vm.swappiness = 10\n"),
                      ("etc/tmpfiles.d/nodetune.conf",
                       "w /sys/kernel/mm/transparent_hugepage/enabled - - - - madvise\n")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    host = statefile.HostState(
        files={"/etc/sysctl.d/99-nodetune.conf": {"state": "absent", "missing_dirs": []},
               "/etc/tmpfiles.d/nodetune.conf": {"state": "absent", "missing_dirs": []}},
        runtime={"/proc/sys/vm/swappiness": {"raw": "60\n", "value": "60"},
                 "/sys/kernel/mm/transparent_hugepage/enabled": {
                     "raw": "[always] madvise never\n", "value": "always"}})
    state = statefile.State(path=statefile.new_path(str(root)), created=statefile.utc_now(),
                            profile="base", root=str(root), hosts={"localhost": host},
                            status="applied")
    state.save()
    return root, state.path, {}


def copy_of(applied: tuple[Path, Path, dict], into: Path) -> tuple[Path, Path]:
    """A copy of the applied tree (with its state directory): (root, its state file)."""
    root, state, _ = applied
    copy = into / "copy"
    shutil.copytree(root, copy, symlinks=True)
    return copy, copy / state.relative_to(root)


def rewrite(path: Path, change: Any, *, reseal: bool = True) -> None:
    """Change a state file's document; with `reseal` give it a matching checksum (a file
    crafted to pass the checksum), else leave the old one (a file edited by hand)."""
    doc = json.loads(path.read_text())
    change(doc)
    if reseal:
        doc["checksum"] = statefile.checksum(doc)
    path.write_text(json.dumps(doc))


def refused(root: Path, state: Path, sentinel: Path, code: int, *words: str,
            others: tuple[Path, ...] = ()) -> str:
    """Roll back `state` onto `root`: refused with one line holding `words`, exit `code`, and
    nothing changed in the tree, the state file, the sentinel or `others`."""
    watched = (root, sentinel, *others)
    before = [snapshot(p) for p in watched]
    result = nodetune("rollback", "--root", str(root), "--state-file", str(state), "--yes")
    line = one_line(result)
    assert result.returncode == code, line
    for word in words:
        assert word in line
    assert [snapshot(p) for p in watched] == before
    return line


# -- rollback refuses a state file that is not its own -------------------------------------

@pytest.mark.slow
def test_state_file_records_root_identity_and_checksum(applied):
    root, state, _ = applied
    doc = json.loads(state.read_text())
    assert doc["schema"] == "nodetune.state/1" and doc["root"] == str(root)
    assert doc["identity"] == {"hostname": os.uname().nodename,
                               "machine_id": statefile.machine_id(str(root))}
    assert doc["checksum"] == statefile.checksum(doc)
    assert doc["checksum"].startswith("sha256:") and len(doc["checksum"]) == 71
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


@pytest.mark.slow
def test_state_file_copied_into_another_tree_is_refused(applied, tmp_path, sentinel):
    original = applied[0]
    copy, state = copy_of(applied, tmp_path)
    line = refused(copy, state, sentinel, 4, f"records the apply to root {original}",
                   others=(original,))
    assert f"--root {original}" in line  # the fix names the root the file belongs to
    # without --state-file the newest state file of the copy is the same foreign one
    before = snapshot(original)
    latest = nodetune("rollback", "--root", str(copy), "--yes")
    assert latest.returncode == 4 and "records the apply to root" in one_line(latest)
    assert snapshot(original) == before


def test_synthetic_state_file_copied_into_another_tree_is_refused(synthetic_applied, tmp_path,
                                                                  sentinel):
    original = synthetic_applied[0]
    copy, state = copy_of(synthetic_applied, tmp_path)
    refused(copy, state, sentinel, 4, f"records the apply to root {original}, not {copy}",
            others=(original,))


def test_state_file_of_the_live_host_is_refused_for_a_tree(synthetic_applied, tmp_path,
                                                           sentinel):
    copy, state = copy_of(synthetic_applied, tmp_path)
    rewrite(state, lambda d: d.update(root="/"))
    refused(copy, state, sentinel, 4, "records the apply to root /, not")


def test_state_file_of_another_host_is_refused(synthetic_applied, tmp_path, sentinel):
    copy, state = copy_of(synthetic_applied, tmp_path)
    rewrite(state, lambda d: d.update(root=str(copy)))
    good = state.read_bytes()
    rewrite(state, lambda d: d["identity"].update(hostname="gpu-node-17"))
    refused(copy, state, sentinel, 4, "written for hostname gpu-node-17")
    # the same tree with another machine-id is another host
    state.write_bytes(good)
    (copy / "etc/machine-id").write_text("fedcba9876543210fedcba9876543210\n")
    refused(copy, state, sentinel, 4, "written for machine-id none",
            "this is fedcba9876543210fedcba9876543210")


@pytest.mark.parametrize("hostpath", ["/../host/etc/sysctl.d/99-nodetune.conf",
                                      "/etc/../../host/etc/tmpfiles.d/nodetune.conf"])
def test_path_leaving_the_root_is_refused(synthetic_applied, tmp_path, sentinel, hostpath):
    copy, state = copy_of(synthetic_applied, tmp_path)

    def plant(doc: dict) -> None:
        doc["root"] = str(copy)
        doc["hosts"]["localhost"]["files"][hostpath] = {"state": "absent", "missing_dirs": []}
    rewrite(state, plant)
    refused(copy, state, sentinel, 4, f"names {hostpath}, which leads to {sentinel}",
            "outside")


def test_link_inside_the_root_leading_out_is_refused(synthetic_applied, tmp_path, sentinel):
    copy, state = copy_of(synthetic_applied, tmp_path)
    rewrite(state, lambda d: d.update(root=str(copy)))
    # an absolute link in the tree: the kernel follows it to the sentinel ("the host")
    shutil.rmtree(copy / "etc/sysctl.d")
    (copy / "etc/sysctl.d").symlink_to(sentinel / "etc/sysctl.d")
    refused(copy, state, sentinel, 4, "names /etc/sysctl.d/99-nodetune.conf",
            f"leads to {sentinel}/etc/sysctl.d/99-nodetune.conf")
    # a runtime file that is a link out of the tree is written through: refused as well
    (copy / "etc/sysctl.d").unlink()
    (copy / "etc/sysctl.d").mkdir()
    (copy / "proc/sys/vm/swappiness").unlink()
    (copy / "proc/sys/vm/swappiness").symlink_to(sentinel / "proc/sys/vm/swappiness")
    refused(copy, state, sentinel, 4, "names /proc/sys/vm/swappiness")


@pytest.mark.parametrize(("field", "value", "words"), [
    ("content_b64", "not base64!", "is not base64"),
    ("content_b64", 42, "is a int, not a string"),
    ("mode", "0999", "is not an octal file mode"),
    ("state", "fifo", "is 'fifo', not one of file, link, absent, directory"),
])
def test_damaged_file_record_is_refused(synthetic_applied, tmp_path, sentinel, field, value,
                                        words):
    copy, state = copy_of(synthetic_applied, tmp_path)

    def damage(doc: dict) -> None:
        doc["root"] = str(copy)
        doc["hosts"]["localhost"]["files"]["/etc/sysctl.d/99-nodetune.conf"] = {
            "state": "file", "content_b64": "dm0uc3dhcHBpbmVzcyA9IDYwCg==", "mode": "0644",
            field: value}
    rewrite(state, damage)
    refused(copy, state, sentinel, 3, "is damaged", words, "nothing was changed")


@pytest.mark.parametrize(("where", "value", "words"), [
    (("kmods",), {"nvidia_peermem": "yes"}, "kmods['nvidia_peermem'] is a str, not true"),
    (("runtime",), {"/proc/sys/vm/swappiness": {"raw": 60, "value": "60"}},
     "raw is a int, not a string"),
    (("runtime",), {"proc/sys/vm/swappiness": {"raw": "60\n", "value": "60"}},
     "is not an absolute path"),
    (("files",), ["/etc/sysctl.d/99-nodetune.conf"], "files is a list, not an object"),
    (("units",), {"x.service": {"active": 1, "enabled": True}}, "active is a int"),
])
def test_wrong_types_are_refused(synthetic_applied, tmp_path, sentinel, where, value, words):
    copy, state = copy_of(synthetic_applied, tmp_path)

    def damage(doc: dict) -> None:
        doc["root"] = str(copy)
        doc["hosts"]["localhost"][where[0]] = value
    rewrite(state, damage)
    refused(copy, state, sentinel, 3, "is damaged", words)


def test_edited_state_file_fails_its_checksum(synthetic_applied, tmp_path, sentinel):
    copy, state = copy_of(synthetic_applied, tmp_path)
    rewrite(state, lambda d: d.update(root=str(copy)))
    rewrite(state, lambda d: d["hosts"]["localhost"]["runtime"]["/proc/sys/vm/swappiness"]
            .update(raw="1\n"), reseal=False)
    refused(copy, state, sentinel, 3, "does not match its checksum")


def test_newest_damaged_state_file_is_not_skipped_for_an_older_one(synthetic_applied, tmp_path,
                                                                     sentinel):
    copy, state = copy_of(synthetic_applied, tmp_path)
    older = state.with_name("20000101T000000Z.json")
    shutil.copy(state, older)
    rewrite(older, lambda d: d.update(root=str(copy)))
    rewrite(state, lambda d: d.update(profile="edited"), reseal=False)
    before = snapshot(copy), snapshot(sentinel)
    result = nodetune("rollback", "--root", str(copy), "--yes")
    assert result.returncode == 3 and "does not match its checksum" in one_line(result)
    assert (snapshot(copy), snapshot(sentinel)) == before


def test_legacy_state_file_of_another_root_is_refused(synthetic_applied, tmp_path, sentinel):
    copy, state = copy_of(synthetic_applied, tmp_path)

    def legacy(doc: dict) -> None:
        del doc["checksum"], doc["identity"]
    rewrite(state, legacy, reseal=False)
    refused(copy, state, sentinel, 4, "records the apply to root", others=(synthetic_applied[0],))


@pytest.mark.slow
def test_legacy_state_file_of_this_root_rolls_back_with_a_note(applied, tmp_path, sentinel):
    copy, state = copy_of(applied, tmp_path)

    def legacy(doc: dict) -> None:
        del doc["checksum"], doc["identity"]
        doc["root"] = str(copy)
    rewrite(state, legacy, reseal=False)
    host = snapshot(sentinel)
    result = nodetune("rollback", "--root", str(copy), "--state-file", str(state), "--yes")
    assert result.returncode == 0, result.stderr
    assert "has no checksum and host identity" in result.stderr
    assert without_state(snapshot(copy)) == without_state(applied[2])
    assert snapshot(sentinel) == host
    doc = json.loads(state.read_text())  # marked rolled back, and sealed now
    assert doc["status"] == "rolled-back" and doc["checksum"] == statefile.checksum(doc)


# -- apply --root never writes through a link leaving the tree ------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("plant", ["etc-dir", "relative"])
def test_apply_refuses_a_link_leaving_the_tree(host_tree, tmp_path, sentinel, plant):
    root = faulty_tree(host_tree, tmp_path)
    if plant == "etc-dir":  # the persistent half: /etc/tmpfiles.d is the host's
        (root / "etc/tmpfiles.d").symlink_to(sentinel / "etc/tmpfiles.d")
        words = ("/etc/tmpfiles.d/nodetune.conf", f"{sentinel}/etc/tmpfiles.d/nodetune.conf")
    else:  # relative links leave the tree too
        depth = len(root.relative_to(tmp_path).parts) + 1
        (root / "etc/sysctl.d").symlink_to("../" * depth + "host/etc/sysctl.d")
        words = ("/etc/sysctl.d/99-nodetune.conf", f"{sentinel}/etc/sysctl.d")
    before = snapshot(root), snapshot(sentinel)
    for args in (("--yes",), ("--dry-run",)):
        result = nodetune("apply", "--root", str(root), *args)
        line = one_line(result)
        assert result.returncode == 4, line
        assert "outside the tree (a link leaves --root); nothing was changed" in line
        for word in words:
            assert word in line
        assert (snapshot(root), snapshot(sentinel)) == before
        assert not (root / STATE).exists() or not list((root / STATE).glob("*.json"))


@pytest.mark.slow
def test_link_planted_after_the_plan_fails_its_task_and_rolls_back(host_tree, tmp_path, sentinel,
                                                                    monkeypatch):
    """The modules refuse on their own: a link planted between the check-mode run and the
    real run (with nodetune's own check switched off) fails the task half-way, changes
    nothing outside the tree, and leaves a state file that rolls the tree back."""
    from nodetune.apply import remediate
    from nodetune.errors import ApplyError

    root = faulty_tree(host_tree, tmp_path)
    original, host = snapshot(root), snapshot(sentinel)
    prepared = remediate.prepare(remediate.Request(root=str(root)), tmp_path / "work")
    (root / "etc/tmpfiles.d").symlink_to(sentinel / "etc/tmpfiles.d")
    monkeypatch.setattr(remediate, "refuse_escapes", lambda prepared: None)
    with pytest.raises(ApplyError) as failed:
        remediate.execute(prepared)
    line = failed.value.one_line()
    assert "apply failed on localhost at task 'Persist them for every boot'" in line
    assert f"leads to {sentinel}/etc/tmpfiles.d/nodetune.conf, outside the root" in line
    assert snapshot(sentinel) == host
    # the kernel role ran before the failing task
    assert (root / "proc/sys/vm/swappiness").read_text() == "10\n"
    state_file = line.rsplit("nodetune rollback --state-file ", 1)[1].strip()
    assert json.loads(Path(state_file).read_text())["status"] == "failed"
    (root / "etc/tmpfiles.d").unlink()
    rolled = nodetune("rollback", "--root", str(root), "--state-file", state_file, "--yes")
    assert rolled.returncode == 0, rolled.stderr
    assert without_state(snapshot(root)) == without_state(original)
    assert snapshot(sentinel) == host


def ansible_module(name: str, args: dict, tmp_path: Path, *,
                   check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run one of nodetune's Ansible modules through the real `ansible` ad-hoc command."""
    binary = Path(sys.executable).parent / "ansible"
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(PLAYBOOKS),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    argv = [str(binary), "localhost", "-c", "local", "-i", "localhost,",
            "-m", f"nodetune.node.{name}", "-a", json.dumps(args)]
    if check:
        argv.append("--check")
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          check=False)


@pytest.mark.slow
def test_modules_refuse_to_write_through_a_link_leaving_the_root(tmp_path, sentinel):
    root = tmp_path / "node"
    (root / "etc").mkdir(parents=True)
    (root / "proc/sys/vm").mkdir(parents=True)
    (root / "etc/sysctl.d").symlink_to(sentinel / "etc/sysctl.d")
    (root / "etc/default").symlink_to(sentinel / "etc")
    (root / "etc/tmpfiles.d").symlink_to("../../host/etc/tmpfiles.d")
    (root / "proc/sys/vm/swappiness").symlink_to(sentinel / "proc/sys/vm/swappiness")
    (sentinel / "etc/grub").write_text('GRUB_CMDLINE_LINUX=""\n')
    cases = [
        ("nodetune_lines", {"root": str(root), "path": "/etc/sysctl.d/99-nodetune.conf",
                            "lines": [{"regexp": "^vm.swappiness", "line": "vm.swappiness = 1"}]}),
        ("nodetune_files", {"root": str(root), "records": [
            {"path": "/etc/tmpfiles.d/nodetune.conf", "state": "absent", "missing_dirs": []}]}),
        ("nodetune_files", {"root": str(root), "records": [
            {"path": "/etc/sysctl.d/99-nodetune.conf", "state": "file",
             "content_b64": "eAo=", "mode": "0644"}]}),
        ("nodetune_sysfs", {"root": str(root), "path": "/proc/sys/vm/swappiness",
                            "value": "1"}),
        ("nodetune_sysfs", {"root": str(root), "path": "/proc/sys/vm/swappiness",
                            "value": "1\n", "raw": True}),
        ("nodetune_cmdline", {"root": str(root), "file": "/etc/default/grub",
                              "set": {"iommu": "pt"}}),
    ]
    host, tree = snapshot(sentinel), snapshot(root)
    for name, args in cases:
        # check mode only reads: it reports the change (apply refuses on that report)
        looked = ansible_module(name, args, tmp_path, check=True)
        assert looked.returncode == 0, looked.stdout + looked.stderr
        written = ansible_module(name, args, tmp_path)
        assert written.returncode != 0, (name, written.stdout)
        assert f"outside the root {root}; not written" in written.stdout, written.stdout
        assert snapshot(sentinel) == host, name
        assert snapshot(root) == tree, name


@pytest.mark.slow
def test_module_restores_nothing_from_bad_base64(tmp_path, sentinel):
    root = tmp_path / "node"
    (root / "etc/sysctl.d").mkdir(parents=True)
    conf = root / "etc/sysctl.d/99-nodetune.conf"
    conf.write_text("vm.swappiness = 10\n")
    result = ansible_module("nodetune_files", {"root": str(root), "records": [
        {"path": "/etc/sysctl.d/99-nodetune.conf", "state": "file", "content_b64": "@@@",
         "mode": "0644"}]}, tmp_path)
    assert result.returncode != 0
    assert "content_b64 of /etc/sysctl.d/99-nodetune.conf is not base64" in result.stdout
    assert conf.read_text() == "vm.swappiness = 10\n"


# -- one apply or rollback of a root at a time ----------------------------------------------

def hold_lock(root: Path, text: str) -> int:
    """Take the lock the way a running apply holds it (flock on the state directory's .lock)."""
    directory = root / STATE
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, text.encode())
    return fd


def test_rollback_while_another_holds_the_lock_is_refused_at_once(synthetic_applied, sentinel):
    root, state, _ = synthetic_applied
    fd = hold_lock(root, "4242 apply\n")
    try:
        started = time.monotonic()
        line = refused(root, state, sentinel, 4, "another nodetune apply (pid 4242)",
                       f"holds {root / STATE}/.lock")
        assert "fix: wait for it to finish" in line
        assert time.monotonic() - started < 30  # at once, not after a wait
    finally:
        os.close(fd)
    assert statefile.load(state).status == "applied"


@pytest.mark.slow
def test_apply_while_another_holds_the_lock_is_refused_before_the_check_run(host_tree, tmp_path,
                                                                           sentinel):
    root = faulty_tree(host_tree, tmp_path)
    fd = hold_lock(root, "777 rollback\n")
    try:
        before = snapshot(root), snapshot(sentinel)
        result = nodetune("apply", "--root", str(root), "--yes")
        assert result.returncode == 4
        assert "(pid 777) holds" in one_line(result)
        assert (snapshot(root), snapshot(sentinel)) == before
    finally:
        os.close(fd)


def test_state_directory_leading_out_of_the_tree_is_refused(synthetic_applied, tmp_path,
                                                             sentinel):
    copy, state = copy_of(synthetic_applied, tmp_path)
    rewrite(state, lambda d: d.update(root=str(copy)))
    moved = sentinel / "var"
    shutil.move(copy / "var", moved)
    (copy / "var").symlink_to(moved)
    refused(copy, moved / state.relative_to(copy / "var"), sentinel, 4,
            f"the state directory {copy / STATE} leads to {moved}/lib/nodetune/state, outside")


# -- signals ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("boundary", "signum"), [
    ("locked", signal.SIGTERM), ("check-run", signal.SIGINT), ("check-run", signal.SIGTERM),
    ("check-run-later", signal.SIGINT)])
def test_signal_before_the_first_change_cancels_cleanly(host_tree, tmp_path, sentinel,
                                                        boundary, signum):
    root = faulty_tree(host_tree, tmp_path)
    before = snapshot(root), snapshot(sentinel)
    run = Run(tmp_path, "apply", "--root", str(root), "--yes")
    run.wait_until(lambda: lock_held_by(root, run.proc.pid))
    if boundary != "locked":
        run.wait_until(lambda: bool(run.ansible()))
    if boundary == "check-run-later":  # tasks of the check-mode run have finished
        run.wait_until(run.task_done)
    assert not state_files(root)
    run.proc.send_signal(signum)
    code, err = run.finish()
    assert code == 128 + signum, err
    name = signal.Signals(signum).name
    assert err.strip() == (f"nodetune: error: interrupted by {name} before the first change; "
                           "nothing was changed")
    assert (without_state(snapshot(root)), snapshot(sentinel)) == (without_state(before[0]),
                                                                  before[1])
    assert not state_files(root)
    run.left_nothing()


def test_a_cancel_the_interpreter_dropped_still_cancels_before_the_first_change() -> None:
    """Python drops an exception a signal handler raises while an at-fork hook runs (logging's
    _releaseLock after a subprocess fork: "Exception ignored in"); the signal must cancel all
    the same, at the last point before anything changes, and never let the apply go on."""
    with ansible.signals():
        with contextlib.suppress(ansible.Cancelled):  # as the interpreter would: dropped
            ansible.SIGNALS.handle(signal.SIGTERM, None)
        with pytest.raises(ansible.Cancelled) as cancel, ansible.changing():
            raise AssertionError("the apply went on to change the host")
        assert cancel.value.signum == signal.SIGTERM
    with ansible.changing() as fresh:  # a later run starts clean
        assert fresh.signum == 0


def whole(root: Path) -> None:
    """Every file the apply writes holds its old or its new content, never a part."""
    for rel, old, new in (("proc/sys/vm/swappiness", ("60\n",), ("10\n",)),
                          ("sys/kernel/mm/transparent_hugepage/enabled",
                           ("[always] madvise never\n",), ("always [madvise] never\n",)),
                          ("etc/sysctl.d/99-nodetune.conf", (None,), ("vm.swappiness = 10\n",))):
        path = root / rel
        text = path.read_text() if path.exists() else None
        assert text in old + new, (rel, text)


@pytest.mark.slow
@pytest.mark.parametrize(("boundary", "signum"), [
    ("state-file", signal.SIGTERM), ("first-change", signal.SIGINT),
    ("persisted", signal.SIGTERM)])
def test_signal_during_the_run_stops_after_the_task_and_rolls_back(host_tree, tmp_path,
                                                                  sentinel, boundary, signum):
    root = faulty_tree(host_tree, tmp_path)
    before = snapshot(root), snapshot(sentinel)
    run = Run(tmp_path, "apply", "--root", str(root), "--yes")
    run.wait_until(lambda: bool(state_files(root)))
    if boundary == "first-change":
        run.wait_until(lambda: (root / "proc/sys/vm/swappiness").read_text() == "10\n")
        # the lock: a second run on the same root is refused at once, naming this one
        other = nodetune("rollback", "--root", str(root), "--yes")
        assert other.returncode == 4
        assert f"(pid {run.proc.pid}) holds" in one_line(other)
    elif boundary == "persisted":
        run.wait_until(lambda: (root / "etc/sysctl.d/99-nodetune.conf").exists())
    run.proc.send_signal(signum)
    code, err = run.finish()
    assert code == 128 + signum, err
    line = err.strip()
    assert len(line.splitlines()) == 1, err
    name = signal.Signals(signum).name
    assert line.startswith(f"nodetune: error: interrupted by {name} during the apply: stopped "
                           "after the task in flight; the previous values are recorded in ")
    run.left_nothing()
    whole(root)
    assert snapshot(sentinel) == before[1]
    [path] = state_files(root)
    assert line.endswith(f"fix: nodetune rollback --state-file {path}")
    state = statefile.load(path)  # whole and sealed
    assert state.status == "interrupted"
    statefile.check_target(state, str(root))
    rolled = nodetune("rollback", "--root", str(root), "--yes")
    assert rolled.returncode == 0, rolled.stderr
    assert without_state(snapshot(root)) == without_state(before[0])
    assert snapshot(sentinel) == before[1]


@pytest.mark.slow
def test_ansible_playbook_dies_with_a_killed_nodetune(host_tree, tmp_path, sentinel):
    root = faulty_tree(host_tree, tmp_path)
    host, original = snapshot(sentinel), without_state(snapshot(root))
    run = Run(tmp_path, "apply", "--root", str(root), "--yes")
    run.wait_until(lambda: bool(state_files(root)) and bool(run.ansible()))
    run.proc.kill()
    run.finish()
    deadline = time.monotonic() + 20
    while run.ansible() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.ansible() == []
    assert snapshot(sentinel) == host
    whole(root)
    # the state file was written before the run: rollback takes it back
    rolled = nodetune("rollback", "--root", str(root), "--yes")
    assert rolled.returncode == 0, rolled.stderr
    assert snapshot(sentinel) == host
    assert without_state(snapshot(root)) == original
