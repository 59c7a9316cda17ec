"""Memory facts: totals, swap, hugepage pools, transparent hugepages, vm sysctls, page size."""

from __future__ import annotations

import math
import os
import re
from dataclasses import field

from nodetune.collectors import Context, register
from nodetune.collectors.numa import parse_meminfo
from nodetune.collectors.sysfs import FactNotes, bracketed
from nodetune.errors import CollectorError
from nodetune.facts.model import FactSet
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"
THP_DIR = "/sys/kernel/mm/transparent_hugepage"


@record(frozen=True, kw_only=True)
class HugepagePool:
    size_kb: int
    total: int | None
    free: int | None
    reserved: int | None
    surplus: int | None


@record(frozen=True, kw_only=True)
class Thp:
    enabled: str | None
    defrag: str | None
    size_bytes: int | None
    shmem_enabled: str | None = None


@record(frozen=True, kw_only=True)
class EdacController:
    name: str  # "mc0"
    mc_name: str | None  # the EDAC driver's name for it: "Skylake Socket#0 IMC#0"
    corrected: int | None  # ce_count: corrected ECC errors since the driver loaded
    uncorrected: int | None  # ue_count


@record(frozen=True, kw_only=True)
class Edac:
    controllers: list[EdacController]
    corrected: int | None  # sums over the controllers; None when one could not be read
    uncorrected: int | None


@record(frozen=True, kw_only=True)
class MemoryFacts(FactSet):
    total_bytes: int | None = None
    available_bytes: int | None = None
    page_size_bytes: int | None = None
    swap_total_bytes: int | None = None
    swappiness: int | None = None
    zone_reclaim_mode: int | None = None
    dirty_ratio: int | None = None
    dirty_background_ratio: int | None = None
    default_hugepage_size_kb: int | None = None
    hugepages: list[HugepagePool] = field(default_factory=list)
    thp: Thp = field(default_factory=lambda: Thp(enabled=None, defrag=None, size_bytes=None))
    edac: Edac | None = None  # None without an EDAC driver (most VMs, or not loaded)


def page_size_from_pmd(pmd_bytes: int) -> int | None:
    """Base page size from the THP (PMD) size: a PMD maps page_size / 8 pages of page_size.

    4 KiB pages -> 2 MiB PMD, 16 KiB -> 32 MiB, 64 KiB -> 512 MiB (arm64 64K kernels).
    """
    page = math.isqrt(pmd_bytes * 8)
    return page if page * page == pmd_bytes * 8 else None


def _pools(root: HostRoot, notes: FactNotes, mem: dict[str, int]) -> list[HugepagePool]:
    pools = []
    for name in root.listdir(HUGEPAGES_DIR):
        m = re.fullmatch(r"hugepages-(\d+)kB", name)
        if not m:
            continue
        base = f"{HUGEPAGES_DIR}/{name}"
        pools.append(HugepagePool(
            size_kb=int(m.group(1)), total=root.read_int(f"{base}/nr_hugepages", None),
            free=root.read_int(f"{base}/free_hugepages", None),
            reserved=root.read_int(f"{base}/resv_hugepages", None),
            surplus=root.read_int(f"{base}/surplus_hugepages", None)))
    if pools:
        notes.source("hugepages", f"{HUGEPAGES_DIR}/hugepages-*kB")
        return sorted(pools, key=lambda p: p.size_kb)
    if "Hugepagesize" in mem:  # old kernels: only the default pool, in /proc/meminfo
        notes.source("hugepages", "/proc/meminfo HugePages_*")
        return [HugepagePool(size_kb=mem["Hugepagesize"] // 1024, total=mem.get("HugePages_Total"),
                             free=mem.get("HugePages_Free"), reserved=mem.get("HugePages_Rsvd"),
                             surplus=mem.get("HugePages_Surp"))]
    notes.missing("hugepages", f"neither {HUGEPAGES_DIR} nor Hugepagesize in /proc/meminfo")
    return []


def _thp(root: HostRoot, notes: FactNotes) -> Thp:
    choices = {}
    for name in ("enabled", "defrag", "shmem_enabled"):
        text = notes.text(f"thp.{name}", f"{THP_DIR}/{name}", "kernel without THP, or not captured")
        choices[name] = bracketed(text)[0] if text is not None else None
    size = notes.int("thp.size_bytes", f"{THP_DIR}/hpage_pmd_size", "kernel older than 4.14")
    return Thp(enabled=choices["enabled"], defrag=choices["defrag"], size_bytes=size,
               shmem_enabled=choices["shmem_enabled"])


def _page_size(root: HostRoot, notes: FactNotes, thp: Thp) -> int | None:
    if root.is_live:
        notes.source("page_size_bytes", "sysconf(SC_PAGE_SIZE)")
        return os.sysconf("SC_PAGE_SIZE")
    if thp.size_bytes:
        size = page_size_from_pmd(thp.size_bytes)
        if size is not None:
            notes.source("page_size_bytes",
                         f"{THP_DIR}/hpage_pmd_size (PMD size = page size^2 / 8)")
            return size
    flags = re.search(r"^flags\s*:.*$", root.read_text("/proc/cpuinfo", ""), re.M)
    if flags:  # x86 has one base page size
        notes.source("page_size_bytes", "/proc/cpuinfo (x86: always 4 KiB)")
        return 4096
    notes.missing("page_size_bytes", f"not a live host and no {THP_DIR}/hpage_pmd_size "
                                      "to derive it from")
    return None


EDAC_DIR = "/sys/devices/system/edac/mc"


def _edac(root: HostRoot, notes: FactNotes) -> Edac | None:
    names = [n for n in root.listdir(EDAC_DIR) if re.fullmatch(r"mc\d+", n)]
    if not names:
        notes.missing("edac", f"no {EDAC_DIR}/mc* (no EDAC driver for this memory controller: "
                              "usual in VMs; on bare metal load the platform's EDAC module)")
        return None
    controllers = []
    for name in sorted(names, key=lambda n: int(n[2:])):
        base = f"{EDAC_DIR}/{name}"
        controllers.append(EdacController(
            name=name, mc_name=root.read_str(f"{base}/mc_name", None),
            corrected=notes.int(f"edac.{name}.corrected", f"{base}/ce_count"),
            uncorrected=notes.int(f"edac.{name}.uncorrected", f"{base}/ue_count")))

    def total(values: list[int | None]) -> int | None:
        return None if any(v is None for v in values) else sum(v or 0 for v in values)

    return Edac(controllers=controllers,
                corrected=total([c.corrected for c in controllers]),
                uncorrected=total([c.uncorrected for c in controllers]))


@register("memory")
class MemoryCollector:
    """Memory totals, swap, hugepage pools, THP mode, base page size, vm.* sysctls."""

    requires = ("/proc/meminfo",)

    def collect(self, ctx: Context) -> MemoryFacts:
        root = ctx.root
        notes = FactNotes(root)
        text = root.read_text("/proc/meminfo", None)
        if text is None and not root.isdir("/sys/kernel/mm"):
            raise CollectorError(f"cannot read /proc/meminfo under {root.name}",
                                 fix="point --root at a tree that has proc/meminfo")
        mem = parse_meminfo(text) if text is not None else {}
        for fact, key in (("total_bytes", "MemTotal"), ("available_bytes", "MemAvailable"),
                          ("swap_total_bytes", "SwapTotal")):
            if key in mem:
                notes.source(fact, "/proc/meminfo")
            else:
                notes.missing(fact, f"/proc/meminfo has no {key} (kernel older than 3.14?)"
                              if key == "MemAvailable" else f"/proc/meminfo has no {key}")
        hugepagesize = mem.get("Hugepagesize")
        if hugepagesize is not None:
            notes.source("default_hugepage_size_kb", "/proc/meminfo Hugepagesize")
        else:
            notes.missing("default_hugepage_size_kb", "/proc/meminfo has no Hugepagesize")
        vm = {name: notes.int(name, f"/proc/sys/vm/{name}")
              for name in ("swappiness", "zone_reclaim_mode", "dirty_ratio",
                           "dirty_background_ratio")}
        thp = _thp(root, notes)
        return MemoryFacts(
            total_bytes=mem.get("MemTotal"), available_bytes=mem.get("MemAvailable"),
            page_size_bytes=_page_size(root, notes, thp), swap_total_bytes=mem.get("SwapTotal"),
            swappiness=vm["swappiness"], zone_reclaim_mode=vm["zone_reclaim_mode"],
            dirty_ratio=vm["dirty_ratio"], dirty_background_ratio=vm["dirty_background_ratio"],
            default_hugepage_size_kb=hugepagesize // 1024 if hugepagesize is not None else None,
            hugepages=_pools(root, notes, mem), thp=thp, edac=_edac(root, notes),
            sources=notes.sources, unknown=notes.unknown,
        )
