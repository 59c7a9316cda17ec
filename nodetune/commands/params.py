"""Option types several commands share: finite numbers, profile names, non-empty id lists.

click's FloatRange takes `nan` and `inf` (a comparison with NaN is always false), and an
`--only ''` or `--only ,` names nothing; each is an input error (exit 3, one line), not a
silent "everything" or "forever".
"""

from __future__ import annotations

import math
from typing import Any

import click

from nodetune.profiles.names import NAME_RULE, is_profile_name


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


PROFILE_NAME = ProfileName()


def non_empty_items(ctx: click.Context, param: click.Parameter,
                    value: tuple[str, ...]) -> tuple[str, ...]:
    """Callback for repeatable ID[,ID] options: given, they must name at least one thing."""
    if value and not any(part.strip() for item in value for part in item.split(",")):
        flag = param.opts[-1] if param.opts else param.name
        raise click.BadParameter(f"{flag} {','.join(value)!r} names nothing", ctx=ctx,
                                 param=param)
    return value
