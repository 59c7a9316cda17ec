"""`nodetune topo`: the text matrix, the JSON document, the PNG/SVG diagram and its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nodetune import exitcodes
from nodetune.cli import main
from nodetune.schemas import TOPO_SCHEMA

NVML = Path(__file__).parent / "fixtures" / "nvml"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_text_matrix_like_nvidia_smi(synthetic_host, capsys) -> None:
    host = synthetic_host("synthetic-dgx-h100")
    rc, out, _ = run(["topo", "--root", str(host.root), "--nvml", str(host.nvml)], capsys)
    assert rc == exitcodes.OK
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["GPU0", "GPU1", "GPU2"] and "NVME9" in header
    assert re.search(r"NVME9\s+CPU Affinity\s+NUMA Affinity\s+GPU NUMA ID$", lines[0])
    gpu0 = lines[1].split()
    assert gpu0[:10] == ["GPU0", "X", "NV18", "NV18", "NV18", "NV18", "NV18", "NV18", "NV18",
                         "PIX"]
    assert gpu0[-3:] == ["0-47,96-143", "0", "N/A"]
    assert "  NIC0: mlx5_0" in lines and "  NIC7: mlx5_11" in lines
    assert "  NVME2: nvme2n1" in lines
    assert any(line.startswith("  PIX  = Connection traversing at most a single PCIe bridge")
               for line in lines)


def test_json_document(synthetic_host, capsys) -> None:
    host = synthetic_host("synthetic-gb200-tray")
    rc, out, _ = run(["topo", "--root", str(host.root), "--nvml", str(host.nvml), "--json"],
                     capsys)
    assert rc == exitcodes.OK
    doc = json.loads(out)
    assert next(iter(doc)) == "schema" and doc["schema"] == TOPO_SCHEMA
    devices = {d["name"]: d for d in doc["devices"]}
    assert devices["GPU0"]["kind"] == "gpu" and devices["GPU0"]["gpu_numa_id"] == 2
    assert devices["NIC0"]["label"] == "mlx5_0"
    assert doc["matrix"]["GPU0"]["GPU3"] == "NV18" and doc["matrix"]["GPU0"]["NIC0"] == "SYS"
    assert len(doc["numa"]) == 34


def test_png_and_svg_diagrams(host_tree, tmp_path: Path, capsys) -> None:
    tree = host_tree("h200x2-vm-gather")
    png, svg = tmp_path / "topo.png", tmp_path / "topo.svg"
    rc, out, err = run(["topo", "--root", str(tree), "--nvml", str(NVML / "h200x2-vm.json"),
                        "--png", str(png), "--svg", str(svg)], capsys)
    assert rc == exitcodes.OK
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    for label in ("GPU0", "GPU1", "NUMA 0", "NV18", "PCIe path unknown"):
        assert label in text, label
    assert f"wrote {png}" in err and "GPU0" in out


def test_unwritable_diagram_path_is_one_line_error(synthetic_host, tmp_path: Path,
                                                   capsys) -> None:
    host = synthetic_host("synthetic-dgx-h100")
    target = tmp_path / "missing-dir" / "topo.png"
    rc, _, err = run(["topo", "--root", str(host.root), "--png", str(target)], capsys)
    assert rc == exitcodes.ERROR
    assert err.startswith("nodetune: error: cannot write the topology diagram")
    assert len(err.strip().splitlines()) == 1


def test_bad_root_and_empty_tree(tmp_path: Path, capsys) -> None:
    rc, _, err = run(["topo", "--root", str(tmp_path / "nope")], capsys)
    assert rc == exitcodes.ERROR and err.startswith("nodetune: error:")
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    rc, out, _ = run(["topo", "--root", str(tmp_path)], capsys)
    assert rc == exitcodes.OK and "no GPUs, NICs or NVMe drives found" in out
