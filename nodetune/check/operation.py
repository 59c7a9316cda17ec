"""The `nodetune check` operation: one `run` for the command line (and so the Slurm scripts,
which run it) and the agent.

    result = run(CheckRequest(tier="quick", expect_gpus=8), emit=print_doc)   # the CLI
    result = run(request, node_facts, node=node, library=library, cache=False)  # the agent

`run` reuses a recent stored answer when the request allows it (`max_age`), else loads the suite
and the profile's variables, opens the node (or uses the caller's), gathers what the checks read
that `facts` does not already hold, and evaluates the checks (`nodetune.check.evaluate`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nodetune import exitcodes
from nodetune.check import readings
from nodetune.check.cache import (
    parsed_cache_path,
    read_parsed,
    request_key,
    result_file,
    reuse,
    runtime_dir,
    stamps,
    write_json_atomic,
)
from nodetune.check.evaluate import Report, run_checks
from nodetune.check.options import VARIABLE_FLAGS
from nodetune.check.request import CheckRequest
from nodetune.check.suite import load_suite
from nodetune.errors import ProfileError
from nodetune.facts.health import gpu_model
from nodetune.facts.record import record
from nodetune.node.model import Node
from nodetune.node.source import open_node

if TYPE_CHECKING:
    from nodetune.collectors import NodeFacts
    from nodetune.profiles.catalog import Library

DEFAULT_TOTAL_TIMEOUT = {"quick": 30.0, "standard": 120.0}

__all__ = ["CheckRequest", "CheckResult", "request_variables", "run"]


@record(frozen=True)
class CheckResult:
    doc: dict[str, Any]  # the nodetune.check/2 document
    exit_code: int
    report: Report | None = None  # None when a stored answer was reused
    abandoned: bool = False  # a unit was left running in a thread


def run(request: CheckRequest, facts: NodeFacts | None = None, *, node: Node | None = None,
        library: Library | None = None, cache: bool = True,
        emit: Callable[[dict[str, Any]], None] | None = None,
        hints: Mapping[str, str] = VARIABLE_FLAGS,
        record_readings: bool = False) -> CheckResult:
    """Answer one check request.

    facts: facts already gathered on this node (the agent's cycle); the collectors they hold
    are not run again. node: the open node they come from (default: opened from the request's
    root, snapshot and nvml). library: where profiles come from (default: the request's
    profiles_dirs, then the shipped profiles). cache: reuse a stored answer (`max_age`) and
    store this one. emit: receives the document as soon as it is ready; when a unit was
    abandoned (a hung collector or probe) the process then exits without closing NVML or
    waiting for the stuck thread. hints: the option that sets a variable, named when a check
    is skipped for want of it (the agent has none of check's expectation options).
    record_readings: keep this check's network counters for the next one (the agent's cycle;
    nodetune.check.readings); every check compares with the kept readings.
    """
    if cache:
        doc = reuse(request.fields())
        if doc is not None:
            if emit is not None:
                emit(doc)
            return CheckResult(doc, int(doc.get("exit_code", exitcodes.ERROR)))
    check_profile_dirs(request.profiles_dirs)
    cache_dir = runtime_dir()
    suite = load_suite(request.tier, cache_dir=cache_dir)
    variables = request_variables(request, suite.variables,
                                  _profile_variables(request, cache_dir, library))
    profile = request.profile if request.profile != "auto" else None
    resolve = _auto_profile(request, suite.variables, library) \
        if request.profile == "auto" else None
    total = request.timeout or DEFAULT_TOTAL_TIMEOUT.get(request.tier, 30.0)
    with contextlib.ExitStack() as stack:
        if node is None:
            # thin_nvml: the ctypes binding reads the same NVML document without pynvml's import
            node = stack.enter_context(open_node(root=request.root, snapshot=request.snapshot,
                                                 nvml=request.nvml, thin_nvml=True))
        requested = request.nvml != "off" and (request.nvml != "auto" or node.root.is_live
                                               or node.nvml is not None)
        history = readings.load(request.root, request.snapshot)
        report = run_checks(node, suite, variables, total_timeout=total,
                            write_probe_enabled=request.write_probe, nvml_requested=requested,
                            profile=profile, resolve_variables=resolve, facts=facts,
                            hints=hints, history=history)
        if record_readings and not request.snapshot:
            readings.record(request.root, history, report.health, keep_s=max(
                float(report.variables.get(name) or 0)
                for name in ("rdma_counter_window_s", "link_flap_window_s")))
        doc = report.to_json()
        if cache:
            key = request_key(request.fields())
            doc["cache_key"] = key
            path = result_file(request.fields(), key)
            if path:
                write_json_atomic(path, doc)
        result = CheckResult(doc, report.exit_code, report, report.abandoned)
        if emit is not None:
            emit(doc)
            if report.abandoned:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(report.exit_code)
    return result


def check_profile_dirs(dirs: tuple[str, ...]) -> None:
    """Refuse a --profiles-dir that is not a directory, as `nodetune audit` does, without the
    cost of loading the profile catalog."""
    for d in dirs:
        if not os.path.isdir(d):
            raise ProfileError(f"--profiles-dir {d} is not a directory",
                               fix="point --profiles-dir at a directory of <name>.yaml files")


def request_variables(req: CheckRequest, suite_vars: dict[str, Any],
                      profile_vars: dict[str, Any]) -> dict[str, Any]:
    """Suite defaults < profile variables < the command line."""
    variables = {**suite_vars, **profile_vars}
    if req.expect_gpus is not None:
        variables["gpu_count"] = req.expect_gpus
    if req.expect_model:
        variables["gpu_model"] = gpu_model(req.expect_model) or req.expect_model
    if req.expect_idle:
        variables["gpu_processes_max"] = 0
    if req.mounts:
        mounts = list(variables.get("required_mounts") or [])
        variables["required_mounts"] = mounts + [m for m in req.mounts if m not in mounts]
    if req.modules:
        modules = list(variables.get("required_modules") or [])
        variables["required_modules"] = modules + [m for m in req.modules if m not in modules]
    return variables


def _library(request: CheckRequest, library: Library | None) -> Library:
    if library is not None:
        return library
    # Loading profiles costs PyYAML and the rule engine; a warm check reads a profile's
    # variables from their JSON cache instead, so the catalog is imported only here.
    from nodetune.profiles.catalog import Library

    return Library(request.profiles_dirs)


def _profile_variables(request: CheckRequest, cache_dir: str | None,
                       library: Library | None) -> dict[str, Any]:
    """The variables of the named profile (overrides applied); cached as JSON unless the caller
    brought its own library."""
    name = request.profile
    if not name or name == "auto":
        return {}
    if library is not None:
        return dict(library.load(name, request.overrides).variables)
    overrides = os.path.abspath(request.overrides) if request.overrides else None
    path = parsed_cache_path(cache_dir, "profile", {
        "name": name, "dirs": [os.path.abspath(d) for d in request.profiles_dirs],
        "overrides": overrides})
    cached = read_parsed(path)
    if cached is not None and isinstance(cached.get("variables"), dict):
        return dict(cached["variables"])
    library = _library(request, None)
    profile = library.load(name, request.overrides)
    variables = dict(profile.variables)
    if path:
        # the user directories too: a profile added there may shadow one of the chain
        files = [str(library.path(n)) for n in profile.chain]
        files += [os.path.abspath(d) for d in request.profiles_dirs]
        files += [overrides] if overrides else []
        write_json_atomic(path, {"profile": name, "stamps": stamps(files),
                                 "variables": variables})
    return variables


def _auto_profile(request: CheckRequest, suite_vars: dict[str, Any], library: Library | None
                  ) -> Callable[[dict[str, Any]], tuple[dict[str, Any], str | None]]:
    def resolve(facts: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        found = _library(request, library)
        name = found.match(facts).profile
        profile_vars = dict(found.load(name, request.overrides).variables)
        return request_variables(request, suite_vars, profile_vars), name
    return resolve
