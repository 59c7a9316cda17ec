"""Option types several commands share: finite numbers, profile names, non-empty id lists,
and the shell completion of profile names, collector names and comma-separated lists,
and the text format.

click's FloatRange takes `nan` and `inf` (a comparison with NaN is always false), and an
`--only ''` or `--only ,` names nothing; each is an input error (exit 3, one line), not a
silent "everything" or "forever".
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem

from nodetune.profiles.names import NAME_RULE, is_profile_name
from nodetune.views.output import FORMATS


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that refuses NaN and infinities."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class ProfileName(click.ParamType):  # type: ignore[type-arg]
    """A profile's name (or `auto` where the command takes it)."""

    name = "profile"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        text = str(value)
        if not is_profile_name(text):
            self.fail(f"{text!r} is not a profile name: {NAME_RULE}", param, ctx)
        return text

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        """The profiles of --profiles-dir (given before it, or in the environment) and the
        shipped ones, each with its summary; `auto` where the option takes it."""
        names = profile_choices(ctx)
        if "auto" in (param.metavar or ""):
            names = [("auto", "the profile this node matches"), *names]
        return [CompletionItem(n, help=h) for n, h in names if n.startswith(incomplete)]


PROFILE_NAME = ProfileName()


def non_empty_items(ctx: click.Context, param: click.Parameter,
                    value: tuple[str, ...]) -> tuple[str, ...]:
    """Callback for repeatable ID[,ID] options: given, they must name at least one thing."""
    if value and not any(part.strip() for item in value for part in item.split(",")):
        flag = param.opts[-1] if param.opts else param.name
        raise click.BadParameter(f"{flag} {','.join(value)!r} names nothing", ctx=ctx,
                                 param=param)
    return value


def profile_choices(ctx: click.Context) -> list[tuple[str, str]]:
    """(name, summary) of every profile the command would find; a profile that does not load
    is still offered, without a summary."""
    # deferred: the profile loader is needed only when the shell asks for completions
    from nodetune.errors import NodetuneError
    from nodetune.profiles.catalog import Library

    dirs = [d for d in (ctx.params.get("profiles_dirs") or ()) if os.path.isdir(d)]
    if not dirs:
        env = os.environ.get("NODETUNE_PROFILES_DIR", "")
        dirs = [d for d in env.split(os.pathsep) if d and os.path.isdir(d)]
    library = Library(dirs)
    out = []
    for name in library.names():
        try:
            data = library.doc(name).data
        except NodetuneError:
            data = None
        summary = str(data.get("summary") or "") if isinstance(data, dict) else ""
        out.append((name, summary))
    return out


def complete_items(choices: Callable[[], Iterable[tuple[str, str]]]) -> Callable[
        [click.Context, click.Parameter, str], list[CompletionItem]]:
    """A shell_complete callback for an ID[,ID] option: completes the part after the last
    comma, offering only what the earlier parts have not named yet."""

    def complete(ctx: click.Context, param: click.Parameter,
                 incomplete: str) -> list[CompletionItem]:
        head, comma, last = incomplete.rpartition(",")
        given = set(head.split(",")) if comma else set()
        prefix = head + comma
        return [CompletionItem(prefix + name, help=text or None) for name, text in choices()
                if name.startswith(last) and name not in given]

    return complete


def collector_choices() -> list[tuple[str, str]]:
    """(name, first line of its docstring) of every registered collector."""
    # deferred: importing every collector module costs start-up time; only completion needs it
    from nodetune.collectors import load_all

    return [(name, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
            for name, cls in sorted(load_all().items())]


complete_collectors = complete_items(collector_choices)


def complete_profiles(ctx: click.Context, param: click.Parameter,
                      incomplete: str) -> list[CompletionItem]:
    """shell_complete for an argument that names a profile (`profiles show NAME`)."""
    return PROFILE_NAME.shell_complete(ctx, param, incomplete)


F = TypeVar("F", bound=Callable[..., Any])


def format_option(func: F) -> F:
    """--format table|plain for the text views (nodetune.views.output says what each is)."""
    option = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                          help="Text layout: table (boxed, sized to the terminal) or plain "
                               "(aligned columns, no box drawing). Default: table on a "
                               "terminal, plain when piped or under a non-UTF-8 locale.")
    return option(func)
