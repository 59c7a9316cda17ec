"""The Runner base every benchmark suite derives from, and what a run is given.

A runner declares what it needs as class attributes (`commands`: executables it runs,
`requires`: Python modules it imports, `gpu`: whether it needs a GPU, `cmd_timeout`: seconds
one tool invocation may take). `check_enabled()` says whether it can run here and, if not, why
(one line with the fix). `build_argv()` and `parse(stdout)` are pure: they are tested against
captured output without the tool being present.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from nodetune.bench.results import SuiteResult
from nodetune.errors import BenchError
from nodetune.node.children import tied


class Progress(Protocol):
    def start(self, description: str, total: int) -> None: ...

    def advance(self, steps: int = 1, what: str = "") -> None:
        """`steps` more done; `what` names the step just finished (size, GPU, pair)."""
        ...

    def suite_started(self, name: str) -> None:
        """A suite begins (its setup, before its first step)."""
        ...

    def suite_done(self, result: SuiteResult) -> None:
        """A suite ended: ran, failed or was skipped."""
        ...


class NullProgress:
    """Progress that shows nothing (JSON output on a terminal, tests)."""

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, steps: int = 1, what: str = "") -> None:
        pass

    def suite_started(self, name: str) -> None:
        pass

    def suite_done(self, result: SuiteResult) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    quick: bool = False
    repeat: int = 0  # runs per measurement; 0 = the default (1 with quick, else 3)
    gpus: tuple[int, ...] | None = None  # CUDA ordinals (PCI bus order); None = all
    sizes: tuple[int, ...] | None = None  # message / buffer / array / file sizes in bytes
    fio_dir: str | None = None
    fio_device: str | None = None
    destructive: bool = False
    nvbandwidth: bool = False  # memcpy: use nvbandwidth when installed
    nodes: tuple[str, ...] | None = None  # allreduce across these nodes; ("slurm",): the job's
    launcher: str | None = None  # "srun" or "mpirun" for --nodes; None: srun when installed

    def repeats(self) -> int:
        return self.repeat or (1 if self.quick else 3)


@dataclass(kw_only=True)
class RunContext:
    """What a runner may use: the node's facts document, the options, progress and environment."""

    facts: dict[str, Any]
    options: RunOptions = field(default_factory=RunOptions)
    progress: Progress = field(default_factory=NullProgress)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    which: Callable[[str], str | None] = shutil.which

    def gpu_count(self) -> int:
        gpus = self.facts.get("gpus") or []
        return len(gpus) if gpus else int((self.facts.get("gpu") or {}).get("count") or 0)


class Runner:
    """Base of every suite runner."""

    name: ClassVar[str]
    summary: ClassVar[str]
    gpu: ClassVar[bool] = False
    commands: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    cmd_timeout: ClassVar[int] = 600

    def check_enabled(self, ctx: RunContext) -> str | None:
        """None when the runner can run here, else why not (one line, with the fix)."""
        for command in self.commands:
            if ctx.which(command) is None:
                return f"{self.name}: `{command}` is not installed; fix: install it (Debian: " \
                       f"apt-get install {command})"
        for module in self.requires:
            if not module_available(module):
                return f"{self.name}: Python module {module} is missing; fix: pip install {module}"
        return None

    def run(self, ctx: RunContext) -> SuiteResult:
        raise NotImplementedError


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def run_tool(argv: list[str], timeout: int, env: Mapping[str, str] | None = None) -> str:
    """Run a benchmark tool (it dies with nodetune, `nodetune.node.children`); its stdout, or
    BenchError naming the tool and what went wrong."""
    try:
        proc = subprocess.run(tied(argv, env), capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, check=False)
    except FileNotFoundError as exc:
        tool = os.path.basename(argv[0])
        raise BenchError(f"{argv[0]} not found", fix=f"install {tool}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{os.path.basename(argv[0])} ran longer than {timeout} s",
                         fix="use --quick or smaller --sizes") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise BenchError(f"{os.path.basename(argv[0])} exited with {proc.returncode}: {last[0]}")
    return proc.stdout


def tool_version(argv: list[str], timeout: int = 10) -> str | None:
    """First line of a tool's version output, or None."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else None
