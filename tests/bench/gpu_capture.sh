#!/usr/bin/env bash
# Capture nodetune's GPU facts, a snapshot and a live NVML recording on a GPU machine, with
# nvidia-smi's own output for comparison. Run from anywhere, as root, on a machine with an
# NVIDIA driver and python3 with click and nvidia-ml-py; nodetune runs from this tree.
#
#   bash tests/bench/gpu_capture.sh OUTDIR
#
# Writes 8 files into OUTDIR: facts.json, snapshot.tar.gz, nvml.json, nvidia-smi-q.txt,
# nvidia-smi-topo-m.txt, nvidia-smi-nvlink-s.txt, check.txt (NVML vs nvidia-smi, snapshot
# replay vs live, per-GPU summary; ends with "RESULT: ok") and log.txt (versions, timings).
set -uo pipefail
OUT=${1:?usage: bash tests/bench/gpu_capture.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
LOG="$OUT/log.txt"

{
  echo "== $(date -u +%FT%TZ) $(uname -r) $($PY --version 2>&1) uid=$(id -u)"
  $PY -c 'import importlib.metadata as m; print("nvidia-ml-py", m.version("nvidia-ml-py"))'
  nvidia-smi --query-gpu=index,name,pci.bus_id,driver_version --format=csv,noheader
} >"$LOG" 2>&1

nvidia-smi -q >"$OUT/nvidia-smi-q.txt" 2>&1
nvidia-smi topo -m >"$OUT/nvidia-smi-topo-m.txt" 2>&1
nvidia-smi nvlink -s >"$OUT/nvidia-smi-nvlink-s.txt" 2>&1

echo "== nodetune facts --json --timings" >>"$LOG"
start=$(date +%s%N)
$PY -m nodetune facts --json --timings >"$OUT/facts.json" 2>>"$LOG"
echo "rc=$? wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))" >>"$LOG"

echo "== nodetune snapshot" >>"$LOG"
start=$(date +%s%N)
$PY -m nodetune snapshot -o "$OUT/snapshot.tar.gz" >>"$LOG" 2>&1
echo "rc=$? wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))" >>"$LOG"

$PY tests/bench/gpu_capture.py "$OUT" >"$OUT/check.txt" 2>&1
echo "check rc=$?" >>"$LOG"
tail -n 1 "$OUT/check.txt"
