"""KubeletConfiguration fragment: static CPU manager, topology manager, static memory manager."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodetune import __version__
from nodetune.facts import cpulist
from nodetune.manifests import GIB, MIB, Options, Rendered, mebibytes
from nodetune.views import templating

if TYPE_CHECKING:
    from nodetune.placement.plan import Placement

# The kubelet's Topology Manager refuses to start on hosts with more NUMA nodes than this
# unless topologyManagerPolicyOptions max-allowable-numa-nodes says otherwise (KEP-4622).
TOPOLOGY_MANAGER_NUMA_LIMIT = 8
EVICTION_MEMORY = 100 * MIB  # the kubelet's default memory.available hard eviction threshold
# The kubelet's other hard eviction defaults, restated because a config file that sets
# evictionHard replaces the whole map.
EVICTION_DEFAULTS = {"nodefs.available": "10%", "nodefs.inodesFree": "5%",
                     "imagefs.available": "15%", "imagefs.inodesFree": "5%"}


# Policy options nodetune writes or weighs: (option, manager, Kubernetes status). Sources: the
# kubelet's CPU/Topology manager docs and KEP-2625/2902/4540/3545/4622.
POLICY_OPTIONS = (
    ("full-pcpus-only", "CPU Manager", "beta 1.22, on by default; GA 1.33"),
    ("distribute-cpus-across-numa", "CPU Manager",
     "alpha 1.23 behind CPUManagerPolicyAlphaOptions; beta 1.33"),
    ("strict-cpu-reservation", "CPU Manager", "alpha 1.32; beta 1.33; GA 1.35"),
    ("prefer-closest-numa-nodes", "Topology Manager", "beta 1.28; GA 1.32"),
    ("max-allowable-numa-nodes", "Topology Manager", "beta 1.31; GA 1.35"),
)


# The kubelet minor version from which nodetune writes an option (its beta or GA default-on
# release; before it the option needs a feature gate).
OPTION_SINCE = {"prefer-closest-numa-nodes": 32, "distribute-cpus-across-numa": 33,
                "strict-cpu-reservation": 33}


def versioned_options(plan: Placement, version: tuple[int, int] | None
                      ) -> tuple[dict[str, str], dict[str, str]]:
    """(cpuManagerPolicyOptions, topologyManagerPolicyOptions) the given kubelet has and this
    node gains from: distribute-cpus-across-numa where a GPU pod spans NUMA nodes,
    prefer-closest-numa-nodes above two CPU NUMA nodes (with two, every set is the closest),
    strict-cpu-reservation so that no pod lands on the reserved system cores."""
    if version is None:
        return {}, {}
    minor = version[1]
    spans = len([g for g in plan.groups if g.numa_node is not None]) > 1
    cpu: dict[str, str] = {}
    topology: dict[str, str] = {}
    if minor >= OPTION_SINCE["distribute-cpus-across-numa"] and spans:
        cpu["distribute-cpus-across-numa"] = "true"
    if minor >= OPTION_SINCE["strict-cpu-reservation"] and plan.reserved_cpus:
        cpu["strict-cpu-reservation"] = "true"
    if minor >= OPTION_SINCE["prefer-closest-numa-nodes"] and len(plan.cpu_numa_nodes) > 2:
        topology["prefer-closest-numa-nodes"] = "true"
    return cpu, topology


def option_notes(config: dict[str, Any], plan: Placement,
                 version: tuple[int, int] | None = None) -> list[str]:
    """For each option: written or not, the version it needs, and what DRA leaves moot."""
    written = {**config.get("cpuManagerPolicyOptions", {}),
               **config.get("topologyManagerPolicyOptions", {})}
    spans = len([g for g in plan.groups if g.numa_node is not None]) > 1
    target = f"kubelet 1.{version[1]}" if version else "no --kubernetes-version"

    def needs(option: str) -> str:
        return (f"left off: needs kubelet 1.{OPTION_SINCE[option]}+ ({target}; pass "
                f"--kubernetes-version 1.{OPTION_SINCE[option]} or later to write it)")

    why_not = {
        "full-pcpus-only": "SMT is off, so every CPU is a whole core already",
        "distribute-cpus-across-numa": ("a pod spanning NUMA nodes would get its CPUs spread "
                                        f"evenly; {needs('distribute-cpus-across-numa')}"
                                        if spans else "every GPU group fits one NUMA node"),
        "strict-cpu-reservation": ("keeps Burstable and BestEffort pods off reservedSystemCPUs "
                                   f"too; {needs('strict-cpu-reservation')}"
                                   if plan.reserved_cpus else "no CPUs are reserved"),
        "prefer-closest-numa-nodes": ("chooses the nearest NUMA set when a pod must span "
                                      f"nodes; {needs('prefer-closest-numa-nodes')}"
                                      if len(plan.cpu_numa_nodes) > 2 else
                                      "no effect with two CPU NUMA nodes or fewer"),
        "max-allowable-numa-nodes": f"{len(plan.numa_nodes)} NUMA nodes, within the default "
                                    f"limit of {TOPOLOGY_MANAGER_NUMA_LIMIT}",
    }
    notes = []
    for option, manager, status in POLICY_OPTIONS:
        state = "written" if option in written else f"not written: {why_not[option]}"
        notes.append(f"{manager} option {option} ({status}): {state}")
    notes.append("with DRA (resource.k8s.io/v1, 1.34+) the Topology Manager does not align "
                 "DRA-allocated GPUs or NICs: its policy then aligns CPUs and memory only, and "
                 "GPU+NIC alignment comes from the claims of `manifests --target dra`")
    return notes


def reserved_memory_bytes(node_bytes: int) -> int:
    """System memory to reserve on one NUMA node: 1 GiB + 1 %, at most 10 % of the node."""
    want = GIB + node_bytes // 100
    return max(min(want, node_bytes // 10) // MIB * MIB, 0)


def topology_policy(plan: Placement) -> tuple[str, str]:
    """(topologyManagerPolicy, why) from how the GPUs sit on NUMA nodes."""
    gpu_nodes = [g for g in plan.groups if g.numa_node is not None]
    unknown = [i for g in plan.groups if g.numa_node is None for i in g.gpus]
    if len(plan.cpu_numa_nodes) <= 1:
        return "single-numa-node", "the host has one CPU NUMA node, so every pod fits in it"
    if len(gpu_nodes) <= 1 and not unknown:
        where = f"NUMA node {gpu_nodes[0].numa_node}" if gpu_nodes else "no NUMA node"
        return "single-numa-node", (f"every GPU sits on {where}, so a pod with all of them "
                                    "still fits one node (CPU-only pods larger than a node are "
                                    "rejected)")
    per = plan.gpus_per_numa_node
    why = (f"GPUs sit on {len(gpu_nodes)} NUMA nodes ({per} per node at most): a pod with more "
           f"than {per} GPUs must span nodes, which single-numa-node would reject; restricted "
           "still admits only the narrowest NUMA set. Use single-numa-node only if every pod "
           f"asks for at most {per} GPUs")
    if unknown:
        why += f"; GPUs {', '.join(map(str, unknown))} report no NUMA node, so they give no hint"
    return "restricted", why


def kubelet_config(plan: Placement, version: tuple[int, int] | None = None
                   ) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    policy, why = topology_policy(plan)
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cpuManagerPolicy": "static",
    }
    if plan.threads_per_core > 1:
        # Beta option, on by default since 1.23: a container only ever gets whole cores.
        config["cpuManagerPolicyOptions"] = {"full-pcpus-only": "true"}
    cpu_options, topology_options = versioned_options(plan, version)
    if cpu_options:
        config["cpuManagerPolicyOptions"] = {**config.get("cpuManagerPolicyOptions", {}),
                                             **cpu_options}
    config["reservedSystemCPUs"] = cpulist.format(plan.reserved_cpus)
    config["topologyManagerPolicy"] = policy
    config["topologyManagerScope"] = "pod"
    if topology_options:
        config["topologyManagerPolicyOptions"] = dict(topology_options)
    numa_count = len(plan.numa_nodes)
    if numa_count > TOPOLOGY_MANAGER_NUMA_LIMIT:
        config["topologyManagerPolicyOptions"] = {
            **config.get("topologyManagerPolicyOptions", {}),
            "max-allowable-numa-nodes": str(numa_count)}
        notes.append(f"{numa_count} NUMA nodes exceed the Topology Manager's default limit of "
                     f"{TOPOLOGY_MANAGER_NUMA_LIMIT}: max-allowable-numa-nodes needs kubelet >= "
                     "1.31 (beta, GA in 1.35), and hint generation grows as 2^nodes, so pod "
                     "admission gets slower on this host")
    reservations = [(n.id, reserved_memory_bytes(n.memory_bytes)) for n in plan.memory_numa_nodes]
    reservations = [(n, b) for n, b in reservations if b > 0]
    total = sum(b for _, b in reservations)
    config["memoryManagerPolicy"] = "Static"
    if total > EVICTION_MEMORY:
        config["systemReserved"] = {"memory": mebibytes(total - EVICTION_MEMORY)}
        config["evictionHard"] = {"memory.available": mebibytes(EVICTION_MEMORY),
                                  **EVICTION_DEFAULTS}
        config["reservedMemory"] = [{"numaNode": n, "limits": {"memory": mebibytes(b)}}
                                    for n, b in reservations]
    else:
        config["memoryManagerPolicy"] = "None"
        notes.append("the NUMA nodes report too little memory to reserve any per node: the "
                     "memory manager stays off")
    cpuless = [n.id for n in plan.memory_numa_nodes if not n.has_cpus]
    if cpuless:
        notes.append(f"NUMA nodes {cpulist.format(cpuless)} have memory but no CPUs (GPU or CXL "
                     "memory); they get a reservation too, so the per-node sum matches")
    return config, [f"topologyManagerPolicy {policy}: {why}", *notes,
                    *option_notes(config, plan, version)]


def render(plan: Placement, options: Options) -> Rendered:
    config, notes = kubelet_config(plan, options.kubelet_version)
    per_node = {n.id: [c for c in plan.reserved_cpus if c in n.cpus] for n in plan.cpu_numa_nodes}
    text = templating.render(
        "manifests/kubelet-config.yaml.j2", config=config, notes=notes + list(plan.notes),
        warnings=list(plan.warnings), node_name=options.node_name, version=__version__,
        reserved=config["reservedSystemCPUs"],
        reserved_per_node=[(n, cpulist.format(c)) for n, c in per_node.items() if c],
        reserved_memory_total=sum(int(r["limits"]["memory"][:-2]) for r in
                                  config.get("reservedMemory", [])))
    return Rendered(target="kubelet", files={"kubelet-config.yaml": text}, objects=[config],
                    notes=notes)
