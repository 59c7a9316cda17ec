"""Benchmark: how fast nodetune collects facts. Prints figures, asserts nothing.

    .venv/bin/python tests/bench/facts.py [--repeat 20] [--tree DIR] [--pci-devices 2000]

1. every collector on the live host (cold first run, then the median of warm runs);
2. the same on a host tree (default: the H200 VM gather fixture, unpacked to a temp dir);
3. wall time of `nodetune facts --json` as a new process, interpreter start included;
4. a synthetic tree of N PCI devices (root ports, switches, GPUs, NICs, NVMe drives) built by
   `build_pci_tree()`, and the pci collector and the full gather timed on it, at N/4, N/2 and
   N devices to show the cost is linear;
5. `nodetune facts --json --root TREE` against hwloc's `lstopo-no-graphics --input TREE --of
   xml` on the real trees (tests/fixtures/hosts/*-gather.tar.gz), run in alternation so both
   see the same load: medians of wall and CPU time and their ratio (nodetune / lstopo). Only
   `--lstopo` runs this part alone.

Targets (2-core CI machine): all collectors on the live host < 150 ms; `facts --json`
< 0.5 s; 2,000 PCI devices < 1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
H200_TREE = REPO / "tests/fixtures/hosts/h200x2-vm-gather.tar.gz"

# (class, vendor, device, driver, link speed, width) of the endpoints placed under switches
ENDPOINTS = (
    ("0x030200", "0x10de", "0x2330", "nvidia", "32.0 GT/s PCIe", 16),  # H100 SXM
    ("0x020700", "0x15b3", "0x1021", "mlx5_core", "32.0 GT/s PCIe", 16),  # ConnectX-7
    ("0x010802", "0x144d", "0xa80a", "nvme", "16.0 GT/s PCIe", 4),  # NVMe
)
BRIDGE = ("0x060400", "0x1000", "0xc030", "pcieport", "32.0 GT/s PCIe", 16)


def _device(root: Path, parent: Path, address: str, spec: tuple[str, str, str, str, str, int],
            node: int, cpus: str) -> Path:
    klass, vendor, device, driver, speed, width = spec
    path = parent / address
    path.mkdir(parents=True)
    files = {"class": klass, "vendor": vendor, "device": device, "subsystem_vendor": vendor,
             "subsystem_device": "0x0000", "numa_node": str(node), "local_cpulist": cpus,
             "current_link_speed": speed, "max_link_speed": speed,
             "current_link_width": str(width), "max_link_width": str(width)}
    for name, text in files.items():
        (path / name).write_text(text + "\n")
    drivers = root / "sys/bus/pci/drivers" / driver
    drivers.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(drivers, path), path / "driver")
    link = root / "sys/bus/pci/devices" / address
    os.symlink(os.path.relpath(path, link.parent), link)
    return path


def build_pci_tree(root: Path, count: int, nodes: int = 2, cpus_per_node: int = 48) -> int:
    """A /sys with `count` PCI devices: per host bridge a root port, a switch (upstream port and
    downstream ports) and one endpoint per downstream port; new PCI domains as buses run out.
    Returns the number of devices made."""
    (root / "sys/bus/pci/devices").mkdir(parents=True)
    (root / "proc").mkdir(exist_ok=True)
    made = domain = bus = host = 0
    per_switch = 8  # downstream ports, one endpoint each
    while made < count:
        if bus + 3 + per_switch > 0xFF:
            domain, bus = domain + 1, 0
        node = host % nodes
        cpus = f"{node * cpus_per_node}-{(node + 1) * cpus_per_node - 1}"
        hb = root / f"sys/devices/pci{domain:04x}:{bus:02x}"
        rp = _device(root, hb, f"{domain:04x}:{bus:02x}:01.0", BRIDGE, node, cpus)
        up = _device(root, rp, f"{domain:04x}:{bus + 1:02x}:00.0", BRIDGE, node, cpus)
        made += 2
        for port in range(per_switch):
            if made >= count:
                break
            down = _device(root, up, f"{domain:04x}:{bus + 2:02x}:{port:02x}.0", BRIDGE, node,
                           cpus)
            made += 1
            if made >= count:
                break
            spec = ENDPOINTS[port % len(ENDPOINTS)]
            _device(root, down, f"{domain:04x}:{bus + 3 + port:02x}:00.0", spec, node, cpus)
            made += 1
        bus += 3 + per_switch
        host += 1
    return made


def _gather_times(root: str, repeat: int, only: tuple[str, ...] | None = None) -> None:
    from nodetune.node.source import open_node

    runs: list[dict[str, float]] = []
    for _ in range(repeat + 1):
        with open_node(root=root) as node:
            start, cpu = time.perf_counter(), time.process_time()
            facts = node.facts(only)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        times = {n: s.seconds for n, s in facts.status.items()}
        times["(gather wall)"] = wall
        times["(gather CPU)"] = cpu
        runs.append(times)
        failed = {n: s.error for n, s in facts.status.items() if not s.ok}
    cold, warm = runs[0], runs[1:]
    print(f"  {'collector':<16}{'cold ms':>10}{'warm median ms':>16}")
    for name in cold:
        median = statistics.median(r[name] for r in warm) * 1000
        print(f"  {name:<16}{cold[name] * 1000:>10.1f}{median:>16.1f}")
    if failed:
        print(f"  failed collectors: {failed}")


def _cli_wall(repeat: int, env: dict[str, str]) -> None:
    script = Path(sys.executable).with_name("nodetune")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "nodetune"]
    for label, extra in (("facts --json", []), ("facts --json --only cpu,numa", ["--only",
                                                                               "cpu,numa"])):
        walls, cpus = [], []
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([*argv, "facts", "--json", *extra], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        print(f"  nodetune {label:<30} wall min {min(walls) * 1000:5.0f} ms, median "
              f"{statistics.median(walls) * 1000:5.0f} ms; CPU median "
              f"{statistics.median(cpus) * 1000:5.0f} ms ({repeat} runs)")


REAL_TREES = ("h200x2-vm-gather.tar.gz", "h100x2-fc-vm-gather.tar.gz")


def _child_times(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _vs_lstopo(repeat: int) -> None:
    lstopo = shutil.which("lstopo-no-graphics") or shutil.which("lstopo")
    if lstopo is None:
        print("  hwloc's lstopo is not installed (apt install hwloc): skipped")
        return
    for name in REAL_TREES:
        with tempfile.TemporaryDirectory(prefix="nodetune-bench-") as tmp:
            with tarfile.open(REPO / "tests/fixtures/hosts" / name) as tar:
                tar.extractall(tmp, filter="fully_trusted")
            tree = str(Path(tmp) / "node")
            ours = [sys.executable, "-m", "nodetune", "facts", "--json", "--root", tree]
            theirs = [lstopo, "--input", tree, "--of", "xml"]
            runs: dict[str, list[tuple[float, float]]] = {"nodetune": [], "lstopo": []}
            for i in range(repeat + 1):  # the first pair warms the page cache
                pair = (("nodetune", ours), ("lstopo", theirs))
                for label, argv in pair if i % 2 else pair[::-1]:
                    times = _child_times(argv)
                    if i:
                        runs[label].append(times)
            wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
            cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
            print(f"  {name.split('-gather')[0]:<14} nodetune facts --json "
                  f"{wall['nodetune'] * 1000:5.0f} ms (CPU {cpu['nodetune'] * 1000:4.0f} ms), "
                  f"lstopo --of xml "
                  f"{wall['lstopo'] * 1000:4.0f} ms (CPU {cpu['lstopo'] * 1000:3.0f} ms): ratio "
                  f"wall {wall['nodetune'] / wall['lstopo']:.1f}x, CPU "
                  f"{cpu['nodetune'] / max(cpu['lstopo'], 1e-3):.1f}x ({repeat} runs each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--tree", help="host tree to time (default: the H200 VM fixture)")
    parser.add_argument("--pci-devices", type=int, default=2000)
    parser.add_argument("--lstopo", action="store_true",
                        help="only part 5: facts --json against lstopo on the real trees")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
          f"{os.getloadavg()[0]:.1f} (wall times grow with load; CPU times much less)")
    if args.lstopo:
        print("\n5. `nodetune facts --json` against `lstopo-no-graphics --of xml`")
        _vs_lstopo(args.repeat)
        return

    print("\n1. all collectors, live host")
    _gather_times("/", args.repeat)

    with tempfile.TemporaryDirectory(prefix="nodetune-bench-") as tmp:
        tree = args.tree
        if tree is None:
            with tarfile.open(H200_TREE) as tar:
                tar.extractall(tmp, filter="fully_trusted")
            tree = str(Path(tmp) / "node")
        print(f"\n2. all collectors, tree {tree}")
        _gather_times(tree, args.repeat)

    print("\n3. `nodetune facts --json` as a new process (interpreter start included)")
    _cli_wall(max(5, args.repeat // 2), dict(os.environ))

    print("\n4. synthetic tree of PCI devices")
    for count in (args.pci_devices // 4, args.pci_devices // 2, args.pci_devices):
        tmp = tempfile.mkdtemp(prefix="nodetune-pci-", dir="/dev/shm" if os.path.isdir(
            "/dev/shm") else None)
        try:
            start = time.perf_counter()
            made = build_pci_tree(Path(tmp), count)
            built = time.perf_counter() - start
            print(f"  {made} devices (tree built in {built:.1f} s):")
            _gather_times(tmp, max(3, args.repeat // 4), only=("pci",))
            from nodetune.node.source import open_node

            with open_node(root=tmp) as node:
                start = time.perf_counter()
                facts = node.facts()
                print(f"  full gather: {(time.perf_counter() - start) * 1000:.0f} ms, "
                      f"{len(facts.sections.get('pci', {}).get('devices', []))} PCI devices seen")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    print("\n5. `nodetune facts --json` against `lstopo-no-graphics --of xml`")
    _vs_lstopo(args.repeat)


if __name__ == "__main__":
    main()
