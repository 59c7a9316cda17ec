"""`nodetune bench explain`: for a result below its expectation, walk the path its bytes took
and name the likely cause, the setting that fixes it and the gain to expect.

Paths, from the facts document:

- host copies (memcpy H2D/D2H): GPU -> each PCIe hop (switch ports) -> root port -> the
  GPU's NUMA node, against the NUMA node of the host buffer; link width/speed of every hop
  (current against capable), the GPU's MaxReadReq, the IOMMU mode, pinned or pageable memory;
- GPU-to-GPU copies and all-reduce: the NVLinks active between the GPUs, ACS on the PCIe
  switch ports between them (it forces peer traffic up to the root complex);
- GPU compute (gpu GEMM): the clocks and throttle reasons sampled during the run, the power
  limit;
- HBM (gpu copy/triad): the memory clock, ECC and row-remapping state.

Each finding is a Cause; the first is the likely one. A path with nothing wrong says so and
points at the vendor's diagnostics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nodetune.bench import expect
from nodetune.bench.results import Metric, SuiteResult
from nodetune.facts.pcie import link_gbps

EXPLAIN_SCHEMA = "nodetune.bench-explain/1"
MIN_MRRS = 512  # bytes; below it a GPU's DMA reads are split into too many requests


@dataclass(frozen=True)
class Cause:
    found: str
    fix: str
    gain: str | None = None


@dataclass
class Explanation:
    metric: Metric
    path: list[str] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)
    flag: str | None = None  # why the suite flagged the subject, when it did

    def to_json(self) -> dict[str, Any]:
        m = self.metric
        return {"key": m.key, "name": m.name, "value": round(m.value, 2), "unit": m.unit,
                "expected": m.expected.value if m.expected else None,
                "ratio": None if m.ratio is None else round(m.ratio, 3), "flag": self.flag,
                "path": self.path,
                "likely_cause": _cause_json(self.causes[0]) if self.causes else None,
                "causes": [_cause_json(c) for c in self.causes]}


def _cause_json(c: Cause) -> dict[str, Any]:
    return {"found": c.found, "fix": c.fix, "gain": c.gain}


def _gpu_facts(facts: dict[str, Any], subject: str | None) -> dict[str, Any] | None:
    """"GPU3" -> the facts of CUDA ordinal 3 (PCI bus order)."""
    m = re.fullmatch(r"GPU(\d+)", subject or "")
    if not m:
        return None
    gpus = sorted(facts.get("gpus") or [], key=lambda g: expect.normalize_bus_id(
        str(g.get("pci_address", ""))))
    ordinal = int(m.group(1))
    found: dict[str, Any] | None = gpus[ordinal] if ordinal < len(gpus) else None
    return found


def _first_gpu(m: Metric) -> str | None:
    """"GPU0<-node0" or key "memcpy.h2d_pinned.GPU0.node0.256MiB" -> "GPU0"."""
    found = re.search(r"GPU\d+", m.subject or "") or re.search(r"GPU\d+", m.key)
    return found.group(0) if found else None


def _pci(facts: dict[str, Any], address: str | None) -> dict[str, Any] | None:
    if not address:
        return None
    want = expect.normalize_bus_id(address)
    devices: list[dict[str, Any]] = (facts.get("pci") or {}).get("devices") or []
    for dev in devices:
        if expect.normalize_bus_id(str(dev.get("address", ""))) == want:
            return dev
    return None


def _link_text(link: dict[str, Any]) -> str:
    cur = f"Gen{link.get('current_gen')} x{link.get('current_width')}"
    top = f"Gen{link.get('max_gen')} x{link.get('max_width')}"
    return cur if cur == top else f"{cur} (capable of {top})"


def _hops(facts: dict[str, Any], gpu: dict[str, Any]) -> list[dict[str, Any]]:
    """The GPU's PCI device, then each upstream bridge to the root port."""
    dev = _pci(facts, gpu.get("pci_address"))
    if dev is None:
        return []
    chain = [dev]
    for address in reversed(dev.get("path") or []):
        hop = _pci(facts, address)
        if hop is not None and hop is not dev:
            chain.append(hop)
    return chain


def _link_causes(hops: list[dict[str, Any]], gpu: dict[str, Any]) -> list[Cause]:
    causes = []
    for hop in hops:
        link = hop.get("link") or {}
        cur = link_gbps(link.get("current_gen"), link.get("current_width"))
        top = link_gbps(link.get("max_gen"), link.get("max_width"))
        if not cur or not top:
            continue
        narrow = (link.get("current_width") or 0) < (link.get("max_width") or 0)
        # GPUs lower their link speed (not width) when idle: speed alone counts only if the
        # GPU was busy when read, so name it as a lead
        slow = (link.get("current_gen") or 0) < (link.get("max_gen") or 0)
        if narrow:
            causes.append(Cause(
                f"{hop.get('address')} link trained at {_link_text(link)}",
                "reseat the GPU or riser, check the slot's bifurcation setting in the BIOS, "
                "then confirm with lspci -vv (LnkSta)",
                f"up to {top / cur:.1f}x ({cur:.1f} -> {top:.1f} GB/s)"))
        elif slow and hop is hops[0] and (gpu.get("performance_state") or 0) <= 2:
            causes.append(Cause(
                f"{hop.get('address')} link at {_link_text(link)} while busy",
                "check ASPM and the slot's maximum link speed in the BIOS (PCIe Gen setting)",
                f"up to {top / cur:.1f}x"))
    return causes


def _host_copy(m: Metric, facts: dict[str, Any], suite: SuiteResult,
               gpu: dict[str, Any]) -> Explanation:
    out = Explanation(metric=m)
    hops = _hops(facts, gpu)
    for hop in hops:
        kind = hop.get("port_type") or hop.get("kind") or "device"
        out.path.append(f"{hop.get('address')} {kind} {_link_text(hop.get('link') or {})}")
    gpu_node = gpu.get("numa_node")
    out.path.append(f"socket / NUMA node {gpu_node}")
    mem_node = m.binding.mem_node if m.binding else None
    out.path.append(f"host memory on node {mem_node}" if mem_node is not None
                    else "host memory (unbound)")
    out.causes += _link_causes(hops, gpu)
    if gpu_node is not None and mem_node is not None and gpu_node != mem_node:
        local = _sibling(suite, m, f".node{gpu_node}.")
        gain = f"about {local.value / m.value:.2f}x (this run's node{gpu_node} figure)" \
            if local is not None and m.value else None
        out.causes.append(Cause(f"host buffer on NUMA node {mem_node}, GPU on node {gpu_node}",
                                f"bind the process to node {gpu_node}: nodetune bind "
                                f"--local-rank {(_first_gpu(m) or 'GPU0')[3:]} -- CMD (or "
                                f"numactl --cpunodebind={gpu_node} --membind={gpu_node})",
                                gain))
    if "_pageable" in m.key:
        pinned = next((s for s in suite.metrics
                       if s.key == m.key.replace("_pageable", "_pinned")), None)
        gain = f"about {pinned.value / m.value:.1f}x (this run's pinned figure)" \
            if pinned is not None and m.value else None
        out.causes.append(Cause("pageable host memory: each copy is staged through a bounce "
                                "buffer by the CPU",
                                "pin the host buffers (cudaHostAlloc; PyTorch pin_memory=True)",
                                gain))
    mrrs = hops[0].get("max_read_request_bytes") if hops else None
    if mrrs is not None and mrrs < MIN_MRRS:
        out.causes.append(Cause(f"MaxReadReq {mrrs} bytes on {hops[0].get('address')}",
                                "raise it to 512 or more (setpci CAP_EXP+8.w); nodetune audit "
                                "checks it for NICs (nic.max_read_request)", "a few percent"))
    iommu = ((facts.get("kernel") or {}).get("iommu") or {}).get("mode")
    if iommu in ("translated", "dma"):
        out.causes.append(Cause(f"IOMMU in {iommu} mode: every DMA is translated",
                                "boot with iommu=pt (nodetune apply, setting kernel.iommu)",
                                "5-15% on host copies"))
    if not out.causes:
        out.causes.append(Cause("the path looks right: links at full width and speed, host "
                                "memory local, pinned",
                                "compare with the node's other GPUs; check the GPU's PCIe "
                                "error counters (AER) and the host's memory bandwidth "
                                "(nodetune bench cpu-mem)"))
    return out


def _sibling(suite: SuiteResult, m: Metric, node_part: str) -> Metric | None:
    base = re.sub(r"\.node\d+\.", node_part, m.key)
    return next((s for s in suite.metrics if s.key == base), None)


def _gpu_compute(m: Metric, suite: SuiteResult, gpu: dict[str, Any] | None) -> Explanation:
    out = Explanation(metric=m)
    seen = (suite.telemetry or {}).get(m.subject or "") or {}
    sm = seen.get("sm_clock_mhz") or {}
    top = seen.get("max_sm_clock_mhz") or ((gpu or {}).get("clocks") or {}).get("sm_max_mhz")
    power = seen.get("power_w") or {}
    out.path = [f"{m.subject} {seen.get('name') or (gpu or {}).get('name') or ''}".strip(),
                f"SM clock {sm.get('min')}-{sm.get('max')} MHz (median {sm.get('median')}, "
                f"max {top})" if sm else "SM clock not sampled",
                f"power {power.get('median')} W of {seen.get('power_limit_w')} W"
                if power else "power not sampled"]
    throttled = seen.get("throttled") or []
    median = sm.get("median")
    gain = f"up to {top / median:.2f}x at {top} MHz" if median and top and median < top else None
    if "hw_slowdown" in throttled or "hw_power_brake_slowdown" in throttled:
        out.causes.append(Cause(f"hardware slowdown ({', '.join(throttled)}): the board or "
                                "its power supply asked the GPU to slow down",
                                "drain the node; check PSUs and the board (dcgmi diag -r 3)",
                                gain))
    if "hw_thermal_slowdown" in throttled or "sw_thermal_slowdown" in throttled:
        hottest = (seen.get("temperature_c") or {}).get("max")
        out.causes.append(Cause(f"thermal slowdown at {hottest} C",
                                "check fans, airflow and the GPU's heatsink", gain))
    if "sw_power_cap" in throttled:
        limit = seen.get("power_limit_w")
        out.causes.append(Cause(f"power capped at {limit} W (sw_power_cap), SM clock median "
                                f"{median} MHz", "check the power limit against the SKU's "
                                "default (nvidia-smi -q -d POWER); the cap is normal under "
                                "sustained dense GEMM", gain))
    if "applications_clocks_setting" in (seen.get("clock_event_reasons") or []):
        out.causes.append(Cause("application clocks set below the maximum",
                                "reset them (nvidia-smi -rac)", gain))
    if not out.causes:
        out.causes.append(Cause("clocks and power look normal: the GPU itself is slow",
                                "drain it and run dcgmi diag -r 3; compare with its peers"))
    return out


def _hbm(m: Metric, suite: SuiteResult, gpu: dict[str, Any] | None) -> Explanation:
    out = Explanation(metric=m)
    seen = (suite.telemetry or {}).get(m.subject or "") or {}
    mem = seen.get("mem_clock_mhz") or {}
    top = ((gpu or {}).get("clocks") or {}).get("mem_max_mhz") or mem.get("max")
    out.path = [f"{m.subject} HBM", f"memory clock {mem.get('median')} MHz (max {top})"]
    rows = (gpu or {}).get("remapped_rows") or {}
    if rows.get("failure") or rows.get("pending"):
        out.causes.append(Cause("row remapping " + ("failed" if rows.get("failure") else
                                                    "pending: a reset is needed"),
                                "drain, reset the GPU; replace it if remapping failed"))
    if mem.get("median") and top and mem["median"] < top:
        out.causes.append(Cause(f"memory clock {mem['median']} MHz below {top} MHz",
                                "check application clocks and throttle reasons "
                                "(nvidia-smi -q -d CLOCK,PERFORMANCE)",
                                f"up to {top / mem['median']:.2f}x"))
    if not out.causes:
        out.causes.append(Cause("memory clock and ECC state look normal",
                                "drain it and run dcgmi diag -r 3 (memory bandwidth test)"))
    return out


def _peer(m: Metric, facts: dict[str, Any], suite: SuiteResult) -> Explanation:
    out = Explanation(metric=m)
    ids = re.findall(r"GPU\d+", m.subject or m.key)
    gpus = [g for g in (_gpu_facts(facts, i) for i in ids) if g is not None]
    for g in gpus:
        nv = g.get("nvlink") or {}
        out.path.append(f"{g.get('pci_address')}: {nv.get('active')} NVLinks active, "
                        f"{nv.get('inactive')} inactive")
        if nv.get("inactive"):
            out.causes.append(Cause(f"{nv.get('inactive')} NVLink(s) of {g.get('pci_address')} "
                                    "inactive", "drain; nvidia-smi nvlink -s; reseat or "
                                    "replace the GPU or baseboard"))
        for hop in _hops(facts, g)[1:]:
            if (hop.get("acs") or {}).get("enabled"):
                out.causes.append(Cause(f"ACS enabled on {hop.get('address')}: peer traffic "
                                        "goes up to the root complex",
                                        "disable ACS redirect on the switch ports "
                                        "(nodetune apply, setting pcie.acs)",
                                        "peer copies at switch speed instead of root-port"))
    for var in ("NCCL_P2P_DISABLE", "NCCL_SHM_DISABLE", "NCCL_NVLS_ENABLE"):
        if suite.env.get(var) not in (None, "", "0") and var != "NCCL_NVLS_ENABLE":
            out.causes.append(Cause(f"{var}={suite.env[var]} in the environment",
                                    f"unset {var}"))
    if not out.causes:
        out.causes.append(Cause("links and switch settings look normal",
                                "check nvidia-smi topo -m and nvidia-smi nvlink -e (errors)"))
    return out


def explain(suites: list[SuiteResult], facts: dict[str, Any],
            everything: bool = False) -> list[Explanation]:
    """An explanation for each metric below its expectation's minimum or flagged slow
    (`everything`: each metric with an expectation)."""
    out = []
    for suite in suites:
        flagged = {(f["subject"], f["metric"]): f["why"] for f in suite.flags or []}
        for m in suite.metrics:
            kind = m.key.split(".")[1] if "." in m.key else ""
            flag = flagged.get((m.subject, kind))
            if not (m.status == "low" or flag or (everything and m.expected is not None)):
                continue
            gpu = _gpu_facts(facts, _first_gpu(m))
            if m.key.startswith("memcpy.") and re.match(r"(h2d|d2h)_", kind) and gpu:
                item = _host_copy(m, facts, suite, gpu)
            elif m.key.startswith("gpu.gemm"):
                item = _gpu_compute(m, suite, gpu)
            elif m.key.startswith(("gpu.hbm", "memcpy.d2d")):
                item = _hbm(m, suite, gpu)
            elif m.key.startswith(("memcpy.p2p", "memcpy.peer", "allreduce.")):
                item = _peer(m, facts, suite)
            else:
                item = Explanation(metric=m, causes=[Cause(
                    "no path model for this metric", "compare with the node's peers")])
            item.flag = flag
            out.append(item)
    return out
