"""`nodetune import nvidia-smi FILE`: pasted nvidia-smi text into a replayable NVML recording."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from nodetune import exitcodes
from nodetune.errors import SourceError
from nodetune.node import smi_text
from nodetune.node.nvml import RecordedNvml
from nodetune.schemas import IMPORT_SCHEMA
from nodetune.views.output import emit_json


@click.group("import", context_settings={"help_option_names": ["-h", "--help"]})
def cmd() -> None:
    """Turn what users already have into inputs nodetune replays.

    `nvidia-smi` text from a support ticket becomes an NVML recording for `--nvml FILE`.
    """


@cmd.command("nvidia-smi")
@click.argument("smi_q", metavar="FILE")
@click.option("--topo", "topo", default=None, metavar="FILE",
              help="`nvidia-smi topo -m` output: adds CPU affinity, NUMA node and NVLink peers.")
@click.option("--nvlink", "nvlink", default=None, metavar="FILE",
              help="`nvidia-smi nvlink -s` output: adds the state of every NVLink.")
@click.option("-o", "--output", "output", default="-", show_default=True, metavar="REC.json",
              type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the nodetune.nvml/1 recording (- for standard output).")
@click.option("--json", "as_json", is_flag=True,
              help="With -o FILE: print a summary (schema nodetune.import/1), not a sentence.")
def nvidia_smi(smi_q: str, topo: str | None, nvlink: str | None, output: str,
               as_json: bool) -> int:
    """Convert `nvidia-smi -q` (FILE, - for standard input) into a nodetune.nvml/1 recording.

    Replay it with any read-only command: `nodetune audit --root TREE --nvml REC.json` or
    `nodetune check --nvml REC.json`. What the text does not show (NUMA node and CPU affinity
    without --topo, NVLink without --nvlink, every N/A) is null with the reason, so checks on
    it are unknown, never pass. A line nodetune cannot read is named as FILE:LINE (exit 3).
    """
    sources = [s for s in (smi_q, topo, nvlink) if s == "-"]
    if len(sources) > 1:
        raise SourceError("only one of FILE, --topo and --nvlink can be - (standard input)",
                          fix="save the other outputs to files")
    if output != "-":
        _check_writable(output)
    stdin = sys.stdin.read

    def name(path: str) -> str:
        return "<stdin>" if path == "-" else path

    doc = smi_text.convert(
        smi_text.read_text(smi_q, stdin),
        None if topo is None else smi_text.read_text(topo, stdin),
        None if nvlink is None else smi_text.read_text(nvlink, stdin),
        origin=name(smi_q), topo_origin=name(topo or ""), nvlink_origin=name(nvlink or ""))
    doc["captured_from"] = " + ".join(name(s) for s in (smi_q, topo, nvlink) if s)
    RecordedNvml(doc, origin=doc["captured_from"])  # what is written must replay
    text = json.dumps(doc, indent=1) + "\n"
    if output == "-":
        sys.stdout.write(text)
        return exitcodes.OK
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(text)
    summary = _summary(doc, output)
    if as_json:
        emit_json(summary, IMPORT_SCHEMA)
    else:
        click.echo(f"wrote {output}: {len(doc['devices'])} GPUs, driver "
                   f"{doc['driver_version'] or 'unknown'}; {summary['unread_fields']} fields "
                   f"not in the text stay unknown")
        click.echo(f"replay it with: nodetune audit --root TREE --nvml {output}")
    return exitcodes.OK


def _summary(doc: dict[str, Any], output: str) -> dict[str, Any]:
    unread: dict[str, int] = {}
    for dev in doc["devices"]:
        for fieldname in dev["errors"]:
            unread[fieldname] = unread.get(fieldname, 0) + 1
    return {"output": output, "captured_from": doc["captured_from"],
            "driver_version": doc["driver_version"],
            "cuda_driver_version": doc["cuda_driver_version"], "gpus": len(doc["devices"]),
            "unread_fields": len(unread), "unread": dict(sorted(unread.items()))}


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        why = "does not exist" if not os.path.isdir(folder) else "is not writable"
        raise SourceError(f"cannot write the recording to {path}: {folder} {why}",
                          fix="choose a writable path for -o")
