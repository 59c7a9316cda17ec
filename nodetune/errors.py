"""Errors nodetune raises, each mapped to one exit code and one line for the user.

Every command shares one exit-code table (see `nodetune.exitcodes`). An error carries
what went wrong and, where there is one, how to fix it; the CLI prints both on one line.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from nodetune import exitcodes

DEBUG_ENV = "NODETUNE_DEBUG"


class NodetuneError(Exception):
    """nodetune itself could not do what was asked (exit code 3)."""

    exit_code: int = exitcodes.ERROR

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.fix:
            text += f"; fix: {self.fix}"
        return text.replace("\n", " ")


class NoData(NodetuneError):
    """A whole subsystem is absent on this node (no InfiniBand, no GPU)."""


class CollectorError(NodetuneError):
    """A collector could not read a file it cannot do without."""


class SourceError(NodetuneError):
    """The --root tree or --from snapshot is not usable."""


class ProfileError(NodetuneError):
    """A profile or override file is malformed or unknown."""


class RenderError(NodetuneError):
    """A playbook or manifest template could not be rendered."""


class ApplyError(NodetuneError):
    """Ansible could not run, or a task failed."""


class Refused(NodetuneError):
    """nodetune declined to change the host (exit code 4); nothing was changed."""

    exit_code = exitcodes.REFUSED


class BenchError(NodetuneError):
    """A benchmark could not run (missing tool, no GPU, bad output)."""


class MissingExtra(NodetuneError):
    """An optional dependency is not installed: the command names the extra that provides it."""

    def __init__(self, extra: str, module: str, reason: str) -> None:
        super().__init__(f"this needs nodetune's [{extra}] extra ({reason})",
                         fix=f"pip install 'nodetune[{extra}]'")
        self.extra = extra
        self.module = module


def needs_extra(extra: str, module: str) -> ModuleType:
    """Import `module`, which only the `extra` extra installs, or raise MissingExtra.

    Call it where the optional package is first needed, so every command that does not need
    the extra runs without it: `runner = needs_extra("apply", "ansible_runner")`.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(extra, module, str(exc)) from exc


def debug_enabled() -> bool:
    """NODETUNE_DEBUG=1: let unexpected exceptions show their traceback."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def internal_error_line(exc: BaseException) -> str:
    """The one line printed for an exception nodetune did not expect (a bug)."""
    text = " ".join(str(exc).split()) or "no message"
    return (f"nodetune: internal error: {type(exc).__name__}: {text}; "
            f"fix: report it ({DEBUG_ENV}=1 shows the traceback)")
