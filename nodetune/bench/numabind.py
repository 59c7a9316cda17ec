"""Binding a measurement to a NUMA node: its thread to the node's CPUs, its memory to the node.

In-process binding uses sched_setaffinity(2) for the calling thread and set_mempolicy(2)
(MPOL_BIND) for the pages it faults in afterwards, through libnuma's syscall wrappers when
libnuma is installed, else the raw syscall. Subprocess binding prefixes the command with
`numactl --cpunodebind=N --membind=M`. move_pages(2) with no target nodes reports where pages
actually are, which verifies the binding.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nodetune.bench.results import Binding
from nodetune.facts import cpulist

MPOL_DEFAULT = 0
MPOL_BIND = 2

# syscall numbers where libnuma is missing (arch/*/include/uapi/asm/unistd*.h)
_SYSCALLS = {
    "x86_64": {"set_mempolicy": 238, "move_pages": 279},
    "aarch64": {"set_mempolicy": 237, "move_pages": 239},
    "ppc64le": {"set_mempolicy": 261, "move_pages": 301},
}


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: tuple[int, ...]  # online CPUs of the node this process may run on
    memory_bytes: int | None
    free_bytes: int | None


def nodes(facts: dict[str, Any]) -> list[NumaNode]:
    """NUMA nodes with CPUs (usable by this process) and memory; one node 0 when unknown."""
    allowed = os.sched_getaffinity(0)
    found = []
    for node in (facts.get("numa") or {}).get("nodes") or []:
        cpus = tuple(c for c in node.get("cpus") or [] if c in allowed)
        memory = node.get("memory_total_bytes")
        if cpus and (memory is None or memory > 0):
            found.append(NumaNode(int(node["id"]), cpus, memory, node.get("memory_free_bytes")))
    return found or [NumaNode(0, tuple(sorted(allowed)), None, None)]


def one_cpu_per_core(facts: dict[str, Any], cpus: tuple[int, ...]) -> tuple[int, ...]:
    """The first hardware thread of each physical core among `cpus`."""
    topo = {c["id"]: (c.get("socket_id"), c.get("core_id"))
            for c in (facts.get("cpu") or {}).get("cpus") or [] if "id" in c}
    seen: set[tuple[Any, Any]] = set()
    picked = []
    for cpu in sorted(cpus):
        core = topo.get(cpu, (None, cpu))
        if core[1] is None or core not in seen:
            seen.add(core)
            picked.append(cpu)
    return tuple(picked)


def numactl_argv(numactl: str, cpu_node: int, mem_node: int) -> list[str]:
    return [numactl, f"--cpunodebind={cpu_node}", f"--membind={mem_node}"]


def _libnuma() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("numa")
    if not name:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def _call(name: str, *args: Any) -> int:
    lib = _libnuma()
    if lib is not None and hasattr(lib, name):
        func = getattr(lib, name)
    else:
        number = _SYSCALLS.get(platform.machine(), {}).get(name)
        if number is None:
            raise OSError(f"{name}: no libnuma and no syscall number for {platform.machine()}")
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syscall
        args = (ctypes.c_long(number), *args)
    rc = func(*args)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return int(rc)


def set_mempolicy(mode: int, node_ids: tuple[int, ...] = ()) -> None:
    """Memory policy of the calling thread for pages it faults in from now on."""
    if mode == MPOL_DEFAULT:
        _call("set_mempolicy", ctypes.c_int(MPOL_DEFAULT), None, ctypes.c_ulong(0))
        return
    bits = max(node_ids) + 1
    words = (bits + 63) // 64
    mask = (ctypes.c_ulong * words)()
    for node in node_ids:
        mask[node // 64] |= 1 << (node % 64)
    # The kernel reads maxnode - 1 bits (mm/mempolicy.c get_nodes() decrements maxnode; since
    # 2.6.7): pass one more than the highest node.
    _call("set_mempolicy", ctypes.c_int(mode), mask, ctypes.c_ulong(words * 64 + 1))


def page_nodes(address: int, length: int, samples: int = 16) -> tuple[int, ...] | None:
    """The NUMA nodes of up to `samples` pages spread over [address, address + length)."""
    page = os.sysconf("SC_PAGE_SIZE")
    first = address - address % page
    count = max(1, min(samples, length // page))
    step = max(page, (length // count) // page * page)
    pages = (ctypes.c_void_p * count)(*[first + i * step for i in range(count)])
    status = (ctypes.c_int * count)()
    try:
        _call("move_pages", ctypes.c_int(0), ctypes.c_ulong(count), pages, None, status,
              ctypes.c_int(0))
    except OSError:
        return None
    found = sorted({s for s in status if s >= 0})
    return tuple(found) if found else None


@contextlib.contextmanager
def bound_thread(cpus: tuple[int, ...], mem_node: int | None) -> Iterator[Binding]:
    """Run the block on `cpus` with new pages from `mem_node`; restore both afterwards."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    bound_memory = False
    try:
        if mem_node is not None:
            try:
                set_mempolicy(MPOL_BIND, (mem_node,))
                bound_memory = True
            except OSError:
                bound_memory = False
        yield Binding(method="sched_setaffinity+set_mempolicy" if bound_memory
                      else "sched_setaffinity", cpus=cpulist.format(cpus),
                      mem_node=mem_node if bound_memory else None)
    finally:
        if bound_memory:
            set_mempolicy(MPOL_DEFAULT)
        os.sched_setaffinity(0, before)
