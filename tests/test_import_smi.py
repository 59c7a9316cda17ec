"""`nodetune import nvidia-smi`: real nvidia-smi text of drivers R470-R590 into nodetune.nvml/1."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from nodetune.node import nvml, smi_text

FIXTURES = Path(__file__).parent / "fixtures"
H200_TREE = FIXTURES / "hosts" / "h200x2-vm-gather.tar.gz"
H100_TREE = FIXTURES / "hosts" / "h100x2-fc-vm-gather.tar.gz"
CAPTURES = sorted((FIXTURES / "nvidia").glob("*nvidia-smi-q*.txt"))


def member(tree: Path, name: str) -> str:
    with tarfile.open(tree) as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read().decode()


def section(text: str, command: str) -> str:
    """The lines after `=== COMMAND` up to the next `=== ` header."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("=== "):
            inside = line[4:].strip() == command
        elif inside:
            out.append(line)
    return "\n".join(out)


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodetune", "import", "nvidia-smi", *args],
                          capture_output=True, text=True, input=stdin, check=False)


def test_the_importer_reproduces_the_committed_recordings():
    commands = member(H100_TREE, "node/cmd/commands.txt")
    cases = {
        "h200x2-vm.json": tuple(member(H200_TREE, f"node/cmd/nvidia-smi_{n}.txt")
                                for n in ("q", "topo_m", "nvlink")),
        "h100x2-fc-vm.json": tuple(section(commands, f"nvidia-smi {c}")
                                   for c in ("-q", "topo -m", "nvlink -s")),
        "rtx4090x8-driver535.json": ((FIXTURES / "nvidia" / "h100x8-nvidia-smi-q.txt")
                                     .read_text(), None, None),
        "h200-load.json": ((FIXTURES / "nvidia" / "h200-nvidia-smi-q-load.txt").read_text(),
                           None, None),
    }
    for name, (q, topo, link) in cases.items():
        doc = smi_text.convert(q, topo, link)
        committed = json.loads((FIXTURES / "nvml" / name).read_text())
        committed.pop("captured_from")
        doc.pop("captured_from")
        assert doc == committed, name
        nvml.RecordedNvml(doc, origin=name)


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_every_capture_imports_and_replays(capture: Path, tmp_path: Path):
    out = tmp_path / "rec.json"
    proc = run(str(capture), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["schema"] == "nodetune.import/1" and summary["gpus"] >= 1
    doc = nvml.RecordedNvml.from_file(str(out)).dump()
    for dev in doc["devices"]:
        assert dev["name"] and dev["uuid"].startswith("GPU-")
        assert dev["memory_total_bytes"] > 0
        assert nvml.normalize_bus_id(dev["pci_bus_id"])
        # what -q never shows stays unknown with its reason
        assert dev["numa_node"] is None and "numa_node" in dev["errors"]


def test_r470_volta_counts_ecc_per_bit_block_and_retired_pages():
    doc = smi_text.convert((FIXTURES / "nvidia" / "v100-r470-nvidia-smi-q.txt").read_text())
    dev = doc["devices"][0]
    assert (doc["driver_version"], doc["cuda_driver_version"]) == ("470.129.06", 11040)
    assert dev["ecc"]["aggregate"] == {"corrected": 3, "uncorrected": 0}
    assert dev["ecc"]["current"] is True  # "Ecc Mode" of R470
    assert dev["retired_pages"] == {"single_bit": 1, "double_bit": 0, "pending": False}
    assert dev["remapped_rows"] is None and "remapped_rows" in dev["errors"]
    assert (dev["power_limit_w"], dev["power_draw_w"]) == (250.0, 25.13)  # "Power Readings"
    assert dev["clock_event_reasons"] == ["gpu_idle"]  # "Clocks Throttle Reasons"


def test_cuda_not_found_and_a_note_after_the_version():
    a16 = (FIXTURES / "nvidia" / "a16-r470-vgpu-host-nvidia-smi-q.txt").read_text()
    doc = smi_text.convert(a16)
    assert doc["cuda_driver_version"] is None
    assert doc["devices"][0]["pcie"] == {"current_gen": 1, "max_gen": 4, "current_width": 4,
                                         "max_width": 16}
    h200 = (FIXTURES / "nvidia" / "h200-nvidia-smi-q-load.txt").read_text()
    noted = h200.replace(": 13.1\n", ": 13.1 [Deprecated, see CUDA Driver Version]\n", 1)
    assert noted != h200
    assert smi_text.convert(noted)["cuda_driver_version"] == 13010


def test_stdin_and_stdout():
    text = (FIXTURES / "nvidia" / "h200-nvidia-smi-q-load.txt").read_text()
    proc = run("-", stdin=text)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["devices"][0]["name"] == "NVIDIA H200"


def test_a_line_it_cannot_read_is_named_with_its_number(tmp_path: Path):
    lines = (FIXTURES / "nvidia" / "h200-nvidia-smi-q-load.txt").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("Total") and "MiB"
              in line)
    lines[at] = lines[at].split(":")[0] + ": lots"
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    proc = run(str(bad))
    assert proc.returncode == 3
    err = proc.stderr.strip()
    assert "\n" not in err and err.startswith(f"nodetune: error: {bad}:{at + 1}: ")
    assert "Traceback" not in proc.stderr
    lspci = run(str(FIXTURES / "nvidia" / "h100x8-lspci-vvv.txt"))
    assert lspci.returncode == 3 and "h100x8-lspci-vvv.txt:" in lspci.stderr
    empty = run("-", stdin="")
    assert empty.returncode == 3 and "not `nvidia-smi -q` output" in empty.stderr
