"""`--json` errors as nodetune.error/1 on stdout, and `nodetune profiles recommend`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nodetune.audit.operation import run_audit
from tests.audit_helpers import collect


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodetune", *args], capture_output=True,
                          text=True, check=False)


@pytest.mark.parametrize("args", [("audit", "--root", "/nonexistent-root"),
                                  ("profiles", "show", "no-such-profile")])
def test_json_error_is_a_document_on_stdout_with_the_same_exit(args: tuple[str, ...]) -> None:
    plain = _run(*args)
    with_json = _run(*args, "--json")
    assert plain.returncode == with_json.returncode == 3
    assert plain.stdout == ""
    doc = json.loads(with_json.stdout)
    assert doc["schema"] == "nodetune.error/1"
    assert doc["exit_code"] == 3
    assert doc["error"] and doc["error"] in with_json.stderr
    assert with_json.stderr.count("\n") == 1 and "Traceback" not in with_json.stderr


def test_recommend_prints_the_profile_audit_picks(synthetic_host) -> None:
    host = synthetic_host("synthetic-dgx-h100")
    out = _run("profiles", "recommend", "--root", str(host.root), "--nvml", str(host.nvml))
    assert out.returncode == 0, out.stderr
    word = out.stdout.strip()
    assert out.stdout == word + "\n" and " " not in word
    assert word == run_audit(collect(str(host.root), str(host.nvml))).profile.name
    doc = json.loads(_run("profiles", "recommend", "--root", str(host.root), "--nvml",
                          str(host.nvml), "--json").stdout)
    assert doc["recommended"] == word and doc["reason"]
