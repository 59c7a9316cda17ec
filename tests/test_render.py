"""The text views on the synthetic 8-GPU DGX H100 tree with planted faults (tests/fixtures/
synth.py): audit, check, facts, topo and profiles show, at 80 and 200 columns, piped, under a
UTF-8 and the C locale. Every id, subject, PCI address, CPU list and wanted and actual value of
the JSON output must appear whole in the text (no token broken in two or cut with an
ellipsis), piped output and the C locale carry no box drawing, and the default audit has one
line per failing or unknown setting. The wide views (the RDMA NICs of a multi-rail node, the
apply plan, saved bench results and the fleet report of both trees) keep each row's values in
its row and, at 80 columns, within 80 columns: a table too wide becomes one record per row."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nodetune.bench.results import size_label
from nodetune.cli import cli
from nodetune.facts import cpulist
from nodetune.views.ascii import ascii_only, to_ascii
from nodetune.views.output import cited, fit, grid_lines, legend_lines, source_titles
from tests.conftest import _ram_dir

REPO = Path(__file__).resolve().parents[1]
SYNTH_FAULTS = {"gpu_link_width": {3: 8}, "acs_enabled": True, "thp": "always",
                "numa_balancing": 1, "missing_modules": ("nvidia_peermem",),
                "governor": "powersave", "nvme_scheduler": "mq-deadline",
                "nic_irqs_remote": (0,), "irqbalance": True, "nvlink_down": {1: 2},
                "ecc_uncorrectable": {2: 3}, "ib_port_down": (4,)}
LOCALES = {"utf8": {"LANG": "C.UTF-8", "LC_ALL": None, "LC_CTYPE": None},
           "C": {"LANG": "C", "LC_ALL": None, "LC_CTYPE": None}}
# (name, extra arguments, environment): a terminal of 80 or 200 columns (`--format table`, as
# a terminal gets by default) and a pipe (no COLUMNS: the default, plain)
WIDTHS = {"table80": (["--format", "table"], {"COLUMNS": "80"}),
          "table200": (["--format", "table"], {"COLUMNS": "200"}),
          "piped": ([], {"COLUMNS": None})}
BOX = re.compile("[\u2500-\u259f]")
SEVERITY_LINE = re.compile(r"^(\? )?(critical|warning|info) ")
RANK = {"critical": 0, "warning": 1, "info": 2}


@pytest.fixture(scope="module")
def synthetic_faulty_dgx(synth, tmp_path_factory) -> Any:
    """synthetic-dgx-h100 with faults across every area: a setting per area fails."""
    ram = _ram_dir("nodetune-render-")
    yield synth.build_dgx_h100(ram or tmp_path_factory.mktemp("render"),
                               synth.Options(**SYNTH_FAULTS))
    if ram is not None:
        shutil.rmtree(ram, ignore_errors=True)


def run(args: list[str], env: dict[str, str | None]) -> tuple[int, str]:
    result = CliRunner(env={"NO_COLOR": "1", **env}).invoke(cli, args, standalone_mode=False)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return int(result.return_value or 0), result.output


def node(host: Any) -> list[str]:
    return ["--root", str(host.root), "--nvml", str(host.nvml)]


_PUNCT = ",;()[]:"


def tokens(text: str) -> set[str]:
    """The words of `text`, box drawing and the punctuation around words taken away."""
    return {w.strip(_PUNCT) for w in re.split(r"[\s\u2500-\u257f|]+", text)} - {""}


def assert_whole(values: list[str], text: str, what: str) -> None:
    """Every word of every value is a word of the text: nothing broken or cut."""
    seen = tokens(text)
    broken = sorted({w for v in values for w in tokens(str(v)) if w not in seen})
    assert not broken, f"{what}: not whole in the text: {broken[:10]}"


def assert_clean(text: str, piped: bool, locale: str) -> None:
    if piped or locale == "C":
        assert not BOX.search(text), "box drawing in piped or C-locale output"
    if locale == "C":
        assert text.isascii(), f"non-ASCII under LANG=C: {sorted(set(text) - set(to_ascii(text)))}"
    assert "\u2026" not in text, "a value cut with an ellipsis"


@pytest.fixture(scope="module")
def docs(synthetic_faulty_dgx) -> dict[str, Any]:
    """The JSON documents the text must agree with."""
    host = node(synthetic_faulty_dgx)
    out: dict[str, Any] = {}
    for name, args in (("audit", ["audit", *host, "--json"]),
                       ("check", ["check", *host, "--json", "--max-age", "0"]),
                       ("facts", ["facts", *host, "--json"]), ("topo", ["topo", *host, "--json"]),
                       ("profile", ["profiles", "show", "hgx-h100", "--json"])):
        _, text = run(args, {})
        out[name] = json.loads(text)
    return out


def _shown(audit: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in audit["findings"] if f["status"] in ("fail", "unknown")]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("width", WIDTHS)
def test_audit(synthetic_faulty_dgx, docs, width: str, locale: str) -> None:
    extra, env = WIDTHS[width]
    shown = _shown(docs["audit"])
    assert len({f["id"] for f in shown}) >= 10  # the faults span every area
    code, compact = run(["audit", *node(synthetic_faulty_dgx), *extra], {**env, **LOCALES[locale]})
    assert code == 2
    assert_clean(compact, width == "piped", locale)
    # the one-line view names up to four subjects (else "first ... last (count)"); -v all
    few = [f["subject"] for f in shown if f["subject"] and
           sum(g["id"] == f["id"] for g in shown) <= 4]
    assert_whole([f["id"] for f in shown] + few + [f["expected"] for f in shown], compact,
                 "compact audit")
    if width == "piped":  # one line per failing or unknown setting, worst first
        lines = [line for line in compact.splitlines() if SEVERITY_LINE.match(line)]
        ids = list(dict.fromkeys(f["id"] for f in shown))
        assert sorted(re.split(r"\s+", line.removeprefix("? "))[1] for line in lines) == sorted(ids)
        failing = [line for line in lines if not line.startswith("?")]
        ranks = [RANK[line.split()[0]] for line in failing]
        assert ranks == sorted(ranks)
        assert lines[len(failing):] == [line for line in lines if line.startswith("?")]
        assert compact.splitlines()[-1].startswith("hgx-h100: critical findings | ")
        assert len(compact.splitlines()) == len(ids) + 3  # profile line, header, summary
    code, verbose = run(["audit", *node(synthetic_faulty_dgx), *extra, "-v"],
                        {**env, **LOCALES[locale]})
    assert code == 2
    assert_clean(verbose, width == "piped", locale)
    assert_whole([f["id"] for f in shown] + [f["subject"] for f in shown if f["subject"]]
                 + [f["expected"] for f in shown] + [f["actual"] for f in shown]
                 + [f["persisted"] for f in shown if f["persisted"]], verbose, "audit -v")
    keys = cited(f["why"] for f in shown)
    assert keys and "Sources:" in verbose
    titles = source_titles()
    for key in keys:
        assert f"[{key}] " in verbose
        assert_whole([titles[key]], verbose, f"legend {key}")


def test_audit_json_is_unchanged_by_text_options(synthetic_faulty_dgx, docs) -> None:
    _, text = run(["audit", *node(synthetic_faulty_dgx), "--json", "-v", "--format", "plain"],
                  {})
    doc = json.loads(text)
    assert doc["findings"] == docs["audit"]["findings"]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("width", WIDTHS)
def test_check(synthetic_faulty_dgx, docs, width: str, locale: str) -> None:
    _, env = WIDTHS[width]
    code, text = run(["check", *node(synthetic_faulty_dgx), "-v", "--max-age", "0"],
                     {**env, **LOCALES[locale]})
    assert code == 1
    assert_clean(text, width == "piped", locale)
    items = docs["check"]["faults"] + docs["check"]["warnings"]
    assert items
    assert_whole([i["id"] for i in items] + [i["fault_code"] for i in items]
                 + [i["subject"] for i in items if i.get("subject")]
                 + [str(i["expected"]) for i in items] + [str(i["actual"]) for i in items]
                 + [c["id"] for c in docs["check"]["checks"]], text, "check")


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("width", WIDTHS)
def test_facts(synthetic_faulty_dgx, docs, width: str, locale: str) -> None:
    extra, env = WIDTHS[width]
    _, text = run(["facts", *node(synthetic_faulty_dgx), *extra], {**env, **LOCALES[locale]})
    assert_clean(text, width == "piped", locale)
    doc = docs["facts"]
    devices = [d for d in doc["pci"]["devices"] if d.get("kind") not in ("bridge", "other")]
    nics = [n for n in doc["nic"]["interfaces"] if not n.get("virtual")]
    values = ([d["address"] for d in devices] + [d["driver"] for d in devices if d.get("driver")]
              + [g["pci_address"] for g in doc["gpus"]] + [g["name"] for g in doc["gpus"]]
              + [cpulist.format(g["local_cpus"]) for g in doc["gpus"]]
              + [cpulist.format(n["cpus"]) for n in doc["numa"]["nodes"] if n.get("cpus")]
              + [n["name"] for n in nics] + [n["pci_address"] for n in nics if n.get("pci_address")]
              + [cpulist.format(n["irq_cpus"]) for n in nics if n.get("irq_cpus")]
              + [d["name"] for d in doc["rdma"]["devices"]]
              + [b["name"] for b in doc["storage"]["block"]]
              + [b["scheduler"] for b in doc["storage"]["block"] if b.get("scheduler")])
    assert len(values) > 80
    assert_whole(values, text, "facts")


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("width", WIDTHS)
def test_topo(synthetic_faulty_dgx, docs, width: str, locale: str) -> None:
    _, env = WIDTHS[width]
    _, text = run(["topo", *node(synthetic_faulty_dgx)], {**env, **LOCALES[locale]})
    assert_clean(text, width == "piped", locale)
    doc = docs["topo"]
    names = [d["name"] for d in doc["devices"]]
    assert len([n for n in names if n.startswith("GPU")]) == 8
    assert_whole(names + [cpulist.format(d["cpus"]) for d in doc["devices"] if d.get("cpus")]
                 + [v for row in doc["matrix"].values() for v in row.values()], text, "topo")
    header = text.splitlines()[0].split()
    assert header[:len(names)] == names  # the matrix is laid out whole, as nvidia-smi does


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("width", WIDTHS)
def test_profiles_show(docs, width: str, locale: str) -> None:
    extra, env = WIDTHS[width]
    _, text = run(["profiles", "show", "hgx-h100", *extra], {**env, **LOCALES[locale]})
    assert_clean(text, width == "piped", locale)
    settings = docs["profile"]["profiles"][0]["settings"]
    assert_whole([s["id"] for s in settings] + [s["fact"] for s in settings]
                 + [s["expected"] for s in settings] + [s["severity"] for s in settings],
                 text, "profiles show")
    for s in settings:  # no severity broken as "war/nin/g": the id's row names it whole
        row = next(line for line in text.splitlines() if re.search(
            rf"(^|[\s|\u2502\u2503]){re.escape(s['id'])}(\s|$)", line))
        assert re.search(rf"\b{s['severity']}\b", row), row
    keys = cited(s["why"] for s in settings)
    assert len(keys) > 5
    assert "Sources:" in text
    titles = source_titles()
    for key in keys:
        assert re.search(rf"^  \[{key}\] ", text, re.MULTILINE)
        assert_whole([titles[key]], text, f"legend {key}")
    if width == "piped":
        rows = [line for line in text.splitlines() if line.split()[:1] and
                line.split()[0] in {s["id"] for s in settings}]
        assert len(rows) == len(settings)  # no limit: one line per setting


def test_piped_audit_is_short(synthetic_faulty_dgx, docs) -> None:
    """The 8-GPU audit used to take 266 lines at 80 columns; now one line per setting."""
    _, text = run(["audit", *node(synthetic_faulty_dgx)], {"COLUMNS": "80"})
    ids = {f["id"] for f in _shown(docs["audit"])}
    assert len(text.splitlines()) <= len(ids) * 3 + 8


def test_the_c_locale_is_ascii_in_a_real_process(synthetic_faulty_dgx) -> None:
    """Python coerces LANG=C to C.UTF-8 (PEP 538): the output must still be ASCII."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8"))}
    runs = [({"LANG": "C"}, ["audit", "-v", "--format", "table", *node(synthetic_faulty_dgx)]),
            ({"LC_ALL": "C"}, ["audit", "--format", "table", *node(synthetic_faulty_dgx)]),
            ({}, ["profiles", "show", "gb200"])]
    for locale, argv in runs:
        proc = subprocess.run([sys.executable, "-m", "nodetune", *argv], cwd=REPO,
                              env={**env, **locale, "PYTHONPATH": str(REPO), "COLUMNS": "120"},
                              capture_output=True, timeout=120, check=False)
        assert proc.returncode in (0, 2), proc.stderr
        assert proc.stdout.isascii()
        assert not BOX.search(proc.stdout.decode())
        if argv[0] == "audit":  # --format table under LANG=C: an ASCII box
            assert b"+--" in proc.stdout


@pytest.mark.parametrize(("env", "expected"), [
    ({"LANG": "C.UTF-8"}, False), ({"LANG": "en_US.utf8"}, False), ({"LANG": "C"}, True),
    ({"LANG": "POSIX"}, True), ({"LC_ALL": "C", "LANG": "en_US.UTF-8"}, True),
    ({"LC_CTYPE": "de_DE.ISO-8859-1"}, True), ({}, True),
    ({"LC_ALL": "", "LANG": "C.UTF-8"}, False)])
def test_ascii_only_reads_the_locale(env: dict[str, str], expected: bool) -> None:
    assert ascii_only(env) is expected


def test_to_ascii() -> None:
    boxed = "\u250f\u2501\u2533\u2503 a \u2192 b \u2265 1\u2026 \u2588"
    assert to_ascii(boxed) == "+-+| a -> b >= 1... #"
    assert to_ascii("plain") == "plain"


def test_fit_keeps_words_whole() -> None:
    assert fit([4, 6], [10, 20], [1, 1], 40) == [10, 20]
    widths = fit([4, 6], [10, 20], [1, 3], 20)
    assert sum(widths) == 20 and widths[0] >= 4 and widths[1] >= 6
    assert fit([12, 14], [30, 30], [1, 1], 20) == [12, 14]  # too narrow: the minimums
    lines = grid_lines([["0000:19:01.0, 0000:19:00.0", "x"]], ("now", "y"), 16)
    assert lines == ["now            y", "0000:19:01.0,  x", "0000:19:00.0"]


def test_legend() -> None:
    assert cited(["[T1, C1] a", "[N2] b [T1]"]) == ["T1", "C1", "N2"]
    lines = legend_lines(["T1", "ZZ9"])
    assert lines[0] == "Sources:" and lines[1].startswith("  [T1]  redhat-performance/tuned")
    wrapped = legend_lines(["T1"], 40)
    assert len(wrapped) > 2 and all(len(line) <= 40 for line in wrapped)
    assert "(not in SOURCES.md)" in lines[2]


# -- narrow layouts: facts NICs, the apply plan, bench results and the fleet report ----------

@pytest.fixture(scope="module")
def synthetic_multirail(synth, tmp_path_factory) -> Any:
    """synthetic-dgx-h100 with two ConnectX-7 per GPU: 16 RDMA NICs, a wide NIC table."""
    ram = _ram_dir("nodetune-render-rails-")
    yield synth.build_dgx_h100(ram or tmp_path_factory.mktemp("render-rails"),
                               synth.Options(rails_per_gpu=2))
    if ram is not None:
        shutil.rmtree(ram, ignore_errors=True)


def records(text: str, names: set[str]) -> dict[str, set[str]]:
    """The words of each row whose first word is one of `names`, with its continuation lines
    (a wrapped cell, a stacked record): the row's own values, wherever the layout put them."""
    out: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        words = [w.strip(_PUNCT) for w in re.split(r"[\s\u2500-\u257f|]+", line) if w]
        if words and words[0] in names:
            current = words[0]
            out[current] = set(words)
        elif current and words and re.match(r"[\s\u2500-\u257f|]", line):
            out[current] |= set(words)
        else:
            current = None
    return out


def assert_fits(text: str, width: str, what: str) -> None:
    if width == "table80":
        wide = [line for line in text.splitlines() if len(line) > 80]
        assert not wide, f"{what}: lines wider than 80 columns: {wide[:3]}"


@pytest.mark.parametrize("width", WIDTHS)
def test_facts_rdma_nics_of_a_multi_rail_node(synthetic_multirail, width: str) -> None:
    extra, env = WIDTHS[width]
    _, text = run(["facts", *node(synthetic_multirail), "--only", "rdma", *extra],
                  {**env, **LOCALES["utf8"]})
    _, out = run(["facts", *node(synthetic_multirail), "--json"], {})
    devices = json.loads(out)["rdma"]["devices"]
    assert len(devices) == 16
    assert_clean(text, width == "piped", "utf8")
    assert_fits(text.split("\n", 2)[2], width, "RDMA devices")  # below the title lines
    rows = records(text, {d["name"] for d in devices})
    for d in devices:  # each NIC's address, netdev and firmware stay in its own row
        assert {d["pci_address"], d["fw_ver"], *d["netdevs"]} <= rows[d["name"]], d["name"]


@pytest.mark.parametrize("width", WIDTHS)
def test_apply_plan(synthetic_faulty_dgx, tmp_path: Path, width: str) -> None:
    extra, env = WIDTHS[width]
    del extra  # apply has no --format: a terminal gets the table, a pipe plain columns
    host = node(synthetic_faulty_dgx)
    _, out = run(["apply", *host, "--render-only", str(tmp_path / "json"), "--json"], {})
    settings = json.loads(out)["settings"]
    assert len(settings) >= 10
    _, text = run(["apply", *host, "--render-only", str(tmp_path / "text")],
                  {**env, **LOCALES["utf8"]})
    assert_clean(text, True, "utf8")  # not a terminal: plain
    assert_whole([s["id"] for s in settings] + [s["subject"] for s in settings if s["subject"]]
                 + [str(s["current"]) for s in settings] + [str(s["wanted"]) for s in settings],
                 text, "apply plan")
    table = text.split("nodetune render-only", 1)[1].split("\nwrote an Ansible project", 1)[0]
    assert_fits(table, width, "apply plan")  # the command line after it is printed whole


@pytest.mark.parametrize("width", WIDTHS)
def test_bench_results(width: str) -> None:
    extra, env = WIDTHS[width]
    del extra
    saved = REPO / "tests" / "fixtures" / "bench" / "h100x4-fc-vm-bench.json"
    _, out = run(["bench", "import", str(saved), "--json"], {})
    doc = json.loads(out)
    _, text = run(["bench", "import", str(saved)], {**env, **LOCALES["utf8"]})
    assert_clean(text, True, "utf8")
    suites = {s["suite"]: s for s in doc["suites"]}
    judged = [m for m in suites["memcpy"]["metrics"]
              if m.get("expected") and not m["key"].startswith("memcpy.p2p")]  # p2p: summarised
    assert len(judged) == 20
    assert_whole([m["name"] for m in judged] + [m["unit"] for m in judged]
                 + [size_label(r["size_bytes"]) for r in suites["allreduce"]["rows"]],
                 text, "bench")
    for m in judged:  # each figure's digits whole, with its unit right after
        figure = f"{m['value']:,.2f}" if m["value"] < 1000 else f"{m['value']:,.0f}"
        assert f"{figure} {m['unit']}" in text, figure


@pytest.fixture(scope="module")
def fleet_dir(synthetic_faulty_dgx, synthetic_multirail, tmp_path_factory) -> Path:
    """`fleet collect`'s reports of the faulty 8-GPU tree and the multi-rail one, made as
    collect makes them (lean facts, audit and check)."""
    from nodetune.fleet import lean
    from nodetune.schemas import FLEET_REPORT_SCHEMA

    out = tmp_path_factory.mktemp("fleet-render")
    for host, tree in (("gpu-node-with-faults-001", synthetic_faulty_dgx),
                       ("gpu-node-multirail-002", synthetic_multirail)):
        docs = {}
        for name in ("facts", "audit", "check"):
            _, text = run([name, *node(tree), "--json", *(["--max-age", "0"]
                                                          if name == "check" else [])], {})
            docs[name] = getattr(lean, name)(json.loads(text))
        (out / f"{host}.json").write_text(json.dumps({
            "schema": FLEET_REPORT_SCHEMA, "host": host, "collected_at": "2026-12-04T00:00:00Z",
            "lean": True, **docs, "bench": None, "errors": []}))
    return out


@pytest.mark.parametrize("width", WIDTHS)
def test_fleet_report(fleet_dir: Path, width: str) -> None:
    _, env = WIDTHS[width]
    _, out = run(["fleet", "report", str(fleet_dir), "--json"], {})
    doc = json.loads(out)
    _, text = run(["fleet", "report", str(fleet_dir)], {**env, **LOCALES["utf8"]})
    assert_clean(text, True, "utf8")
    failing = [s for s in doc["settings"] if s["nodes_failed"]]
    unhealthy = [n for n in doc["nodes"] if n["healthy"] is False]
    assert len(failing) >= 8 and [n["host"] for n in unhealthy] == ["gpu-node-with-faults-001"]
    assert_whole([s["id"] for s in failing] + [n["host"] for n in doc["nodes"]]
                 + [str(v["actual"]) for s in failing for v in s["failing_values"]]
                 + [unhealthy[0]["health_summary"].removeprefix("nodetune: ")], text,
                 "fleet report")
    assert_fits(text.split("\n", 2)[2], width, "fleet report")
    rows = records(text, {s["id"] for s in failing})
    for s in failing:  # each setting's severity and nodes stay in its own row
        assert {s["severity"], *s["failed_nodes"]} <= rows[s["id"]], s["id"]
