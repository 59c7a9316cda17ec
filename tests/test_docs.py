"""The documentation matches the code: links resolve, every command has a page, the man pages are
what the generator writes now, every schema, exit code, check and metric is documented, and the
README tour prints what it shows."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from nodetune import exitcodes, schemas
from nodetune.cli import COMMANDS
from nodetune.views import manpage

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def outside_fences(text: str) -> list[str]:
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return kept


def prose(text: str) -> str:
    """The text outside code (links inside code are not links); link text may be code."""
    return "\n".join(re.sub(r"`[^`]*`(?!\])", "", line) for line in outside_fences(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: dict[str, int] = {}
    result = set()
    for line in outside_fences(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            base = slug(m[1])
            n = found.get(base, 0)
            found[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
    return result



def test_markdown_source_of_links() -> None:
    """The link pattern finds links, and code spans do not count as links."""
    text = "see [a](b.md) and `[x](not-a-link.md)`\n```\n[y](nor-this.md)\n```\n![img](pic.png)"
    assert LINK.findall(prose(text)) == ["b.md"]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.name}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_page(command: str) -> None:
    page = f"commands/{command}.md"
    assert (DOCS / page).exists(), f"docs/{page} is missing"
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert f"({page})" in index, f"docs/index.md does not link {page}"


def test_man_pages_are_generated_from_the_cli() -> None:
    wanted = manpage.generate()
    committed = {p.name: p.read_text(encoding="utf-8") for p in (DOCS / "man").glob("*.1")}
    regenerate = "run `python -m nodetune.views.manpage docs/man`"
    assert sorted(committed) == sorted(wanted), regenerate
    stale = [name for name, text in wanted.items() if committed[name] != text]
    assert not stale, f"{', '.join(stale)} out of date: {regenerate}"


def test_man_pages_cover_every_command_with_the_required_sections() -> None:
    pages = manpage.generate()
    assert "nodetune.1" in pages
    for command in COMMANDS:
        text = pages[f"nodetune-{command}.1"]
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS"):
            assert f".SH {section}\n" in text, (command, section)
    audit = pages["nodetune-audit.1"]
    assert "\\fB\\-\\-profiles\\-dir DIR\\fR" in audit
    assert "2 critical findings" in audit.split(".SH EXIT STATUS", 1)[1]


def test_man_page_escaping() -> None:
    assert manpage.escape("-x\n.TH\n'q\\") == "\\-x\n\\&.TH\n\\&'q\\e"


def test_man_pages_ship_in_the_wheel() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    shared_data = '[tool.hatch.build.targets.wheel.shared-data]\n"docs/man" = "share/man/man1"'
    assert shared_data in pyproject


def test_every_schema_is_documented() -> None:
    names = [v for k, v in vars(schemas).items() if k.endswith("_SCHEMA")]
    assert len(names) >= 19
    text = (DOCS / "json-schemas.md").read_text(encoding="utf-8")
    missing = [n for n in names if f"## {n}\n" not in text]
    assert not missing, f"docs/json-schemas.md has no section for {missing}"


def test_every_exit_code_is_documented() -> None:
    constants = {k: v for k, v in vars(exitcodes).items() if k.isupper()}
    assert constants
    rows = [line for line in (DOCS / "exit-codes.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| ")]
    for name, value in constants.items():
        assert any(line.startswith(f"| {value} |") and f"`{name}`" in line for line in rows), \
            f"docs/exit-codes.md: no row for {name} = {value}"


def test_every_health_check_is_documented() -> None:
    text = (DOCS / "health-checks.md").read_text(encoding="utf-8")
    for suite in sorted((REPO / "checks").glob("*.yaml")):
        for check in yaml.safe_load(suite.read_text(encoding="utf-8"))["checks"]:
            row = f"| {check['fault_code']} | `{check['id']}` | {suite.stem} |"
            assert row in text, f"docs/health-checks.md: no row {row}"


def test_every_agent_metric_is_documented() -> None:
    source = (REPO / "nodetune" / "agent" / "metrics.py").read_text(encoding="utf-8")
    families = re.findall(r'(Counter|Gauge|Info)MetricFamily\(\s*f?"(nodetune_[a-z_{}]+)"', source)
    assert len(families) >= 10
    suffix = {"Counter": "_total", "Info": "_info", "Gauge": ""}
    text = (DOCS / "metrics.md").read_text(encoding="utf-8")
    for kind, name in families:
        names = ([name.replace("{key}", k) for k in ("compliant", "healthy")]
                 if "{key}" in name else [name])
        for n in names:
            assert f"`{n}{suffix[kind]}`" in text, f"docs/metrics.md: {n}{suffix[kind]} missing"


# -- the README tour --------------------------------------------------------------------------

ELLIPSIS = "..."


def tour_steps(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of every ```console block, in order."""
    steps: list[tuple[str, list[str]]] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```console"
            continue
        if not inside:
            continue
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line.rstrip())
    return steps


def matches(expected: list[str], actual: list[str]) -> bool:
    """Expected lines equal actual lines, where a line `...` stands for any lines left out."""
    while expected and not expected[-1]:
        expected = expected[:-1]
    while actual and not actual[-1]:
        actual = actual[:-1]
    segments: list[list[str]] = [[]]
    for line in expected:
        if line == ELLIPSIS:
            segments.append([])
        else:
            segments[-1].append(line)
    if len(segments) == 1:
        return expected == actual
    first, last = segments[0], segments[-1]
    if actual[:len(first)] != first:
        return False
    position = len(first)
    for segment in segments[1:-1]:
        if not segment:
            continue
        for start in range(position, len(actual) - len(segment) + 1):
            if actual[start:start + len(segment)] == segment:
                position = start + len(segment)
                break
        else:
            return False
    tail = len(actual) - len(last)
    return not last or (tail >= position and actual[tail:] == last)


def test_ellipsis_matching() -> None:
    actual = ["a", "b", "c", "d"]
    assert matches(["a", "...", "d"], actual)
    assert matches(["a", "b", "..."], actual)
    assert matches(["...", "c", "..."], actual)
    assert not matches(["a", "...", "c"], actual)
    assert not matches(["b", "..."], actual)
    assert not matches(["a", "b"], actual)
    assert matches(["a", "b", "c", "d", ""], actual)


def test_readme_tour_prints_what_it_shows(tmp_path: Path) -> None:
    steps = tour_steps(README.read_text(encoding="utf-8"))
    commands = [c for c, _ in steps if c.startswith("nodetune ")]
    assert len(commands) >= 4 and all("tests/fixtures/" in c or "$snap" in c for c in commands)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NODETUNE_", "FORCE_COLOR", "CLICOLOR"))}
    env.update({"COLUMNS": "100", "LINES": "50", "NODETUNE_CACHE_DIR": str(tmp_path),
                "PYTHONPATH": str(REPO)})
    variables: dict[str, str] = {}
    last_rc = 0
    failures = []
    for command, expected in steps:
        assignment = re.fullmatch(r"(\w+)=(\S+)", command)
        if assignment:
            variables[assignment[1]] = assignment[2]
            continue
        if command == "echo $?":
            output = [str(last_rc)]
        else:
            for name, value in variables.items():
                command = command.replace(f"${name}", value)
            argv = shlex.split(command)
            assert argv[0] == "nodetune", f"the tour may only run nodetune, not {command!r}"
            proc = subprocess.run([sys.executable, "-m", "nodetune", *argv[1:]], cwd=REPO,
                                  env=env, capture_output=True, text=True, timeout=120,
                                  check=False)
            last_rc = proc.returncode
            output = [line.rstrip() for line in proc.stdout.splitlines()]
        if not matches(expected, output):
            failures.append(f"$ {command}\n--- README shows:\n" + "\n".join(expected)
                            + "\n--- it prints:\n" + "\n".join(output))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("page", [p for p in manpage.walk() if p.path],
                         ids=lambda p: p.invocation)
def test_every_option_is_on_its_command_page(page: manpage.Page) -> None:
    doc = DOCS / "commands" / f"{page.path[0]}.md"
    assert doc.exists(), f"docs/commands/{page.path[0]}.md is missing"
    text = doc.read_text(encoding="utf-8")
    missing = []
    for param in page.command.get_params(page.ctx):
        names = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
        if isinstance(param, click.Option) and names and names != ["--help"] and not any(
                re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text) for n in names):
            missing.append(names[0])
    assert not missing, f"docs/commands/{doc.name} does not mention {missing}"


def test_the_quick_start_is_for_users_and_development_for_developers() -> None:
    """The Quick start installs, puts `nodetune` on the PATH and audits; the tests are elsewhere."""
    text = README.read_text(encoding="utf-8")
    quick = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", quick, re.M | re.S)
    assert blocks
    for block in blocks:
        assert "tests/run.sh" not in block and "pytest" not in block
        assert re.search(r"ln -sf \S+/bin/nodetune \S+/bin/nodetune", block)
        assert block.rstrip().endswith("nodetune audit")
    development = text.split("\n## Development\n", 1)[1].split("\n## ", 1)[0]
    assert "bash tests/run.sh" in development
