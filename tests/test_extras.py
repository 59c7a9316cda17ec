"""Optional dependencies: every command that needs a missing extra says which one (exit 3), the
base commands never import an extra's package, and an unexpected exception is one line.

Commands run in a fresh interpreter where the optional packages are made unimportable by a
finder at the front of sys.meta_path, exactly as on a node where they were never installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nodetune import cli
from nodetune.errors import MissingExtra, needs_extra
from nodetune.views import fleet_html

NVML = Path(__file__).parent / "fixtures" / "nvml" / "h200x2-vm.json"
REPO = Path(__file__).resolve().parent.parent

# package -> the extra that installs it
EXTRA_OF = {
    "ansible": "apply", "ansible_runner": "apply",
    "prometheus_client": "agent", "kubernetes": "agent", "psutil": "agent",
    "matplotlib": "plot", "numpy": "bench", "cuda": "gpu", "cupy": "gpu", "torch": "gpu",
    "msgspec": "fleet",
}
HEAVY = (*EXTRA_OF, "pyudev")

# argv[1]: comma-separated top-level packages to block ("" for none); argv[2:]: nodetune's
# arguments. At exit it prints which HEAVY packages got imported.
WRAPPER = f"""
import atexit, sys
from importlib.abc import MetaPathFinder

BLOCKED = set(filter(None, sys.argv[1].split(",")))
HEAVY = {HEAVY!r}

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Block())
atexit.register(lambda: sys.stderr.write(
    "IMPORTED:" + ",".join(sorted({{m.split(".")[0] for m in sys.modules}} & set(HEAVY))) + "\\n"))
sys.argv = ["nodetune", *sys.argv[2:]]
from nodetune.cli import main
main()
"""


def nodetune(blocked: tuple[str, ...], *args: str,
             env: dict[str, str] | None = None) -> tuple[int, str, str, set[str]]:
    """(exit code, stdout, stderr without the import report, heavy packages imported)."""
    proc = subprocess.run([sys.executable, "-c", WRAPPER, ",".join(blocked), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **(env or {})}, check=False)
    lines = proc.stderr.splitlines()
    imported = {m for m in lines[-1].removeprefix("IMPORTED:").split(",") if m}
    return proc.returncode, proc.stdout, "\n".join(lines[:-1]), imported


def assert_names_extra(result: tuple[int, str, str, set[str]], extra: str) -> None:
    rc, _, err, _ = result
    assert rc == 3, err
    assert len(err.splitlines()) == 1, err
    assert f"[{extra}] extra" in err and f"pip install 'nodetune[{extra}]'" in err, err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def vm_root(host_tree) -> Path:  # type: ignore[no-untyped-def]
    return Path(host_tree("h200x2-vm-gather"))


def test_apply_without_its_extra_names_it(vm_root: Path) -> None:
    result = nodetune(("ansible_runner", "ansible"), "apply", "--root", str(vm_root),
                      "--nvml", "off", "--dry-run")
    assert_names_extra(result, "apply")


def test_apply_render_only_needs_no_extra(vm_root: Path, tmp_path: Path) -> None:
    rc, _, err, imported = nodetune(tuple(EXTRA_OF), "apply", "--root", str(vm_root), "--nvml",
                                    "off", "--render-only", str(tmp_path / "project"))
    assert rc == 0, err
    assert not imported
    assert (tmp_path / "project" / "site.yml").is_file()
    assert (tmp_path / "project" / "ansible.cfg").is_file()


def test_fleet_collect_without_its_extra_names_it(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[gpu]\nnode1 ansible_connection=local\n")
    result = nodetune(("ansible_runner",), "fleet", "collect", "-i", str(inventory),
                      "--out", str(tmp_path / "out"))
    assert_names_extra(result, "apply")


def test_topo_drawing_without_its_extra_names_it(vm_root: Path, tmp_path: Path) -> None:
    result = nodetune(("matplotlib",), "topo", "--root", str(vm_root), "--nvml", str(NVML),
                      "--png", str(tmp_path / "topo.png"))
    assert_names_extra(result, "plot")
    assert not (tmp_path / "topo.png").exists()


@pytest.mark.parametrize("package", ["prometheus_client", "psutil"])
def test_agent_server_without_its_extra_names_it(vm_root: Path, package: str) -> None:
    result = nodetune((package,), "agent", "--root", str(vm_root), "--nvml", str(NVML),
                      "--listen", "127.0.0.1:0", "--kubernetes", "off", "--max-cycles", "1")
    assert_names_extra(result, "agent")


def test_agent_kubernetes_without_its_extra_names_it(vm_root: Path) -> None:
    result = nodetune(("kubernetes",), "agent", "--root", str(vm_root), "--nvml", str(NVML),
                      "--kubernetes", "on", "--node-name", "node1", "--once")
    assert_names_extra(result, "agent")


def test_agent_once_runs_without_any_extra(vm_root: Path) -> None:
    rc, out, err, imported = nodetune(tuple(EXTRA_OF), "agent", "--root", str(vm_root),
                                      "--nvml", str(NVML), "--kubernetes", "off", "--once")
    assert rc in (0, 1), err
    assert out.startswith("nodetune agent: profile ")
    assert not imported


def test_fleet_html_without_its_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # None in sys.modules: ImportError
    with pytest.raises(MissingExtra) as info:
        fleet_html.render_html({}, None, 5)  # type: ignore[arg-type]
    assert info.value.one_line() == ("this needs nodetune's [plot] extra (import of matplotlib "
                                     "halted; None in sys.modules); fix: pip install "
                                     "'nodetune[plot]'")


def test_gpu_bench_without_cuda_bindings_names_the_gpu_extra() -> None:
    code = ("import sys\nsys.modules['cuda'] = None\nsys.modules['cupy'] = None\n"
            "from nodetune.bench import cudart\nfrom nodetune.errors import BenchError\n"
            "try:\n    cudart.load()\nexcept BenchError as exc:\n    print(exc.one_line())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "fix: pip install 'nodetune[gpu]'" in proc.stdout


def test_needs_extra_returns_the_module() -> None:
    assert needs_extra("apply", "json").dumps([1]) == "[1]"


@pytest.mark.parametrize("args", [
    ("check",), ("check", "--tier", "standard"), ("check", "--json"), ("facts",),
    ("facts", "--json"), ("audit",), ("topo",), ("bind", "--dry-run", "--", "true"),
    ("manifests", "--target", "kubelet"), ("collectors",), ("profiles", "list"),
])
def test_base_commands_import_no_extra_and_run_without_them(vm_root: Path, tmp_path: Path,
                                                            args: tuple[str, ...]) -> None:
    node = ("--root", str(vm_root), "--nvml", str(NVML))
    where = {"check": node, "facts": node, "audit": node, "topo": node, "bind": node,
             "manifests": (*node, "-o", str(tmp_path / "m"))}.get(args[0], ())
    argv = (args[0], *where, *args[1:])
    rc, out, err, imported = nodetune((), *argv)
    assert "Traceback" not in err, err
    assert not imported, f"`nodetune {' '.join(args)}` imported {sorted(imported)}"
    blocked_rc, blocked_out, blocked_err, _ = nodetune(HEAVY, *argv)
    assert (blocked_rc, steady(blocked_out)) == (rc, steady(out)), blocked_err


def steady(output: str) -> str:
    """The output less the timings, which differ from run to run."""
    return re.sub(r'("(?:seconds|started_at|finished_at)": ?)(?:"[^"]*"|[0-9.e-]+)', r"\1T", output)


def test_snapshot_imports_no_extra(vm_root: Path, tmp_path: Path) -> None:
    rc, _, err, imported = nodetune(HEAVY, "snapshot", "--root", str(vm_root), "-o",
                                    str(tmp_path / "s.tar.gz"))
    assert rc == 0, err
    assert not imported
    assert (tmp_path / "s.tar.gz").stat().st_size > 0


# -- nodetune's own failures: one line, exit 3 -------------------------------------------------

def _raise_bug(*_args: object, **_kwargs: object) -> None:
    raise KeyError("gpus\nsecond line")


def test_an_unexpected_exception_is_one_line_and_exit_3(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NODETUNE_DEBUG", raising=False)
    monkeypatch.setattr(cli.cli, "main", _raise_bug)
    with pytest.raises(SystemExit) as info:
        cli.main(["facts"])
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert err == ("nodetune: internal error: KeyError: 'gpus\\nsecond line'; fix: report it "
                   "(NODETUNE_DEBUG=1 shows the traceback)\n")


def test_nodetune_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODETUNE_DEBUG", "1")
    monkeypatch.setattr(cli.cli, "main", _raise_bug)
    with pytest.raises(KeyError):
        cli.main(["facts"])


FAST_PATH_BUG = """
import sys
import nodetune.check.fastpath as fastpath
def broken(argv):
    raise ZeroDivisionError("division by zero")
fastpath.fast_main = broken
sys.argv = ["nodetune", "check"]
import nodetune.cli
"""


@pytest.mark.parametrize(("debug", "want_rc"), [("", 3), ("1", 1)])
def test_the_check_fast_path_has_the_same_safety_net(debug: str, want_rc: int) -> None:
    proc = subprocess.run([sys.executable, "-c", FAST_PATH_BUG], capture_output=True, text=True,
                          cwd=REPO, timeout=60, env={**os.environ, "NODETUNE_DEBUG": debug},
                          check=False)
    assert proc.returncode == want_rc
    if debug:
        assert "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr
    else:
        assert proc.stderr == ("nodetune: internal error: ZeroDivisionError: division by zero; "
                               "fix: report it (NODETUNE_DEBUG=1 shows the traceback)\n")


def test_python_m_nodetune_cli_is_the_cli(vm_root: Path) -> None:
    args = ["check", "--root", str(vm_root), "--nvml", str(NVML)]
    by_module = subprocess.run([sys.executable, "-m", "nodetune.cli", *args],
                               capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    by_package = subprocess.run([sys.executable, "-m", "nodetune", *args],
                                capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert by_module.stdout.startswith("nodetune: ")
    assert (by_module.returncode, by_module.stdout) == (by_package.returncode, by_package.stdout)
