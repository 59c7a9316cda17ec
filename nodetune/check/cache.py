"""Where `nodetune check` keeps what it may reuse: recent results (`--max-age`) and parsed suites.

The directory is `$NODETUNE_CACHE_DIR` when set, else `/run/nodetune` when it can be created
(root), else `$XDG_RUNTIME_DIR/nodetune`, else `<tmp>/nodetune-<uid>`. A directory is used only
when it belongs to this user and nobody else can write to it: another user must not be able to
plant a "healthy" result.
Results are keyed by what decides them (source, tier, profile, expectations, boot id), so a
result is never reused for another question or across a reboot.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from typing import TYPE_CHECKING

from nodetune import __version__
from nodetune.check.fromagent import boot_id, question
from nodetune.schemas import epoch_of

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def _usable(path: str) -> bool:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022 and os.access(path, os.W_OK)


def runtime_dir() -> str | None:
    """The first usable cache directory, or None (then nothing is cached)."""
    candidates = []
    if os.environ.get("NODETUNE_CACHE_DIR"):
        candidates.append(os.environ["NODETUNE_CACHE_DIR"])
    if os.getuid() == 0:
        candidates.append("/run/nodetune")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        candidates.append(os.path.join(xdg, "nodetune"))
    found = next((c for c in candidates if _usable(c)), None)
    if found is None:
        import tempfile  # deferred: its imports cost more than the rest of this module

        fallback = os.path.join(tempfile.gettempdir(), f"nodetune-{os.getuid()}")
        found = fallback if _usable(fallback) else None
    return found


def result_key(parts: dict[str, Any]) -> str:
    """A 64-bit digest of the question (zlib's checksums: hashlib costs more to import)."""
    data = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def result_path(directory: str, key: str) -> str:
    return os.path.join(directory, f"check-{key}.json")


def request_key(fields: Mapping[str, Any]) -> str:
    """The key of a check request's result (`fields`: CheckRequest's fields by name): every
    field that changes the answer (`nodetune.check.fromagent.question`), and the boot, so that
    a result never outlives a reboot."""
    parts = question(fields)
    if not fields["snapshot"]:
        parts["source"] = [*parts["source"], boot_id(parts["source"][1])]
    return result_key(parts)


def result_file(fields: Mapping[str, Any], key: str) -> str | None:
    """Where the result of this request is kept: --cache-file, else the runtime directory."""
    if fields["cache_file"]:
        return str(fields["cache_file"])
    directory = runtime_dir()
    return result_path(directory, key) if directory else None


def reuse(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored answer to this request when --max-age allows reusing it, else None."""
    if not fields["max_age"]:
        return None
    key = request_key(fields)
    path = result_file(fields, key)
    return load_result(path, key, fields["max_age"]) if path else None


def load_result(path: str, key: str, max_age: float) -> dict[str, Any] | None:
    """The cached result at `path` if it answers `key` and is at most `max_age` seconds old."""
    doc = read_json(path)
    if doc is None or doc.get("cache_key") != key:
        return None
    finished = epoch_of(doc.get("finished_at"))  # an epoch number: written before check/2
    if finished is None:
        return None
    age = time.time() - finished
    if age < 0 or age > max_age:
        return None
    doc["cached"] = True
    doc["cache_age_s"] = round(age, 3)
    return doc


def write_json_atomic(path: str, doc: dict[str, Any]) -> bool:
    """Write JSON through a temporary file and a rename; False when it could not be written."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, default=str))  # json.dump never uses the C encoder
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


def parsed_cache_path(cache_dir: str | None, kind: str, parts: dict[str, Any]) -> str | None:
    """Where to keep something parsed from YAML (a check suite, a profile's variables), keyed
    by `parts` and nodetune's version. The document stores `stamps(files)` of the files it was
    parsed from; `read_parsed` trusts it only while they are unchanged. (Finding the shipped
    data directory costs an importlib.resources import, which a warm start avoids this way.)"""
    if not cache_dir:
        return None
    # the package's own location is part of the key: two installs of one version (a checkout
    # and a wheel) ship different files under the same "shipped" name
    package = os.path.dirname(os.path.abspath(__file__))
    key = result_key({"v": __version__, "pkg": package, **parts})
    return os.path.join(cache_dir, f"{kind}-{key}.json")


def stamps(paths: list[str]) -> list[list[Any]]:
    """[path, size, mtime_ns] of each file."""
    out = []
    for path in paths:
        st = os.stat(path)
        out.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    return out


def read_parsed(path: str | None) -> dict[str, Any] | None:
    """A document written with `stamps` of its sources, if none of them changed since."""
    doc = read_json(path)
    if doc is None or not isinstance(doc.get("stamps"), list):
        return None
    try:
        if stamps([p for p, _, _ in doc["stamps"]]) != doc["stamps"]:
            return None
    except (OSError, ValueError, TypeError):
        return None
    return doc


def read_json(path: str | None) -> dict[str, Any] | None:
    """A cached JSON mapping, or None when absent, unreadable or not ours."""
    if not path:
        return None
    try:
        if os.stat(path).st_uid != os.getuid():
            return None
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
