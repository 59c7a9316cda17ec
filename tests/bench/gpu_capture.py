"""Checks for tests/bench/gpu_capture.sh on a GPU machine; prints a report, writes nvml.json.

    python3 tests/bench/gpu_capture.py OUTDIR

Expects OUTDIR to hold nvidia-smi-q.txt, nvidia-smi-topo-m.txt and nvidia-smi-nvlink-s.txt.
1. Dumps the live NVML backend to OUTDIR/nvml.json (or says why NVML is unavailable).
2. Compares that dump with the same facts converted from the nvidia-smi text.
3. Takes a snapshot in a temporary directory, replays it, and compares the facts.
4. Prints what the gpu collector reports for each GPU and the collectors' timings.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodetune.node import nvml, smi_text, snapshot  # noqa: E402
from nodetune.node.source import open_node  # noqa: E402

STABLE = ("pci_bus_id", "name", "uuid", "memory_total_bytes", "persistence_mode", "ecc",
          "retired_pages", "remapped_rows", "mig", "power_limit_w", "numa_node",
          "cpu_affinity", "nvlink_peers", "fabric")
VOLATILE = ("clocks", "clock_event_reasons_mask", "performance_state", "power_draw_w",
            "temperature_c", "pcie")


def compare_with_smi(out: Path, dump: dict[str, Any]) -> int:
    text = {name: (out / name).read_text() for name in
            ("nvidia-smi-q.txt", "nvidia-smi-topo-m.txt", "nvidia-smi-nvlink-s.txt")
            if (out / name).is_file()}
    smi = smi_text.convert(text.get("nvidia-smi-q.txt", ""), text.get("nvidia-smi-topo-m.txt"),
                       text.get("nvidia-smi-nvlink-s.txt"))
    problems = 0
    print(f"nvidia-smi: driver {smi['driver_version']}, {len(smi['devices'])} GPUs; "
          f"NVML: driver {dump['driver_version']}, {len(dump['devices'])} GPUs")
    for live, text_dev in zip(dump["devices"], smi["devices"], strict=False):
        for key in STABLE:
            if live.get(key) != text_dev.get(key) and text_dev.get(key) is not None:
                problems += 1
                print(f"  MISMATCH GPU{live['index']} {key}: nvml={live.get(key)!r} "
                      f"smi={text_dev.get(key)!r}")
        for key in VOLATILE:
            print(f"  GPU{live['index']} {key}: nvml={live.get(key)!r} smi={text_dev.get(key)!r}")
        active = sum(1 for link in live["nvlink"] if link["active"])
        text_active = sum(1 for link in text_dev["nvlink"] if link["active"])
        print(f"  GPU{live['index']} nvlink active: nvml={active} smi={text_active}; remote kinds "
              f"{sorted({str(link['remote_kind']) for link in live['nvlink']})}")
        print(f"  GPU{live['index']} errors: {live['errors']}")
        problems += active != text_active
    return problems


def compare_replay() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "check.tar.gz")
        start = time.perf_counter()
        with open_node() as live_node:
            result = snapshot.take(path, live_node)
        took = time.perf_counter() - start
        live = json.loads(json.dumps(result.facts.to_json(), default=str))
        with open_node(snapshot=path) as node:
            replayed = json.loads(json.dumps(node.facts().to_json(), default=str))
    print(f"snapshot: {result.bytes} bytes, {result.files} files, {result.links} links, "
          f"NVML recorded: {result.nvml_recorded}, took {took:.2f} s; excluded: {result.excluded}")
    diffs = list(differences(live, replayed, ""))
    for path_, a, b in diffs:
        print(f"  REPLAY DIFF {path_}: live={a!r:.120} replay={b!r:.120}")
    known = {".memory.sources.page_size_bytes"}
    return sum(1 for p, _, _ in diffs if p not in known)


def differences(a: Any, b: Any, path: str) -> Any:
    if path in (".collectors", ".root"):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            yield from differences(a.get(key), b.get(key), f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield path, a, b


def main() -> int:
    out = Path(sys.argv[1])
    problems = 0
    backend, note = nvml.live_backend()
    if backend is None:
        print(f"NVML: {note}")
        problems += 1
    else:
        start = time.perf_counter()
        dump = backend.dump()
        print(f"NVML dump took {time.perf_counter() - start:.3f} s")
        backend.close()
        (out / "nvml.json").write_text(json.dumps(dump, indent=1) + "\n")
        problems += compare_with_smi(out, dump)
    problems += compare_replay()
    facts_path = out / "facts.json"
    if facts_path.is_file():
        facts = json.loads(facts_path.read_text())
        gpu_section = facts.get("gpu", {})
        print(f"gpu: {json.dumps(gpu_section.get('nvml'))}, count {gpu_section.get('count')}, "
              f"driver {gpu_section.get('driver_version')}")
        for gpu in facts.get("gpus", []):
            print(f"  GPU{gpu['index']} {gpu['pci_address']} {gpu['name']} numa {gpu['numa_node']} "
                  f"pcie {gpu['pcie']} nvlink {gpu['nvlink']['active']} active, peers "
                  f"{gpu['nvlink']['peers']} fabric {gpu['fabric']}")
        print("collectors: " + ", ".join(
            f"{n} {s['seconds'] * 1000:.1f} ms{'' if s['ok'] else ' FAILED ' + str(s['error'])}"
            for n, s in facts.get("collectors", {}).items()))
    print(f"RESULT: {'ok' if problems == 0 else f'{problems} problem(s)'}")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
