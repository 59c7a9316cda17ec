"""Fuzzing nodetune's readers with mutations of the real captures in tests/fixtures/.

Every input a command reads (sysfs files of a host tree, NVML recordings, snapshots, nccl-tests
logs, fio JSON, saved bench results, profiles, the state files rollback reads) is mutated with
a fixed seed: truncated, bytes
flipped, values swapped to another JSON type, made huge, NaN or infinite, nested deeply, keys
removed. The matching command runs in this process and must end in a documented exit code
(docs/exit-codes.md) without a traceback or an "internal error" line, an error must be one line,
and nothing may be written outside the case's temporary directory. A state file is refused
(exit 3 or 4, one line) or accepted only when valid (`state_invalid`), with Ansible replaced by
a recorder: rollback's checks run for real, nothing is restored.

The CI run is bounded (about 60 s on 2 CPUs); `tests/bench/fuzz.py` runs the same cases for
longer (--seconds, --seed) and prints the figures.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import tarfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodetune import cli
from nodetune.apply import ansible, statefile
from nodetune.commands import bench as bench_cmd
from tests.apply_runs import snapshot

SEED = 20
REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
NVML = FIXTURES / "nvml" / "h200x2-vm.json"
FACTS = FIXTURES / "snapshots" / "h100x2-fc-vm-facts.json"
EXIT_CODES = {0, 1, 2, 3, 4}
CASE_SECONDS = 60.0  # a case that runs longer is a hang (a loaded CI machine takes 15 s)

# ---------------------------------------------------------------------------------------------
# mutations: each takes the input's bytes and a seeded Random and returns new bytes

Mutation = Callable[[bytes, random.Random], bytes]

HUGE = [10**400, -(10**400), 1e308, -1e308, 2**63, -(2**63) - 1, 0, -1, 4294967296]
ODD_STRINGS = ["", "x", "nan", "inf", "-1", "1e999", "\x00", "\u202e", "\udcff" * 0 + "é" * 3,
               "0x10", " 12 ", "null", "[]", "{}", "a" * 5000]


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)] if data else data


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] = rng.choice([out[i] ^ (1 << rng.randrange(8)), rng.randrange(256), 0, 0xFF])
    return bytes(out)


def splice(data: bytes, rng: random.Random) -> bytes:
    """A slice of the input copied elsewhere in it (repeated lines, doubled objects)."""
    if len(data) < 2:
        return data * 2
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.randint(1, 400))
    at = rng.randrange(len(data))
    return data[:at] + data[a:b] * rng.randint(1, 3) + data[at:]


NUMBER = re.compile(rb"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
TEXT_NUMBERS = [b"nan", b"inf", b"-inf", b"1e999", b"-1", b"99999999999999999999999999",
                b"0", b"x", b"", b"1.2.3", b"0x1f", b"\xff",
                b"1" * 5000]  # over Python's 4300-digit limit of int(str)


def number_swap(data: bytes, rng: random.Random) -> bytes:
    """Numbers in text (nccl-tests tables, sysfs values) made odd, a few at a time."""
    spans = [m.span() for m in NUMBER.finditer(data)]
    if not spans:
        return flip_bytes(data, rng)
    out = data
    for start, end in sorted(rng.sample(spans, min(len(spans), rng.randint(1, 4))),
                             reverse=True):
        out = out[:start] + rng.choice(TEXT_NUMBERS) + out[end:]
    return out


def line_drop(data: bytes, rng: random.Random) -> bytes:
    lines = data.splitlines(keepends=True)
    if len(lines) < 2:
        return truncate(data, rng)
    del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def _paths(doc: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if len(here) > 24:  # inside a deep nest made by an earlier change: go no further
        return
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*here, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:50]):
            yield from _paths(v, (*here, i))


def _odd_value(old: Any, rng: random.Random) -> Any:
    choice = rng.randrange(9)
    if choice == 0:  # type swap: number <-> string <-> null <-> list <-> object
        if isinstance(old, bool):
            return rng.choice([str(old).lower(), 1, None])
        if isinstance(old, (int, float)):
            return rng.choice([str(old), None, [old], {"value": old}])
        if isinstance(old, str):
            with contextlib.suppress(ValueError):
                return float(old)
            return rng.choice([None, 0, [old], {"": old}, True])
        if old is None:
            return rng.choice([0, "", [], {}])
        if isinstance(old, list):
            return rng.choice([{}, "", None, 0, old[:1] * 0, dict(enumerate(old))])
        return rng.choice([[], "", None, 0, list(old.values())[:3]])
    if choice == 1:
        return rng.choice(HUGE)
    if choice == 2:
        return rng.choice([math.nan, math.inf, -math.inf])
    if choice == 3:  # deep nesting
        value: Any = old
        for _ in range(rng.choice([20, 100, 1000])):
            value = [value] if rng.random() < 0.5 else {"x": value}
        return value
    if choice == 4:
        return rng.choice(ODD_STRINGS)
    if choice == 5:
        return rng.choice([[], {}, [None], [[]], [{}], [""] * 3])
    if choice == 6:
        return True if not isinstance(old, bool) else None
    if choice == 7:  # a float where an int belongs, and the other way
        if isinstance(old, int) and not isinstance(old, bool):
            return old + 0.5
        if isinstance(old, float) and math.isfinite(old):
            return int(old)
        return -1
    return None


class Removed:
    """Marks a key or item to delete."""


def mutate_doc(doc: Any, rng: random.Random) -> Any:
    """One to three changes at random places of a parsed JSON/YAML document."""
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(doc))
        path = rng.choice(paths)
        new = Removed() if path and rng.random() < 0.15 else None
        if new is None:
            old = doc
            for key in path:
                old = old[key]
            new = _odd_value(old, rng)
        if not path:
            doc = {} if isinstance(new, Removed) else new
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(new, Removed):
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    return doc


def _dump_json(doc: Any) -> bytes:
    try:
        return json.dumps(doc, indent=1).encode()
    except (RecursionError, ValueError):
        return json.dumps(doc).encode()


def json_mutation(data: bytes, rng: random.Random) -> bytes:
    try:
        doc = json.loads(data)
    except ValueError:
        return flip_bytes(data, rng)
    doc = mutate_doc(doc, rng)
    try:
        return _dump_json(doc)
    except RecursionError:
        return data


def yaml_mutation(data: bytes, rng: random.Random) -> bytes:
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError:
        return flip_bytes(data, rng)
    doc = mutate_doc(doc, rng)
    try:
        return yaml.safe_dump(doc, sort_keys=False).encode()
    except (RecursionError, yaml.YAMLError):
        return data


BYTES: list[Mutation] = [truncate, flip_bytes, splice]
TEXT: list[Mutation] = [*BYTES, number_swap, number_swap, line_drop]
JSON: list[Mutation] = [*BYTES, json_mutation, json_mutation, json_mutation, json_mutation,
                        number_swap]
YAML: list[Mutation] = [*BYTES, yaml_mutation, yaml_mutation, yaml_mutation, number_swap]


# ---------------------------------------------------------------------------------------------
# targets: a real input, how to mutate it, and the command that reads it


@dataclass(frozen=True)
class Target:
    name: str
    inputs: tuple[Path, ...]  # real captures, one picked per case
    mutations: tuple[Mutation, ...]
    commands: tuple[tuple[str, ...], ...]  # {file}: the mutated input; {tree}, {nvml}
    file_name: str = "input"  # the name the mutated input gets in the work directory
    cost: float = 1.0  # relative time of one case, to share the CI budget out


def _bench_files(schema: str) -> tuple[Path, ...]:
    out = []
    for p in sorted((FIXTURES / "bench").glob("*.json")):
        if f'"schema": "{schema}"' in p.read_text(encoding="utf-8")[:300]:
            out.append(p)
    return tuple(out)


PROFILES = tuple(sorted(p for p in (REPO / "profiles").glob("*.yaml")
                        if p.name != "recommend.yaml"))

TARGETS: dict[str, Target] = {
    t.name: t for t in [
        Target("nvml", tuple(sorted((FIXTURES / "nvml").glob("*.json"))), tuple(JSON),
               (("facts", "--root", "{tree}", "--nvml", "{file}", "--only", "gpu,nvidia_driver"),
                ("check", "--root", "{tree}", "--nvml", "{file}"),
                ("topo", "--root", "{tree}", "--nvml", "{file}")),
               file_name="nvml.json", cost=1.5),
        Target("fio", (FIXTURES / "bench" / "fio2-sample.json",), tuple(JSON),
               (("bench", "import", "{file}"), ("bench", "import", "--json", "{file}")),
               file_name="fio.json", cost=0.3),
        Target("nccl", (FIXTURES / "bench" / "a100x8-nccl-allreduce.log",), tuple(TEXT),
               (("bench", "import", "{file}"),), file_name="nccl.log", cost=0.3),
        Target("nvbandwidth", tuple(sorted((FIXTURES / "bench").glob("nvbandwidth-*.txt"))),
               tuple(TEXT), (("bench", "import", "{file}"),), file_name="nvbw.txt", cost=0.3),
        Target("bench-result", _bench_files("nodetune.bench/1"), tuple(JSON),
               (("bench", "import", "{file}"),
                ("bench", "import", str(FIXTURES / "bench" / "fio2-sample.json"), "--compare",
                 "{file}"),
                ("bench", "explain", "{file}", "--root", "{tree}", "--nvml", "{nvml}")),
               file_name="saved.json", cost=0.5),
        Target("profile", PROFILES, tuple(YAML),
               (("profiles", "show", "{stem}", "--profiles-dir", "{dir}"),
                ("audit", "--root", "{tree}", "--nvml", "{nvml}", "--profiles-dir", "{dir}",
                 "--profile", "{stem}")),
               file_name="pd/{name}", cost=1.5),
        Target("snapshot", tuple(sorted((FIXTURES / "snapshots").glob("*.tar.gz")))[:2],
               tuple(JSON), (("facts", "--from", "{file}"),), file_name="snap.tar.gz", cost=2.0),
        Target("state", tuple(sorted((FIXTURES / "apply-live").glob("*/state.json"))),
               tuple(JSON), (("rollback", "--root", "{root}", "--state-file", "{file}", "--yes"),),
               file_name="state.json", cost=0.6),
        Target("sysfs", (), tuple(TEXT),
               (("facts", "--root", "{tree}", "--nvml", "{nvml}"),
                ("audit", "--root", "{tree}", "--nvml", "{nvml}", "--profile", "base")),
               cost=2.0),
    ]
}


# ---------------------------------------------------------------------------------------------
# state files: how each case damages one, and what a valid one is (independent of statefile.py)

STATE_TREE = {"etc/machine-id": "0123456789abcdef0123456789abcdef\n",
              "proc/sys/vm/swappiness": "10\n",
              "sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never\n",
              "etc/sysctl.d/99-nodetune.conf": "vm.swappiness = 10\n"}
StateDamage = Callable[[dict[str, Any], random.Random, Path, Path, Target],
                       tuple[bytes, frozenset[int]]]


def _sealed(doc: dict[str, Any]) -> dict[str, Any]:
    if "checksum" in doc:
        doc["checksum"] = statefile.checksum(doc)
    return doc


def _host(doc: dict[str, Any]) -> dict[str, Any]:
    host: dict[str, Any] = next(iter(doc["hosts"].values()))
    return host


def _damage_bytes(doc: dict[str, Any], rng: random.Random, *_: Any) -> tuple[bytes, frozenset[int]]:
    return rng.choice([truncate, flip_bytes, splice])(_dump_json(doc), rng), frozenset()


def _damage_fields(doc: dict[str, Any], rng: random.Random, *_: Any,
                   reseal: bool) -> tuple[bytes, frozenset[int]]:
    """Type swaps, huge numbers, NaN, deep nests, removed keys; resealed: a file made to pass
    its checksum (then only its shape can refuse it)."""
    original = _dump_json(doc)
    doc = mutate_doc(doc, rng)
    if reseal and isinstance(doc, dict) and "checksum" in doc:
        with contextlib.suppress(RecursionError, TypeError, ValueError):
            doc["checksum"] = statefile.checksum(doc)
    try:
        data = _dump_json(doc)
    except RecursionError:  # nested deeper than json can write: the file as it was
        return original, frozenset()
    sealed = isinstance(doc, dict) and "checksum" in doc
    return data, frozenset({3}) if sealed and not reseal else frozenset()


def _damage_base64(doc: dict[str, Any], rng: random.Random, *_: Any
                   ) -> tuple[bytes, frozenset[int]]:
    path = rng.choice(sorted(_host(doc)["files"]))
    garbage = rng.choice(["!!!!", "dm0uc3dhcHBpbmVzcyA9IDYw\n===", "=", "a", "\u00e9" * 4,
                          base64.b64encode(b"x").decode()[:-1] + "*"])
    _host(doc)["files"][path] = {"state": "file", "content_b64": garbage, "mode": "0644"}
    return _dump_json(_sealed(doc)), frozenset({3})


def _restorable_content(doc: dict[str, Any], rng: random.Random, *_: Any
                        ) -> tuple[bytes, frozenset[int]]:
    """A whole, valid file record: a state file that must be accepted."""
    path = rng.choice(sorted(_host(doc)["files"]))
    _host(doc)["files"][path] = {"state": "file", "mode": rng.choice(["0644", "600", "0755"]),
                                 "content_b64": base64.b64encode(b"vm.swappiness = 60\n").decode()}
    return _dump_json(_sealed(doc)), frozenset()


def _stale_checksum(doc: dict[str, Any], rng: random.Random, *_: Any
                    ) -> tuple[bytes, frozenset[int]]:
    """Edited after nodetune wrote it (the checksum left as it was)."""
    if "checksum" not in doc:
        return _dump_json(doc), frozenset()
    runtime = _host(doc)["runtime"]
    path = rng.choice(sorted(runtime))
    runtime[path]["raw"] = rng.choice(["0\n", runtime[path]["raw"] + " ", ""])
    return _dump_json(doc), frozenset({3})


def _escape(doc: dict[str, Any], rng: random.Random, root: Path, host: Path, _t: Target
            ) -> tuple[bytes, frozenset[int]]:
    """A path that leaves the root: by `..`, or through a link inside the root to the host."""
    hostdoc = _host(doc)
    if rng.random() < 0.5:
        depth = "/.." * (len(root.parts) + rng.randint(0, 3))
        bad = f"{depth}{host}/etc/sysctl.d/99-nodetune.conf"
    else:
        (root / "etc/nodetune-link").symlink_to(host / "etc")
        bad = "/etc/nodetune-link/sysctl.d/99-nodetune.conf"
    if rng.random() < 0.5:
        hostdoc["files"][bad] = {"state": "absent", "missing_dirs": []}
    else:
        hostdoc["runtime"][bad] = {"raw": "60\n", "value": "60"}
    return _dump_json(_sealed(doc)), frozenset({4})


def _other_target(doc: dict[str, Any], rng: random.Random, root: Path, host: Path, _t: Target
                  ) -> tuple[bytes, frozenset[int]]:
    """Another root, another host or machine, or rolled back already."""
    what = rng.choice(["root", "hostname", "machine_id", "status"])
    if what == "root":
        doc["root"] = rng.choice([str(host), "/", str(root) + "-copy"])
    elif what == "status":
        doc["status"] = "rolled-back"
    elif "identity" in doc:
        doc["identity"][what] = rng.choice(["other-node", None, ""]) if what == "machine_id" \
            else rng.choice(["other-node", ""])
    else:
        doc["root"] = str(host)
    return _dump_json(_sealed(doc)), frozenset({4})


STATE_DAMAGE: dict[str, StateDamage] = {
    "bytes": _damage_bytes,
    "fields": lambda d, r, *a: _damage_fields(d, r, *a, reseal=False),
    "fields-resealed": lambda d, r, *a: _damage_fields(d, r, *a, reseal=True),
    "base64": _damage_base64,
    "content": _restorable_content,
    "checksum": _stale_checksum,
    "escape": _escape,
    "other-target": _other_target,
}


def state_invalid(data: bytes, root: Path) -> str | None:
    """Why rollback must not act on this state file for `root` (None: it may). Written from
    docs/json-schemas.md (nodetune.state/1) and docs/commands/rollback.md."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("nodetune.state/"):
        return "schema"
    if "checksum" in doc and doc["checksum"] != statefile.checksum(doc):
        return "checksum"
    if "checksum" in doc:
        ident = doc.get("identity")
        if not isinstance(ident, dict) or ident.get("hostname") != statefile.identity(
                str(root))["hostname"] or ident.get("machine_id") != statefile.machine_id(
                str(root)):
            return "identity"
    if doc.get("root", "/" if "checksum" not in doc else None) != str(root):
        return "root"
    if doc.get("status", "recorded") not in ("recorded", "applied", "failed", "interrupted"):
        return "status"
    if doc.get("inventory"):
        return "inventory"  # none exists for these cases (and "" means none)
    strings = ("created", "profile", "limit", "rolled_back_at")
    if any(k in doc and doc[k] is not None and not isinstance(doc[k], str) for k in strings) \
            or not isinstance(doc.get("changes", []) or [], list):
        return "field type"
    hosts = doc.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        return "hosts"
    for host in hosts.values():
        why = _host_invalid(host, root)
        if why:
            return why
    return None


def _inside(root: Path, hostpath: Any, follow: bool) -> bool:
    if not isinstance(hostpath, str) or not hostpath.startswith("/") or "\0" in hostpath:
        return False
    joined = os.path.join(os.path.realpath(root), hostpath.lstrip("/"))
    head, name = os.path.split(joined)
    real = os.path.realpath(joined) if follow or name in ("", ".", "..") else \
        os.path.join(os.path.realpath(head), name)
    return real == str(root) or real.startswith(f"{os.path.realpath(root)}/")


def _host_invalid(host: Any, root: Path) -> str | None:
    if not isinstance(host, dict):
        return "host"
    files, runtime = host.get("files") or {}, host.get("runtime") or {}
    kmods, units = host.get("kmods") or {}, host.get("units") or {}
    if not all(isinstance(x, dict) for x in (files, runtime, kmods, units)):
        return "host sections"
    for path, rec in files.items():
        if not _inside(root, path, False) or not isinstance(rec, dict):
            return f"file {path!r}"
        state = rec.get("state")
        if state == "file":
            try:
                base64.b64decode(rec.get("content_b64"), validate=True)
            except (TypeError, ValueError, binascii.Error):
                return "content_b64"
            mode = rec.get("mode", "0644")
            if not isinstance(mode, str) or not re.fullmatch(r"[0-7]{1,5}", mode):
                return "mode"
        elif state == "link":
            if not isinstance(rec.get("target"), str):
                return "link target"
        elif state == "absent":
            dirs = rec.get("missing_dirs") or []
            if not isinstance(dirs, list) or not all(_inside(root, d, False) for d in dirs):
                return "missing_dirs"
        elif state != "directory":
            return "file state"
    for path, rec in runtime.items():
        if not _inside(root, path, True) or not isinstance(rec, dict) or not all(
                isinstance(rec.get(k), str) for k in ("raw", "value")):
            return f"runtime {path!r}"
    if not all(isinstance(v, bool) for v in kmods.values()):
        return "kmods"
    if not all(isinstance(v, dict) and all(isinstance(v.get(k), bool)
                                           for k in ("active", "enabled"))
               for v in units.values()):
        return "units"
    return None


# ---------------------------------------------------------------------------------------------
# running one case


class CaseTimeout(BaseException):  # BaseException: cli.main's "except Exception" must not eat it
    pass


@dataclass
class Outcome:
    target: str
    case: int
    argv: list[str]
    code: int | None
    err: str
    seconds: float
    failure: str | None = None  # None, or the class of failure
    note: str = ""


@dataclass
class Campaign:
    """What the cases found, by target and failure class."""

    outcomes: list[Outcome] = field(default_factory=list)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failure]

    def by_class(self) -> Counter[str]:
        return Counter(f"{o.target}:{o.failure}" for o in self.failures())


def judge(code: int | None, err: str) -> str | None:
    """None when the outcome is one nodetune documents, else the class of failure."""
    if "Traceback" in err:
        return "traceback"
    if "internal error" in err:
        return "internal-error"
    if code not in EXIT_CODES:
        return f"exit-{code}"
    if code == 3:  # one error line; or none where stdout says why (check: "not checked")
        lines = err.splitlines()
        if len(lines) > 1:
            return "error-lines"
        if lines and not lines[0].startswith("nodetune: error: "):
            return "error-format"
    return None


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def fire(_sig: int, _frame: object) -> None:
        raise CaseTimeout

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv: list[str]) -> tuple[int | None, str, str]:
    """nodetune ARGV in this process -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code: int | None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except CaseTimeout:
            raise
        except BaseException as exc:  # what escaped cli.main is the finding
            err.write("Traceback (escaped cli.main)\n" + "".join(
                traceback.format_exception(exc)))
            code = None
    return code, out.getvalue(), err.getvalue()


class Fuzzer:
    """Runs cases of the targets in a work directory; the real inputs are never touched."""

    def __init__(self, work: Path, tree: Path, seed: int = SEED) -> None:
        self.work = work
        self.tree = tree
        self.seed = seed
        self.campaign = Campaign()
        self._snapshots: dict[Path, Path] = {}
        self.state_kind: str | None = None  # one kind of state file damage, else any
        self._sysfs: list[Path] | None = None

    # the inputs ----------------------------------------------------------------------------
    def _case_rng(self, target: str, case: int) -> random.Random:
        return random.Random(f"{self.seed}:{target}:{case}")

    def _sysfs_files(self) -> list[Path]:
        if self._sysfs is None:
            self._sysfs = sorted(p for p in self.tree.rglob("*")
                                 if p.is_file() and not p.is_symlink()
                                 and p.stat().st_size < 65536)
        return self._sysfs

    def _snapshot_dir(self, snap: Path) -> Path:
        if snap not in self._snapshots:
            dest = self.work.parent / "unpacked" / f"{self.work.name}-{len(self._snapshots)}"
            dest.mkdir(parents=True)
            with tarfile.open(snap) as tar:
                tar.extractall(dest, filter="tar")
            self._snapshots[snap] = dest
        return self._snapshots[snap]

    @contextlib.contextmanager
    def prepared(self, target: Target, rng: random.Random) -> Iterator[dict[str, str]]:
        """Write the mutated input; yield the names for the command line; undo."""
        names = {"tree": str(self.tree), "nvml": str(NVML), "dir": str(self.work / "pd")}
        if target.name == "sysfs":
            victim = rng.choice(self._sysfs_files())
            original = victim.read_bytes()
            victim.write_bytes(rng.choice(target.mutations)(original, rng))
            try:
                yield names
            finally:
                victim.write_bytes(original)
            return
        if target.name == "state":
            with self.state_case(target, rng) as state_names:
                yield {**names, **state_names}
            return
        source = rng.choice(target.inputs)
        name = target.file_name.format(name=source.name)
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        names.update(file=str(path), stem=source.stem)
        if target.name == "snapshot":
            self._write_snapshot(self._snapshot_dir(source), path, target, rng)
        else:
            path.write_bytes(rng.choice(target.mutations)(source.read_bytes(), rng))
        yield names

    def _write_snapshot(self, unpacked: Path, dest: Path, target: Target,
                        rng: random.Random) -> None:
        """A snapshot with one of its JSON members mutated, or the archive itself damaged."""
        members = [p for p in sorted(unpacked.rglob("*")) if p.is_file()
                   and (p.suffix == ".json" or rng.random() < 0.01)]
        victim = rng.choice(members)
        original = victim.read_bytes()
        mutation = rng.choice(target.mutations if victim.suffix == ".json" else TEXT)
        victim.write_bytes(mutation(original, rng))
        try:
            with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
                for p in sorted(unpacked.iterdir()):
                    tar.add(p, arcname=p.name)
        finally:
            victim.write_bytes(original)
        if rng.random() < 0.2:  # the archive itself damaged
            dest.write_bytes(rng.choice(BYTES)(dest.read_bytes(), rng))

    # state files ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def state_case(self, target: Target, rng: random.Random) -> Iterator[dict[str, str]]:
        """A real state file made this case root's (sealed, or legacy naming the root), then
        damaged one way; `nodetune rollback` reads it with Ansible replaced by a recorder."""
        root, host = self.work / "root", self.work / "host"
        for tree in (root, host):
            for rel, text in STATE_TREE.items():
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                (tree / rel).write_text(text, encoding="utf-8")
        doc = json.loads(rng.choice(target.inputs).read_text(encoding="utf-8"))
        doc["root"] = str(root)
        if rng.random() < 0.75:  # as nodetune writes it now; else legacy: accepted for its root
            doc["identity"] = statefile.identity(str(root))
            doc["checksum"] = statefile.checksum(doc)
        kind = self.state_kind or rng.choice(sorted(STATE_DAMAGE))
        data, self.state_expect = STATE_DAMAGE[kind](doc, rng, root, host, target)
        path = statefile.state_dir(str(root)) / "20261201T000000Z.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.state_doc, self.state_root, self.state_host = data, root, host
        self.state_before = snapshot(root, with_state=False), snapshot(host)
        self.state_runs: list[bool] = []

        def run(*_args: Any, check: bool, **_kw: Any) -> ansible.RunResult:
            self.state_runs.append(check)
            return ansible.RunResult(status="successful", rc=0, check=check, outcomes=[],
                                     stats={})

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ansible, "run", run)
            yield {"root": str(root), "file": str(path)}

    def state_verdict(self, code: int | None, err: str) -> str | None:
        """Refused with one line and a documented code, or accepted only when valid; never a
        change outside the state directory."""
        after = snapshot(self.state_root, with_state=False), snapshot(self.state_host)
        if after != self.state_before:
            return "changed-outside"
        if self.state_runs:  # accepted: Ansible was asked to restore
            why = state_invalid(self.state_doc, self.state_root)
            return None if why is None and code == 0 else f"accepted-invalid({why})"
        if code not in (3, 4) or len(err.strip().splitlines()) != 1 \
                or not err.startswith("nodetune: error: "):
            return f"refusal-{code}"
        if self.state_expect and code not in self.state_expect:
            return f"refusal-code-{code}"
        return None

    # one case ------------------------------------------------------------------------------
    def run_case(self, target: Target, case: int) -> Outcome:
        rng = self._case_rng(target.name, case)
        for p in self.work.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        command = rng.choice(target.commands)
        with self.prepared(target, rng) as names:
            argv = [a.format(**names) for a in command]
            start = time.perf_counter()
            try:
                with _alarm(CASE_SECONDS):
                    code, _out, err = run_cli(argv)
                failure = judge(code, err)
                if target.name == "state":
                    failure = failure or self.state_verdict(code, err)
            except CaseTimeout:
                code, err, failure = None, "", "hang"
            seconds = time.perf_counter() - start
        outcome = Outcome(target.name, case, argv, code, err, seconds, failure)
        self.campaign.outcomes.append(outcome)
        return outcome


# ---------------------------------------------------------------------------------------------
# nothing written outside the work directory


def stat_digest(*dirs: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for d in dirs:
        for p in d.rglob("*"):
            with contextlib.suppress(OSError):
                st = p.lstat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory, host_tree: Callable[[str], Path]
             ) -> Iterator[tuple[Path, Path]]:
    """A private copy of the real 2x H200 tree (the sysfs cases mutate it) and a work dir."""
    base = tmp_path_factory.mktemp("fuzz")
    for sub in ("unpacked", "cache", "home"):
        (base / sub).mkdir()
    tree = base / "tree"
    shutil.copytree(host_tree("h200x2-vm-gather"), tree, symlinks=True)
    yield base, tree


def facts_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(FACTS.read_text(encoding="utf-8"))
    return doc


# About 100 CPU-seconds shared out among the targets by their cost, so the run takes about 60 s
# on 2 CPUs (pytest -n 2). Cases run in order from 0, so a slower machine runs a prefix of the
# same cases, never different ones; a few run whatever the time.
CI_SECONDS = 100.0
MIN_CASES = 3


def ci_budget(name: str) -> float:
    total = sum(t.cost for t in TARGETS.values())
    return CI_SECONDS * TARGETS[name].cost / total


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_inputs_never_crash(name: str, fuzz_env: tuple[Path, Path],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base, tree = fuzz_env
    work = base / f"work-{name}"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(base / "home"))
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(base / "cache"))
    for var in ("NODETUNE_ROOT", "NODETUNE_PROFILES_DIR", "NODETUNE_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(bench_cmd, "_facts", facts_doc)  # bench import: the H100 node's facts
    watched = (FIXTURES, REPO / "profiles", REPO / "checks")
    before = stat_digest(*watched), sorted(os.listdir(base))
    fuzzer = Fuzzer(work, tree)
    deadline = time.monotonic() + ci_budget(name)
    case = 0
    while case < MIN_CASES or time.monotonic() < deadline:
        fuzzer.run_case(TARGETS[name], case)
        case += 1
    failures = fuzzer.campaign.failures()
    assert not failures, "\n".join(
        f"{o.failure}: nodetune {' '.join(o.argv)} -> {o.code}: {o.err.strip()[-600:]}"
        for o in failures[:5])
    assert (stat_digest(*watched), sorted(os.listdir(base))) == before


@pytest.mark.parametrize("kind", sorted(STATE_DAMAGE))
def test_each_kind_of_damaged_state_file_is_refused_or_valid(
        kind: str, fuzz_env: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way a state file is damaged, a few cases each, whatever the time budget."""
    base, tree = fuzz_env
    work = base / f"work-state-{kind}"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(base / "cache"))
    monkeypatch.delenv("NODETUNE_DEBUG", raising=False)
    fuzzer = Fuzzer(work, tree)
    fuzzer.state_kind = kind
    outcomes = [fuzzer.run_case(TARGETS["state"], case) for case in range(4)]
    assert [o for o in outcomes if o.failure] == []
    if kind in ("base64", "escape", "other-target"):
        assert {o.code for o in outcomes} <= {3, 4} and all(o.code in (3, 4) for o in outcomes)
    if kind == "content":
        assert {o.code for o in outcomes} == {0}  # whole and valid: accepted


# ---------------------------------------------------------------------------------------------
# fio results and saved bench results, case by case: one line naming the file (and field)

FIO_SAMPLE = FIXTURES / "bench" / "fio2-sample.json"
SAVED = FIXTURES / "bench" / "h100x2-fc-vm-bench.json"


def _edit(path: Path, old: str, new: str, count: int = 1) -> str:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    return text.replace(old, new, count)


FIO_BAD = [
    ("nan", _edit(FIO_SAMPLE, '"bw" : 68118', '"bw" : NaN'), "jobs[0].write.bw"),
    ("infinity", _edit(FIO_SAMPLE, '"iops" : 133', '"iops" : -Infinity'), "jobs[0].write.iops"),
    ("string-number", _edit(FIO_SAMPLE, '"bw" : 68118', '"bw" : "68118"'), "jobs[0].write.bw"),
    ("null-object", _edit(FIO_SAMPLE, '"write" : {', '"write" : null, "x": {'), None),
    ("list-object", _edit(FIO_SAMPLE, '"percentile" : {', '"percentile" : [{', 1)
     .replace('"0.00" : 0\n          }', '"0.00" : 0\n          }]', 1), None),
    ("string-job", _edit(FIO_SAMPLE, '"jobs" : [', '"jobs" : ["x", '), "jobs[0]"),
    ("huge", _edit(FIO_SAMPLE, '"bw" : 68118', '"bw" : 1' + "0" * 400), "jobs[0].write.bw"),
    ("truncated", FIO_SAMPLE.read_text(encoding="utf-8")[:1000], "malformed"),
]
SAVED_BAD = [
    ("truncated", SAVED.read_text(encoding="utf-8")[:2000], "is not JSON"),
    ("samples-string", _edit(SAVED, '"samples": [', '"samples": ["fast", '), "samples[0]"),
    ("samples-nan", _edit(SAVED, '"samples": [', '"samples": [NaN, '), "samples[0]"),
    ("metrics-object", _edit(SAVED, '"metrics": [', '"metrics": {"x": [') , None),
    ("suites-string", _edit(SAVED, '"suites": [', '"suites": "x", "y": ['), "suites"),
]


@pytest.fixture
def bench_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NODETUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NODETUNE_DEBUG", raising=False)
    monkeypatch.setattr(bench_cmd, "_facts", facts_doc)
    return tmp_path


def _one_line_exit_3(argv: list[str], *names: str | None) -> str:
    code, _out, err = run_cli(argv)
    assert judge(code, err) is None, err
    assert code == 3, err
    for name in names:
        if name:
            assert name in err, err
    return err


@pytest.mark.parametrize(("text", "field_name"), [c[1:] for c in FIO_BAD],
                         ids=[c[0] for c in FIO_BAD])
def test_bad_fio_json_is_one_line_naming_the_field(bench_env: Path, text: str,
                                                   field_name: str | None) -> None:
    path = bench_env / "fio.json"
    path.write_text(text, encoding="utf-8")
    _one_line_exit_3(["bench", "import", str(path)], str(path), field_name)


@pytest.mark.parametrize(("text", "field_name"), [c[1:] for c in SAVED_BAD],
                         ids=[c[0] for c in SAVED_BAD])
def test_bad_saved_result_is_one_line_for_import_and_compare(bench_env: Path, text: str,
                                                             field_name: str | None) -> None:
    path = bench_env / "saved.json"
    path.write_text(text, encoding="utf-8")
    _one_line_exit_3(["bench", "import", str(path)], str(path), field_name)
    _one_line_exit_3(["bench", "import", str(FIO_SAMPLE), "--compare", str(path)], str(path),
                     field_name)


@pytest.mark.parametrize("target", ["/nonexistent/dir/out.json", "/proc/version", "{tmp}"])
def test_unwritable_save_path_is_one_line(bench_env: Path, target: str) -> None:
    out = target.format(tmp=bench_env)
    err = _one_line_exit_3(["bench", "import", str(FIO_SAMPLE), "--save", out])
    assert out in err or "directory" in err, err
    assert sorted(p.name for p in bench_env.iterdir()) == []  # nothing half-written beside it
