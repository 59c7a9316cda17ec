"""Snapshots: capture, safety of what enters the archive, replay equal to the live facts, and
one-line errors for archives that are not usable."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from nodetune.cli import main
from nodetune.errors import SourceError
from nodetune.node import snapshot as snap
from nodetune.node.source import open_node

FIXTURES = Path(__file__).parent / "fixtures"

# The memory collector reads the page size from sysconf() on the live host only; a replay
# derives the same value from hpage_pmd_size, so only the recorded source differs.
LIVE_ONLY_SOURCES = {("memory", "sources", "page_size_bytes")}


def comparable(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc, default=str))
    doc.pop("collectors")
    doc.pop("root")
    return doc


def take(out: Path, **source: str) -> snap.SnapshotResult:
    """`nodetune snapshot` of the live host, or of a root= tree or snapshot= file."""
    with open_node(**source) as node:
        return snap.take(str(out), node)


def replay(path: Path) -> dict:
    with open_node(snapshot=str(path)) as node:
        return node.facts().to_json()


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


def test_live_host_replays_to_the_same_facts(tmp_path):
    out = tmp_path / "live.tar.gz"
    result = take(out)
    live = comparable(result.facts.to_json())
    replayed = comparable(replay(out))
    for section, key, fact in LIVE_ONLY_SOURCES:
        live[section][key].pop(fact, None)
        replayed[section][key].pop(fact, None)
    assert replayed == live
    assert out.stat().st_size == result.bytes < 5 << 20
    names = members(out)
    meta = json.loads(read_member(out, "meta.json"))
    assert meta["schema"] == "nodetune.snapshot/1"
    assert meta["source"] == "live"
    assert meta["tools"]["kernel"] == os.uname().release
    assert set(meta["collectors"]) == set(result.facts.status)
    # NVML: recorded when it was used; otherwise the note travels in meta.json
    assert ("nvml.json" in names) == meta["nvml"]["recorded"] == result.nvml_recorded
    gpu = replayed["gpu"]["nvml"]
    assert gpu["available"] == meta["nvml"]["recorded"]
    assert gpu["note"] == live["gpu"]["nvml"]["note"]
    # nothing of any process but the GPU daemons' names; no environment, no command lines
    for name in names:
        assert not name.endswith(("/environ", "/cmdline")) or name == "root/proc/cmdline"
        parts = name.split("/")
        if len(parts) > 3 and parts[1] == "proc" and parts[2].isdigit():
            assert parts[3] == "comm", name
            comm = read_member(out, name).decode().strip()
            assert comm in snap.service_process_names()
    assert not [n for n, m in names.items() if n.startswith("root/etc/") and not m.isdir()
                and not snap.allowed(n[4:].removesuffix(".link"))]


@pytest.fixture(scope="module")
def h200_snapshot(host_tree, tmp_path_factory):
    tree = host_tree("h200x2-vm-gather")
    out = tmp_path_factory.mktemp("snap") / "h200.tar.gz"
    nvml = str(FIXTURES / "nvml" / "h200x2-vm.json")
    result = take(out, root=str(tree), nvml=nvml)
    return tree, out, result, nvml


def test_h200_tree_replays_to_the_same_facts(h200_snapshot):
    tree, out, result, nvml = h200_snapshot
    with open_node(root=str(tree), nvml=nvml) as node:
        direct = comparable(node.facts().to_json())
    assert comparable(result.facts.to_json()) == direct
    replayed = comparable(replay(out))
    assert replayed == direct
    assert [g["name"] for g in replayed["gpus"]] == ["NVIDIA H200", "NVIDIA H200"]
    assert replayed["gpus"][0]["nvlink"]["peers"] == {"0000:00:07.0": 18}
    assert json.loads(read_member(out, "nvml.json")) == json.loads(Path(nvml).read_text())


def test_gathered_links_become_symlinks(h200_snapshot):
    _, out, _, _ = h200_snapshot
    names = members(out)
    driver = names["root/sys/bus/pci/devices/0000:00:06.0/driver"]
    assert driver.issym() and driver.linkname == "../../../bus/pci/drivers/nvidia"
    assert not any(n.endswith(".link") for n in names if n.startswith("root/sys/"))


def test_cli_replays_the_snapshot(h200_snapshot, capsys):
    _, out, _, _ = h200_snapshot
    with pytest.raises(SystemExit) as exit_info:
        main(["facts", "--from", str(out), "--json"])
    assert exit_info.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nodetune.facts/1"
    assert doc["gpu"]["count"] == 2 and doc["gpu"]["driver_version"] == "580.159.04"


def test_snapshot_of_a_snapshot(h200_snapshot, tmp_path):
    _, out, _, _ = h200_snapshot
    again = tmp_path / "again.tar.gz"
    take(again, snapshot=str(out))
    assert comparable(replay(again)) == comparable(replay(out))


def test_cli_writes_a_snapshot(host_tree, tmp_path, capsys):
    out = tmp_path / "s.tar.gz"
    with pytest.raises(SystemExit) as exit_info:
        main(["snapshot", "--root", str(host_tree("h200x2-vm-gather")), "--nvml", "off",
              "-o", str(out), "--json"])
    assert exit_info.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nodetune.snapshot/1"
    assert doc["path"] == str(out) and doc["bytes"] == out.stat().st_size
    assert doc["nvml_recorded"] is False
    assert "nvml.json" not in members(out)


def test_replay_is_held_in_memory(h200_snapshot):
    _, out, _, _ = h200_snapshot
    with open_node(snapshot=str(out)) as node:
        assert node.root.listdir("/sys/bus/pci/devices")
        assert not os.path.exists(node.root.path("/sys"))  # nothing was unpacked to disk


def _without_tree_json(src: Path, dest: Path) -> None:
    """The same snapshot as an older nodetune wrote it: root/ only, no tree.json."""
    with tarfile.open(src) as old, tarfile.open(dest, "w:gz") as new:
        for member in old.getmembers():
            if member.name != snap.TREE_FILE:
                new.addfile(member, old.extractfile(member) if member.isreg() else None)


def test_snapshot_without_tree_json_unpacks_and_cleans_up(h200_snapshot, tmp_path):
    _, out, _, _ = h200_snapshot
    legacy = tmp_path / "legacy.tar.gz"
    _without_tree_json(out, legacy)
    with open_node(snapshot=str(legacy)) as node:
        unpacked = Path(node.root.root)
        assert (unpacked / "sys/bus/pci/devices").is_dir()
    assert not unpacked.exists()
    assert not unpacked.parent.exists()
    assert comparable(replay(legacy)) == comparable(replay(out))


# -- what may enter a snapshot ----------------------------------------------------------------

def _file(root: Path, hostpath: str, text: str) -> None:
    path = root / hostpath.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_secrets_never_enter_the_archive(tmp_path):
    """Even when something reads them, only allow-listed paths are written."""
    tree = tmp_path / "tree"
    for hostpath, text in {
        "/etc/shadow": "root:$6$secret:19000::::::\n",
        "/etc/sysctl.d/90-gpu.conf": "vm.swappiness = 10\n",
        "/etc/environment": "AWS_SECRET_ACCESS_KEY=abc\n",
        "/proc/1/environ": "TOKEN=xyz\0",
        "/proc/1/cmdline": "/usr/bin/app\0--password=hunter2\0",
        "/proc/1/comm": "irqbalance\n",
        "/proc/2/comm": "bash\n",
        "/proc/cpuinfo": "processor\t: 0\n",
        "/sys/class/dmi/id/product_serial": "SN123\n",
        "/sys/class/dmi/id/product_name": "PowerEdge\n",
        "/run/secrets/db": "password\n",
    }.items():
        _file(tree, hostpath, text)
    src = snap.CapturingRoot(str(tree))
    for hostpath in ("/etc/shadow", "/etc/sysctl.d/90-gpu.conf", "/etc/environment",
                     "/proc/1/environ", "/proc/1/cmdline", "/proc/1/comm", "/proc/2/comm",
                     "/proc/cpuinfo", "/sys/class/dmi/id/product_serial",
                     "/sys/class/dmi/id/product_name", "/run/secrets/db"):
        src.read_text(hostpath)
    src.listdir("/proc")
    src.listdir("/etc")
    plan = snap._Planner(src).build()
    out = tmp_path / "s.tar.gz"
    snap.write_archive(str(out), plan, {"schema": "nodetune.snapshot/1"}, None)
    names = set(members(out))
    assert {"root/etc/sysctl.d/90-gpu.conf", "root/proc/1/comm", "root/proc/cpuinfo",
            "root/sys/class/dmi/id/product_name", "root/proc/1", "root/proc/2"} <= names
    for secret in ("root/etc/shadow", "root/etc/environment", "root/proc/1/environ",
                   "root/proc/1/cmdline", "root/proc/2/comm", "root/run/secrets/db",
                   "root/sys/class/dmi/id/product_serial"):
        assert secret not in names
    assert {"/etc/shadow", "/etc/environment", "/proc/<pid>/...", "/run/secrets/db",
            "/sys/class/dmi/id/product_serial"} <= plan.excluded
    with tarfile.open(out) as tar:
        blob = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isreg())
    for word in (b"secret", b"hunter2", b"TOKEN", b"SN123", b"AWS"):
        assert word not in blob


def test_kernel_log_keeps_only_xid_lines(tmp_path):
    tree = tmp_path / "tree"
    _file(tree, "/proc/uptime", "5000.00 100.00\n")
    _file(tree, "/var/log/kern.log", "\n".join([
        "Nov 27 10:00:00 node kernel: [    0.000000] Linux version 6.8.0 (build@host)",
        "Nov 27 10:00:05 node kernel: [    5.000000] eth0: user alice logged in from 10.0.0.7",
        "Nov 27 10:20:00 node kernel: [ 1200.500000] NVRM: Xid (PCI:0000:18:00): 79, pid=1, "
        "name=python, GPU has fallen off the bus.",
    ]) + "\n")
    out = tmp_path / "s.tar.gz"
    result = take(out, root=str(tree), nvml="off")
    stored = read_member(out, "root/var/log/kern.log").decode()
    assert "Xid (PCI:0000:18:00): 79" in stored
    assert "alice" not in stored and "Linux version" not in stored
    assert comparable(replay(out))["kernel_log"] == \
        comparable(result.facts.to_json())["kernel_log"]
    assert comparable(replay(out))["kernel_log"]["xids"][0]["code"] == 79


def test_the_dra_compute_domain_plugin_replays_as_present(tmp_path):
    """Only whether the NVIDIA DRA driver's ComputeDomain plugin directory exists is kept."""
    tree = tmp_path / "tree"
    _file(tree, "/proc/driver/nvidia/version",
          "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95  Release Build\n")
    _file(tree, "/var/lib/kubelet/plugins/compute-domain.nvidia.com/checkpoint.json", "{}")
    out = tmp_path / "s.tar.gz"
    result = take(out, root=str(tree), nvml="off")
    assert result.facts.to_json()["nvidia_driver"]["dra_compute_domains"] is True
    assert replay(out)["nvidia_driver"]["dra_compute_domains"] is True
    assert not any("checkpoint.json" in name for name in members(out))


def test_allow_list():
    assert snap.allowed("/proc/meminfo")
    assert snap.allowed("/proc/self/mounts")
    assert not snap.allowed("/proc/self/environ")
    assert snap.allowed("/proc/42") and not snap.allowed("/proc/42/comm")
    assert snap.allowed("/proc/42/comm", {"42"}) and not snap.allowed("/proc/42/cmdline", {"42"})
    assert not snap.allowed("/proc/kcore")
    assert snap.allowed("/sys/bus/pci/devices/0000:18:00.0/config")
    assert not snap.allowed("/sys/devices/virtual/dmi/id/product_uuid")
    assert snap.allowed("/etc/modprobe.d/nvidia.conf")
    assert not snap.allowed("/etc/passwd") and not snap.allowed("/etc/ssh/ssh_host_rsa_key")
    assert not snap.allowed("/home/user/.bashrc") and not snap.allowed("/root/.ssh/id_rsa")


# -- archives that are not snapshots ---------------------------------------------------------

def _tar(path: Path, entries: list[tuple[str, bytes | str | None]], meta: dict | None = None
         ) -> Path:
    """A tar.gz with `entries` (name, bytes: file; str: symlink target; None: directory)."""
    with tarfile.open(path, "w:gz") as tar:
        if meta is not False:
            data = json.dumps(meta or {"schema": "nodetune.snapshot/1"}).encode()
            info = tarfile.TarInfo("meta.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, str):
                info.type = tarfile.SYMTYPE
                info.linkname = content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def _hardlink(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("root/x")
        info.type = tarfile.LNKTYPE
        info.linkname = "meta.json"
        tar.addfile(info)
    return path


BAD = {
    "not-tar": (lambda p: (p.write_bytes(b"PK\x03\x04 a zip file"), p)[1],
                "not a complete tar.gz archive"),
    "truncated": (lambda p: (p.write_bytes(b""), p)[1], "not a complete tar.gz archive"),
    "no-meta": (lambda p: _tar(p, [("root", None)], meta=False), "has no meta.json"),
    "wrong-schema": (lambda p: _tar(p, [("root", None)], {"schema": "nodetune.facts/1"}),
                     "schema 'nodetune.facts/1'"),
    "dotdot": (lambda p: _tar(p, [("root/../../evil", b"x")]), "points outside the snapshot"),
    "absolute": (lambda p: _tar(p, [("/etc/cron.d/evil", b"x")]), "points outside the snapshot"),
    "escaping-link": (lambda p: _tar(p, [("root/sys/x", "../../../../etc/passwd")]),
                      "link 'root/sys/x' points outside"),
    "absolute-link": (lambda p: _tar(p, [("root/sys/x", "/etc/passwd")]), "points outside"),
    "foreign-member": (lambda p: _tar(p, [("etc/passwd", b"x")]), "unexpected member"),
    "hardlink": (_hardlink, "neither a file"),
    "link-below-link": (lambda p: _tar(p, [("root", None), ("root/a/b", None),
                                           ("root/a/b/c", "../../x"),
                                           ("root/a/b/c/d/e", "../../../..")]),
                        "lies below another link"),
    "no-root": (lambda p: _tar(p, []), "has no root/ directory"),
    "nvml-not-an-object": (lambda p: _tar(p, [("root", None)], {
        "schema": "nodetune.snapshot/1", "nvml": "live"}), "field nvml is a str, not an object"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_snapshots_give_one_line_and_exit_3(tmp_path, capsys, case):
    make, words = BAD[case]
    path = make(tmp_path / f"{case}.tar.gz")
    with pytest.raises(SourceError) as err, open_node(snapshot=str(path)):
        pass
    assert words in err.value.one_line()
    with pytest.raises(SystemExit) as exit_info:
        main(["facts", "--from", str(path), "--json"])
    assert exit_info.value.code == 3
    stderr = capsys.readouterr().err
    assert stderr.startswith("nodetune: error: ") and stderr.count("\n") == 1
    assert str(path) in stderr and "fix: " in stderr
    assert not (tmp_path.parent / "evil").exists()


def test_truncated_real_snapshot(h200_snapshot, tmp_path):
    _, out, _, _ = h200_snapshot
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(SourceError, match=r"not a complete tar\.gz archive"), \
            open_node(snapshot=str(cut)):
        pass


def test_missing_snapshot_and_output_dir(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["facts", "--from", str(tmp_path / "absent.tar.gz")])
    assert exit_info.value.code == 3
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["snapshot", "--nvml", "off", "-o", str(tmp_path / "no/such/dir/s.tar.gz")])
    assert exit_info.value.code == 3
    assert "is not a directory" in capsys.readouterr().err


def test_failed_nvml_dump_replays_with_its_note(host_tree, tmp_path, monkeypatch):
    class Broken:
        def dump(self):
            raise RuntimeError("GPU has fallen off the bus")

        def close(self):
            pass

    monkeypatch.setattr("nodetune.node.source._nvml_backend",
                        lambda choice, root, thin=False: (Broken(), None))
    out = tmp_path / "s.tar.gz"
    result = take(out, root=str(host_tree("h200x2-vm-gather")))
    assert "nvml.json" not in members(out)
    live = comparable(result.facts.to_json())
    assert live["gpu"]["nvml"]["note"] == "NVML query failed: RuntimeError: GPU has fallen off " \
                                          "the bus"
    monkeypatch.undo()
    assert comparable(replay(out))["gpu"] == live["gpu"]


def test_snapshot_holds_what_placement_reads(host_tree, tmp_path):
    """Host name, GPU minors and cache groups are facts, so their files travel with the node."""
    out = tmp_path / "h100.tar.gz"
    result = take(out, root=str(host_tree("h100x2-fc-vm-gather")))
    names = members(out)
    assert "root/proc/sys/kernel/hostname" in names
    assert "root/proc/driver/nvidia/gpus/0000:00:07.0/information" in names
    assert json.loads(read_member(out, "meta.json"))["hostname"] == "vm"
    replayed = replay(out)
    assert replayed["kernel"]["hostname"] == "vm"
    assert [g["device_minor"] for g in replayed["gpus"]] == [0, 1]
    assert comparable(replayed) == comparable(result.facts.to_json())
    caches = tmp_path / "8em64t.tar.gz"
    take(caches, root=str(host_tree("8em64t-2s2ca2c")))
    assert "root/sys/devices/system/cpu/cpu1/cache/index2/shared_cpu_list" in members(caches)
    assert [g["cpus"] for g in replay(caches)["cpu"]["cache_groups"]] == [
        [0, 4], [1, 5], [2, 6], [3, 7]]


def test_imex_channel_devices_are_kept_by_name_only(tmp_path):
    tree = tmp_path / "tree"
    (tree / "proc/driver/nvidia").mkdir(parents=True)
    (tree / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04\n")
    channels = tree / "dev/nvidia-caps-imex-channels"
    channels.mkdir(parents=True)
    try:
        os.mknod(channels / "channel0", 0o600 | stat.S_IFCHR, os.makedev(234, 0))
    except PermissionError:
        pytest.skip("creating a character device needs CAP_MKNOD")
    (tree / "dev/nvidiactl").write_text("")  # the rest of /dev never enters a snapshot
    out = tmp_path / "imex.tar.gz"
    result = take(out, root=str(tree), nvml="off")
    assert result.facts.sections["nvidia_driver"]["imex_channels"] == 1
    names = members(out)
    channel = names["root/dev/nvidia-caps-imex-channels/channel0"]
    assert channel.isreg() and channel.size == 0
    assert not any(n.startswith("root/dev/") and "imex" not in n for n in names)
    assert replay(out)["nvidia_driver"]["imex_channels"] == 1
