#!/bin/sh
# Records the GPU fixtures of tests/fixtures/bench/ on a GPU node: OUT=dir PREFIX=h200-fc-vm
set -u
P=${PREFIX:-gpu-node}
nvidia-smi --query-gpu=name,pci.bus_id,clocks.max.sm,clocks.max.mem,power.limit,driver_version \
    --format=csv > "$OUT/$P-smi.csv"
cat "$OUT/$P-smi.csv"
python3 -m nodetune bench gpu --save "$OUT/$P-gpu.json"; echo "bench gpu rc=$?"
python3 -m nodetune bench gpu --quick --save "$OUT/$P-gpu-quick.json"; echo "bench gpu --quick rc=$?"
python3 tests/gpu/reference.py "$OUT/$P-gpu.json" > "$OUT/$P-gpu-reference.json"; echo "reference rc=$?"
cat "$OUT/$P-gpu-reference.json"
python3 -m nodetune bench cpu-mem --quick --save "$OUT/$P-cpumem-quick.json"; echo "cpu-mem quick rc=$?"
python3 -m nodetune bench cpu-mem --compare "$OUT/$P-cpumem-quick.json" --save "$OUT/$P-cpumem.json"
echo "cpu-mem full --compare quick rc=$?"
