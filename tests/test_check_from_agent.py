"""`nodetune check --from-agent`: the agent's last answer, used only when it is fresh, of this
boot and to the same question; in every other case a full check runs and one stderr line says
why. The agent's answers come from real agent cycles on the real 2x H200 VM tree (with its
recorded NVML); the tree gets a synthetic boot id, since the capture holds none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodetune.agent.cycle import CycleOptions, run_cycle
from nodetune.check import fromagent
from nodetune.check.options import DEFAULTS
from nodetune.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
NVML = FIXTURES / "nvml" / "h200x2-vm.json"
REPO = Path(__file__).resolve().parents[1]
SYNTHETIC_BOOT_ID = "5b0e7c1e-0000-4000-8000-synthetic0001"


@pytest.fixture(autouse=True)
def _private_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("NODETUNE_PROFILES_DIR", "NODETUNE_ROOT", fromagent.PATH_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def booted_tree(host_tree: Callable[[str], Path],
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the real H200 VM tree with a synthetic boot id (the capture has none)."""
    tree = tmp_path_factory.mktemp("booted") / "node"
    shutil.copytree(host_tree("h200x2-vm-gather"), tree, symlinks=True)
    boot = tree / "proc/sys/kernel/random/boot_id"
    boot.parent.mkdir(parents=True, exist_ok=True)
    boot.write_text(SYNTHETIC_BOOT_ID + "\n")
    return tree


@pytest.fixture(scope="module")
def agent_answers(booted_tree: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Real agent cycles, each writing its answer file: matching the profile (healthy), and
    with --profile h200 (eight GPUs expected on this 2-GPU VM: unhealthy)."""
    out = {}
    base = tmp_path_factory.mktemp("answers")
    for name, profile in (("matched", None), ("h200", "h200")):
        path = base / f"{name}.json"
        report = run_cycle(CycleOptions(root=str(booted_tree), nvml=str(NVML), profile=profile,
                                        check_file=str(path)))
        out[name] = (path, report["check"])
    return out


def answer_file(agent_answers: dict[str, tuple[Path, dict[str, Any]]], name: str,
                tmp_path: Path) -> Path:
    """A private copy of one agent answer file (tests edit theirs), its time moved to now: the
    module's agent cycles may be minutes old by the time a test runs on a busy machine."""
    copy = tmp_path / f"{name}-agent-check.json"
    shutil.copyfile(agent_answers[name][0], copy)
    edit(copy, time_unix=time.time())
    return copy


def check_cli(tree: Path, answer: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`nodetune check --from-agent` as a prolog starts it (the fast path, no click)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), fromagent.PATH_ENV: str(answer)}
    return subprocess.run([sys.executable, "-m", "nodetune", "check", "--from-agent", "--root",
                           str(tree), "--nvml", str(NVML), "--json", *args],
                          capture_output=True, text=True, env=env, check=False)


def fields(tree: Path, **changes: Any) -> dict[str, Any]:
    return {**DEFAULTS, "root": str(tree), "nvml": str(NVML), **changes}


def edit(path: Path, **changes: Any) -> None:
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


# -- fresh: the agent's answer, as it wrote it ---------------------------------------------------

def test_fresh_answer_is_the_agents(booted_tree: Path, agent_answers: Any,
                                    tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "matched", tmp_path)
    agent_doc = agent_answers["matched"][1]
    proc = check_cli(booted_tree, answer, "--profile", "auto")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc["from_agent"] is True and doc["agent_file"] == str(answer)
    assert 0 <= doc["agent_age_s"] < 300
    for key in ("healthy", "exit_code", "summary", "checks", "counts", "faults", "profile"):
        assert doc[key] == agent_doc[key], key
    assert doc["healthy"] is True and doc["profile"] == "cloud-vm"


def test_fresh_answer_through_click_and_text(booted_tree: Path, agent_answers: Any,
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The click command (which serves the command lines the fast path leaves to it) answers
    the same way; the text view says whose answer it is."""
    answer = answer_file(agent_answers, "matched", tmp_path)
    monkeypatch.setenv(fromagent.PATH_ENV, str(answer))
    with pytest.raises(SystemExit) as exited:
        main(["check", "--from-agent", "--root", str(booted_tree), "--nvml", str(NVML),
              "--profile", "cloud-vm"])
    out, err = capsys.readouterr()
    assert exited.value.code == 0, err
    assert out.startswith(agent_answers["matched"][1]["summary"] + "\n")
    assert "(the agent's answer, " in out and err == ""


def test_answer_file_record(agent_answers: Any, booted_tree: Path) -> None:
    """What the agent writes: schema, ISO 8601 UTC time, boot id, question, verdict, code."""
    path, doc = agent_answers["matched"]
    record = json.loads(path.read_text())
    assert record["schema"] == "nodetune.agent-check/1"
    assert record["time"].endswith("Z") and abs(
        time.mktime(time.strptime(record["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        - record["time_unix"]) < 1.0
    assert record["boot_id"] == SYNTHETIC_BOOT_ID
    assert record["question"]["source"] == ["root", str(booted_tree)]
    assert record["question"]["profile"] == "cloud-vm" and record["profile_matched"] is True
    assert (record["verdict"], record["exit_code"]) == ("healthy", 0)
    assert record["check"] == doc
    assert not list(path.parent.glob(".*.tmp"))  # written through a temporary file, renamed
    assert "\n" not in path.read_text()  # compact


def test_agent_wrote_unhealthy(booted_tree: Path, agent_answers: Any, tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "h200", tmp_path)
    proc = check_cli(booted_tree, answer, "--profile", "h200")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc["from_agent"] is True and doc["healthy"] is False
    assert doc["summary"] == "nodetune: GPU count 2 (expected 8)"
    assert json.loads(answer.read_text())["verdict"] == "unhealthy"


# -- every other case: a full check, and one line saying why -------------------------------------

def assert_full_check(proc: subprocess.CompletedProcess[str], why: str, code: int = 0) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nodetune: not using the agent's answer: ")
    assert why in lines[0] and lines[0].endswith("; running the full check")
    doc = json.loads(proc.stdout)
    assert "from_agent" not in doc and doc["cached"] is False and doc["seconds"] > 0


def test_stale_answer_runs_the_check(booted_tree: Path, agent_answers: Any,
                                     tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "matched", tmp_path)
    edit(answer, time_unix=time.time() - 400)
    assert_full_check(check_cli(booted_tree, answer, "--profile", "auto"), "stale (40")
    fresh_enough = check_cli(booted_tree, answer, "--profile", "auto", "--max-age", "500")
    assert fresh_enough.returncode == 0 and json.loads(fresh_enough.stdout)["from_agent"]
    assert_full_check(check_cli(booted_tree, answer, "--profile", "auto", "--max-age", "0"),
                      "stale")


def test_stale_unhealthy_answer_is_not_reused_either(booted_tree: Path, agent_answers: Any,
                                                     tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "h200", tmp_path)
    edit(answer, time_unix=time.time() - 3600)
    proc = check_cli(booted_tree, answer, "--profile", "h200", "--max-age", "60")
    assert_full_check(proc, "stale", code=1)


def test_answer_from_the_future_runs_the_check(booted_tree: Path, agent_answers: Any,
                                               tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "matched", tmp_path)
    edit(answer, time_unix=time.time() + 120)
    assert_full_check(check_cli(booted_tree, answer, "--profile", "auto"), "in the future")


def test_absent_answer_runs_the_check(booted_tree: Path, tmp_path: Path) -> None:
    answer = tmp_path / "none.json"
    assert_full_check(check_cli(booted_tree, answer, "--profile", "auto"), "is absent")


def test_default_path_is_under_the_root(booted_tree: Path, tmp_path: Path) -> None:
    assert fromagent.answer_path(str(booted_tree), {}) == \
        str(booted_tree / "run/nodetune/agent-check.json")
    assert fromagent.answer_path(None, {}) == "/run/nodetune/agent-check.json"
    assert fromagent.answer_path(None, {fromagent.PATH_ENV: "/x/a.json"}) == "/x/a.json"


@pytest.mark.parametrize(("content", "why"), [
    (b"{\"schema\": \"nodetune.agent-check/1\", \"time_u", "corrupt (not JSON)"),
    (b"\x00\xff garbage", "corrupt (not JSON)"),
    (b"[1, 2]", "not a nodetune.agent-check/1 document"),
    (b"{\"schema\": \"nodetune.check/1\"}", "not a nodetune.agent-check/1 document"),
])
def test_corrupt_answer_runs_the_check(booted_tree: Path, tmp_path: Path, content: bytes,
                                       why: str) -> None:
    answer = tmp_path / "corrupt.json"
    answer.write_bytes(content)
    answer.chmod(0o644)
    assert_full_check(check_cli(booted_tree, answer, "--profile", "auto"), why)


@pytest.mark.parametrize("changes", [
    {"verdict": "healthy", "exit_code": 1},          # the verdict and the exit code disagree
    {"verdict": "healthy", "exit_code": True},       # a bool is not an exit code
    {"verdict": "fine"},
    {"check": {"healthy": True}},                    # no summary: not a check document
    {"time_unix": "yesterday"},
    {"question": None},
])
def test_inconsistent_answer_runs_the_check(booted_tree: Path, agent_answers: Any,
                                            tmp_path: Path, changes: dict[str, Any]) -> None:
    answer = answer_file(agent_answers, "h200", tmp_path)  # unhealthy: never made healthy
    edit(answer, **changes)
    proc = check_cli(booted_tree, answer, "--profile", "h200")
    assert_full_check(proc, "", code=1)


def test_healthy_verdict_over_an_unhealthy_document_is_refused(booted_tree: Path,
                                                               agent_answers: Any,
                                                               tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "h200", tmp_path)
    edit(answer, verdict="healthy", exit_code=0)
    doc, why = fromagent.read(fields(booted_tree, profile="h200"), 60, str(answer))
    assert doc is None and "disagree" in why


def test_answer_writable_by_others_is_refused(booted_tree: Path, agent_answers: Any,
                                              tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "matched", tmp_path)
    answer.chmod(0o666)
    doc, why = fromagent.read(fields(booted_tree, profile="auto"), 60, str(answer))
    assert doc is None and "another user" in why


def test_other_boot_runs_the_check(booted_tree: Path, agent_answers: Any,
                                   tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "matched", tmp_path)
    edit(answer, boot_id="0f3a9d52-0000-4000-8000-synthetic0002")  # written before a reboot
    assert_full_check(check_cli(booted_tree, answer, "--profile", "auto"), "another boot")


@pytest.mark.parametrize(("args", "why"), [
    (("--profile", "auto", "--expect-gpus", "2"), "other options (expect_gpus)"),
    (("--profile", "auto", "--expect-idle"), "other options (expect_idle)"),
    (("--profile", "auto", "--mount", "/"), "other options (mounts)"),
    (("--profile", "h200"), "other options (profile)"),
    ((), "other options (profile)"),  # no profile at all is another question
    (("--profile", "auto", "--nvml", "off"), "other options (nvml)"),
])
def test_other_options_run_the_check(booted_tree: Path, agent_answers: Any, tmp_path: Path,
                                     args: tuple[str, ...], why: str) -> None:
    answer = answer_file(agent_answers, "matched", tmp_path)
    proc = check_cli(booted_tree, answer, *args)
    assert_full_check(proc, why, code=proc.returncode)
    assert proc.returncode in (0, 1)


def test_auto_matches_only_an_agent_that_matched(booted_tree: Path, agent_answers: Any,
                                                 tmp_path: Path) -> None:
    """An agent given --profile h200 did not match the node: `--profile auto` is another
    question; `--profile h200` is the same one."""
    answer = answer_file(agent_answers, "h200", tmp_path)
    doc, why = fromagent.read(fields(booted_tree, profile="auto"), 60, str(answer))
    assert doc is None and "profile" in why
    doc, why = fromagent.read(fields(booted_tree, profile="h200"), 60, str(answer))
    assert doc is not None and why == ""


def test_other_tree_runs_the_check(booted_tree: Path, agent_answers: Any,
                                   tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(booted_tree, other, symlinks=True)
    answer = answer_file(agent_answers, "matched", tmp_path)
    assert_full_check(check_cli(other, answer, "--profile", "auto"), "other options (source)")


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_bad_max_age_is_refused(booted_tree: Path, agent_answers: Any, tmp_path: Path,
                                value: str) -> None:
    answer = answer_file(agent_answers, "matched", tmp_path)
    proc = check_cli(booted_tree, answer, "--profile", "auto", "--max-age", value)
    assert proc.returncode == 3
    error = json.loads(proc.stdout)
    assert error["schema"] == "nodetune.error/1" and "--max-age" in json.dumps(error)
    for bad in (float("nan"), -1.0, float("inf")):
        doc, why = fromagent.read(fields(booted_tree, profile="auto"), bad, str(answer))
        assert doc is None and "--max-age" in why


def test_fallback_checks_the_node_not_a_cached_result(booted_tree: Path, tmp_path: Path) -> None:
    """After --from-agent, --max-age bounds the agent's answer: the fallback checks the node
    even when a cached result of that age exists (and stores its own result)."""
    cache = tmp_path / "result.json"
    first = check_cli(booted_tree, tmp_path / "none.json", "--profile", "auto",
                      "--cache-file", str(cache), "--max-age", "600")
    assert first.returncode == 0 and cache.is_file()
    again = check_cli(booted_tree, tmp_path / "none.json", "--profile", "auto",
                      "--cache-file", str(cache), "--max-age", "600")
    assert_full_check(again, "is absent")
    without = subprocess.run(
        [sys.executable, "-m", "nodetune", "check", "--root", str(booted_tree), "--nvml",
         str(NVML), "--profile", "auto", "--cache-file", str(cache), "--max-age", "600",
         "--json"], capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert json.loads(without.stdout)["cached"] is True


def test_agent_loop_writes_its_answer(booted_tree: Path, tmp_path: Path) -> None:
    """`nodetune agent` (the loop, two cycles) writes the file that --from-agent reads."""
    answer = tmp_path / "run" / "agent-check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), fromagent.PATH_ENV: str(answer)}
    proc = subprocess.run([sys.executable, "-m", "nodetune", "agent", "--root", str(booted_tree),
                           "--nvml", str(NVML), "--kubernetes", "off", "--listen", "127.0.0.1:0",
                           "--interval", "0", "--max-cycles", "2"],
                          capture_output=True, text=True, env=env, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(answer.read_text())
    assert record["verdict"] == "healthy" and record["boot_id"] == SYNTHETIC_BOOT_ID
    assert check_cli(booted_tree, answer, "--profile", "auto").stderr == ""


def test_unwritable_answer_file_is_logged_once(booted_tree: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    opts = CycleOptions(root=str(booted_tree), nvml=str(NVML), check_file=str(blocker / "a.json"))
    for _ in range(2):
        assert run_cycle(opts)["check"]["healthy"] is True
    assert sum("cannot write the check answer" in r.message for r in caplog.records) == 1


def test_reader_imports_only_what_it_needs() -> None:
    """The fast path's module: os, json and time, nothing of nodetune's heavier machinery."""
    code = ("import sys; before = set(sys.modules); import nodetune.check.fromagent; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    heavy = {"dataclasses", "click", "yaml", "tempfile", "zlib", "nodetune.check.cache",
             "nodetune.check.operation", "nodetune.collectors"}
    assert not heavy & set(out), out


# -- the Slurm scripts ask the agent first -------------------------------------------------------

def slurm_script(mode: str, tree: Path, answer: Path, tmp_path: Path,
                 **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """checks/slurm/nodetune-slurm.sh MODE with the real nodetune (through a wrapper that
    records its arguments) and no reachable slurmctld (SLURM_CONF names no file)."""
    argv_log = tmp_path / "argv"
    wrapper = tmp_path / "nodetune"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv_log}\n'
                       f'exec {sys.executable} -m nodetune "$@"\n')
    wrapper.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(REPO / "checks/slurm/nodetune-slurm.sh"), mode], capture_output=True,
        text=True, check=False, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "NODETUNE": str(wrapper),
             "NODETUNE_DEFAULTS": str(tmp_path / "no-defaults"), "SLURM_CONF": "/nonexistent",
             "NODETUNE_SCONTROL_TIMEOUT": "5", "NODETUNE_SLURM_NODE": "synthetic-node",
             "NODETUNE_CHECK_ARGS": f"--root {tree} --nvml {NVML} --profile h200",
             fromagent.PATH_ENV: str(answer), **env})
    return proc, argv_log.read_text().split("\n")


def test_slurm_scripts_answer_from_the_agent_by_default(booted_tree: Path, agent_answers: Any,
                                                        tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "h200", tmp_path)  # the agent found the node unhealthy
    proc, argv = slurm_script("prolog", booted_tree, answer, tmp_path)
    assert "--from-agent" in argv and argv[argv.index("--max-age") + 1] == "360"
    assert proc.returncode == 1  # unhealthy: the prolog fails the job
    assert "nodetune: GPU count 2 (expected 8)" in proc.stderr  # the drain it tried


def test_slurm_scripts_ask_the_agents_question_profile_auto(booted_tree: Path,
                                                            agent_answers: Any,
                                                            tmp_path: Path) -> None:
    """The agent checks against the profile the node matches: without a --profile of the
    site's own, the prolog asks --profile auto, so the agent's answer can apply."""
    answer = answer_file(agent_answers, "h200", tmp_path)
    _, argv = slurm_script("prolog", booted_tree, answer, tmp_path,
                           NODETUNE_CHECK_ARGS=f"--root {booted_tree} --nvml {NVML}")
    assert argv[argv.index("--profile") + 1] == "auto" and argv.count("--profile") == 1
    _, argv = slurm_script("prolog", booted_tree, answer, tmp_path)  # the site names h200
    assert argv.count("--profile") == 1 and argv[argv.index("--profile") + 1] == "h200"


def test_slurm_scripts_can_always_check(booted_tree: Path, agent_answers: Any,
                                        tmp_path: Path) -> None:
    answer = answer_file(agent_answers, "h200", tmp_path)
    proc, argv = slurm_script("healthcheck", booted_tree, answer, tmp_path,
                              NODETUNE_FROM_AGENT="0")
    assert "--from-agent" not in argv and argv[argv.index("--max-age") + 1] == "60"
    assert proc.returncode == 1


def test_an_answer_from_the_agent_imports_no_check_machinery(booted_tree: Path,
                                                             agent_answers: Any,
                                                             tmp_path: Path) -> None:
    """The whole `check --from-agent` process, measured with `python -X importtime`."""
    answer = answer_file(agent_answers, "matched", tmp_path)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "nodetune", "check",
                           "--from-agent", "--root", str(booted_tree), "--nvml", str(NVML),
                           "--profile", "auto"], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO),
                               fromagent.PATH_ENV: str(answer)})
    assert proc.returncode == 0 and "(the agent's answer, " in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"nodetune.check.fromagent", "nodetune.check.options"} <= imported
    assert not imported & {"click", "dataclasses", "tempfile", "nodetune.check.cache",
                           "nodetune.check.operation", "nodetune.collectors"}
