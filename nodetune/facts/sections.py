"""The shapes of the sections nodetune computes from the facts: `derived` and `health`.

`Derived` is what `nodetune.facts.derived.derive()` returns, `Health` what
`nodetune.facts.health.health_view()` returns and `CheckRunnerHealth` what the check runner adds
to it. The facts contract is generated from these types (nodetune.facts.shapes); they live apart
from the code that fills them because `nodetune check` imports that code on every start and
declaring some thirty TypedDicts there would cost it about 2 ms.
"""

from __future__ import annotations

from typing import Annotated, TypedDict

from nodetune.facts.model import Keyed

# -- derived ---------------------------------------------------------------------------------


class DerivedNuma(TypedDict):
    node_count: int | None
    cpu_node_count: int | None
    cpuless_node_count: int | None


class DerivedNumaNode(TypedDict):
    id: int | None
    subject: str
    has_cpus: bool
    gpu_count: int
    gpus: list[int | None]
    rdma_nic_count: int
    memory_of_gpu: int | None  # a CPU-less node holding this GPU's memory (Grace, POWER9)


class DerivedPcie(TypedDict):
    current_gen: int | None
    max_gen: int | None
    current_width: int | None
    max_width: int | None
    current_gbps: float | None
    max_gbps: float | None


class NearestNic(TypedDict):
    name: str
    pci_address: str | None
    numa_node: int | None
    path_class: str
    share_switch: bool
    same_numa: bool | None


class DerivedGpu(TypedDict):
    index: int | None
    subject: str
    pci_address: str | None
    numa_node: int | None
    idle: bool | None
    pcie: DerivedPcie
    nic: NearestNic | None
    acs_redirect_ports: list[str] | None
    iommu_translated: bool | None  # the IOMMU translates DMA of the GPU or its nearest RDMA NIC
    nvlink_down: int | None  # the product's NVLinks that are not active (nodetune.facts.nvlink)
    nvlink_expected: int | None


class DerivedNic(TypedDict):
    name: str | None
    subject: str | None
    pci_address: str | None
    numa_node: int | None
    rdma_device: str | None
    irq_cpus: list[int] | None
    irqs_local: bool | None


class Derived(TypedDict):
    """The `derived` section (`derive()`); its paths are part of the facts contract."""

    virtualized: bool | None
    gpu_found: bool
    gpu_count: int
    gpu_model: str | None
    gpu_models: list[str]
    nvswitch_count: int
    rdma_present: bool
    rdma_nic_count: int
    pci_numa_unknown: list[str | None]
    numa: DerivedNuma
    numa_nodes: list[DerivedNumaNode]
    gpus: list[DerivedGpu]
    nics: list[DerivedNic]
    persisted_cmdline_args: Annotated[dict[str, str | bool], Keyed("arg")] | None
    unknown: dict[str, str]


# -- health ----------------------------------------------------------------------------------


class HealthGpuSummary(TypedDict):
    pci_count: int | None
    nvml_count: int | None
    count: int | None
    model: str | None
    driver_loaded: bool | None
    nvml_ok: bool | None
    nvml_note: str | None
    nvml_requested: bool | None


class HealthGpu(TypedDict):
    subject: str
    index: int | None
    pci_address: str | None
    model: str | None
    idle: bool | None
    current_width: int | None
    max_width: int | None
    current_gen: int | None
    max_gen: int | None
    width_ok: bool | None
    gen_ok: bool | None
    volatile_uncorrected: int | None
    page_retirement: bool | None
    retired_pending: bool | None
    retired_total: int | None
    nvlink_total: int | None
    nvlink_inactive: int | None  # link slots NVML reports inactive
    nvlink_down: int | None  # links the product has that are not active (nodetune.facts.nvlink)
    nvlink_expected: int | None  # links the product has (or the profile's nvlink_links)
    hw_slowdown: bool | None
    hw_slowdown_reasons: str
    fabric_state: str | None
    fabric_status: str | None
    fabric_ok: bool | None
    fabric_applies: bool | None
    fabric_degraded_bandwidth: bool | None  # NVML fabric health mask (R550+ drivers)
    fabric_healthy: bool | None  # no unhealthy route, degraded bandwidth or misconfiguration
    fabric_problems: str  # what the health mask flags, comma separated
    recovery_action: str | None  # the driver's recommended recovery: "none", "gpu_reset", ...
    compute_processes: int | None  # processes holding the GPU (NVML)
    nvlink_recovery_errors: int | None  # summed over active links, since the driver loaded
    nvlink_replay_errors: int | None
    nvlink_crc_errors: int | None  # flit and data CRC errors
    # NVLink5 counters (NVML_FI_DEV_NVLINK_COUNT_*) summed over active links; None before
    # Blackwell or where the driver does not report them
    nvlink_symbol_errors: int | None
    nvlink_effective_errors: int | None
    nvlink_recovery_successful: int | None
    nvlink_recovery_failed: int | None
    nvlink5: bool | None  # the GPU reports NVLink5 counters (None: Blackwell, but it does not)
    nvml_errors: str | None
    aer_fatal: int | None  # PCIe AER totals since boot of the GPU (null without AER reporting)
    aer_nonfatal: int | None
    upstream_aer_fatal: int | None  # summed over the switch and root ports above the GPU
    upstream_aer_nonfatal: int | None
    upstream_aer_ports: str


class PciGpu(TypedDict):
    subject: str
    pci_address: str | None
    seen_by_nvml: bool | None


class HealthLink(TypedDict):
    subject: str
    kind: str
    role: str
    pci_address: str
    current_width: int | None
    max_width: int | None
    current_speed_gts: float | None
    max_speed_gts: float | None
    width_ok: bool | None
    speed_ok: bool | None
    aer_fatal: int | None  # PCIe AER totals since boot (null without AER reporting)
    aer_nonfatal: int | None
    upstream_aer_fatal: int | None  # summed over the switch and root ports above the device
    upstream_aer_nonfatal: int | None
    upstream_aer_ports: str  # the ports above it that logged fatal or non-fatal errors


class RdmaPortHealth(TypedDict):
    subject: str
    device: str
    port: int | None
    state: str | None
    phys_state: str | None
    rate_gbps: float | None
    link_layer: str | None
    active: bool | None
    infiniband: bool | None  # link layer InfiniBand (False: RoCE, Ethernet link layer)
    lid: int | None
    sm_lid: int | None
    sm_ok: bool | None  # LID and SM LID both non-zero: a subnet manager configured the port
    counters: Annotated[dict[str, int], Keyed("counter")]  # the error counters as read
    errors_over: str  # counters at or above `rdma_error_thresholds`, "name value (limit N)"
    errors_over_count: int | None  # None when no error counter could be read
    baseline: bool  # an earlier reading of this boot within `rdma_counter_window_s`
    baseline_age_s: float | None
    errors_grown: str  # link-error counters that rose since that reading, "name +N"
    errors_grown_count: int | None  # None without a baseline


class LinkFlaps(TypedDict):
    """Flaps of a physical interface (carrier changes / 2) or an InfiniBand port (link_downed)
    within `link_flap_window_s`."""

    subject: str
    kind: str  # "interface" or "ib_port"
    count: int | None  # carrier_changes or link_downed as read now (since boot)
    flaps: int | None  # within the window; None without a reading in it
    baseline: bool
    window_s: float


class RoceEcnHealth(TypedDict):
    """ECN of a netdev of an RDMA device with a RoCE port (nodetune.facts.nethealth)."""

    subject: str  # "eth2 (mlx5_1)"
    interface: str
    device: str
    ecn_enabled: bool | None  # a priority with reaction and notification point on
    rp_enabled: str  # priorities, "3" or "none"
    np_enabled: str


class GpuDirect(TypedDict):
    needed: bool
    available: bool | None
    via: str | None  # "nvidia_peermem"/"nv_peer_mem" (registered with the RDMA core), "dma-buf"
    problem: str  # why neither path is there (empty when one is)
    dmabuf_ready: bool | None  # every DMA-BUF requirement met (nodetune.facts.gpudirect)
    dmabuf_missing: str  # the requirements not met, comma separated
    dmabuf_unknown: str  # the requirements that could not be read


class GpuDirectIssue(TypedDict):
    """One entry of the known-bad GPUDirect combinations table, judged on this node."""

    subject: str  # the entry's id
    applies: bool | None  # None: a fact it needs (NCCL's version) is unknown
    severity: str
    summary: str
    fix: str
    source: str  # URL


class RequiredModule(TypedDict):
    subject: str
    loaded: bool | None


class Filesystem(TypedDict):
    subject: str
    mounted: bool | None
    read_only: bool | None
    mountpoint: str | None
    fstype: str | None
    device: str | None


class HealthMemory(TypedDict):
    total_bytes: int | None
    available_bytes: int | None
    available_gib: float | None
    available_fraction: float | None


class HugepagesHealth(TypedDict):
    subject: str
    size_kb: int
    free: int | None
    required: int


XidGroup = TypedDict("XidGroup", {"subject": str, "code": int, "count": int, "class": str,
                                  "last_age_s": float | None, "message": str})


class SxidHealth(TypedDict):
    subject: str
    code: int
    fatal: bool
    message: str


class WriteProbe(TypedDict):
    """One mount point of `check --write-probe` (filled in by the check runner)."""

    subject: str
    writable: bool
    error: str


class MemcpyHealth(TypedDict):
    subject: str
    h2d_gbps: float | None
    d2h_gbps: float | None
    floor_gbps: float | None


class AllreduceHealth(TypedDict):
    busbw_gbps: float | None
    floor_gbps: float | None
    gpus: int | None
    result_ok: bool | None
    note: str | None


class GpuBenchHealth(TypedDict):
    """One GPU's quick `bench gpu` run (nodetune.check.bench.gpu_items)."""

    subject: str
    name: str
    gemm_bf16_tflops: float | None
    gemm_floor_tflops: float | None
    hbm_copy_gbps: float | None
    hbm_floor_gbps: float | None
    slow: bool
    why: str
    sm_clock_mhz: float | None
    throttled: str


class BenchHealth(TypedDict):
    """What the check suite's benchmarks measured (filled in by the check runner)."""

    memcpy: list[MemcpyHealth]
    allreduce: AllreduceHealth
    gpu: list[GpuBenchHealth]


class Health(TypedDict):
    """The `health` section (`health_view()`); its paths are part of the facts contract."""

    gpu: HealthGpuSummary
    gpus: list[HealthGpu]
    pci_gpus: list[PciGpu]
    links: list[HealthLink]
    rdma_ports: list[RdmaPortHealth]
    link_flaps: list[LinkFlaps]
    roce_ecn: list[RoceEcnHealth]
    gpudirect: GpuDirect
    gpudirect_issues: list[GpuDirectIssue]
    required_modules: list[RequiredModule]
    filesystems: list[Filesystem]
    memory: HealthMemory
    hugepages: list[HugepagesHealth]
    xids: list[XidGroup] | None  # None when the kernel log could not be read
    sxids: list[SxidHealth] | None
    unknown: dict[str, str]  # why a health fact is null: "xids" -> the kernel log's absence
    nvswitch_count: int | None
    imex_required: bool | None  # a multi-node NVLink system: it needs IMEX
    imex_dra: bool | None  # IMEX runs in ComputeDomain pods: the host's nvidia-imex must not
    imex_channels: int | None


class CheckRunnerHealth(TypedDict):
    """The parts of `health` that the check runner adds after `health_view()`."""

    write_probe: list[WriteProbe] | None
    bench: BenchHealth
