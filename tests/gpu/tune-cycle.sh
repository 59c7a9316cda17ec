#!/bin/sh
# A full `nodetune tune memcpy` cycle on a disposable GPU node (it changes the host):
# OUT=dir PREFIX=h200-fc-vm
set -u
P=${PREFIX:-gpu-node}
python3 -m nodetune audit > "$OUT/$P-audit-before.txt" 2>&1; echo "audit rc=$?"
grep -E "fail|warn" "$OUT/$P-audit-before.txt" | head -30
python3 -m nodetune tune memcpy --quick --yes --save "$OUT/$P-tune-memcpy.json" \
    --card "$OUT/$P-tune-memcpy-card.txt" --plot "$OUT/$P-tune-memcpy-card.png"
echo "tune rc=$?"
cat "$OUT/$P-tune-memcpy-card.txt"
python3 -m nodetune tune memcpy --quick --yes --card "$OUT/$P-tune-again-card.json"
echo "tune again rc=$?"
