"""Man pages (roff) generated from the click command tree.

`python -m nodetune.views.manpage DIR` writes nodetune.1 and one page per command and
sub-command (nodetune-audit.1, nodetune-bench-run.1, ...) into DIR and removes pages of
commands that no longer exist. The pages depend only on the command tree and the version, never
on the terminal or the date, so the committed copies in docs/man can be compared with a fresh
generation.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from nodetune import __version__
from nodetune.cli import COMMANDS, EPILOG, cli

MANUAL = "nodetune manual"


@dataclass(frozen=True)
class Page:
    """One command's man page: `path` is the words after `nodetune` (() for nodetune itself)."""

    path: tuple[str, ...]
    command: click.Command
    ctx: click.Context

    @property
    def name(self) -> str:
        return "-".join(("nodetune", *self.path))

    @property
    def invocation(self) -> str:
        return " ".join(("nodetune", *self.path))

    @property
    def filename(self) -> str:
        return f"{self.name}.1"


def walk(command: click.Command = cli) -> list[Page]:
    """Every command of the tree, parents before their sub-commands, in `--help` order."""
    pages: list[Page] = []

    def visit(cmd: click.Command, path: tuple[str, ...], parent: click.Context | None) -> None:
        ctx = click.Context(cmd, info_name=path[-1] if path else "nodetune", parent=parent,
                            **cmd.context_settings)
        pages.append(Page(path, cmd, ctx))
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    visit(sub, (*path, name), ctx)

    visit(command, (), None)
    return pages


def escape(text: str) -> str:
    """Roff-escape running text: backslashes, hyphens (so options copy as ASCII), line starts."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def paragraphs(help_text: str) -> list[str]:
    """click help text as paragraphs; a paragraph starting with \\b keeps its line breaks."""
    text = inspect.cleandoc(help_text).split("\f", 1)[0]
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def render_paragraph(paragraph: str) -> list[str]:
    if paragraph.startswith("\b"):
        body = paragraph[1:].strip("\n")
        return [".PP", ".nf", escape(body), ".fi"]
    return [".PP", escape(" ".join(line.strip() for line in paragraph.splitlines()))]


def is_exit_paragraph(paragraph: str) -> bool:
    return paragraph.lstrip("\b\n ").startswith(("Exit codes", "Exit 0", "Exit code"))


def short_help(page: Page) -> str:
    if not page.path:
        return "find, fix and prove the tuning of GPU servers"
    if len(page.path) == 1 and page.path[0] in COMMANDS:
        text = COMMANDS[page.path[0]][1]  # the line `nodetune --help` shows
    else:
        text = page.command.get_short_help_str(limit=1000)
    if text.endswith(".") and not text.endswith("..."):
        text = text[:-1]
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def synopsis(page: Page) -> list[str]:
    pieces = page.command.collect_usage_pieces(page.ctx)
    return [".nf", f"\\fB{escape(page.invocation)}\\fR {escape(' '.join(pieces))}", ".fi"]


def page_params(page: Page) -> list[click.Parameter]:
    """The command's parameters, its help option spelled as the command line spells it.

    click caches a command's help option from the first context that asks for it, so a context
    made without the group as parent would leave `-h` out of every later page.
    """
    params = [p for p in page.command.params]
    names = page.ctx.help_option_names
    if page.command.add_help_option and names:
        params.append(click.Option(names, is_flag=True, expose_value=False,
                                   help="Show this message and exit."))
    return params


def option_lines(page: Page) -> list[str]:
    lines: list[str] = []
    for param in page_params(page):
        if isinstance(param, click.Argument):  # named in SYNOPSIS; click gives them no help
            continue
        record = param.get_help_record(page.ctx)
        if record is None:
            continue
        names, help_text = record
        lines += [".TP", f"\\fB{escape(names)}\\fR"]
        if help_text:
            lines.append(escape(" ".join(help_text.split())))
    return lines


def environment_lines(page: Page) -> list[str]:
    lines: list[str] = []
    for param in page_params(page):
        envvar = getattr(param, "envvar", None)
        names = [envvar] if isinstance(envvar, str) else list(envvar or ())
        for name in names:
            lines += [".TP", f"\\fB{escape(name)}\\fR",
                      escape(f"Default for {param.opts[0]}.")]
    return lines


def subcommand_lines(page: Page, pages: list[Page]) -> list[str]:
    lines: list[str] = []
    for sub in pages:
        if len(sub.path) == len(page.path) + 1 and sub.path[:-1] == page.path:
            lines += [".TP", f"\\fB{escape(sub.path[-1])}\\fR",
                      escape(f"{short_help(sub)}; see {sub.name}(1).")]
    return lines


def render(page: Page, pages: list[Page]) -> str:
    help_paragraphs = paragraphs(page.command.help or "")
    description = [p for p in help_paragraphs if not is_exit_paragraph(p)]
    exit_status = [p for p in help_paragraphs if is_exit_paragraph(p)] or paragraphs(EPILOG)
    out = [
        f'.TH "{page.name.upper()}" "1" "" "nodetune {__version__}" "{MANUAL}"',
        ".SH NAME",
        f"{escape(page.name)} \\- {escape(short_help(page))}",
        ".SH SYNOPSIS",
        *synopsis(page),
        ".SH DESCRIPTION",
    ]
    for paragraph in description:
        out += render_paragraph(paragraph)
    subcommands = subcommand_lines(page, pages)
    if subcommands:
        out += [".SH COMMANDS", *subcommands]
    out += [".SH OPTIONS", *option_lines(page)]
    environment = environment_lines(page)
    if environment:
        out += [".SH ENVIRONMENT", *environment]
    out.append(".SH EXIT STATUS")
    for paragraph in exit_status:
        out += render_paragraph(paragraph)
    related = [p.name for p in pages if p is not page and (
        p.path == page.path[:-1] or (len(p.path) == len(page.path) + 1
                                     and p.path[:-1] == page.path))]
    if not page.path:
        related = [p.name for p in pages if len(p.path) == 1]
    if related:
        out += [".SH SEE ALSO", ",\n".join(f"\\fB{escape(n)}\\fR(1)" for n in related)]
    return "\n".join(out) + "\n"


def generate() -> dict[str, str]:
    """File name -> roff text for every page."""
    pages = walk()
    return {page.filename: render(page, pages) for page in pages}


def write(directory: Path) -> list[Path]:
    """Write every page into directory and remove pages of commands that are gone."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = generate()
    for stale in directory.glob("nodetune*.1"):
        if stale.name not in wanted:
            stale.unlink()
    written = []
    for filename, text in wanted.items():
        path = directory / filename
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nodetune.views.manpage DIR", file=sys.stderr)
        return 3
    written = write(Path(args[0]))
    print(f"wrote {len(written)} man pages to {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
