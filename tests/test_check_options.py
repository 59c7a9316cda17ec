"""`nodetune check`'s one options table: the click command and the fast path agree on every
option; --profiles-dir and NODETUNE_PROFILES_DIR reach `check` and `agent` as they reach
`audit`; messages name only options that exist; the agent gathers facts once per cycle."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

import nodetune.collectors as collectors
from nodetune.agent.cycle import CycleOptions, run_cycle
from nodetune.check.operation import CheckRequest, run
from nodetune.check.options import DEFAULTS, OPTIONS, REQUEST_FIELDS, parse
from nodetune.cli import main
from nodetune.commands.agent import cmd as agent_cmd
from nodetune.commands.audit import cmd as audit_cmd
from nodetune.commands.check import cmd as check_cmd
from nodetune.node.source import open_node

FIXTURES = Path(__file__).parent / "fixtures"
NVML = FIXTURES / "nvml" / "h200x2-vm.json"
REPO = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NODETUNE_PROFILES_DIR", raising=False)
    monkeypatch.delenv("NODETUNE_ROOT", raising=False)


@pytest.fixture
def vm_root(host_tree: Callable[[str], Path]) -> Path:
    return host_tree("h200x2-vm-gather")


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    """A site profile directory: the H200 VM's shipped profile, expecting four GPUs."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "site-vm.yaml").write_text("summary: Site H200 VMs with four GPUs\n"
                                       "extends: cloud-vm\nvariables: {gpu_count: 4}\n")
    return site


def flags_of(command: click.Command) -> set[str]:
    return {"--help"} | {f for p in command.params for f in (*p.opts, *p.secondary_opts)}


# -- one table ----------------------------------------------------------------------------------

def test_click_command_is_the_table() -> None:
    params = {p.name: p for p in check_cmd.params if p.name != "help"}
    assert list(params) == [o.dest for o in OPTIONS]  # same options, same order
    for opt in OPTIONS:
        param = params[opt.dest]
        assert isinstance(param, click.Option)
        assert tuple(param.opts + param.secondary_opts) == opt.flags, opt.dest
        assert param.is_flag == (opt.kind == "flag"), opt.dest
        assert param.multiple == opt.multiple, opt.dest
        assert param.envvar == opt.envvar, opt.dest
        if opt.kind == "tier":
            assert isinstance(param.type, click.Choice)
        if opt.kind in ("float", "int"):
            assert isinstance(param.type, (click.FloatRange, click.IntRange))
            assert param.type.min == opt.minimum, opt.dest
        if opt.kind in ("file", "dir"):
            assert isinstance(param.type, click.Path)
            assert (param.type.file_okay, param.type.dir_okay) == (opt.kind == "file",
                                                                   opt.kind == "dir")


def test_request_fields_and_defaults_are_the_tables() -> None:
    fields = dataclasses.fields(CheckRequest)
    assert sorted(f.name for f in fields) == sorted(REQUEST_FIELDS)
    assert {f.name: f.default for f in fields} == DEFAULTS


def _click_values(argv: list[str], env: dict[str, str]) -> dict[str, Any] | None:
    """What click hands the command for `nodetune check ARGV`, or None when it refuses."""
    old = dict(os.environ)
    os.environ.update(env)
    try:
        ctx = check_cmd.make_context("check", list(argv), resilient_parsing=False)
    except click.ClickException:
        return None
    finally:
        os.environ.clear()
        os.environ.update(old)
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in ctx.params.items()}


def _command_lines(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    a_file, a_dir = tmp_path / "f.json", tmp_path / "d"
    a_file.write_text("{}")
    a_dir.mkdir()
    yield [], {}
    yield ["--tier", "standard", "--json", "-v", "--verbose"], {}
    yield ["--tier=quick", "--timeout", "0.1", "--max-age=0", "--expect-gpus", "0"], {}
    yield ["--timeout", "1e3", "--max-age", "1e9", "--expect-gpus", "+8"], {}
    yield ["--mount", "/a", "--mount=/b", "--require-module", "x", "--mount", "--json"], {}
    yield ["--profile", "auto", "--profile", "dgx-h100", "--expect-model", "H100"], {}
    yield ["--root", str(a_dir), "--cache-file", str(a_file), "--nvml", "off"], {}
    yield ["--from", str(a_file), "--overrides", str(a_file), "--write-probe"], {}
    yield ["--profiles-dir", str(a_dir), "--profiles-dir", str(tmp_path / "missing")], {}
    yield [], {"NODETUNE_PROFILES_DIR": f"{a_dir}{os.pathsep}{tmp_path}"}
    yield ["--profiles-dir", str(a_dir)], {"NODETUNE_PROFILES_DIR": str(tmp_path)}
    yield [], {"NODETUNE_ROOT": str(a_dir)}
    yield ["--root", str(a_dir)], {"NODETUNE_ROOT": str(tmp_path)}
    # left to click, which refuses or answers them
    yield [], {"NODETUNE_PROFILES_DIR": str(a_file)}
    yield [], {"NODETUNE_ROOT": str(a_file)}
    yield ["--root", str(a_file)], {}
    yield ["--cache-file", str(a_dir)], {}
    yield ["--profiles-dir", str(a_file)], {}
    yield ["--tier", "bogus"], {}
    yield ["--timeout", "0"], {}
    yield ["--timeout", "x"], {}
    yield ["--expect-gpus", "-1"], {}
    yield ["--expect-gpus", "2.0"], {}
    yield ["--max-age", "nan"], {}
    yield ["--max-age", "inf"], {}
    yield ["--timeout", "-inf"], {}
    yield ["--profile", ""], {}
    yield ["--profile", "/etc/passwd"], {}
    yield ["--profile", "../x"], {}
    yield ["--bogus"], {}
    yield ["--json=1"], {}
    yield ["-v=1"], {}
    yield ["--root"], {}
    yield ["extra"], {}
    yield ["--help"], {}


def test_fast_path_and_click_agree(tmp_path: Path) -> None:
    """Whatever the fast path accepts, click accepts with the same values (defaults included);
    what it leaves to click, click answers (refuses it, or --help)."""
    accepted = 0
    for argv, env in _command_lines(tmp_path):
        fast = parse(argv, environ=env)
        if fast is None:
            if argv != ["--help"]:
                assert _click_values(argv, env) is None, (argv, env)
            continue
        accepted += 1
        assert _click_values(argv, env) == fast, (argv, env)
    assert accepted == 13


# -- --profiles-dir and NODETUNE_PROFILES_DIR ----------------------------------------------------

def _run_check_cli(*args: str,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`nodetune check` as Slurm starts it (the fast path)."""
    return subprocess.run([sys.executable, "-m", "nodetune", "check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_check_takes_a_site_profile_from_profiles_dir(vm_root: Path, site_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--root", str(vm_root), "--nvml", str(NVML), "--profile", "site-vm", "--json")
    for proc in (_run_check_cli(*base, "--profiles-dir", str(site_dir)),
                 _run_check_cli(*base, env={"NODETUNE_PROFILES_DIR": str(site_dir)})):
        assert proc.returncode == 1, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["profile"] == "site-vm" and doc["summary"] == \
            "nodetune: GPU count 2 (expected 4)"
    with pytest.raises(SystemExit) as exit_info:  # the click command, too
        main(["check", *base, "--profiles-dir", str(site_dir)])
    assert exit_info.value.code == 1
    assert json.loads(capsys.readouterr().out)["variables"]["gpu_count"] == 4
    assert _run_check_cli(*base).returncode == 3  # without it the profile is unknown


def test_profile_variables_cache_follows_the_profiles_dir(vm_root: Path, site_dir: Path) -> None:
    request = CheckRequest(root=str(vm_root), nvml=str(NVML), profile="site-vm",
                           profiles_dirs=(str(site_dir),))
    assert run(request).doc["variables"]["gpu_count"] == 4
    (site_dir / "site-vm.yaml").write_text("extends: cloud-vm\nsummary: two\n"
                                           "variables: {gpu_count: 2}\n")
    assert run(request).exit_code == 0  # the edited profile, not the cached variables


def test_agent_takes_a_site_profile_from_profiles_dir(vm_root: Path, site_dir: Path) -> None:
    for extra, env in ((["--profiles-dir", str(site_dir)], {}),
                       ([], {"NODETUNE_PROFILES_DIR": str(site_dir)})):
        proc = subprocess.run(
            [sys.executable, "-m", "nodetune", "agent", "--once", "--json", "--root",
             str(vm_root), "--nvml", str(NVML), "--profile", "site-vm",
             *extra],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO), **env})
        assert proc.returncode == 1, proc.stderr
        report = json.loads(proc.stdout)
        assert report["summary"]["profile"] == "site-vm"
        assert report["summary"]["check_summary"] == "nodetune: GPU count 2 (expected 4)"


# -- messages name only options that exist -------------------------------------------------------

def _error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 3, argv
    return capsys.readouterr().err


def test_error_messages_suggest_only_existing_options(
        vm_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = ["--root", str(vm_root), "--nvml", str(NVML)]
    cases = {
        "check": [["--profile", "nosuch"], ["--profiles-dir", str(tmp_path / "none")],
                  ["--tier", "thorough"], ["--profiles"], ["--root", str(tmp_path / "none")]],
        "agent": [["--once", "--profile", "nosuch"], ["--once", "--kubernetes", "on"],
                  ["--once", "--profiles-dir", str(tmp_path / "none")], ["--profiles"]],
        "audit": [["--profile", "nosuch"]],
    }
    commands = {"check": check_cmd, "agent": agent_cmd, "audit": audit_cmd}
    seen: set[str] = set()
    for name, argvs in cases.items():
        for argv in argvs:
            err = _error_of([name, *(argv if "--root" in argv else [*node, *argv])], capsys)
            seen |= set(FLAG.findall(err))
            named = set(FLAG.findall(err)) - set(argv)  # what it suggests, not what was typed
            assert named <= flags_of(commands[name]), (name, argv, err)
    assert {"--profiles-dir", "--profile", "--node-name", "--kubernetes"} <= seen
    proc = _run_check_cli(*node, "--profile", "nosuch")  # the fast path's errors, too
    assert proc.returncode == 3 and set(FLAG.findall(proc.stderr)) <= flags_of(check_cmd)


def test_skipped_checks_name_only_options_of_their_command(vm_root: Path) -> None:
    check_doc = run(CheckRequest(root=str(vm_root), nvml=str(NVML))).doc
    notes = " ".join(c.get("note", "") for c in check_doc["checks"])
    assert "--expect-gpus N" in notes
    assert set(FLAG.findall(notes)) <= flags_of(check_cmd)
    agent_doc = run_cycle(CycleOptions(root=str(vm_root), nvml=str(NVML)))["check"]
    agent_notes = " ".join(c.get("note", "") for c in agent_doc["checks"])
    assert "a profile that sets gpu_count" in agent_notes
    assert set(FLAG.findall(agent_notes)) <= flags_of(agent_cmd)


def test_option_names_in_check_and_agent_sources_exist() -> None:
    """Every --option a message of the check or agent code names is one of its command's."""
    sources = {check_cmd: [*REPO.glob("nodetune/check/*.py"), REPO / "nodetune/commands/check.py"],
               agent_cmd: [*REPO.glob("nodetune/agent/*.py"), REPO / "nodetune/commands/agent.py"]}
    catalog = REPO / "nodetune/profiles/catalog.py"
    for command, files in sources.items():
        named = {f for path in [*files, catalog] for f in FLAG.findall(path.read_text())}
        assert named <= flags_of(command), (command.name, named - flags_of(command))


# -- facts gathered once per agent cycle ---------------------------------------------------------

@pytest.fixture
def collector_runs(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts each collector's collect() calls, through the registry."""
    runs: dict[str, int] = {}
    registry = collectors.load_all()
    for name, cls in registry.items():
        collector: Any = cls  # a registered collector class
        original = collector.collect

        def counted(self: Any, ctx: Any, _original: Any = original, _name: str = name) -> Any:
            runs[_name] = runs.get(_name, 0) + 1
            return _original(self, ctx)

        monkeypatch.setattr(cls, "collect", counted)
    return runs


def test_an_agent_cycle_runs_each_collector_once(vm_root: Path,
                                                 collector_runs: dict[str, int]) -> None:
    report = run_cycle(CycleOptions(root=str(vm_root), nvml=str(NVML)))
    assert collector_runs == dict.fromkeys(collectors.load_all(), 1)
    assert report["check"]["counts"]["pass"] > 0
    assert set(report["check"]["collectors"]) < set(report["collectors"])


def test_run_with_facts_gathers_only_what_they_lack(vm_root: Path,
                                                    collector_runs: dict[str, int]) -> None:
    request = CheckRequest(root=str(vm_root), nvml=str(NVML))
    with open_node(root=str(vm_root), nvml=str(NVML)) as node:
        partial = node.facts(only=("cpu", "numa", "pci", "gpu"))
        collector_runs.clear()
        with_facts = run(request, partial, node=node, cache=False).doc
    assert set(collector_runs) == set(with_facts["collectors"]) - {"cpu", "numa", "pci", "gpu"}
    assert all(n == 1 for n in collector_runs.values())
    collector_runs.clear()
    alone = run(request, cache=False).doc
    assert set(collector_runs) == set(alone["collectors"])
    assert [(c["id"], c["status"]) for c in with_facts["checks"]] == \
        [(c["id"], c["status"]) for c in alone["checks"]]


def test_a_cached_answer_imports_neither_click_nor_dataclasses(vm_root: Path,
                                                                tmp_path: Path) -> None:
    """The back-to-back job start: parse with the table, read the stored answer, print it."""
    args = ("--root", str(vm_root), "--nvml", str(NVML), "--max-age", "60", "--cache-file",
            str(tmp_path / "result.json"))
    first = _run_check_cli(*args)
    assert first.returncode == 0, first.stderr
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "nodetune", "check", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and "(cached result, " in proc.stdout
    assert proc.stdout.splitlines()[0] == first.stdout.splitlines()[0]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "nodetune.check.options" in imported
    assert not imported & {"click", "dataclasses", "nodetune.check.operation"}


def test_slurm_script_hands_a_profiles_dir_from_its_defaults_file_to_check(
        tmp_path: Path) -> None:
    """/etc/default/nodetune is sourced, not exported: NODETUNE_PROFILES_DIR must still reach
    `nodetune check`."""
    seen = tmp_path / "seen"
    fake = tmp_path / "nodetune"
    fake.write_text(f'#!/bin/sh\necho "$NODETUNE_PROFILES_DIR $*" > {seen}\n'
                    'echo "nodetune: healthy (quick: 1 passed)"\n')
    fake.chmod(0o755)
    defaults = tmp_path / "defaults"
    defaults.write_text(f"NODETUNE={fake}\nNODETUNE_PROFILES_DIR=/etc/nodetune/profiles\n"
                        'NODETUNE_CHECK_ARGS="--profile site-vm"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODETUNE")}
    proc = subprocess.run([str(REPO / "checks/slurm/nodetune-prolog")], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**env, "NODETUNE_DEFAULTS": str(defaults),
                               "NODETUNE_SLURM_NODE": "node1", "NODETUNE_SCONTROL_TIMEOUT": "2",
                               "PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert seen.read_text().split() == ["/etc/nodetune/profiles", "check", "--tier", "quick",
                                        "--from-agent", "--max-age", "360", "--timeout", "30",
                                        "--profile", "site-vm"]


@pytest.mark.parametrize(("page", "command"), [("check.md", check_cmd), ("agent.md", agent_cmd)])
def test_command_page_documents_every_option(page: str, command: click.Command) -> None:
    text = (REPO / "docs" / "commands" / page).read_text(encoding="utf-8")
    cells = re.findall(r"^\| (`-[^|]*)\|", text, flags=re.MULTILINE)  # first cells of rows
    documented = {f for cell in cells for f in re.findall(r"`(-[-\w]+)", cell)}
    hidden = {f for p in command.params if getattr(p, "hidden", False) for f in p.opts}
    assert flags_of(command) - {"--help"} - hidden <= documented, page
