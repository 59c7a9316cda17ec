"""The synthetic host trees: every collector reads them, and each knob plants its fault where
the facts (and so audit and check) see it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodetune.node.source import open_node


def facts_of(host: Any, nvml: Path | str | None = None) -> dict[str, Any]:
    with open_node(root=str(host.root), nvml=str(nvml or host.nvml)) as node:
        doc = node.facts().to_json()
    failed = {k: v for k, v in doc["collectors"].items() if not v["ok"]}
    assert not failed, failed
    return doc


def test_default_dgx_h100_is_a_tuned_node(synthetic_host) -> None:
    doc = facts_of(synthetic_host("synthetic-dgx-h100"))
    cpu, numa, kernel = doc["cpu"], doc["numa"], doc["kernel"]
    assert (cpu["architecture"], cpu["sockets"], cpu["cores"], cpu["threads_per_core"]) == \
        ("x86_64", 2, 96, 2)
    assert cpu["governor"] == "performance" and cpu["frequency_driver"] == "intel_pstate"
    assert [n["cpus"] for n in numa["nodes"]] == [[*range(48), *range(96, 144)],
                                                 [*range(48, 96), *range(144, 192)]]
    assert numa["balancing"] == 0 and kernel["iommu"]["mode"] == "passthrough"
    assert {"nvidia_peermem", "mlx5_core", "nvidia"} <= set(kernel["modules"])
    assert doc["memory"]["thp"]["enabled"] == "madvise"
    gpus = doc["gpus"]
    assert len(gpus) == 8 and {g["name"] for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert all(g["nvlink"]["active"] == 18 and g["nvlink"]["inactive"] == 0 for g in gpus)
    assert all(g["fabric"]["state"] == "completed" for g in gpus)
    assert all(g["pcie"]["current_width"] == 16 and g["pcie"]["current_gen"] == 5 for g in gpus)
    assert [g["numa_node"] for g in gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    rdma = doc["rdma"]["devices"]
    assert len(rdma) == 8 and all(p["state"] == "ACTIVE" for d in rdma for p in d["ports"])
    nvme = [b for b in doc["storage"]["block"] if b["kind"] == "nvme"]
    assert len(nvme) == 10 and {b["scheduler"] for b in nvme} == {"none"}
    assert not any(m["read_only"] for m in doc["storage"]["mounts"] if m["mountpoint"] == "/")
    units = doc["services"]["units"]
    assert units["nvidia-persistenced"]["state"] == "running"
    assert units["nvidia-fabricmanager"]["state"] == "running"
    assert units["irqbalance"]["state"] == "not-running"


def test_dgx_h100_knobs_plant_their_faults(synth, synth_tmp) -> None:
    host = synth.build_dgx_h100(synth_tmp, synth.Options(
        thp="always", numa_balancing=1, missing_modules=("nvidia_peermem",),
        governor="powersave", nvme_scheduler="mq-deadline", ecc_uncorrectable={2: 3},
        nvlink_down={1: 2}, ib_port_down=(4,), read_only_mounts=("/raid",),
        persistenced=False, iommu="translated", fabric_state="in_progress",
        clock_event_reasons={0: 0x8 | 0x40}, gpu_link_width={3: 8}, irqbalance=True,
        nic_irqs_remote=(0,), hugepages_2m=1024))
    doc = facts_of(host)
    assert doc["memory"]["thp"]["enabled"] == "always"
    assert doc["numa"]["balancing"] == 1
    assert "nvidia_peermem" not in doc["kernel"]["modules"]
    assert doc["cpu"]["governor"] == "powersave"
    assert doc["kernel"]["iommu"]["mode"] == "translated"
    nvme = [b for b in doc["storage"]["block"] if b["kind"] == "nvme"]
    assert {b["scheduler"] for b in nvme} == {"mq-deadline"}
    raid = next(m for m in doc["storage"]["mounts"] if m["mountpoint"] == "/raid")
    assert raid["read_only"] is True
    gpus = doc["gpus"]
    assert gpus[2]["ecc"]["volatile_uncorrected"] == 3
    assert gpus[2]["remapped_rows"]["pending"] is True
    assert (gpus[1]["nvlink"]["active"], gpus[1]["nvlink"]["inactive"]) == (16, 2)
    assert gpus[0]["fabric"]["state"] == "in_progress"
    assert {"hw_slowdown", "hw_thermal_slowdown"} <= set(gpus[0]["clock_event_reasons"])
    assert (gpus[3]["pcie"]["current_width"], gpus[3]["pcie"]["max_width"]) == (8, 16)
    down = next(d for d in doc["rdma"]["devices"] if d["name"] == "mlx5_6")  # NIC4
    assert down["ports"][0]["state"] == "DOWN"
    units = doc["services"]["units"]
    assert units["nvidia-persistenced"]["state"] == "not-running"
    assert units["irqbalance"]["state"] == "running"
    nic0 = next(i for i in doc["nic"]["interfaces"] if i.get("rdma_device") == "mlx5_0")
    assert set(nic0["irq_cpus"]) <= set(doc["numa"]["nodes"][1]["cpus"])
    node0 = doc["numa"]["nodes"][0]
    assert node0["hugepages"]["2048"]["total"] == 1024


def test_gb200_tray(synthetic_host, synth, synth_tmp) -> None:
    doc = facts_of(synthetic_host("synthetic-gb200-tray"))
    cpu, numa, memory = doc["cpu"], doc["numa"], doc["memory"]
    assert (cpu["architecture"], cpu["sockets"], cpu["cores"], cpu["threads_per_core"]) == \
        ("aarch64", 2, 144, 1)
    assert len(numa["nodes"]) == 34 and numa["cpuless_nodes"] == list(range(2, 34))
    assert [n["cpus"] for n in numa["nodes"][:2]] == [list(range(72)), list(range(72, 144))]
    with_memory = [n["id"] for n in numa["nodes"] if n["memory_total_bytes"]]
    assert with_memory == [0, 1, 2, 10, 18, 26]
    assert memory["page_size_bytes"] == 65536 and memory["thp"]["size_bytes"] == 512 << 20
    assert [h["size_kb"] for h in memory["hugepages"]] == [2048, 524288, 16777216]
    gpus = doc["gpus"]
    assert [g["numa_node"] for g in gpus] == [0, 0, 1, 1]
    assert [g["memory_numa_node"] for g in gpus] == [2, 10, 18, 26]
    assert all(g["fabric"]["cluster_uuid"] and g["fabric"]["clique_id"] for g in gpus)
    assert doc["services"]["units"]["nvidia-imex"]["state"] == "running"
    assert doc["kernel"]["cmdline_args"]["numa_balancing"] == "disable"
    kinds = sorted(d["ports"][0]["link_layer"] for d in doc["rdma"]["devices"])
    assert kinds == ["Ethernet"] * 2 + ["InfiniBand"] * 4  # 2 BlueField-3, 4 ConnectX-7

    cdmm = synth.build_gb200_tray(synth_tmp, synth.Options(gpu_numa_nodes=False,
                                                            page_size_kb=4))
    doc = facts_of(cdmm)
    assert len(doc["numa"]["nodes"]) == 2 and doc["memory"]["page_size_bytes"] == 4096
    assert all(g["memory_numa_node"] is None for g in doc["gpus"])
