"""NVIDIA GPUs: found in sysfs, enriched through NVML (live or recorded) when it is available.

sysfs gives every NVIDIA display or 3D controller (vendor 0x10de, class 0x0300/0x0302) with its
NUMA node, local CPUs and PCIe link, and works on any --root tree. NVML adds what only the
driver knows: name, UUID, memory, ECC, retired pages / remapped rows, clocks and clock event
reasons, power, temperature, MIG, NVLink and fabric state. Without NVML the GPU list still
comes from sysfs (name and UUID from /proc/driver/nvidia/gpus/<address>/information when the
driver is loaded), the rest is null with the reason, and `gpu.nvml.note` says why.
"""

from __future__ import annotations

import re
from dataclasses import field
from typing import Any

from nodetune.collectors import Context, register
from nodetune.collectors.cpuset import node_cpus, online_cpus
from nodetune.collectors.pci import parse_link_speed, parse_width
from nodetune.facts import cpulist
from nodetune.facts.model import FactSet, to_jsonable
from nodetune.facts.pcie import gen_of
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot
from nodetune.node.nvml import clock_event_reason_names, cuda_version_text, normalize_bus_id

PCI_DIR = "/sys/bus/pci/devices"
NVIDIA_VENDOR = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")  # VGA controller, 3D controller (class >> 8)
DRIVER_VERSION_FILES = ("/sys/module/nvidia/version", "/proc/driver/nvidia/version")
_DRIVER_VERSION = re.compile(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b")


@record(frozen=True, kw_only=True)
class GpuEcc:
    enabled: bool | None
    pending: bool | None
    volatile_uncorrected: int | None
    aggregate_uncorrected: int | None
    volatile_corrected: int | None
    aggregate_corrected: int | None


@record(frozen=True, kw_only=True)
class RetiredPages:
    single_bit: int | None
    double_bit: int | None
    pending: bool | None


@record(frozen=True, kw_only=True)
class RemappedRows:
    correctable: int | None
    uncorrectable: int | None
    pending: bool | None
    failure: bool | None


@record(frozen=True, kw_only=True)
class GpuClocks:
    sm_mhz: int | None
    mem_mhz: int | None
    sm_max_mhz: int | None
    mem_max_mhz: int | None
    sm_app_mhz: int | None  # application clocks: what the GPU runs work at (nvidia-smi -ac)
    mem_app_mhz: int | None
    sm_default_app_mhz: int | None
    mem_default_app_mhz: int | None


@record(frozen=True, kw_only=True)
class GpuMig:
    current: bool | None
    pending: bool | None


@record(frozen=True, kw_only=True)
class GpuPcie:
    current_gen: int | None
    max_gen: int | None
    current_width: int | None
    max_width: int | None


@record(frozen=True, kw_only=True)
class NvlinkErrors:
    """Data-link layer error counters of one link since the driver loaded (None: unsupported)."""
    replay: int | None
    recovery: int | None
    crc_flit: int | None
    crc_data: int | None


@record(frozen=True, kw_only=True)
class Nvlink5Counters:
    """NVLink5 (Blackwell) counters of one link since the driver loaded (None: not reported)."""

    symbol_errors: int | None  # symbols the FEC corrected: judged as a rate (BER), not a count
    effective_errors: int | None  # errors left after FEC: the link replayed the data
    recovery_successful: int | None  # the link went to recovery and came back
    recovery_failed: int | None  # recovery failed: the link went down
    recovery_events: int | None
    fec_history: list[int] | None  # NVML's 16 FEC history bins


@record(frozen=True, kw_only=True)
class NvlinkLink:
    link: int
    active: bool
    peer_pci_address: str | None
    peer_kind: str | None  # "gpu", "switch", "cpu" or None
    errors: NvlinkErrors | None  # active links only; None where NVML does not count them
    counters: Nvlink5Counters | None = None  # NVLink5 GPUs only (NVML_FI_DEV_NVLINK_COUNT_*)


@record(frozen=True, kw_only=True)
class Nvlink:
    links: list[NvlinkLink]
    active: int
    inactive: int
    peers: dict[str, int]  # peer GPU address -> NVLinks joining them (NV# of topo -m)


@record(frozen=True, kw_only=True)
class Fabric:
    state: str | None  # "completed", "in_progress", "not_started"
    status: str | None  # "success" or the NVML error text
    cluster_uuid: str | None
    clique_id: int | None
    health: FabricHealth | None  # NVML's health mask (drivers R550+); None where not reported


@record(frozen=True, kw_only=True)
class FabricHealth:
    """NVML's fabric health mask; each flag None where the GPU does not report it."""
    degraded_bandwidth: bool | None
    route_recovery: bool | None  # the fabric is recovering a route
    route_unhealthy: bool | None
    access_timeout_recovery: bool | None
    configuration: str | None  # "none" or what is misconfigured ("insufficient_nvlinks", ...)


@record(frozen=True, kw_only=True)
class Gpu:
    index: int | None  # NVML index; sysfs order when NVML is absent
    pci_address: str
    name: str | None
    uuid: str | None
    vbios_version: str | None  # as nvidia-smi prints it: "96.00.A5.00.1A"
    numa_node: int | None
    local_cpus: list[int] | None
    memory_total_bytes: int | None
    persistence_mode: bool | None
    ecc: GpuEcc
    retired_pages: RetiredPages | None
    remapped_rows: RemappedRows | None
    clocks: GpuClocks
    clock_event_reasons: list[str] | None
    power_draw_w: float | None
    power_limit_w: float | None
    temperature_c: int | None
    mig: GpuMig
    pcie: GpuPcie
    nvlink: Nvlink | None  # None without NVML: sysfs does not show NVLink state
    fabric: Fabric | None
    source: str  # "nvml" or "sysfs"
    driver: str | None  # kernel driver bound in sysfs: "nvidia", "vfio-pci", ...
    performance_state: int | None  # P-state: 0 is full speed; idle GPUs drop PCIe speed
    memory_numa_node: int | None  # NUMA node of the GPU's own memory (Grace coherent systems)
    device_minor: int | None  # N of the GPU's /dev/nvidiaN
    recovery_action: str | None  # what the driver asks after a fault: "none", "gpu_reset", ...
    compute_processes: int | None  # processes holding the GPU now (a job, or one left behind)
    memory_used_bytes: int | None  # framebuffer in use, the driver's reservation included


@record(frozen=True, kw_only=True)
class NvmlStatus:
    available: bool
    note: str | None
    source: str | None  # "live" or the recording's path


@record(frozen=True, kw_only=True)
class GpuFacts(FactSet):
    gpus: list[Gpu] = field(default_factory=list)
    count: int = 0
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml: NvmlStatus


# -- sysfs ------------------------------------------------------------------------------------

@record
class _SysfsGpu:
    address: str
    numa_node: int | None
    raw_numa_node: str | None
    local_cpus: list[int] | None
    local_cpus_source: str | None
    pcie: GpuPcie
    driver: str | None
    name: str | None
    uuid: str | None
    vbios_version: str | None
    minor: int | None  # "Device Minor" of the driver's information file


def find_sysfs_gpus(root: HostRoot) -> list[_SysfsGpu]:
    gpus = []
    for address in root.listdir(PCI_DIR):
        base = f"{PCI_DIR}/{address}"
        if root.read_str(f"{base}/vendor", "").lower() != NVIDIA_VENDOR:
            continue
        if root.read_str(f"{base}/class", "").lower()[:6] not in GPU_CLASSES:
            continue
        gpus.append(_read_sysfs_gpu(root, address))
    return sorted(gpus, key=lambda g: g.address)


def _read_sysfs_gpu(root: HostRoot, address: str) -> _SysfsGpu:
    base = f"{PCI_DIR}/{address}"
    raw_numa = root.read_str(f"{base}/numa_node", None)
    try:
        numa = int(raw_numa) if raw_numa is not None else None
    except ValueError:
        numa = None
    cpus_text = root.read_str(f"{base}/local_cpulist", None)
    cpus_source = f"{base}/local_cpulist"
    if cpus_text is None:
        cpus_text = root.read_str(f"{base}/local_cpus", None)
        cpus_source = f"{base}/local_cpus"
    info = _driver_info(root, address)
    driver = root.readlink(f"{base}/driver")
    return _SysfsGpu(
        address=address,
        numa_node=numa if numa is not None and numa >= 0 else None,
        raw_numa_node=raw_numa,
        local_cpus=cpulist.parse_or_none(cpus_text) if cpus_text else None,
        local_cpus_source=cpus_source if cpus_text else None,
        pcie=GpuPcie(
            current_gen=gen_of(parse_link_speed(root.read_str(f"{base}/current_link_speed", None))),
            max_gen=gen_of(parse_link_speed(root.read_str(f"{base}/max_link_speed", None))),
            current_width=parse_width(root.read_str(f"{base}/current_link_width", None)),
            max_width=parse_width(root.read_str(f"{base}/max_link_width", None)),
        ),
        driver=driver.rstrip("/").rsplit("/", 1)[-1] if driver else None,
        name=info.get("Model"),
        uuid=info.get("GPU UUID"),
        vbios_version=normalize_vbios(info.get("Video BIOS")),
        minor=int(info["Device Minor"]) if info.get("Device Minor", "").isdigit() else None,
    )


def normalize_vbios(text: str | None) -> str | None:
    """A VBIOS version as NVML and nvidia-smi print it: the driver's information file writes
    "96.00.a5.00.1a", NVML "96.00.A5.00.1A"; "??.??.??.??.??" means the driver could not read it."""
    if not text or "?" in text:
        return None
    return text.strip().upper()


def driver_info_path(address: str) -> str:
    return f"/proc/driver/nvidia/gpus/{address}/information"


def _driver_info(root: HostRoot, address: str) -> dict[str, str]:
    """The NVIDIA driver's own description of a GPU (Model, GPU UUID, Device Minor, ...),
    when loaded."""
    text = root.read_text(driver_info_path(address), "")
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            out[key.strip()] = value.strip()
    return out


def driver_version_from_files(root: HostRoot) -> tuple[str | None, str | None]:
    """(version, file) of the loaded NVIDIA kernel module; (None, None) when not loaded."""
    for path in DRIVER_VERSION_FILES:
        text = root.read_str(path, None)
        match = _DRIVER_VERSION.search(text or "")
        if match:
            return match.group(1), path
    return None, None


def _numa_from_cpus(root: HostRoot, cpus: list[int] | None) -> int | None:
    """The one NUMA node holding all of `cpus` (what `nvidia-smi topo -m` calls NUMA affinity)."""
    if not cpus:
        return None
    online = online_cpus(root)
    nodes = node_cpus(root, online.ids if online else cpus)
    wanted = set(cpus)
    holders = [node for node, ids in nodes.cpus.items() if wanted & set(ids)]
    if len(holders) == 1 and wanted <= set(nodes.cpus[holders[0]]):
        return holders[0]
    return None


# -- merging NVML and sysfs --------------------------------------------------------------------

class _Builder:
    """Builds one Gpu and records where each of its facts came from, or why it is unknown."""

    def __init__(self, slot: int, nvml: dict[str, Any] | None, sysfs: _SysfsGpu | None,
                 no_nvml: str, unknown: dict[str, str], *, no_nvml_anywhere: bool = False) -> None:
        self.slot = slot
        self.nvml = nvml
        self.sysfs = sysfs
        self.no_nvml = no_nvml
        self.no_nvml_anywhere = no_nvml_anywhere
        self.unknown = unknown
        self.errors: dict[str, str] = (nvml or {}).get("errors") or {}

    def why(self, fact: str, nvml_field: str | None = None) -> None:
        """Record why `fact` is null: the NVML error for its field, or NVML's absence."""
        if self.nvml is None:
            # Without NVML every GPU lacks the same facts for the same reason: say it once.
            slot = "*" if self.no_nvml_anywhere else self.slot
            self.unknown[f"gpus.{slot}.{fact}"] = f"needs NVML ({self.no_nvml})"
            return
        key = nvml_field or fact
        while key and key not in self.errors:
            key = key.rpartition(".")[0]
        error = self.errors.get(key) if key else None
        self.unknown[f"gpus.{self.slot}.{fact}"] = f"NVML: {error}" if error else \
            "NVML did not report it"

    def n(self, fact: str, *path: str) -> Any:
        """The NVML value at `path` (default: the fact's own name); null noted with its reason."""
        node: Any = self.nvml
        for key in path or (fact,):
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            self.why(fact, ".".join(path) if path else None)
        return node

    def build(self, index: int | None, root: HostRoot) -> Gpu:
        nv, sy = self.nvml, self.sysfs
        address = sy.address if sy else (normalize_bus_id(nv["pci_bus_id"]) if nv else None) or "?"
        reasons_mask = self.n("clock_event_reasons", "clock_event_reasons_mask")
        return Gpu(
            index=index,
            pci_address=address,
            name=self._named("name"),
            uuid=self._named("uuid"),
            vbios_version=self._vbios(),
            numa_node=self._numa_node(root),
            local_cpus=self._local_cpus(),
            memory_total_bytes=self.n("memory_total_bytes"),
            persistence_mode=self.n("persistence_mode"),
            ecc=GpuEcc(
                enabled=self.n("ecc.enabled", "ecc", "current"),
                pending=self.n("ecc.pending", "ecc", "pending"),
                volatile_uncorrected=self.n("ecc.volatile_uncorrected", "ecc", "volatile",
                                            "uncorrected"),
                aggregate_uncorrected=self.n("ecc.aggregate_uncorrected", "ecc", "aggregate",
                                             "uncorrected"),
                volatile_corrected=self.n("ecc.volatile_corrected", "ecc", "volatile",
                                          "corrected"),
                aggregate_corrected=self.n("ecc.aggregate_corrected", "ecc", "aggregate",
                                           "corrected"),
            ),
            retired_pages=self._retired_pages(),
            remapped_rows=self._remapped_rows(),
            clocks=GpuClocks(**{k: self.n(f"clocks.{k}", "clocks", k)
                                for k in ("sm_mhz", "mem_mhz", "sm_max_mhz", "mem_max_mhz",
                                          "sm_app_mhz", "mem_app_mhz", "sm_default_app_mhz",
                                          "mem_default_app_mhz")}),
            clock_event_reasons=None if reasons_mask is None
            else clock_event_reason_names(reasons_mask),
            power_draw_w=self.n("power_draw_w"),
            power_limit_w=self.n("power_limit_w"),
            temperature_c=self.n("temperature_c"),
            mig=GpuMig(current=self.n("mig.current", "mig", "current"),
                       pending=self.n("mig.pending", "mig", "pending")),
            pcie=self._pcie(),
            nvlink=self._nvlink(),
            fabric=self._fabric(),
            source="nvml" if nv is not None else "sysfs",
            driver=sy.driver if sy else None,
            performance_state=self.n("performance_state"),
            memory_numa_node=self.n("memory_numa_node", "numa_node"),
            device_minor=self._device_minor(),
            recovery_action=self.n("recovery_action"),
            compute_processes=self.n("compute_processes"),
            memory_used_bytes=self.n("memory_used_bytes"),
        )

    def _named(self, fact: str) -> str | None:
        value = self.nvml.get(fact) if self.nvml else None
        if value is None and self.sysfs is not None:
            value = getattr(self.sysfs, fact)
        if value is None:
            self.why(fact)
        return value

    def _vbios(self) -> str | None:
        """NVML's VBIOS version, else the driver's information file."""
        value = normalize_vbios((self.nvml or {}).get("vbios_version"))
        if value is None and self.sysfs is not None:
            value = self.sysfs.vbios_version
        if value is None:
            self.why("vbios_version")
        return value

    def _device_minor(self) -> int | None:
        """From the driver's information file, else NVML's minor number."""
        if self.sysfs is not None and self.sysfs.minor is not None:
            return self.sysfs.minor
        value = (self.nvml or {}).get("minor_number")
        if isinstance(value, int):
            return value
        where = driver_info_path(self.sysfs.address) if self.sysfs else "the driver's " \
            "information file (the GPU is not in sysfs)"
        nvml = "NVML did not report it" if self.nvml is not None else f"no NVML ({self.no_nvml})"
        self.unknown[f"gpus.{self.slot}.device_minor"] = f"no Device Minor in {where}; {nvml}"
        return None

    def _numa_node(self, root: HostRoot) -> int | None:
        sy = self.sysfs
        key = f"gpus.{self.slot}.numa_node"
        if sy is None:
            self.unknown[key] = "the GPU is not in sysfs (NVML only)"
            return None
        if sy.numa_node is not None:
            return sy.numa_node
        derived = _numa_from_cpus(root, self._local_cpus(note=False))
        if derived is None:
            raw = sy.raw_numa_node or "absent"
            self.unknown[key] = f"{PCI_DIR}/{sy.address}/numa_node is {raw} and the GPU's " \
                                "local CPUs are not all on one NUMA node"
        return derived

    def _local_cpus(self, note: bool = True) -> list[int] | None:
        if self.sysfs is not None and self.sysfs.local_cpus is not None:
            return self.sysfs.local_cpus
        value = self.nvml.get("cpu_affinity") if self.nvml else None
        if value is None and note:
            self.unknown[f"gpus.{self.slot}.local_cpus"] = "no local_cpulist in sysfs and no " \
                                                          "NVML CPU affinity"
        return value

    def _retired_pages(self) -> RetiredPages | None:
        data = self.n("retired_pages")
        return RetiredPages(**data) if isinstance(data, dict) else None

    def _remapped_rows(self) -> RemappedRows | None:
        data = self.n("remapped_rows")
        return RemappedRows(**data) if isinstance(data, dict) else None

    def _pcie(self) -> GpuPcie:
        """NVML's view of the link (max = what GPU and host both support), else sysfs's."""
        values = {}
        for key in ("current_gen", "max_gen", "current_width", "max_width"):
            value = (self.nvml or {}).get("pcie", {}).get(key)
            if value is None and self.sysfs is not None:
                value = getattr(self.sysfs.pcie, key)
            if value is None:
                self.unknown[f"gpus.{self.slot}.pcie.{key}"] = "neither NVML nor sysfs reports it"
            values[key] = value
        return GpuPcie(**values)

    def _nvlink(self) -> Nvlink | None:
        if self.nvml is None:
            self.why("nvlink")
            return None
        raw = self.nvml.get("nvlink") or []
        if not raw:
            self.why("nvlink")
        links = [NvlinkLink(link=int(link["link"]), active=bool(link["active"]),
                            peer_pci_address=normalize_bus_id(link.get("remote_pci_bus_id")),
                            peer_kind=link.get("remote_kind"),
                            errors=_nvlink_errors(link.get("errors")),
                            counters=_nvlink5_counters(link.get("counters"))) for link in raw]
        peers = {normalize_bus_id(bus) or bus: int(count)
                 for bus, count in (self.nvml.get("nvlink_peers") or {}).items()}
        active = sum(1 for link in links if link.active)
        return Nvlink(links=links, active=active, inactive=len(links) - active, peers=peers)

    def _fabric(self) -> Fabric | None:
        data = self.n("fabric")
        if not isinstance(data, dict):
            return None
        health = data.get("health")
        return Fabric(state=data.get("state"), status=data.get("status"),
                      cluster_uuid=data.get("cluster_uuid"), clique_id=data.get("clique_id"),
                      health=FabricHealth(**{k: health.get(k) for k in (
                          "degraded_bandwidth", "route_recovery", "route_unhealthy",
                          "access_timeout_recovery", "configuration")})
                      if isinstance(health, dict) else None)


def _nvlink5_counters(data: Any) -> Nvlink5Counters | None:
    if not isinstance(data, dict):
        return None
    return Nvlink5Counters(**{k: data.get(k) for k in (
        "symbol_errors", "effective_errors", "recovery_successful", "recovery_failed",
        "recovery_events", "fec_history")})


def _nvlink_errors(data: Any) -> NvlinkErrors | None:
    if not isinstance(data, dict):
        return None
    return NvlinkErrors(**{k: data.get(k) for k in ("replay", "recovery", "crc_flit", "crc_data")})


# -- the collector ----------------------------------------------------------------------------

def _nvml_dump(ctx: Context) -> tuple[dict[str, Any] | None, str | None]:
    if ctx.nvml is None:
        return None, ctx.nvml_note or "NVML not used"
    try:
        return ctx.nvml.dump(), None
    except Exception as exc:  # a broken driver must not cost the sysfs facts
        return None, f"NVML query failed: {type(exc).__name__}: {exc}"


def collect_gpus(ctx: Context) -> GpuFacts:
    root = ctx.root
    sysfs = find_sysfs_gpus(root)
    dump, note = _nvml_dump(ctx)
    sources: dict[str, str] = {}
    unknown: dict[str, str] = {}
    nvml_devices = sorted((dump or {}).get("devices") or [], key=lambda d: d.get("index", 0))
    by_address = {g.address: g for g in sysfs}
    matched: set[str] = set()
    builders: list[tuple[int | None, _Builder]] = []
    for dev in nvml_devices:
        address = normalize_bus_id(dev.get("pci_bus_id"))
        sy = by_address.get(address or "")
        if sy is not None:
            matched.add(sy.address)
        builders.append((dev.get("index"), _Builder(len(builders), dev, sy, "", unknown)))
    unseen = [g for g in sysfs if g.address not in matched]
    for sy in unseen:
        # NVML sees every GPU the nvidia driver owns; one it lacks is bound elsewhere or lost.
        index = len(builders) if dump is None else None
        if dump is not None:
            unknown[f"gpus.{len(builders)}.index"] = (
                f"not visible to NVML (driver: {sy.driver or 'none'})")
        builders.append((index, _Builder(len(builders), None, sy, note or "not visible to NVML",
                                         unknown, no_nvml_anywhere=dump is None)))
    gpus = [b.build(index, root) for index, b in builders]

    driver_version = (dump or {}).get("driver_version")
    if driver_version:
        sources["driver_version"] = "nvmlSystemGetDriverVersion"
    else:
        driver_version, path = driver_version_from_files(root)
        if path:
            sources["driver_version"] = path
        else:
            unknown["driver_version"] = "no NVIDIA kernel module loaded (" + \
                                        " and ".join(DRIVER_VERSION_FILES) + " absent)"
    cuda = cuda_version_text((dump or {}).get("cuda_driver_version"))
    if cuda:
        sources["cuda_driver_version"] = "nvmlSystemGetCudaDriverVersion"
    else:
        unknown["cuda_driver_version"] = f"needs NVML ({note})" if dump is None else \
            "NVML did not report it"
    sources.update(_field_sources(dump is not None))
    nvml_source = None if dump is None else getattr(ctx.nvml, "origin", "live")
    return GpuFacts(gpus=gpus, count=len(gpus), driver_version=driver_version,
                    cuda_driver_version=cuda,
                    nvml=NvmlStatus(available=dump is not None, note=note, source=nvml_source),
                    sources=sources, unknown=unknown)


def _field_sources(with_nvml: bool) -> dict[str, str]:
    base = f"{PCI_DIR}/<address>"
    out = {
        "gpus": f"{PCI_DIR}/*/vendor,class (0x10de, 0x0300/0x0302)",
        "gpus.*.numa_node": f"{base}/numa_node (-1: the NUMA node holding all local CPUs)",
        "gpus.*.local_cpus": f"{base}/local_cpulist",
        "gpus.*.driver": f"{base}/driver",
    }
    if not with_nvml:
        info = driver_info_path("<address>")
        out.update({"gpus.*.name": info, "gpus.*.uuid": info, "gpus.*.device_minor": info,
                    "gpus.*.vbios_version": info,
                    "gpus.*.pcie": f"{base}/current_link_speed,current_link_width,"
                                   "max_link_speed,max_link_width"})
        return out
    out.update({
        "gpus.*.index": "nvmlDeviceGetHandleByIndex",
        "gpus.*.name": "nvmlDeviceGetName",
        "gpus.*.uuid": "nvmlDeviceGetUUID",
        "gpus.*.vbios_version": f"nvmlDeviceGetVbiosVersion, else {driver_info_path('<address>')}",
        "gpus.*.memory_total_bytes": "nvmlDeviceGetMemoryInfo",
        "gpus.*.persistence_mode": "nvmlDeviceGetPersistenceMode",
        "gpus.*.ecc": "nvmlDeviceGetEccMode, nvmlDeviceGetTotalEccErrors",
        "gpus.*.retired_pages": "nvmlDeviceGetRetiredPages, nvmlDeviceGetRetiredPagesPendingStatus",
        "gpus.*.remapped_rows": "nvmlDeviceGetRemappedRows",
        "gpus.*.clocks": "nvmlDeviceGetClockInfo, nvmlDeviceGetMaxClockInfo, "
                         "nvmlDeviceGetApplicationsClock, nvmlDeviceGetDefaultApplicationsClock",
        "gpus.*.clock_event_reasons": "nvmlDeviceGetCurrentClocksEventReasons",
        "gpus.*.power_draw_w": "nvmlDeviceGetPowerUsage",
        "gpus.*.power_limit_w": "nvmlDeviceGetEnforcedPowerLimit",
        "gpus.*.temperature_c": "nvmlDeviceGetTemperature",
        "gpus.*.mig": "nvmlDeviceGetMigMode",
        "gpus.*.pcie": "nvmlDeviceGetCurrPcieLinkGeneration/Width, "
                       "nvmlDeviceGetMaxPcieLinkGeneration/Width",
        "gpus.*.nvlink": "nvmlDeviceGetNvLinkState, nvmlDeviceGetNvLinkRemotePciInfo, "
                         "nvmlDeviceGetNvLinkRemoteDeviceType, nvmlDeviceGetP2PStatus, "
                         "nvmlDeviceGetFieldValues (NVML_FI_DEV_NVLINK_COUNT_*, NVLink5)",
        "gpus.*.fabric": "nvmlDeviceGetGpuFabricInfoV",
        "gpus.*.recovery_action": "nvmlDeviceGetFieldValues(NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)",
        "gpus.*.compute_processes": "nvmlDeviceGetComputeRunningProcesses",
        "gpus.*.memory_used_bytes": "nvmlDeviceGetMemoryInfo",
        "gpus.*.performance_state": "nvmlDeviceGetPerformanceState",
        "gpus.*.memory_numa_node": "nvmlDeviceGetNumaNodeId",
        "gpus.*.device_minor": f"{driver_info_path('<address>')}, else nvmlDeviceGetMinorNumber",
    })
    return out


@register("gpu")
class GpuCollector:
    """NVIDIA GPUs from sysfs, enriched through NVML (live or a recording) when available."""

    requires = (PCI_DIR, "/proc/driver/nvidia", "NVML (libnvidia-ml.so.1) for most GPU facts")
    # Without persistence mode the driver initialises every GPU when NVML starts, seconds per
    # GPU (docs.nvidia.com/deploy/driver-persistence/index.html): more than a sysfs collector.
    timeout_s = 30.0

    def collect(self, ctx: Context) -> GpuFacts:
        return collect_gpus(ctx)

    def to_sections(self, facts: GpuFacts) -> dict[str, Any]:
        return {
            "gpus": to_jsonable(facts.gpus),
            "gpu": {
                "count": facts.count,
                "driver_version": facts.driver_version,
                "cuda_driver_version": facts.cuda_driver_version,
                "nvml": to_jsonable(facts.nvml),
                "sources": facts.sources,
                "unknown": facts.unknown,
            },
        }
