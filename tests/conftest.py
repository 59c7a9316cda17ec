"""Shared test fixtures: real host trees unpacked once per session, golden-file updates."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
HOSTS = FIXTURES / "hosts"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from the current output")


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def _unpack(archive: Path, dest: Path) -> Path:
    """Unpack a host archive once; return the directory laid out like / inside it."""
    stem = archive.name.split(".tar")[0]
    target = dest / stem
    if not target.exists():
        tmp = dest / (stem + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        if shutil.which("tar"):  # ~20x faster than tarfile on trees of many small files
            subprocess.run(["tar", "-xf", str(archive), "-C", str(tmp)], check=True)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="fully_trusted")
        tmp.rename(target)
    entries = [p for p in target.iterdir()]
    if len(entries) == 1 and entries[0].is_dir() and not (target / "sys").exists():
        return entries[0]
    return target


@pytest.fixture(scope="session")
def host_tree(tmp_path_factory: pytest.TempPathFactory):
    """host_tree("h200x2-vm-gather") -> Path of that real tree, unpacked once per session.

    The trees hold thousands of small files: they are unpacked in RAM (/dev/shm) when the
    machine has it, about 15 times faster than on a disk-backed /tmp.
    """
    shm = Path("/dev/shm")
    in_ram = shm.is_dir() and os.access(shm, os.W_OK)
    if in_ram:
        base = Path(tempfile.mkdtemp(prefix="nodetune-hosts-", dir=shm))
    else:
        base = tmp_path_factory.getbasetemp() / "hosts"
        base.mkdir(exist_ok=True)

    def get(name: str) -> Path:
        for archive in HOSTS.glob(f"{name}.tar*"):
            return _unpack(archive, base)
        raise FileNotFoundError(f"no fixture archive tests/fixtures/hosts/{name}.tar*")

    yield get
    if in_ram:
        shutil.rmtree(base, ignore_errors=True)


def real_tree_names() -> list[str]:
    return sorted(p.name.split(".tar")[0] for p in HOSTS.glob("*.tar*")
                  if not p.name.startswith("synthetic-"))


@pytest.fixture(scope="session")
def synth():
    """The synthetic host-tree builder (tests/fixtures/synth.py): synth.build_dgx_h100(dir,
    synth.Options(...)) and friends. See that module's docstring for the knobs."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("synth", FIXTURES / "synth.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("synth", module)
    spec.loader.exec_module(module)
    return module


def _ram_dir(prefix: str) -> Path | None:
    """A fresh directory in /dev/shm, or None: trees of thousands of files build ~10x faster."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
    return None


@pytest.fixture(scope="session")
def synthetic_host(synth, tmp_path_factory: pytest.TempPathFactory):
    """synthetic_host("synthetic-dgx-h100") -> SynthHost with default options, built once per
    session. Read only: to plant faults, build your own into `synth_tmp`."""
    base = _ram_dir("nodetune-synth-") or tmp_path_factory.mktemp("synthetic")
    built: dict[str, object] = {}

    def get(name: str):
        if name not in built:
            built[name] = synth.build(name, base)
        return built[name]

    yield get
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def synth_tmp(tmp_path: Path):
    """A per-test directory for synthetic trees: in RAM when /dev/shm is writable."""
    base = _ram_dir("nodetune-synth-test-")
    yield base or tmp_path
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def h200_facts(host_tree) -> dict:
    """Facts of the real 2x H200 VM: its sysfs/procfs tree and its recorded NVML."""
    from nodetune.node.source import open_node

    root = host_tree("h200x2-vm-gather")
    with open_node(root=str(root), nvml=str(FIXTURES / "nvml" / "h200x2-vm.json")) as node:
        facts: dict = node.facts().to_json()
    return facts
