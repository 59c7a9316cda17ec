"""What a user installs: the wheel holds the package, its data and the man pages, and the
README's Quick start, pasted into a shell, puts `nodetune` on the PATH and audits the machine.

Both build the wheel from this checkout with pip (its build backend comes from the package
index, as on a user's machine), so they are slow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nodetune import __version__

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def quick_start_blocks(text: str) -> list[list[str]]:
    """The lines of every ```sh block under the README's `## Quick start` heading."""
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip("\n").splitlines()
            for block in re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)]


@pytest.mark.slow
def test_the_wheel_holds_the_man_pages_and_the_data(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    wheel = tmp_path / f"nodetune-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    man = {n.rsplit("/", 1)[1] for n in names
           if n.startswith(f"nodetune-{__version__}.data/data/share/man/man1/")}
    shipped = {p.name for p in (REPO / "docs" / "man").glob("*.1")}
    assert man == shipped and {"nodetune.1", "nodetune-audit.1", "nodetune-explain.1"} <= man
    assert "nodetune/_data/profiles/SOURCES.md" in names
    assert "nodetune/_data/checks/quick.yaml" in names
    assert "nodetune/_data/checks/nhc/nodetune.nhc" in names
    # the collection nodetune.node, every file of it
    source = REPO / "playbooks"
    collection = {f"nodetune/_data/playbooks/{p.relative_to(source).as_posix()}"
                  for p in (source / "ansible_collections").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts}
    assert "nodetune/_data/playbooks/ansible_collections/nodetune/node/galaxy.yml" in collection
    assert collection | {"nodetune/_data/playbooks/ansible.cfg",
                         "nodetune/_data/playbooks/site.yml"} <= names
    assert "nodetune/commands/explain.py" in names
    entry_points = zipfile.ZipFile(wheel).read(
        f"nodetune-{__version__}.dist-info/entry_points.txt").decode()
    assert "nodetune = nodetune.cli:main" in entry_points


@pytest.mark.slow
def test_the_quick_start_installs_nodetune_on_the_path(tmp_path: Path) -> None:
    """The root block, run as written but with /opt and /usr/local moved under tmp_path."""
    python3 = shutil.which("python3", path="/usr/bin:/bin")
    if python3 is None:
        pytest.skip("no system python3 in /usr/bin or /bin")
    block = quick_start_blocks(README.read_text(encoding="utf-8"))[0]
    assert block[0].startswith("apt-get update && apt-get install -y python3 python3-venv")
    script = "\n".join(block[1:])  # apt-get needs root and the network: the rest does not
    script = script.replace("/opt/", f"{tmp_path}/opt/").replace("/usr/local/",
                                                                 f"{tmp_path}/usr/local/")
    (tmp_path / "usr" / "local" / "bin").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NODETUNE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"PATH": f"{tmp_path}/usr/local/bin:/usr/bin:/bin", "COLUMNS": "100",
                "NODETUNE_CACHE_DIR": str(tmp_path / "cache")})
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode in (0, 1, 2), proc.stderr  # compliant, warnings, critical: it ran
    assert "compliance" in proc.stdout
    assert (tmp_path / "usr/local/bin/nodetune").resolve() == tmp_path / "opt/nodetune/bin/nodetune"
    man = tmp_path / "usr/local/share/man/man1/nodetune-audit.1"
    assert man.read_text(encoding="utf-8").startswith(".TH")
