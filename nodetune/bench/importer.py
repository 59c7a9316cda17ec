"""`nodetune bench import`: results produced elsewhere, judged like nodetune's own runs.

Recognised: nccl-tests text output of any collective (launcher prefixes and log lines inside
the table are skipped), fio JSON (2.x and 3.x layouts), nvbandwidth text output, and nodetune's
own saved results (`--save`).
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from nodetune.bench import expect, fio, nccltests, nvbw
from nodetune.bench.results import (
    MIB,
    SAVED_FIX,
    Binding,
    Metric,
    SuiteResult,
    size_label,
    suites_from_json,
)
from nodetune.errors import BenchError
from nodetune.schemas import BENCH_SCHEMA


def detect(text: str) -> str | None:
    """"nodetune", "fio", "nvbandwidth", "nccl-tests", or None."""
    head = text.lstrip()[:200000]
    if head.startswith("{"):
        if f'"{BENCH_SCHEMA.split("/")[0]}' in head[:200]:
            return "nodetune"
        if '"jobs"' in head:
            return "fio"
    if '"fio version"' in head:
        return "fio"
    if nvbw.parse(head).matrices:
        return "nvbandwidth"
    if nccltests.parse(head):
        return "nccl-tests"
    return None


def import_file(path: str, facts: dict[str, Any] | None = None) -> list[SuiteResult]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror}", fix="give a readable file") from exc
    kind = detect(text)
    if kind == "nodetune":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{path}:{exc.lineno}: this is not JSON ({exc.msg})",
                             fix=SAVED_FIX) from exc
        except RecursionError:
            raise BenchError(f"{path}: JSON nested too deeply", fix=SAVED_FIX) from None
        except ValueError:  # an integer of over 4300 digits
            raise BenchError(f"{path}: an integer of over 4300 digits", fix=SAVED_FIX) from None
        return suites_from_json(doc, path)
    if kind == "fio":
        version, jobs = fio.parse(text, source=path)
        return [SuiteResult(suite="fio", status="ok", runner="fio", source=path,
                            tool_versions={"fio": version or "unknown"}, jobs=jobs,
                            metrics=fio.job_metrics(jobs, "fio"))]
    if kind == "nvbandwidth":
        run = nvbw.parse(text)
        return [SuiteResult(suite="memcpy", status="ok", runner="nvbandwidth", source=path,
                            tool_versions=run.versions, matrices=run.matrices,
                            metrics=nvbw.metrics(run, "memcpy"))]
    if kind == "nccl-tests":
        tables = nccltests.parse(text, name_hint=os.path.basename(path))
        return [_nccl_result(path, t, facts or {}) for t in tables]
    raise BenchError(f"{path}: not nccl-tests output, fio JSON, nvbandwidth output or a saved "
                     "nodetune bench result",
                     fix="import the tool's own output (fio with --output-format=json)")


def suite_name(collective: str | None) -> str:
    return (collective or "nccl").replace("_", "")


def _nccl_result(path: str, table: nccltests.NcclTable, facts: dict[str, Any]) -> SuiteResult:
    suite = suite_name(table.collective)
    expected = _expected(table, facts)
    metrics = [Metric(key=f"{suite}.busbw.{size_label(r.size_bytes)}", suite=suite,
                      name=f"{suite} busbw {size_label(r.size_bytes)}",
                      unit="GB/s", samples=(r.busbw_gbps,), subject=f"{table.ranks or '?'} ranks",
                      size_bytes=r.size_bytes, binding=Binding(method="none"),
                      expected=expected if r.size_bytes >= 512 * MIB else None)
               for r in table.rows if r.size_bytes >= MIB]
    wrong = table.wrong_total or 0
    status, note = "ok", None
    if wrong or (table.out_of_bounds or 0):
        status = "failed"
        note = f"result check: {wrong} elements wrong, {table.out_of_bounds or 0} out of bounds"
    return SuiteResult(suite=suite, status=status, runner="nccl-tests", note=note, source=path,
                       tool_versions=table.versions, collective=table.collective,
                       ranks=table.ranks, hosts=sorted(set(table.hosts)) or None,
                       metrics=metrics, rows=table.rows)


def _expected(table: nccltests.NcclTable, facts: dict[str, Any]) -> Any:
    """This node's expectation, when the run was on this node (or spanned it and others)."""
    if table.collective != "all_reduce" or not facts:
        return None
    hosts = set(table.hosts)
    here = socket.gethostname()
    if here not in hosts and socket.getfqdn() not in hosts:
        return None
    if len(hosts) > 1:
        return expect.network_busbw(facts)
    buses = sorted(expect.normalize_bus_id(str(g.get("pci_address", "")))
                   for g in facts.get("gpus") or [])
    if table.ranks and len(buses) >= table.ranks:
        return expect.allreduce_busbw(facts, buses[: table.ranks])
    return None
