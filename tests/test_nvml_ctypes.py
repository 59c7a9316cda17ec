"""nodetune.node.nvml_ctypes: the ctypes binding `nodetune check` reads NVML through gives the
same document, facts and check results as nvidia-ml-py, on every NVML recording and on the raw
pynvml capture of a real H100 VM (both driven by tests/fake_pynvml.py)."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pynvml
import pytest

from nodetune.check.operation import CheckRequest, run
from nodetune.node import nvml, nvml_ctypes
from tests import fake_pynvml

FIXTURES = Path(__file__).parent / "fixtures"
RECORDINGS = sorted(p.name for p in (FIXTURES / "nvml").glob("*.json")
                    if "pynvml-raw" not in p.name)


def both_dumps(module: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The NVML document through pynvml (the fake module) and through the ctypes binding over
    a C library answered by the same module."""
    through_pynvml = nvml.PynvmlBackend(module).dump()
    binding = nvml_ctypes.CtypesNvml(fake_pynvml.c_library(module))
    binding.nvmlInit()
    return through_pynvml, nvml.PynvmlBackend(binding).dump()


@pytest.mark.parametrize("name", RECORDINGS)
def test_same_document_as_pynvml_on_recordings(name: str) -> None:
    doc = json.loads((FIXTURES / "nvml" / name).read_text())
    ours, theirs = both_dumps(fake_pynvml.from_recording(doc))
    assert theirs == ours
    assert theirs["devices"], name


def test_same_document_as_pynvml_on_a_raw_h100_capture(h100_raw_module: Any) -> None:
    ours, theirs = both_dumps(h100_raw_module)
    assert theirs == ours
    assert any(d["errors"] for d in theirs["devices"])  # NVML's own errors, by the same names


@pytest.fixture
def h100_raw_module() -> Any:
    from tests.test_nvml import RAW_H100, smi_fabric, smi_section

    raw = json.loads(RAW_H100.read_text())
    q = smi_section("nvidia-smi -q")
    return fake_pynvml.from_raw(raw, cpu_affinity=list(range(0, 8)), fabric=smi_fabric(q),
                                performance_state=0, nvlink_peer_ok=True)


def test_constants_and_error_names_are_pynvml_s() -> None:
    for name in dir(nvml_ctypes.CtypesNvml):
        if name.startswith("NVML_") and name != "NVML_NVLINK_MAX_LINKS":
            assert getattr(nvml_ctypes.CtypesNvml, name) == getattr(pynvml, name), name
    for code, cls in nvml_ctypes.NVMLError.by_code.items():
        real = pynvml.NVMLError(code)
        assert cls.__name__ == type(real).__name__
        assert type(nvml_ctypes.NVMLError(code)) is cls
        if code in pynvml.NVMLError._errcode_to_string:
            assert str(nvml_ctypes.NVMLError(code)) == str(real)


@pytest.mark.parametrize("error_name", ["NVMLError_DriverNotLoaded", "NVMLError_NoPermission",
                                        "NVMLError_LibRmVersionMismatch"])
def test_init_failure_gives_pynvml_s_note(error_name: str, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    module = fake_pynvml.failing_init(error_name)
    monkeypatch.setattr(nvml, "driver_loaded", lambda: True)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setattr(nvml_ctypes.CtypesNvml, "load",
                        classmethod(lambda cls: cls(fake_pynvml.c_library(module))))
    assert nvml.live_backend(thin=True) == nvml.live_backend()


def test_without_libnvidia_ml_the_same_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "driver_loaded", lambda: True)
    monkeypatch.setattr(nvml_ctypes, "LIBRARY", "libnvidia-ml-absent.so.1")
    backend, note = nvml.live_backend(thin=True)
    assert backend is None
    assert note == ("NVML unavailable: libnvidia-ml.so.1 not found (no NVIDIA driver installed, "
                    "or the container lacks the driver libraries)")


@pytest.mark.parametrize("name", ["h100x2-fc-vm.json", "h200x2-vm.json"])
def test_quick_check_the_same_through_both(name: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`check --tier quick` on the live path (NVML live): the thin binding and nvidia-ml-py give
    the same checks, findings and facts."""
    tree = "h100x2-fc-vm-gather.tar.gz" if name.startswith("h100") else "h200x2-vm-gather.tar.gz"
    with tarfile.open(FIXTURES / "hosts" / tree) as tar:
        tar.extractall(tmp_path, filter="fully_trusted")
    module = fake_pynvml.from_recording(json.loads((FIXTURES / "nvml" / name).read_text()))
    monkeypatch.setattr(nvml, "driver_loaded", lambda: True)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    loaded: list[Any] = []
    monkeypatch.setattr(nvml_ctypes.CtypesNvml, "load", classmethod(
        lambda cls: loaded.append(cls(fake_pynvml.c_library(module))) or loaded[-1]))
    request = CheckRequest(tier="quick", root=str(tmp_path / "node"), nvml="live")
    thin = run(request, cache=False).doc
    assert len(loaded) == 1  # check went through the binding
    monkeypatch.setattr(nvml, "live_backend", lambda thin=False: nvml.init_backend(module))
    full = run(request, cache=False).doc

    def stable(doc: dict[str, Any]) -> Any:
        return [(c["id"], c["status"], c["findings"]) for c in doc["checks"]]
    assert stable(thin) == stable(full)
    assert thin["summary"] == full["summary"]
    assert any(c["id"].startswith("gpu.") and c["status"] == "pass" for c in thin["checks"])


def test_nvml_started_early_gives_the_same_backend_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`check` starts NVML in a thread while its modules load: the next live_backend takes
    that result (the library is loaded once), a later one starts anew."""
    doc = json.loads((FIXTURES / "nvml" / "h200x2-vm.json").read_text())
    module = fake_pynvml.from_recording(doc)
    monkeypatch.setattr(nvml, "driver_loaded", lambda: True)
    loaded: list[Any] = []
    monkeypatch.setattr(nvml_ctypes.CtypesNvml, "load", classmethod(
        lambda cls: loaded.append(cls(fake_pynvml.c_library(module))) or loaded[-1]))
    monkeypatch.setattr(nvml, "_early", {})
    nvml.start_early(thin=True)
    nvml.start_early(thin=True)  # once per process
    assert len(nvml._early) == 1
    backend, note = nvml.live_backend(thin=True)
    assert note is None and len(loaded) == 1 and nvml._early == {}
    assert backend.nvml is loaded[0]
    assert backend.dump() == nvml.PynvmlBackend(module).dump()
    nvml.live_backend(thin=True)
    assert len(loaded) == 2


def test_nvml_is_not_started_early_without_the_driver_or_off_the_live_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from nodetune.check import fastpath

    monkeypatch.setattr(nvml, "_early", {})
    monkeypatch.setattr(nvml, "driver_loaded", lambda: False)
    fastpath._start_nvml_early({"nvml": "auto"})
    assert nvml._early == {}
    monkeypatch.setattr(nvml, "driver_loaded", lambda: True)
    monkeypatch.setattr(nvml_ctypes.CtypesNvml, "load", classmethod(
        lambda cls: (_ for _ in ()).throw(AssertionError("loaded"))))
    for fields in ({"nvml": "off"}, {"nvml": "auto", "root": "/srv/tree"},
                   {"nvml": "auto", "snapshot": "node.tar.gz"}, {"nvml": "rec.json"}):
        fastpath._start_nvml_early(fields)
        assert nvml._early == {}, fields
    monkeypatch.setenv("NODETUNE_ROOT", "/srv/tree")
    fastpath._start_nvml_early({"nvml": "auto"})
    assert nvml._early == {}
