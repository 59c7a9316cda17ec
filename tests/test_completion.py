"""Shell completion through click's own protocol (`_NODETUNE_COMPLETE=bash_complete` with
COMP_WORDS/COMP_CWORD, as the script `_NODETUNE_COMPLETE=bash_source nodetune` prints sends
it): profile names, check tiers, collector names, setting ids and fault codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from nodetune.cli import cli
from nodetune.collectors import load_all
from nodetune.profiles.catalog import Library

REPO = Path(__file__).resolve().parents[1]


def complete(line: str, shell: str = "bash") -> list[str]:
    """What the shell would offer for `line` (a trailing space starts a new word)."""
    words = line.split()
    incomplete = "" if line.endswith(" ") else words[-1]
    cword = len(words) if line.endswith(" ") else len(words) - 1
    cword_value = incomplete if shell == "fish" else str(cword)  # fish sends the word itself
    env = {"_NODETUNE_COMPLETE": f"{shell}_complete", "COMP_WORDS": line,
           "COMP_CWORD": cword_value, "NODETUNE_PROFILES_DIR": ""}
    result = CliRunner().invoke(cli, [], env=env, prog_name="nodetune")
    assert result.exit_code == 0, result.output
    if shell == "bash":
        return [row.split(",", 1)[1] for row in result.output.splitlines() if row]
    return result.output.splitlines()


def test_profile_names_complete_from_the_shipped_profiles() -> None:
    shipped = Library().names()
    assert len(shipped) >= 10
    assert complete("nodetune audit --profile ") == shipped
    assert complete("nodetune audit --profile hgx") == ["hgx-h100"]
    assert complete("nodetune profiles show gb") == ["gb200", "gb300"]


def test_auto_is_offered_where_the_option_takes_it() -> None:
    assert complete("nodetune check --profile a") == ["auto"]
    assert complete("nodetune audit --profile a") == []
    assert complete("nodetune agent --profile a") == []


def test_zsh_and_fish_get_each_profile_with_its_summary() -> None:
    zsh = complete("nodetune audit --profile hgx", shell="zsh")
    assert zsh == ["plain", "hgx-h100",
                   "NVIDIA HGX H100 8-GPU (SXM5, NVSwitch) in a 2-socket x86 server"]
    fish = complete("nodetune tune --profile hgx", shell="fish")
    assert fish == ["plain,hgx-h100\tNVIDIA HGX H100 8-GPU (SXM5, NVSwitch) in a 2-socket x86 "
                    "server"]


def test_site_profiles_of_profiles_dir_complete_too(tmp_path: Path) -> None:
    (tmp_path / "site-h100.yaml").write_text("summary: our H100 nodes\nextends: hgx-h100\n",
                                             encoding="utf-8")
    (tmp_path / "broken.yaml").write_text("summary: [unclosed\n", encoding="utf-8")
    line = f"nodetune audit --profiles-dir {tmp_path} --profile "
    offered = complete(line)
    assert "site-h100" in offered and "broken" in offered and "hgx-h100" in offered
    assert complete(line + "site", shell="zsh") == ["plain", "site-h100", "our H100 nodes"]


def test_check_tiers_complete() -> None:
    assert complete("nodetune check --tier ") == ["quick", "standard"]
    assert complete("nodetune check --tier s") == ["standard"]


def test_collector_names_complete_after_each_comma() -> None:
    names = sorted(load_all())
    assert complete("nodetune facts --only ") == names
    assert complete("nodetune facts --only gpu,n") == ["gpu,nic", "gpu,numa", "gpu,nvidia_driver"]
    assert "gpu,gpu" not in complete("nodetune facts --only gpu,")
    described = complete("nodetune facts --only rd", shell="zsh")
    assert described[:2] == ["plain", "rdma"] and described[2] != "_"


def test_the_installed_entry_point_answers_completion() -> None:
    """The same protocol through a real process, as the shell runs it."""
    env = {**os.environ, "_NODETUNE_COMPLETE": "bash_complete",
           "COMP_WORDS": "nodetune check --tier q", "COMP_CWORD": "3", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "nodetune"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "plain,quick\n", "")
    source = subprocess.run([sys.executable, "-m", "nodetune"], capture_output=True, text=True,
                            env={**env, "_NODETUNE_COMPLETE": "bash_source"}, timeout=60,
                            check=False)
    assert "complete -o nosort -F _nodetune_completion nodetune" in source.stdout
