"""fio: a standard job set run by the `fio` binary with JSON output, and a parser for fio JSON.

Jobs (run one after another, each `stonewall`ed): sequential write 1 MiB (only where writing is
allowed), sequential read 1 MiB at depth 16, random read 4 KiB at depth 32; libaio, O_DIRECT
(buffered when the filesystem refuses O_DIRECT, e.g. tmpfs).

On `--dir DIR` fio works on a temporary file that is removed afterwards. On `--device /dev/X`
the jobs only read (fio's `--readonly` guards it) unless `--destructive` is given, which adds
the sequential write job and overwrites the device's data.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from nodetune.bench import expect
from nodetune.bench.base import RunContext, Runner, run_tool, tool_version
from nodetune.bench.results import GIB, MIB, Binding, FioJob, Metric, SuiteResult
from nodetune.errors import BenchError


@dataclass(frozen=True)
class JobSpec:
    name: str
    rw: str
    bs: str
    iodepth: int
    writes: bool


JOBS = (
    JobSpec("seqwrite", "write", "1M", 16, True),
    JobSpec("seqread", "read", "1M", 16, False),
    JobSpec("randread", "randread", "4k", 32, False),
)


def build_argv(target: str, *, device: bool, size: int, runtime_s: int, direct: bool = True,
               destructive: bool = False, binary: str = "fio") -> list[str]:
    """fio argv for the job set on `target` (a file path, or a block device)."""
    writes = not device or destructive
    argv = [binary, "--output-format=json", f"--filename={target}", "--ioengine=libaio",
            f"--direct={1 if direct else 0}", "--time_based=1", f"--runtime={runtime_s}",
            "--group_reporting=1", "--invalidate=1",
            f"--size={size}"]  # on a device: only its first `size` bytes
    if not writes:
        argv.append("--readonly")
    for job in JOBS:
        if job.writes and not writes:
            continue
        argv += [f"--name={job.name}", f"--rw={job.rw}", f"--bs={job.bs}",
                 f"--iodepth={job.iodepth}", "--stonewall"]
    return argv


def parse(stdout: str, source: str = "fio output") -> tuple[str | None, list[FioJob]]:
    """fio JSON (2.x or 3.x layout) -> (fio version, jobs with bandwidths in bytes/s).

    fio 2.x reports `bw` in KiB/s only; fio 3.x adds `bw_bytes`. Latencies are `clat` in
    microseconds (2.x) or `clat_ns` in nanoseconds (3.x). Text before the JSON (fio prints
    warnings to stdout) is skipped. `source` (the file name) starts every error: a string,
    null, NaN or a list where fio writes a number or an object is refused, never guessed.
    """
    fix = "give fio's own --output-format=json output, whole"
    start = stdout.find("{")
    if start < 0:
        raise BenchError(f"{source}: fio printed no JSON", fix="run fio with --output-format=json")
    try:
        doc = json.JSONDecoder().raw_decode(stdout[start:])[0]  # NaN: refused by its field
    except json.JSONDecodeError as exc:
        line = stdout.count("\n", 0, start + exc.pos) + 1
        raise BenchError(f"{source}:{line}: fio JSON is malformed ({exc.msg})", fix=fix) from exc
    except RecursionError:
        raise BenchError(f"{source}: fio JSON nested too deeply", fix=fix) from None
    except ValueError:  # an integer of over 4300 digits
        raise BenchError(f"{source}: fio JSON has an integer of over 4300 digits",
                         fix=fix) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise BenchError(f"{source}: fio JSON has no \"jobs\" list",
                         fix="pass fio's --output-format=json")
    try:
        jobs = [_job(j, f"jobs[{i}]") for i, j in enumerate(doc["jobs"])]
    except _BadField as exc:
        raise BenchError(f"{source}: {exc}", fix=fix) from None
    version = doc.get("fio version")
    return (version if isinstance(version, str) else None), jobs


class _BadField(Exception):
    pass


def _obj(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    if key not in doc:
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise _BadField(f"{where}.{key} is {_kind(value)}, not an object")
    return value


def _num(doc: dict[str, Any], key: str, where: str, default: float = 0.0) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadField(f"{where}.{key} is {_kind(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise _BadField(f"{where}.{key} is {value!r:.30}, not a finite number >= 0")
    return number


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _bw_bytes(side: dict[str, Any], where: str) -> float:
    if "bw_bytes" in side:
        return _num(side, "bw_bytes", where)
    return _num(side, "bw", where) * 1024


def _p99_us(side: dict[str, Any], where: str) -> float | None:
    if "clat_ns" in side:
        key, scale = "clat_ns", 1e-3
    elif "clat" in side:
        key, scale = "clat", 1.0
    else:
        return None
    pct = _obj(_obj(side, key, where), "percentile", f"{where}.{key}")
    if pct.get("99.000000") is None or not side.get("iops"):
        return None
    return _num(pct, "99.000000", f"{where}.{key}.percentile") * scale


def _job(doc: Any, where: str) -> FioJob:
    if not isinstance(doc, dict):
        raise _BadField(f"{where} is {_kind(doc)}, not an object")
    read, write = _obj(doc, "read", where), _obj(doc, "write", where)
    options = {str(k): str(v) for k, v in _obj(doc, "job options", where).items()}
    if "job_runtime" in doc:
        runtime = _num(doc, "job_runtime", where)
    else:
        runtime = max(_num(read, "runtime", f"{where}.read"),
                      _num(write, "runtime", f"{where}.write"))
    name = doc.get("jobname", "?")
    error = doc.get("error", 0)
    if isinstance(error, bool) or not isinstance(error, int):
        raise _BadField(f"{where}.error is {_kind(error)}, not an integer")
    return FioJob(name=str(name), read_bw_bytes=_bw_bytes(read, f"{where}.read"),
                  read_iops=_num(read, "iops", f"{where}.read"),
                  write_bw_bytes=_bw_bytes(write, f"{where}.write"),
                  write_iops=_num(write, "iops", f"{where}.write"),
                  read_clat_p99_us=_p99_us(read, f"{where}.read"),
                  write_clat_p99_us=_p99_us(write, f"{where}.write"), runtime_ms=runtime,
                  error=error, options=options)


def job_metrics(jobs: list[FioJob], suite: str, samples: dict[str, list[FioJob]] | None = None,
                expected_read: Any = None, binding: Binding | None = None) -> list[Metric]:
    """Headline metrics: bandwidth of sequential jobs, IOPS and p99 latency of random ones."""
    runs = samples or {j.name: [j] for j in jobs}
    metrics: list[Metric] = []
    for job in jobs:
        reps = runs.get(job.name, [job])
        random = job.name.startswith("rand") or "rand" in job.options.get("rw", "")
        for side in ("read", "write"):
            iops = [getattr(r, f"{side}_iops") for r in reps]
            if not any(iops):
                continue
            if random:
                metrics.append(Metric(key=f"{suite}.{job.name}.{side}_iops", suite=suite,
                                      name=f"{job.name} {side} IOPS", unit="IOPS",
                                      samples=tuple(iops), subject=job.name, binding=binding))
                lat = [getattr(r, f"{side}_clat_p99_us") for r in reps]
                if all(v is not None for v in lat):
                    metrics.append(Metric(key=f"{suite}.{job.name}.{side}_p99_us", suite=suite,
                                          name=f"{job.name} {side} p99 latency", unit="us",
                                          samples=tuple(lat), subject=job.name,
                                          higher_is_better=False, binding=binding))
            else:
                bw = tuple(getattr(r, f"{side}_bw_bytes") / 1e9 for r in reps)
                metrics.append(Metric(key=f"{suite}.{job.name}.{side}_bw", suite=suite,
                                      name=f"{job.name} {side} bandwidth", unit="GB/s",
                                      samples=bw, subject=job.name, binding=binding,
                                      expected=expected_read if side == "read" else None))
    return metrics


class FioRunner(Runner):
    """Storage: sequential read/write 1 MiB and random read 4 KiB through fio."""

    name = "fio"
    summary = "storage bandwidth and IOPS with fio (--dir DIR or --device /dev/X)"
    commands = ("fio",)
    cmd_timeout = 300

    def check_enabled(self, ctx: RunContext) -> str | None:
        opts = ctx.options
        if not opts.fio_dir and not opts.fio_device:
            return "fio: no target; fix: give --dir DIR (a temporary file there) or " \
                   "--device /dev/X (read-only unless --destructive)"
        if opts.fio_dir and not os.path.isdir(opts.fio_dir):
            return f"fio: --dir {opts.fio_dir} is not a directory; fix: give an existing directory"
        if opts.fio_device and not os.path.exists(opts.fio_device):
            return f"fio: --device {opts.fio_device} does not exist; fix: give a block device"
        return super().check_enabled(ctx)

    def run(self, ctx: RunContext) -> SuiteResult:
        opts = ctx.options
        binary = ctx.which("fio") or "fio"
        device = opts.fio_device is not None
        if device:
            target = str(opts.fio_device)
        else:
            target = os.path.join(str(opts.fio_dir), f"nodetune-fio.{os.getpid()}.tmp")
        size = (opts.sizes[0] if opts.sizes else (256 * MIB if opts.quick else 4 * GIB))
        runtime_s = 2 if opts.quick else 10
        repeat = opts.repeats()
        note = None
        runs: dict[str, list[FioJob]] = {}
        jobs: list[FioJob] = []
        version: str | None = None
        argv: list[str] = []
        jobs_per_run = sum(1 for j in JOBS if not j.writes or not device or opts.destructive)
        ctx.progress.start(f"fio on {target}", repeat * jobs_per_run * runtime_s)
        start = time.monotonic()
        try:
            direct = True
            for _ in range(repeat):
                argv = build_argv(target, device=device, size=size, runtime_s=runtime_s,
                                  direct=direct, destructive=opts.destructive, binary=binary)
                try:
                    version, jobs = parse(run_tool(argv, self.cmd_timeout))
                except BenchError:
                    if not direct:
                        raise
                    direct = False  # e.g. tmpfs rejects O_DIRECT with EINVAL
                    note = "the filesystem refused O_DIRECT; fio ran buffered (page cache)"
                    argv = build_argv(target, device=device, size=size, runtime_s=runtime_s,
                                      direct=False, destructive=opts.destructive, binary=binary)
                    version, jobs = parse(run_tool(argv, self.cmd_timeout))
                for job in jobs:
                    runs.setdefault(job.name, []).append(job)
                ctx.progress.advance(jobs_per_run * runtime_s)
        finally:
            if not device and os.path.exists(target):
                os.unlink(target)
        failed = [j.name for j in jobs if j.error]
        if failed:
            raise BenchError(f"fio jobs failed: {', '.join(failed)}",
                             fix="check the target's permissions and free space")
        expected_read = expect.storage_read(ctx.facts, target, device=device)
        binding = Binding(method="none")
        metrics = job_metrics(jobs, self.name, runs, expected_read, binding)
        return SuiteResult(suite=self.name, status="ok", runner="fio", note=note,
                           tool_versions={"fio": version or tool_version([binary, "--version"])
                                          or "unknown"},
                           argv=argv, seconds=round(time.monotonic() - start, 2),
                           metrics=metrics, jobs=jobs)
