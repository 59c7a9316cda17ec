"""The agent's last check answer, kept in one file for `nodetune check --from-agent`.

Where `nodetune agent` runs, every cycle's check is written (through a temporary file and a
rename) to `$NODETUNE_AGENT_CHECK_FILE`, else `<root>/run/nodetune/agent-check.json` (root:
--root, else /). The file (`nodetune.agent-check/1`) holds the time (ISO 8601 UTC and Unix),
the boot id, the fingerprint of the question the agent answered (`question`), the verdict, the
exit code and the whole `nodetune.check/2` document.

`read` gives the answer back only when it is at most --max-age seconds old, of this boot, to
the same question, and self-consistent; otherwise it says why, and the caller runs the check.
An answer is never reused across a reboot, for other options, or once stale: an unhealthy
node is never reported healthy from an old answer.

This module is the fast path of a Slurm prolog: it imports os, json, time and contextlib only
(measured with `python -X importtime`); keep it that way.
"""

from __future__ import annotations

import contextlib  # already loaded by the interpreter's start (runpy, importlib.util)
import json
import os
import time
from typing import TYPE_CHECKING

from nodetune import __version__
from nodetune.schemas import AGENT_CHECK_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

PATH_ENV = "NODETUNE_AGENT_CHECK_FILE"
DEFAULT_PATH = "run/nodetune/agent-check.json"  # under the root
DEFAULT_MAX_AGE = 360.0  # the agent's default interval (300 s), its jitter and one cycle
VERDICTS = {"healthy": 0, "unhealthy": 1}


def answer_path(root: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The agent's answer file: $NODETUNE_AGENT_CHECK_FILE, else under the host root."""
    environ = os.environ if environ is None else environ
    if environ.get(PATH_ENV):
        return environ[PATH_ENV]
    base = root or environ.get("NODETUNE_ROOT") or "/"
    return os.path.join(os.path.abspath(base), DEFAULT_PATH)


def question(fields: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a check's answer (`fields`: CheckRequest's fields by name), without the
    boot: the source, NVML, tier, profile, profile files and every expectation."""
    root = os.path.abspath(fields["root"] or os.environ.get("NODETUNE_ROOT") or "/")
    snapshot = fields["snapshot"]
    source: list[Any] = ["snapshot", os.path.abspath(snapshot), _mtime(snapshot)] \
        if snapshot else ["root", root]
    nvml = fields["nvml"]
    nvml_key = nvml if nvml in ("auto", "live", "off") else [os.path.abspath(nvml), _mtime(nvml)]
    overrides = fields["overrides"]
    return {"v": __version__, "source": source, "nvml": nvml_key,
            "tier": fields["tier"], "profile": fields["profile"],
            "profiles_dirs": [os.path.abspath(d) for d in fields["profiles_dirs"]],
            "overrides": [os.path.abspath(overrides), _mtime(overrides)] if overrides else None,
            "gpus": fields["expect_gpus"], "model": fields["expect_model"],
            "mounts": sorted(fields["mounts"]), "modules": sorted(fields["modules"]),
            "probe": fields["write_probe"], "idle": fields["expect_idle"]}


def boot_id(root: str | None) -> str | None:
    """The host's boot id (proc/sys/kernel/random/boot_id under the root), or None."""
    base = root or os.environ.get("NODETUNE_ROOT") or "/"
    try:
        with open(os.path.join(base, "proc/sys/kernel/random/boot_id"), encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}Z"


def write(path: str, fields: Mapping[str, Any], doc: Mapping[str, Any], *,
          profile_matched: bool, now: float | None = None) -> None:
    """Store the agent's check answer `doc` to the question `fields` at `path`, atomically
    (a temporary file in the same directory, then a rename). `profile_matched`: the agent
    chose the profile by matching the node (no --profile), so `--profile auto` asks the same
    question. Raises OSError when it cannot be written."""
    stamp = time.time() if now is None else now
    code = int(doc["exit_code"])
    record = {
        "schema": AGENT_CHECK_SCHEMA,
        "time": _iso(stamp),
        "time_unix": round(stamp, 6),
        "boot_id": boot_id(fields["root"] if not fields["snapshot"] else None),
        "question": question(fields),
        "profile_matched": profile_matched,
        "verdict": "healthy" if code == 0 and doc.get("healthy") is True
        else "unhealthy" if code == 1 else "not checked",
        "exit_code": code,
        "check": doc,
    }
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":"), default=str))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read(fields: Mapping[str, Any], max_age: float | None, path: str | None = None,
         now: float | None = None) -> tuple[dict[str, Any] | None, str]:
    """(the check document, "") when the agent's answer at `path` answers `fields` and is at
    most `max_age` seconds old (default DEFAULT_MAX_AGE), else (None, why not)."""
    limit = DEFAULT_MAX_AGE if max_age is None else max_age
    if not limit >= 0 or limit == float("inf"):  # NaN, negative, infinite: never fresh
        return None, f"--max-age {max_age} is not a finite number of seconds >= 0"
    path = path or answer_path(fields["root"])
    record, why = _load(path)
    if record is None:
        return None, why
    stamp = record.get("time_unix")
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or stamp != stamp:
        return None, f"{path} holds no valid time"
    age = (time.time() if now is None else now) - stamp
    if age < 0:
        return None, f"{path} was written {-age:.0f} s in the future (clock change?)"
    if age > limit:
        return None, f"{path} is stale ({age:.0f} s old, --max-age {limit:g})"
    current = boot_id(fields["root"] if not fields["snapshot"] else None)
    if current is None or record.get("boot_id") != current:
        return None, f"{path} is from another boot" if current else "the boot id cannot be read"
    differs = _differences(record, fields)
    if differs:
        return None, f"the agent checked with other options ({', '.join(differs)})"
    doc, why = _verdict(record, path)
    if doc is None:
        return None, why
    doc["from_agent"] = True
    doc["agent_age_s"] = round(age, 3)
    doc["agent_file"] = path
    return doc, ""


def _load(path: str) -> tuple[dict[str, Any] | None, str]:
    """The record at `path` if it is ours (owned by root or this user, writable only by its
    owner) and a nodetune.agent-check/1 mapping."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None, f"no answer from the agent ({path} is absent)"
    except OSError as exc:
        return None, f"{path} cannot be read ({exc.strerror})"
    try:
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_uid not in (0, os.getuid()) or st.st_mode & 0o022:
                return None, f"{path} may be written by another user"
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None, f"{path} is corrupt (not JSON)"
    if not isinstance(data, dict) or data.get("schema") != AGENT_CHECK_SCHEMA:
        return None, f"{path} is not a {AGENT_CHECK_SCHEMA} document"
    return data, ""


def _differences(record: Mapping[str, Any], fields: Mapping[str, Any]) -> list[str]:
    """The parts of this question the agent's answer does not share."""
    stored = record.get("question")
    if not isinstance(stored, dict):
        return ["question"]
    asked = question(fields)
    if asked["profile"] == "auto" and record.get("profile_matched") is True:
        asked["profile"] = stored.get("profile")  # the agent matched the node, as auto does
    names = {"v": "version", "gpus": "expect_gpus", "model": "expect_model",
             "probe": "write_probe", "idle": "expect_idle"}
    keys = sorted(set(asked) | set(stored))
    return [names.get(k, k) for k in keys if asked.get(k) != stored.get(k)]


def _verdict(record: Mapping[str, Any], path: str) -> tuple[dict[str, Any] | None, str]:
    """The check document when verdict, exit code and document agree on healthy (0) or
    unhealthy (1); an answer that is neither, or inconsistent, is not reused."""
    doc = record.get("check")
    verdict = record.get("verdict")
    code = record.get("exit_code")
    if not isinstance(doc, dict) or not isinstance(doc.get("summary"), str):
        return None, f"{path} is corrupt (no check document)"
    if verdict == "not checked":
        return None, "the agent could not check the node"
    if not isinstance(verdict, str) or verdict not in VERDICTS or isinstance(code, bool) \
            or code != VERDICTS[verdict]:
        return None, f"{path} is corrupt (verdict {verdict!r}, exit code {code!r})"
    if doc.get("exit_code") != code or doc.get("healthy") is not (code == 0):
        return None, f"{path} is corrupt (its verdict and check document disagree)"
    return dict(doc), ""
