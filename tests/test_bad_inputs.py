"""The bad-input catalogue: every case is refused with one line on stderr and its documented exit
code, no traceback, and nothing changed in a sentinel directory next to the inputs.

Each case is (id, files to write into the work directory, command line, exit code). Paths in
the command line are relative to the work directory; {tree} is a real host tree, {nvml} its
NVML recording. docs/exit-codes.md lists the input classes these cases stand for.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from nodetune import cli

FIXTURES = Path(__file__).parent / "fixtures"
NVML = FIXTURES / "nvml" / "h200x2-vm.json"
NVML_TEXT = NVML.read_text(encoding="utf-8")

LAUGHS = "summary: x\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n"
    for i in range(9))
PROFILE_OK = "summary: a site profile\nextends: base\n"


def _nvml(old: str, new: str) -> str:
    assert old in NVML_TEXT
    return NVML_TEXT.replace(old, new, 1)


Files = dict[str, str | bytes]
CASES: list[tuple[str, Files, list[str], int]] = [
    # options
    ("only-empty", {}, ["audit", "--root", "{tree}", "--only", ""], 3),
    ("only-commas", {}, ["audit", "--root", "{tree}", "--only", ",,"], 3),
    ("facts-only-comma", {}, ["facts", "--root", "{tree}", "--only", ","], 3),
    ("apply-only-comma", {}, ["apply", "--root", "{tree}", "--dry-run", "--only", ","], 3),
    ("profile-empty", {}, ["audit", "--root", "{tree}", "--profile", ""], 3),
    ("profile-abs-path", {"p.yaml": PROFILE_OK}, ["audit", "--root", "{tree}", "--profile",
                                                  "{work}/p"], 3),
    ("profile-dotdot", {}, ["audit", "--root", "{tree}", "--profile", "../profiles/base"], 3),
    ("check-profile-empty", {}, ["check", "--root", "{tree}", "--profile", ""], 3),
    ("check-profile-path", {}, ["check", "--root", "{tree}", "--profile", "/etc/hostname"], 3),
    ("check-max-age-nan", {}, ["check", "--root", "{tree}", "--max-age", "nan"], 3),
    ("check-max-age-inf", {}, ["check", "--root", "{tree}", "--max-age", "inf"], 3),
    ("check-timeout-nan", {}, ["check", "--root", "{tree}", "--timeout", "nan"], 3),
    ("fleet-k-nan", {"r/a.json": "{}"}, ["fleet", "report", "--k", "nan", "r"], 3),
    ("fleet-k-inf", {"r/a.json": "{}"}, ["fleet", "report", "--k", "inf", "r"], 3),
    # profile, override and recommend files
    ("profile-not-utf8", {"pd/bad.yaml": b"summary: \xff\xfe\n"},
     ["audit", "--root", "{tree}", "--profiles-dir", "pd", "--profile", "bad"], 3),
    ("profile-recursive-anchor", {"pd/bad.yaml": "summary: x\na: &a [*a]\n"},
     ["audit", "--root", "{tree}", "--profiles-dir", "pd", "--profile", "bad"], 3),
    ("profile-billion-laughs", {"pd/bad.yaml": LAUGHS},
     ["audit", "--root", "{tree}", "--profiles-dir", "pd", "--profile", "bad"], 3),
    ("profiles-list-billion-laughs", {"pd/bad.yaml": LAUGHS},
     ["profiles", "list", "--profiles-dir", "pd"], 3),
    ("profile-too-large", {"pd/bad.yaml": "summary: x\n" + "# pad\n" * 200_000},
     ["audit", "--root", "{tree}", "--profiles-dir", "pd", "--profile", "bad"], 3),
    ("profile-too-deep", {"pd/bad.yaml": "summary: x\nvariables: " + "[" * 200 + "]" * 200},
     ["audit", "--root", "{tree}", "--profiles-dir", "pd", "--profile", "bad"], 3),
    ("profile-a-list", {"pd/bad.yaml": "- 1\n- 2\n"},
     ["audit", "--root", "{tree}", "--profiles-dir", "pd", "--profile", "bad"], 3),
    ("overrides-not-utf8", {"o.yaml": b"\xc3\x28: 1\n"},
     ["audit", "--root", "{tree}", "--profile", "base", "--overrides", "o.yaml"], 3),
    ("overrides-anchor", {"o.yaml": "a: &x {b: 1}\nc: *x\n"},
     ["audit", "--root", "{tree}", "--profile", "base", "--overrides", "o.yaml"], 3),
    ("recommend-not-utf8", {"pd/recommend.yaml": b"rules: \xff\n"},
     ["audit", "--root", "{tree}", "--profiles-dir", "pd"], 3),
    ("recommend-a-string", {"pd/recommend.yaml": "just text\n"},
     ["audit", "--root", "{tree}", "--profiles-dir", "pd"], 3),
    # NVML recordings
    ("nvml-not-json", {"n.json": "{"}, ["facts", "--root", "{tree}", "--nvml", "n.json"], 3),
    ("nvml-not-utf8", {"n.json": b"\xff{}"}, ["facts", "--root", "{tree}", "--nvml", "n.json"],
     3),
    ("nvml-nan", {"n.json": _nvml('"power_draw_w": 79.57', '"power_draw_w": NaN')},
     ["check", "--root", "{tree}", "--nvml", "n.json", "--expect-gpus", "2"], 3),
    ("nvml-gen-string", {"n.json": _nvml('"current_gen": 5', '"current_gen": "5"')},
     ["topo", "--root", "{tree}", "--nvml", "n.json"], 3),
    ("nvml-affinity-strings", {"n.json": _nvml('"cpu_affinity": [', '"cpu_affinity": ["x", ')},
     ["bind", "--root", "{tree}", "--nvml", "n.json", "--gpu", "0", "--", "true"], 3),
    ("nvml-devices-object", {"n.json": _nvml('"devices": [', '"devices": {"x": [') + "}"},
     ["facts", "--root", "{tree}", "--nvml", "n.json"], 3),
    ("nvml-deep", {"n.json": '{"schema": "nodetune.nvml/1", "devices": [], "x": '
                   + "[" * 100_000 + "]" * 100_000 + "}"},
     ["facts", "--root", "{tree}", "--nvml", "n.json"], 3),
    ("nvml-ecc-list", {"n.json": _nvml('"retired_pages": null', '"retired_pages": [1]')},
     ["check", "--root", "{tree}", "--nvml", "n.json"], 3),
]


def _write(work: Path, files: Files) -> None:
    for name, content in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def run_case(tmp_path: Path, host_tree: Callable[[str], Path],
             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
             ) -> Callable[[Files, list[str]], tuple[int, str]]:
    tree = host_tree("h200x2-vm-gather")
    work = tmp_path / "work"
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("unchanged\n", encoding="utf-8")
    (sentinel / "sub").mkdir()
    (sentinel / "sub" / "also.json").write_text("{}\n", encoding="utf-8")
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("NODETUNE_ROOT", "NODETUNE_PROFILES_DIR", "NODETUNE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    before = _digest(sentinel), _digest(tree)

    def run(files: Files, argv: list[str]) -> tuple[int, str]:
        _write(work, files)
        args = [a.format(tree=tree, nvml=NVML, work=work) for a in argv]
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        err = capsys.readouterr().err
        assert (_digest(sentinel), _digest(tree)) == before
        code = info.value.code
        return int(code) if isinstance(code, int) else (0 if code is None else 1), err

    return run


@pytest.mark.parametrize(("files", "argv", "want"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_its_exit_code(run_case, files: Files, argv: list[str],
                                                  want: int) -> None:
    code, err = run_case(files, argv)
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nodetune: error: "), err
    assert code == want, err


def test_a_sound_site_profile_still_loads(run_case) -> None:
    """The same paths with good content work: the refusals above are about the content."""
    code, err = run_case({"pd/site.yaml": PROFILE_OK},
                         ["audit", "--root", "{tree}", "--profiles-dir", "pd", "--profile",
                          "site", "--nvml", "{nvml}"])
    assert code == 0, err
    assert os.path.exists("pd/site.yaml")
