"""The `nodetune check` operation: reuse a recent result, or load the suite and the profile,
open the node and run the checks (`nodetune.check.evaluate`).

    code = check(CheckRequest(tier="quick", expect_gpus=8), emit)

Only what a cached answer needs is imported at module level, so that back-to-back job starts
with `--max-age` pay little more than the interpreter's start.
"""

from __future__ import annotations

import os
from collections import namedtuple
from typing import TYPE_CHECKING

from nodetune import exitcodes

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DEFAULT_TOTAL_TIMEOUT = {"quick": 30.0, "standard": 120.0}


# Everything `nodetune check` was asked; what the result cache is keyed by. `profile` None:
# no profile; "auto": the matching one; else a profile name. (A named tuple, not a dataclass:
# the cached path does not import dataclasses.)
CheckRequest = namedtuple(
    "CheckRequest",
    ["tier", "root", "snapshot", "nvml", "timeout", "max_age", "profile", "expect_gpus",
     "expect_model", "mounts", "modules", "write_probe", "cache_file"],
    defaults=["quick", None, None, "auto", None, None, None, None, None, (), (), False, None])


def _boot_id(root: str) -> str | None:
    try:
        with open(os.path.join(root, "proc/sys/kernel/random/boot_id"), encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _cache_key(req: CheckRequest) -> str:
    from nodetune import __version__
    from nodetune.check.cache import result_key

    # Every field that changes the answer, and the boot: a result never outlives a reboot.
    root = os.path.abspath(req.root or os.environ.get("NODETUNE_ROOT") or "/")
    source: Any = ["snapshot", os.path.abspath(req.snapshot), _mtime(req.snapshot)] \
        if req.snapshot else ["root", root, _boot_id(root)]
    nvml = req.nvml if req.nvml in ("auto", "live", "off") else \
        [os.path.abspath(req.nvml), _mtime(req.nvml)]
    return result_key({"v": __version__, "source": source, "nvml": nvml, "tier": req.tier,
                       "profile": req.profile, "gpus": req.expect_gpus,
                       "model": req.expect_model, "mounts": sorted(req.mounts),
                       "modules": sorted(req.modules),
                       "probe": req.write_probe})


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def request_variables(req: CheckRequest, suite_vars: dict[str, Any],
                      profile_vars: dict[str, Any]) -> dict[str, Any]:
    """Suite defaults < profile variables < the command line."""
    variables = {**suite_vars, **profile_vars}
    if req.expect_gpus is not None:
        variables["gpu_count"] = req.expect_gpus
    if req.expect_model:
        from nodetune.facts.health import gpu_model

        variables["gpu_model"] = gpu_model(req.expect_model) or req.expect_model
    if req.mounts:
        mounts = list(variables.get("required_mounts") or [])
        variables["required_mounts"] = mounts + [m for m in req.mounts if m not in mounts]
    if req.modules:
        modules = list(variables.get("required_modules") or [])
        variables["required_modules"] = modules + [m for m in req.modules if m not in modules]
    return variables


def _profile_variables(name: str | None, cache_dir: str | None) -> dict[str, Any]:
    """The variables of profile `name`, cached as JSON: loading profiles means YAML."""
    if not name:
        return {}
    from nodetune.check.cache import parsed_cache_path, read_parsed, stamps, write_json_atomic

    path = parsed_cache_path(cache_dir, "profile", {"name": name})
    cached = read_parsed(path)
    if cached is not None and isinstance(cached.get("variables"), dict):
        return dict(cached["variables"])
    from nodetune.profiles.catalog import Library

    library = Library()
    profile = library.load(name)
    variables = dict(profile.variables)
    if path:
        files = [str(library.path(n)) for n in profile.chain]
        write_json_atomic(path, {"profile": name, "stamps": stamps(files),
                                 "variables": variables})
    return variables


def check(req: CheckRequest, emit: Callable[[dict[str, Any]], None]) -> int:
    """Run (or reuse) one check and hand its JSON document to `emit`; return the exit code.

    When a unit was abandoned (a hung collector or probe), the process exits right after
    `emit` without closing NVML or waiting for the stuck thread.
    """
    from nodetune.check.cache import load_result, result_path, runtime_dir, write_json_atomic

    key = _cache_key(req)
    cache_dir = runtime_dir()
    path = req.cache_file or (result_path(cache_dir, key) if cache_dir else None)
    if req.max_age and path:
        cached = load_result(path, key, req.max_age)
        if cached is not None:
            emit(cached)
            return int(cached.get("exit_code", exitcodes.ERROR))
    from nodetune.check.evaluate import run_checks
    from nodetune.check.suite import load_suite
    from nodetune.node.source import open_node

    suite = load_suite(req.tier, cache_dir=cache_dir)
    profile_name = req.profile if req.profile != "auto" else None
    profile_vars = _profile_variables(profile_name, cache_dir)
    variables = request_variables(req, suite.variables, profile_vars)
    total = req.timeout or DEFAULT_TOTAL_TIMEOUT.get(req.tier, 30.0)
    with open_node(root=req.root, snapshot=req.snapshot, nvml=req.nvml) as node:
        requested = req.nvml != "off" and (req.nvml != "auto" or node.root.is_live
                                           or node.nvml is not None)
        resolve = _auto_profile(req, suite.variables) if req.profile == "auto" else None
        report = run_checks(node, suite, variables, total_timeout=total,
                            write_probe_enabled=req.write_probe, nvml_requested=requested,
                            profile=profile_name, resolve_variables=resolve)
        doc = report.to_json()
        doc["cache_key"] = key
        if path:
            write_json_atomic(path, doc)
        emit(doc)
        if report.abandoned:
            import sys

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(report.exit_code)
    return report.exit_code


def _auto_profile(req: CheckRequest, suite_vars: dict[str, Any]
                  ) -> Callable[[dict[str, Any]], tuple[dict[str, Any], str | None]]:
    def resolve(facts: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        from nodetune.profiles.catalog import Library

        library = Library()
        name = library.match(facts).profile
        return request_variables(req, suite_vars, dict(library.load(name).variables)), name
    return resolve
