"""Fact paths: their syntax, and the registry of every path the facts contract promises.

A fact path is a dotted path into the facts document (`nodetune facts --json`) plus the
`derived` section (`nodetune.facts.derived.derive`):

- `cpu.governor`: a key.
- `gpus[*].pcie.current_width`: every item of a list (one subject per item).
- `gpus[0].name`: one item by position.
- `pci.devices[kind=nic|infiniband,vendor=0x15b3].max_read_request_bytes`: the items whose
  fields match (`|` = any of these values, `,` = and).
- Keys that contain dots (sysctl names, kernel arguments such as `iommu.passthrough`) are
  written plainly and resolve by longest match: `kernel.sysctl.vm.swappiness`.

`is_known(path)` says whether a path is promised by the contract; profile and check loaders use
it so that a typo in a rule is an error at load time, not an eternal "unknown" at run time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

# One line per promised path: "<path> <type>". `<name>` matches any key (dotted keys too);
# a path may continue below a `dict` or `any` leaf. Types: int, num, str, bool, list, dict,
# any, numstr (a string holding a number, such as sysctl values).
CONTRACT = """
cpu.architecture str
cpu.vendor str
cpu.model_name str
cpu.sockets int
cpu.cores int
cpu.threads_per_core int
cpu.smt_active bool
cpu.online list
cpu.offline list
cpu.isolated list
cpu.nohz_full list
cpu.cpus[*].id int
cpu.cpus[*].core_id int
cpu.cpus[*].socket_id int
cpu.cpus[*].numa_node int
cpu.hypervisor bool
cpu.frequency_driver str
cpu.governor str
cpu.governors dict
cpu.energy_performance_preference str
cpu.energy_perf_bias any
cpu.boost bool
cpu.min_freq_khz int
cpu.max_freq_khz int
cpu.cstates[*].name str
cpu.cstates[*].latency_us int
cpu.cstates[*].disabled_cpus int
cpu.cstates_enabled list
cpu.cache_groups[*].level int
cpu.cache_groups[*].cpus list
cpu.unknown dict
numa.nodes[*].id int
numa.nodes[*].cpus list
numa.nodes[*].memory_total_bytes int
numa.nodes[*].memory_free_bytes int
numa.nodes[*].distances list
numa.nodes[*].has_cpus bool
numa.nodes[*].hugepages.<size>.total int
numa.nodes[*].hugepages.<size>.free int
numa.cpuless_nodes list
numa.balancing int
numa.unknown dict
memory.total_bytes int
memory.available_bytes int
memory.page_size_bytes int
memory.swap_total_bytes int
memory.swappiness int
memory.zone_reclaim_mode int
memory.dirty_ratio int
memory.dirty_background_ratio int
memory.default_hugepage_size_kb int
memory.hugepages[*].size_kb int
memory.hugepages[*].total int
memory.hugepages[*].free int
memory.hugepages[*].reserved int
memory.hugepages[*].surplus int
memory.thp.enabled str
memory.thp.defrag str
memory.thp.size_bytes int
memory.unknown dict
kernel.release str
kernel.version str
kernel.hostname str
kernel.cmdline str
kernel.cmdline_args.<arg> any
kernel.modules list
kernel.sysctl.<name> numstr
kernel.persisted.sysctl.<name>.value numstr
kernel.persisted.sysctl.<name>.file str
kernel.persisted.modprobe.<module>.options str
kernel.persisted.modprobe.<module>.blacklisted bool
kernel.persisted.modprobe.<module>.load_at_boot bool
kernel.persisted.modprobe.<module>.file str
kernel.persisted.cmdline str
kernel.cgroup_version int
kernel.iommu.mode str
kernel.iommu.groups int
kernel.virtualization str
kernel.unknown dict
pci.devices[*].address str
pci.devices[*].class str
pci.devices[*].kind str
pci.devices[*].vendor str
pci.devices[*].device str
pci.devices[*].subsystem_vendor str
pci.devices[*].subsystem_device str
pci.devices[*].driver str
pci.devices[*].numa_node int
pci.devices[*].local_cpus list
pci.devices[*].link.current_speed_gts num
pci.devices[*].link.current_width int
pci.devices[*].link.max_speed_gts num
pci.devices[*].link.max_width int
pci.devices[*].link.current_gen int
pci.devices[*].link.max_gen int
pci.devices[*].parent str
pci.devices[*].path list
pci.devices[*].root_port str
pci.devices[*].switch str
pci.devices[*].acs.ctl.<flag> bool
pci.devices[*].acs.source_validation bool
pci.devices[*].max_read_request_bytes int
pci.unknown dict
gpus[*].index int
gpus[*].pci_address str
gpus[*].name str
gpus[*].uuid str
gpus[*].numa_node int
gpus[*].local_cpus list
gpus[*].memory_total_bytes int
gpus[*].persistence_mode bool
gpus[*].ecc.enabled bool
gpus[*].ecc.pending bool
gpus[*].ecc.volatile_uncorrected int
gpus[*].ecc.aggregate_uncorrected int
gpus[*].ecc.volatile_corrected int
gpus[*].retired_pages.single_bit int
gpus[*].retired_pages.double_bit int
gpus[*].retired_pages.pending bool
gpus[*].remapped_rows.correctable int
gpus[*].remapped_rows.uncorrectable int
gpus[*].remapped_rows.pending bool
gpus[*].remapped_rows.failure bool
gpus[*].clocks.sm_mhz int
gpus[*].clocks.mem_mhz int
gpus[*].clocks.sm_max_mhz int
gpus[*].clocks.mem_max_mhz int
gpus[*].clock_event_reasons list
gpus[*].power_draw_w num
gpus[*].power_limit_w num
gpus[*].temperature_c num
gpus[*].mig.current any
gpus[*].mig.pending any
gpus[*].pcie.current_gen int
gpus[*].pcie.max_gen int
gpus[*].pcie.current_width int
gpus[*].pcie.max_width int
gpus[*].nvlink.links[*].link int
gpus[*].nvlink.links[*].active bool
gpus[*].nvlink.links[*].peer_pci_address str
gpus[*].nvlink.links[*].peer_kind str
gpus[*].nvlink.active int
gpus[*].nvlink.inactive int
gpus[*].fabric.state str
gpus[*].fabric.status str
gpus[*].fabric.cluster_uuid str
gpus[*].fabric.clique_id any
gpus[*].source str
gpus[*].device_minor int
gpu.count int
gpu.driver_version str
gpu.cuda_driver_version any
gpu.nvml.available bool
gpu.nvml.note str
gpu.unknown dict
nic.interfaces[*].name str
nic.interfaces[*].driver str
nic.interfaces[*].speed_mbps int
nic.interfaces[*].mtu int
nic.interfaces[*].operstate str
nic.interfaces[*].pci_address str
nic.interfaces[*].numa_node int
nic.interfaces[*].irq_cpus list
nic.interfaces[*].virtual bool
nic.interfaces[*].rdma_device str
nic.unknown dict
rdma.devices[*].name str
rdma.devices[*].pci_address str
rdma.devices[*].numa_node int
rdma.devices[*].fw_ver str
rdma.devices[*].netdevs list
rdma.devices[*].ports[*].port int
rdma.devices[*].ports[*].state str
rdma.devices[*].ports[*].phys_state str
rdma.devices[*].ports[*].rate str
rdma.devices[*].ports[*].rate_gbps num
rdma.devices[*].ports[*].link_layer str
rdma.devices[*].ports[*].active_mtu int
rdma.unknown dict
storage.block[*].name str
storage.block[*].kind str
storage.block[*].rotational bool
storage.block[*].scheduler str
storage.block[*].schedulers list
storage.block[*].read_ahead_kb int
storage.block[*].nr_requests int
storage.block[*].max_sectors_kb int
storage.block[*].size_bytes int
storage.block[*].pci_address str
storage.block[*].numa_node int
storage.block[*].model str
storage.mounts[*].device str
storage.mounts[*].mountpoint str
storage.mounts[*].fstype str
storage.mounts[*].options list
storage.mounts[*].read_only bool
storage.unknown dict
services.units.<unit>.state str
services.units.<unit>.enabled bool
services.units.<unit>.source str
collectors.<name>.ok bool
collectors.<name>.seconds num
collectors.<name>.error str
collectors.<name>.no_data bool
"""

NUMERIC_TYPES = frozenset({"int", "num", "numstr", "any"})


@dataclass(frozen=True)
class Token:
    """One step of a fact path: a key, every item (`[*]`), an index, or a filter."""

    key: str | None = None
    index: int | None = None
    each: bool = False
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def is_list(self) -> bool:
        return self.key is None

    def text(self) -> str:
        if self.key is not None:
            return self.key
        if self.index is not None:
            return f"[{self.index}]"
        if self.filters:
            return "[" + ",".join(f"{k}={'|'.join(v)}" for k, v in self.filters) + "]"
        return "[*]"


class PathSyntaxError(ValueError):
    """A fact path that cannot be parsed."""


@functools.lru_cache(maxsize=4096)
def parse(path: str) -> tuple[Token, ...]:
    """Split a fact path into tokens; raise PathSyntaxError on bad syntax."""
    if not isinstance(path, str) or not path.strip():
        raise PathSyntaxError("empty fact path")
    tokens: list[Token] = []
    i, n = 0, len(path)
    expect_key = True
    while i < n:
        ch = path[i]
        if ch == "[":
            end = path.find("]", i)
            if end < 0:
                raise PathSyntaxError(f"unclosed '[' in {path!r}")
            tokens.append(_bracket(path[i + 1:end], path))
            i = end + 1
            expect_key = False
            continue
        if ch == ".":
            if expect_key:
                raise PathSyntaxError(f"empty key in {path!r}")
            i += 1
            expect_key = True
            continue
        j = i
        while j < n and path[j] not in ".[":
            j += 1
        if not expect_key:
            raise PathSyntaxError(f"missing '.' before {path[i:j]!r} in {path!r}")
        key = path[i:j]
        if "]" in key or not key.strip():
            raise PathSyntaxError(f"bad key {key!r} in {path!r}")
        tokens.append(Token(key=key))
        i = j
        expect_key = False
    if expect_key:
        raise PathSyntaxError(f"fact path {path!r} ends with '.'")
    if tokens[0].key is None:
        raise PathSyntaxError(f"fact path {path!r} must start with a key")
    return tuple(tokens)


def _bracket(inner: str, path: str) -> Token:
    inner = inner.strip()
    if inner == "*":
        return Token(each=True)
    if inner.isdigit():
        return Token(index=int(inner))
    filters = []
    for part in inner.split(","):
        key, eq, values = part.partition("=")
        if not eq or not key.strip() or not values.strip():
            raise PathSyntaxError(f"bad selector [{inner}] in {path!r}: "
                                  "use [*], [N] or [key=value]")
        filters.append((key.strip(), tuple(v.strip() for v in values.split("|"))))
    return Token(each=True, filters=tuple(filters))


def canonical(tokens: tuple[Token, ...]) -> str:
    """The path with every list step written `[*]` (how per-item bindings are keyed)."""
    out = ""
    for tok in tokens:
        if tok.key is not None:
            out += ("." if out else "") + tok.key
        else:
            out += "[*]"
    return out


# -- the registry ------------------------------------------------------------------------

_ANY = "<"  # registry keys starting with "<" match any key


@dataclass
class _Node:
    children: dict[str, _Node]
    type: str | None = None


def _insert(root: _Node, spec_path: str, type_: str) -> None:
    node = root
    for tok in parse(spec_path):
        name = "[*]" if tok.is_list else tok.key
        assert name is not None
        node = node.children.setdefault(name, _Node({}))
    node.type = type_


@functools.lru_cache(maxsize=1)
def _registry() -> _Node:
    from nodetune.facts.derived import DERIVED_PATHS
    from nodetune.facts.health import HEALTH_PATHS

    root = _Node({})
    for spec in (CONTRACT, DERIVED_PATHS, HEALTH_PATHS):
        for line in spec.strip().splitlines():
            path, _, type_ = line.strip().partition(" ")
            _insert(root, path, type_.strip() or "any")
    return root


def fact_type(path: str) -> str | None:
    """The registered type of a fact path ("int", "str", ...), or None when not promised."""
    try:
        tokens = parse(path)
    except PathSyntaxError:
        return None
    found = _match(_registry(), tokens, 0)
    return found[0] if found else None


def is_known(path: str) -> bool:
    return fact_type(path) is not None


def _match(node: _Node, tokens: tuple[Token, ...], i: int) -> tuple[str, bool] | None:
    """(type, whether the path ends on a leaf) for the best match, or None."""
    if i == len(tokens):
        if node.type is not None:
            return node.type, True
        if node.children:  # a container on the way to promised facts
            return ("list" if "[*]" in node.children else "dict"), False
        return None
    if not node.children and node.type in ("dict", "any"):
        return "any", True  # below a free-form dict, anything goes
    tok = tokens[i]
    if not node.children and node.type == "list" and tok.is_list and i == len(tokens) - 1:
        return "any", True  # one element of a list of values (netdevs[0])
    if tok.is_list:
        child = node.children.get("[*]")
        return _match(child, tokens, i + 1) if child else None
    candidates: list[tuple[str, bool]] = []
    child = node.children.get(tok.key or "")
    if child is not None:
        found = _match(child, tokens, i + 1)
        if found is not None:
            candidates.append(found)
    for name, wild in node.children.items():
        if not name.startswith(_ANY):
            continue
        # a `<name>` key may span several dotted tokens (sysctl names): longest first
        end = i
        while end < len(tokens) and not tokens[end].is_list:
            end += 1
        for stop in range(end, i, -1):
            found = _match(wild, tokens, stop)
            if found is not None:
                candidates.append(found)
    leaves = [c for c in candidates if c[1]]
    best = leaves or candidates
    return best[0] if best else None
