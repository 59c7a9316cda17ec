"""Child processes that never outlive nodetune: ansible-playbook and the benchmark tools.

A child is started through a small Python stub that sets PR_SET_PDEATHSIG (SIGKILL when the
parent dies, even by SIGKILL; it survives exec), gives up when nodetune is already gone, and
execs the real program: `tied(argv)` for a command nodetune starts itself, `stub_script` for a
program another tool starts by name (ansible-runner runs `ansible-playbook` from PATH).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

# argv of the stub: the parent's pid, the program's path, its arguments
_STUB = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(125)  # nodetune is already gone
os.execv(sys.argv[2], sys.argv[2:])
"""


def tied(argv: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """`argv` as a command that dies with this process; FileNotFoundError when its program is
    not found on the PATH of `env` (as subprocess would raise it)."""
    program = argv[0]
    search = os.pathsep.join(os.get_exec_path(dict(env) if env is not None else None))
    path = program if os.sep in program else shutil.which(program, path=search)
    if path is None or not os.access(path, os.X_OK) or os.path.isdir(path):
        raise FileNotFoundError(2, "No such file or directory", program)
    return [sys.executable, "-I", "-c", _STUB, str(os.getpid()), path, *argv[1:]]


def stub_script(binary: str) -> str:
    """An executable file's text that runs `binary` with its own arguments and dies with this
    process."""
    return (f"#!{sys.executable} -I\nimport sys\n"
            f"sys.argv[1:1] = [{str(os.getpid())!r}, {binary!r}]\n" + _STUB)
