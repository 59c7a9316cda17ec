"""Errors nodetune raises, each mapped to one exit code and one line for the user.

Every command shares one exit-code table (see `nodetune.exitcodes`). An error carries
what went wrong and, where there is one, how to fix it; the CLI prints both on one line.
"""

from __future__ import annotations

from nodetune import exitcodes


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
