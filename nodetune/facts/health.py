"""The `health` section: what health checks need that no single collector reports.

`health_view(facts, variables)` reads the facts document and returns the section that health
checks (checks/*.yaml) see next to the raw facts and `derived`: GPUs on the PCI bus that NVML
does not see, PCIe links below their maximum, Xid events mapped to GPUs and classified, RDMA
ports, required mounts and modules. Every list item has a `subject` ("GPU3", "mlx5_0/1", "/scratch")
that names it in findings, and the fields that the checks' message templates use.
Nothing here reads the host; values that cannot be known are None.
"""

from __future__ import annotations

import re
from typing import Any

from nodetune.facts import gpudirect as gdr
from nodetune.facts.derived import gpu_model as derived_model
from nodetune.facts.nethealth import History, link_flaps, rdma_ports, roce_ecn
from nodetune.facts.nvlink import links_down

NVIDIA = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")  # VGA and 3D controllers
NVSWITCH_CLASS = "0x0680"  # NVSwitch chips show up as "bridge, other" functions
HW_SLOWDOWN = ("hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
# Default Xid classes (NVIDIA Xid catalog, "Resolution bucket"): hardware faults that need a
# GPU reset or service drain the node; application faults (13, 31, 43, 45) are the job's own.
XID_FATAL = (48, 62, 64, 74, 79, 92, 94, 95, 119, 120, 140, 143, 154)
XID_APP = (13, 31, 43, 45)
NVLINK5_MODELS = ("B200", "GB200", "B300", "GB300")  # Blackwell: NVLink5 counters in NVML

# Which collectors each part of this section reads (the runner gathers only those).
NEEDS: dict[str, tuple[str, ...]] = {
    "gpu": ("pci", "gpu", "kernel"),
    "gpus": ("pci", "gpu", "kernel_log"),
    "pci_gpus": ("pci", "gpu"),
    "links": ("pci", "nic", "rdma", "storage"),
    "rdma_ports": ("rdma",),
    "link_flaps": ("nic", "rdma"),
    "roce_ecn": ("nic", "rdma"),
    "gpudirect": ("kernel", "gpu", "pci", "rdma", "nvidia_driver", "gpudirect_stack"),
    "gpudirect_issues": ("kernel", "gpu", "pci", "rdma", "nvidia_driver", "gpudirect_stack"),
    "required_modules": ("kernel",),
    "filesystems": ("storage",),
    "memory": ("memory",),
    "hugepages": ("memory",),
    "xids": ("kernel_log", "gpu"),
    "sxids": ("kernel_log",),
    "nvswitch_count": ("pci",),
    "imex_required": ("gpu",),
    "imex_channels": ("nvidia_driver",),
    "write_probe": ("write_probe",),  # a runner unit, not a collector (live host only)
    "bench": (),  # bench: checks name their benchmark unit themselves
}

def health_view(facts: dict[str, Any], variables: dict[str, Any] | None = None,
                nvml_requested: bool | None = None,
                history: History | None = None) -> dict[str, Any]:
    """The `health` section for a facts document (its shape: nodetune.facts.sections.Health);
    `variables` tune thresholds and lists.

    `nvml_requested`: whether NVML was asked for (live host, or a recording), so that its
    absence is a fault rather than a choice. `history`: earlier network counter readings of
    this boot, for counter growth and link flaps (nodetune.facts.nethealth).
    """
    var = variables or {}
    pci = [d for d in ((facts.get("pci") or {}).get("devices") or []) if isinstance(d, dict)]
    gpus = [g for g in (facts.get("gpus") or []) if isinstance(g, dict)]
    gpu_section = facts.get("gpu") or {}
    nvml = gpu_section.get("nvml") or {}
    nvml_ok = nvml.get("available")
    pci_gpus = [d for d in pci if d.get("vendor") == NVIDIA
                and str(d.get("class") or "").startswith(GPU_CLASSES)]
    modules = (facts.get("kernel") or {}).get("modules")
    by_addr = {g.get("pci_address"): g for g in gpus}
    nvml_count = sum(1 for g in gpus if g.get("source") == "nvml")
    pci_by_addr = {str(d.get("address")): d for d in pci}
    no_log = _kernel_log_missing(facts)
    unknown: dict[str, str] = {"xids": no_log, "sxids": no_log} if no_log else {}
    history = history or History()
    ports = rdma_ports(facts, var, history, unknown)
    direct = gdr.gpudirect(facts, modules, bool(pci_gpus))
    if direct["available"] is None:
        unknown["gpudirect.available"] = direct["problem"]
    # the table is read only where GPUDirect RDMA matters (GPUs beside an RDMA NIC)
    issues, whys = gdr.known_issues(facts, modules, gdr.path_in_use(direct)) \
        if direct["needed"] else ([], {})
    unknown.update({f"gpudirect_issues.{pos}.applies": why for pos, why in whys.items()})
    gpu_items = [_gpu(g, pci_by_addr.get(str(g.get("pci_address"))) or {},
                      _slot_errors(gpu_section.get("unknown") or {}, slot),
                      var.get("nvlink_links"), pci_by_addr)
                 for slot, g in enumerate(gpus)]
    unknown.update({f"gpus.{slot}.nvlink5": "an NVLink5 GPU whose driver reports no "
                    "NVML_FI_DEV_NVLINK_COUNT_* field values"
                    for slot, item in enumerate(gpu_items) if item["nvlink5"] is None})
    return {
        "gpu": {
            "pci_count": len(pci_gpus) if "pci" in facts else None,
            "nvml_count": nvml_count if nvml_ok else None,
            "count": nvml_count if nvml_ok else (len(gpus) if "gpu" in facts else None),
            "model": _common_model(gpus, pci_by_addr),
            "driver_loaded": _driver_loaded(modules, gpu_section),
            "nvml_ok": nvml_ok,
            "nvml_note": nvml.get("note"),
            "nvml_requested": nvml_requested,
        },
        "gpus": gpu_items,
        "pci_gpus": [_pci_gpu(g, nvml_ok) for g in gpus],
        "links": _links(facts, pci, pci_by_addr),
        "rdma_ports": ports,
        "link_flaps": link_flaps(facts, ports, var, history, unknown),
        "roce_ecn": roce_ecn(facts, ports, unknown),
        "gpudirect": direct,
        "gpudirect_issues": issues,
        "required_modules": [{"subject": m, "loaded": None if modules is None else m in modules}
                             for m in var.get("required_modules") or []],
        "filesystems": _filesystems(facts, list(var.get("required_mounts") or []),
                                    list(var.get("writable_paths") or [])),
        "memory": _memory(facts),
        "hugepages": _hugepages(facts, var.get("hugepages") or {}),
        # An unread kernel log is not a clean one: no events then means unknown, not none.
        "xids": None if no_log else _xids(facts, by_addr, var),
        "sxids": None if no_log else [
            {"subject": f"NVSwitch {e.get('pci_address')}", "code": e.get("code"),
             "fatal": e.get("fatal"), "message": e.get("message")}
            for e in ((facts.get("kernel_log") or {}).get("sxids") or [])],
        "unknown": unknown,
        "nvswitch_count": sum(1 for d in pci if d.get("vendor") == NVIDIA
                              and str(d.get("class") or "").startswith(NVSWITCH_CLASS))
        if "pci" in facts else None,
        "imex_required": _imex_required(gpus, var),
        "imex_dra": (facts.get("nvidia_driver") or {}).get("dra_compute_domains"),
        "imex_channels": (facts.get("nvidia_driver") or {}).get("imex_channels"),
    }


def _gpu_subject(address: str | None, by_addr: dict[Any, dict[str, Any]]) -> str:
    gpu = by_addr.get(address)
    if gpu is not None and gpu.get("index") is not None:
        return f"GPU{gpu['index']}"
    return f"GPU at {address}"


def gpu_model(name: str | None, device_id: str | None = None) -> str | None:
    """Model family of a GPU ("H100", "GB200") from its NVML name or PCI device id."""
    return derived_model(name, device_id)


def _common_model(gpus: list[dict[str, Any]], pci_by_addr: dict[Any, dict[str, Any]]) -> str | None:
    models = {gpu_model(g.get("name"), (pci_by_addr.get(g.get("pci_address")) or {}).get("device"))
              for g in gpus}
    models.discard(None)
    if not models:
        return None
    return models.pop() if len(models) == 1 else "mixed"


def _driver_loaded(modules: list[str] | None, gpu_section: dict[str, Any]) -> bool | None:
    if gpu_section.get("driver_version"):
        return True
    if modules is None:
        return None
    return "nvidia" in modules


def _pci_gpu(gpu: dict[str, Any], nvml_ok: bool | None) -> dict[str, Any]:
    """A GPU found on the PCI bus and whether NVML sees it (None: NVML not used, or the GPU
    is bound to another driver such as vfio-pci on purpose)."""
    seen: bool | None = gpu.get("source") == "nvml"
    if not nvml_ok or (not seen and gpu.get("driver") not in (None, "nvidia")):
        seen = None
    index = gpu.get("index")
    subject = f"GPU{index}" if index is not None else f"GPU at {gpu.get('pci_address')}"
    return {"subject": subject, "pci_address": gpu.get("pci_address"), "seen_by_nvml": seen}


# NVML errors that mean the GPU itself is gone, not that a query is unsupported.
SERIOUS_NVML_ERRORS = ("GpuIsLost", "GPU_IS_LOST", "ResetRequired", "RESET_REQUIRED")


def _slot_errors(unknown: dict[str, Any], slot: int) -> list[str]:
    prefix = f"gpus.{slot}."
    found = {str(v).removeprefix("NVML: ") for k, v in unknown.items()
             if k.startswith(prefix) and any(e in str(v) for e in SERIOUS_NVML_ERRORS)}
    return sorted(found)


def _imex_required(gpus: list[dict[str, Any]], var: dict[str, Any]) -> bool | None:
    """The `require_imex` variable, else whether a GPU belongs to a multi-node NVLink domain
    (NVML fabric info with a non-zero cluster UUID, as on GB200 NVL72 compute trays)."""
    if var.get("require_imex") is not None:
        return bool(var["require_imex"])
    fabrics: list[dict[str, Any]] = [g["fabric"] for g in gpus if isinstance(g.get("fabric"), dict)]
    if not fabrics:
        return False if all(g.get("source") == "nvml" for g in gpus) else None
    return any(str(f.get("cluster_uuid") or "").strip("0-") for f in fabrics)


def _gpu(gpu: dict[str, Any], dev: dict[str, Any], nvml_errors: list[str],
         nvlink_links: int | None = None,
         pci_by_addr: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    pcie = gpu.get("pcie") or {}
    link = dev.get("link") or {}
    cur_w = _first(pcie.get("current_width"), link.get("current_width"))
    max_w = _first(pcie.get("max_width"), link.get("max_width"))
    cur_g = _first(pcie.get("current_gen"), link.get("current_gen"))
    max_g = _first(pcie.get("max_gen"), link.get("max_gen"))
    reasons = gpu.get("clock_event_reasons")
    idle = None if reasons is None else "gpu_idle" in reasons
    ecc = gpu.get("ecc") or {}
    retired = gpu.get("retired_pages")
    nvlink = gpu.get("nvlink") or {}
    links = nvlink.get("links") or []
    fabric = gpu.get("fabric")
    hw = [r for r in (reasons or []) if r in HW_SLOWDOWN]
    state, status, fabric_ok = _fabric(fabric)
    inactive = _first(nvlink.get("inactive"),
                      sum(1 for x in links if x.get("active") is False) if links else None)
    active = _first(nvlink.get("active"),
                    sum(1 for x in links if x.get("active")) if links else None)
    down, expected = links_down(gpu.get("name"), active, inactive,
                                None if nvlink_links is None else int(nvlink_links))
    model = gpu_model(gpu.get("name"), dev.get("device"))
    counted = any(isinstance(x.get("counters"), dict) for x in links if x.get("active"))
    return {
        "subject": f"GPU{gpu.get('index')}",
        "index": gpu.get("index"),
        "pci_address": gpu.get("pci_address"),
        "model": model,
        "idle": idle,
        "current_width": cur_w, "max_width": max_w, "current_gen": cur_g, "max_gen": max_g,
        "width_ok": None if cur_w is None or max_w is None else cur_w >= max_w,
        # Idle GPUs lower their link generation to save power: only judge a busy GPU.
        "gen_ok": None if cur_g is None or max_g is None or idle is not False else cur_g >= max_g,
        "volatile_uncorrected": ecc.get("volatile_uncorrected"),
        # Ampere and later replace page retirement by row remapping (NVML: not supported).
        "page_retirement": True if isinstance(retired, dict) else
        False if isinstance(gpu.get("remapped_rows"), dict) else None,
        "retired_pending": retired.get("pending") if isinstance(retired, dict) else None,
        "retired_total": None if not isinstance(retired, dict) else
        (retired.get("single_bit") or 0) + (retired.get("double_bit") or 0),
        "nvlink_total": _nvlink_total(nvlink, links),
        "nvlink_inactive": inactive,
        "nvlink_down": down,
        "nvlink_expected": expected,
        "hw_slowdown": None if reasons is None else bool(hw),
        "hw_slowdown_reasons": ", ".join(hw),
        "fabric_state": state, "fabric_status": status, "fabric_ok": fabric_ok,
        "fabric_applies": None if gpu.get("source") != "nvml" else fabric_ok is not None,
        **_fabric_health(fabric),
        "recovery_action": gpu.get("recovery_action"),
        "compute_processes": gpu.get("compute_processes"),
        **_nvlink_error_totals(links),
        # None: an NVLink5 GPU with active links whose driver reports none of its counters
        "nvlink5": True if counted else None if model in NVLINK5_MODELS and active else False,
        "nvml_errors": None if gpu.get("source") != "nvml" else ", ".join(nvml_errors),
        **_aer_counts(dev, pci_by_addr or {}),
    }


def _nvlink_total(nvlink: dict[str, Any], links: list[dict[str, Any]]) -> int | None:
    if links:
        return len(links)
    active, inactive = nvlink.get("active"), nvlink.get("inactive")
    if isinstance(active, int) and isinstance(inactive, int):
        return active + inactive
    return None


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _norm(value: Any) -> str | None:
    if value is None:
        return None
    return re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_") or None


def _fabric(fabric: dict[str, Any] | None) -> tuple[str | None, str | None, bool | None]:
    """NVML GPU fabric (NVSwitch / NVL72 probe): (state, status, ok). ok None = no fabric."""
    if not isinstance(fabric, dict):
        return None, None, None
    state = _norm(fabric.get("state"))
    status = _norm(fabric.get("status"))
    if state is None or state.endswith("not_supported"):
        return state, status, None
    ok = state.endswith("completed") and (status is None or status in ("success", "ok"))
    return state, status, ok


def _fabric_health(fabric: Any) -> dict[str, Any]:
    """NVML's fabric health flags; None where the driver or GPU does not report them."""
    health = fabric.get("health") if isinstance(fabric, dict) else None
    health = health if isinstance(health, dict) else {}
    problems = [name for name in ("degraded_bandwidth", "route_unhealthy") if health.get(name)]
    config = health.get("configuration")
    if config not in (None, "none"):
        problems.append(f"configuration: {config}")
    known = health.get("route_unhealthy") is not None or config is not None
    return {
        "fabric_degraded_bandwidth": health.get("degraded_bandwidth"),
        "fabric_healthy": (not problems) if known or problems else None,
        "fabric_problems": ", ".join(problems),
    }


def _nvlink_error_totals(links: list[dict[str, Any]]) -> dict[str, int | None]:
    """Error counters summed over the active links that report them (None: none report)."""
    totals: dict[str, int | None] = {}
    for name, keys in (("nvlink_recovery_errors", ("recovery",)),
                       ("nvlink_replay_errors", ("replay",)),
                       ("nvlink_crc_errors", ("crc_flit", "crc_data"))):
        values = [int(errors[key]) for link in links if link.get("active")
                  for errors in [link.get("errors")] if isinstance(errors, dict)
                  for key in keys if isinstance(errors.get(key), int)]
        totals[name] = sum(values) if values else None
    for name, key in (("nvlink_symbol_errors", "symbol_errors"),
                      ("nvlink_effective_errors", "effective_errors"),
                      ("nvlink_recovery_successful", "recovery_successful"),
                      ("nvlink_recovery_failed", "recovery_failed")):
        values = [int(counters[key]) for link in links if link.get("active")
                  for counters in [link.get("counters")] if isinstance(counters, dict)
                  and isinstance(counters.get(key), int)]
        totals[name] = sum(values) if values else None
    return totals


def _links(facts: dict[str, Any], pci: list[dict[str, Any]],
           pci_by_addr: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """PCIe links of NICs, HCAs and NVMe drives that have trained below their maximum."""
    names: dict[str, str] = {}
    rdma_addrs = set()
    for dev in ((facts.get("rdma") or {}).get("devices") or []):
        names.setdefault(dev.get("pci_address"), dev.get("name"))
        rdma_addrs.add(dev.get("pci_address"))
    for iface in ((facts.get("nic") or {}).get("interfaces") or []):
        names.setdefault(iface.get("pci_address"), iface.get("name"))
    for blk in ((facts.get("storage") or {}).get("block") or []):
        names.setdefault(blk.get("pci_address"), blk.get("name"))
    out = []
    for dev in pci:
        kind = dev.get("kind")
        link = dev.get("link") or {}
        cur_w, max_w = link.get("current_width"), link.get("max_width")
        cur_s, max_s = link.get("current_speed_gts"), link.get("max_speed_gts")
        if kind not in ("nic", "infiniband", "nvme") or not (max_w or max_s):
            continue  # virtual devices (virtio) report no link
        addr = dev.get("address")
        name = names.get(addr or "")
        out.append({
            "subject": f"{name} ({addr})" if name else addr,
            "kind": kind, "pci_address": addr,
            "role": "nvme" if kind == "nvme" else
            "rdma" if kind == "infiniband" or addr in rdma_addrs else "ethernet",
            "current_width": cur_w, "max_width": max_w,
            "current_speed_gts": cur_s, "max_speed_gts": max_s,
            "width_ok": None if not cur_w or not max_w else cur_w >= max_w,
            "speed_ok": None if not cur_s or not max_s else cur_s >= max_s,
            **_aer_counts(dev, pci_by_addr),
        })
    return out


def _aer_counts(dev: dict[str, Any], pci_by_addr: dict[str, dict[str, Any]]
                ) -> dict[str, Any]:
    """PCIe AER totals since boot of a device and of the ports above it (null without AER
    reporting): a failing switch or root port logs the errors of the link, not the device."""
    aer = dev.get("aer") or {}
    ports = [pci_by_addr.get(a) or {} for a in dev.get("path") or []]
    reported = [p for p in ports if isinstance(p.get("aer"), dict)]

    def total(kind: str) -> int | None:
        values = [p["aer"].get(kind) for p in reported]
        values = [v for v in values if isinstance(v, int)]
        return sum(values) if values else None

    failing = [str(p.get("address")) for p in reported
               if (p["aer"].get("fatal") or 0) > 0 or (p["aer"].get("nonfatal") or 0) > 0]
    return {"aer_fatal": aer.get("fatal"), "aer_nonfatal": aer.get("nonfatal"),
            "upstream_aer_fatal": total("fatal"), "upstream_aer_nonfatal": total("nonfatal"),
            "upstream_aer_ports": ", ".join(failing)}




def _filesystems(facts: dict[str, Any], required_mounts: list[str],
                 writable_paths: list[str]) -> list[dict[str, Any]]:
    """Each required mount point (must be a mount of its own) and each path that must be
    writable (judged on the filesystem holding it), with that filesystem's state."""
    mounts = (facts.get("storage") or {}).get("mounts")
    out = []
    for path in list(dict.fromkeys([*required_mounts, *writable_paths])):
        own = path in required_mounts
        item: dict[str, Any] = {"subject": path, "mounted": None, "read_only": None,
                                "mountpoint": None, "fstype": None, "device": None}
        out.append(item)
        if mounts is None:
            continue
        holder = _holding_mount(mounts, path)
        if own and (holder is None or holder.get("mountpoint") != path):
            item["mounted"] = False
            continue
        item["mounted"] = holder is not None
        if holder is not None:
            item.update(read_only=holder.get("read_only"), mountpoint=holder.get("mountpoint"),
                        fstype=holder.get("fstype"), device=holder.get("device"))
    return out


def _holding_mount(mounts: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    """The mount that holds `path`: the longest mount point above it (the last one mounted
    there wins, as the kernel shows the topmost)."""
    best: dict[str, Any] | None = None
    for mount in mounts:
        point = str(mount.get("mountpoint") or "")
        above = point == path or point == "/" or path.startswith(point.rstrip("/") + "/")
        if above and (best is None or len(point) >= len(str(best.get("mountpoint") or ""))):
            best = mount
    return best


def _memory(facts: dict[str, Any]) -> dict[str, Any]:
    mem = facts.get("memory") or {}
    total, avail = mem.get("total_bytes"), mem.get("available_bytes")
    return {"total_bytes": total, "available_bytes": avail,
            "available_gib": None if avail is None else round(avail / 2**30, 1),
            "available_fraction": None if not total or avail is None else round(avail / total, 4)}


def _hugepages(facts: dict[str, Any], required: dict[Any, Any]) -> list[dict[str, Any]]:
    pools = {p.get("size_kb"): p for p in ((facts.get("memory") or {}).get("hugepages") or [])}
    out = []
    for size, count in sorted(required.items(), key=lambda kv: int(kv[0])):
        pool = pools.get(int(size))
        out.append({"subject": f"hugepages-{int(size)}kB", "size_kb": int(size),
                    "free": pool.get("free") if pool else (0 if pools else None),
                    "required": int(count)})
    return out


def _kernel_log_missing(facts: dict[str, Any]) -> str | None:
    """Why the kernel log was not read (None when it was)."""
    if "kernel_log" in facts:
        return None
    status = (facts.get("collectors") or {}).get("kernel_log") or {}
    return str(status.get("error") or "the kernel_log collector did not run")


def _xids(facts: dict[str, Any], by_addr: dict[Any, dict[str, Any]],
          var: dict[str, Any]) -> list[dict[str, Any]]:
    """Xid events of this boot, one item per GPU and code, classified fatal / app / other."""
    log = facts.get("kernel_log") or {}
    fatal = {int(c) for c in var.get("xid_fatal", XID_FATAL)}
    app = {int(c) for c in var.get("xid_app", XID_APP)}
    window = var.get("xid_window_s") or 0
    grouped: dict[tuple[str, int], dict[str, Any]] = {}
    for event in log.get("xids") or []:
        age = event.get("age_s")
        if window and age is not None and age > window:
            continue
        code = int(event.get("code"))
        subject = _gpu_subject(event.get("pci_address"), by_addr)
        item = grouped.get((subject, code))
        if item is None:
            item = grouped[(subject, code)] = {
                "subject": subject, "code": code, "count": 0, "last_age_s": age,
                "class": "fatal" if code in fatal else "app" if code in app else "other",
                "message": event.get("message") or ""}
        item["count"] += 1
        item["last_age_s"] = age
        item["message"] = event.get("message") or item["message"]
    return list(grouped.values())
