#!/usr/bin/env bash
# nodetune apply and rollback for real on a live, disposable machine (as root):
# audit -> plant safe runtime faults -> dry run -> apply (--yes) -> re-audit -> second apply
# (must change nothing) -> rollback -> re-audit -> put the machine's own values back.
#
#   bash tests/bench/apply_live.sh OUTDIR [PROFILE]
#
# Needs python3 with nodetune's dependencies, ansible-core and ansible-runner (ansible-playbook
# on PATH or beside python3). Applies only settings whose fix is a runtime write plus a
# boot-time file (roles kernel, memory, cpu, storage; disruption "none"): no reboot, no module
# loads, no service changes. Files written to OUTDIR:
#   audit-before.json, plan.json, apply.json, audit-after.json, apply-again.json,
#   rollback.json, audit-rolledback.json, state.json (the state file apply wrote),
#   files-before.txt / files-after.txt / files-rolledback.txt (the files apply touched),
#   check.txt (what was verified; ends with "RESULT: ok" or "RESULT: FAIL"), log.txt.
set -uo pipefail
OUT=${1:?usage: bash tests/bench/apply_live.sh OUTDIR [PROFILE]}
PROFILE=${2:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
SCRIPTS=$($PY -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$SCRIPTS:$HOME/.local/bin:$PATH"
LOG="$OUT/log.txt"
NT() { $PY -m nodetune "$@"; }
PROFILE_ARGS=()
[ -n "$PROFILE" ] && PROFILE_ARGS=(--profile "$PROFILE")

if [ "$(id -u)" != 0 ]; then echo "run as root (this changes the machine)" >&2; exit 3; fi
{
  echo "== $(date -u +%FT%TZ) $(uname -r) $($PY --version 2>&1)"
  command -v ansible-playbook && v=$(ansible-playbook --version) && echo "${v%%$'\n'*}"
  $PY -c 'import ansible_runner, importlib.metadata as m; print("ansible-runner", m.version("ansible-runner"))'
} >"$LOG" 2>&1 || { echo "Ansible is missing: see $LOG" >&2; exit 3; }

# The machine's own values, put back at the end whatever happens.
KNOBS="/proc/sys/vm/swappiness /proc/sys/kernel/numa_balancing /sys/kernel/mm/transparent_hugepage/enabled"
declare -A ORIGINAL
for f in $KNOBS; do
  [ -w "$f" ] || continue
  v=$(cat "$f"); case "$v" in *"["*) v=$(sed 's/.*\[\(.*\)\].*/\1/' <<<"$v");; esac
  ORIGINAL[$f]=$v
done
restore_machine() {
  for f in "${!ORIGINAL[@]}"; do echo "${ORIGINAL[$f]}" >"$f" 2>/dev/null; done
  echo "== machine values put back: $(for f in "${!ORIGINAL[@]}"; do printf '%s=%s ' "$f" "$(cat "$f")"; done)" >>"$LOG"
}
trap restore_machine EXIT

step() {  # step NAME OUTFILE nodetune-args...
  local name=$1 out=$2; shift 2
  local t0=$SECONDS
  NT "$@" >"$OUT/$out" 2>>"$LOG"
  local rc=$?
  printf '== %-16s rc=%s %ss: nodetune %s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >>"$LOG"
  return $rc
}

# Plant faults nodetune can fix at runtime (numa_balancing only matters on multi-node hosts).
[ -n "${ORIGINAL[/proc/sys/vm/swappiness]:-}" ] && echo 60 >/proc/sys/vm/swappiness
[ -n "${ORIGINAL[/sys/kernel/mm/transparent_hugepage/enabled]:-}" ] && echo always >/sys/kernel/mm/transparent_hugepage/enabled
[ -n "${ORIGINAL[/proc/sys/kernel/numa_balancing]:-}" ] && echo 1 >/proc/sys/kernel/numa_balancing
echo "== planted: swappiness=60 THP=always numa_balancing=1" >>"$LOG"

step audit-before audit-before.json audit --json "${PROFILE_ARGS[@]}"
step plan plan.json apply --dry-run --json "${PROFILE_ARGS[@]}"
ONLY=$($PY - "$OUT/plan.json" <<'EOF'
import json, sys
plan = json.load(open(sys.argv[1]))
safe = {"kernel", "memory", "cpu", "storage"}
for s in plan.get("settings", []):
    if s["disruption"] == "none" and s["status"] == "would-change" and set(s["roles"]) <= safe:
        print(f"--only={s['id']}[{s['subject']}]" if s["subject"] else f"--only={s['id']}")
EOF
)
echo "== settings to apply: $(echo $ONLY)" >>"$LOG"
if [ -z "$ONLY" ]; then echo "no safe setting to apply: see $OUT/plan.json" >&2; echo "RESULT: FAIL" >"$OUT/check.txt"; exit 1; fi

# shellcheck disable=SC2086
step apply apply.json apply --yes --json "${PROFILE_ARGS[@]}" $ONLY
STATE=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1])).get("state_file") or "")' "$OUT/apply.json")
[ -n "$STATE" ] && cp "$STATE" "$OUT/state.json"
list_files() {  # the files and runtime values the state file records, as they are now
  $PY - "$OUT/state.json" <<'EOF'
import json, os, sys
state = json.load(open(sys.argv[1]))
for host in state["hosts"].values():
    for path in sorted(host["runtime"]) + sorted(host["files"]):
        if os.path.isfile(path):
            print(f"{path}: {open(path).read().strip()!r}")
        else:
            print(f"{path}: absent")
EOF
}
[ -f "$OUT/state.json" ] && list_files >"$OUT/files-after.txt"
step audit-after audit-after.json audit --json "${PROFILE_ARGS[@]}"
# shellcheck disable=SC2086
step apply-again apply-again.json apply --yes --json "${PROFILE_ARGS[@]}" $ONLY
step rollback rollback.json rollback --yes --json ${STATE:+--state-file "$STATE"}
[ -f "$OUT/state.json" ] && list_files >"$OUT/files-rolledback.txt"
step audit-rolledback audit-rolledback.json audit --json "${PROFILE_ARGS[@]}"

$PY - "$OUT" >"$OUT/check.txt" <<'EOF'
import json, sys, base64
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(f"{out}/{name}"))
    except (OSError, ValueError) as exc:
        print(f"{name}: unreadable ({exc})")
        return {}
def failing(doc):
    return {(f["id"], f["subject"]) for f in doc.get("findings", []) if f["status"] == "fail"}
before, after, back = load("audit-before.json"), load("audit-after.json"), load("audit-rolledback.json")
apply, again, rollback, state = load("apply.json"), load("apply-again.json"), load("rollback.json"), load("state.json")
applied = {(s["id"], s["subject"]): s for s in apply.get("settings", [])}
ok = True
def check(cond, text):
    global ok
    ok &= bool(cond)
    print(("ok   " if cond else "FAIL ") + text)
print(f"profile {apply.get('profile')}; settings applied: {len(applied)}; ansible changes: {apply.get('changed')}")
for key, s in sorted(applied.items(), key=str):
    print(f"  {key[0]}{'[' + key[1] + ']' if key[1] else ''}: {s['current']} -> {s['wanted']}: {s['status']} (now {s['after']}) {s['message'] or ''}")
check(applied and all(s["status"] == "fixed" for s in applied.values()), "every applied setting is fixed")
check(not (set(applied) & failing(after)), "re-audit after apply: none of them fails")
check(not apply.get("rejected"), f"the kernel rejected nothing ({apply.get('rejected')})")
check(again.get("changed") == 0, f"second apply changed nothing (changed={again.get('changed')})")
check(rollback.get("schema") == "nodetune.rollback/1" and not rollback.get("rejected"), "rollback ran without rejections")
check(set(applied) <= failing(back), "re-audit after rollback: the applied settings fail again as before")
check(failing(back) == failing(before), f"re-audit after rollback equals the audit before (diff {failing(back) ^ failing(before)})")
for host in state.get("hosts", {}).values():
    for path, record in host["runtime"].items():
        now = open(path).read()
        check(now.split() == record["raw"].split(),
              f"{path} is back to {record['raw'].strip()!r} (now {now.strip()!r})")
    for path, record in host["files"].items():
        try:
            data = open(path, "rb").read()
            state_now = "file"
        except FileNotFoundError:
            data, state_now = b"", "absent"
        same = state_now == record["state"] and (record["state"] != "file" or data == base64.b64decode(record["content_b64"]))
        check(same, f"{path} is back to its previous {record['state']}")
print("RESULT: ok" if ok else "RESULT: FAIL")
EOF
cat "$OUT/check.txt"
grep -q "RESULT: ok" "$OUT/check.txt"
