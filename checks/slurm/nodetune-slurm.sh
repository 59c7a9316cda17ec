#!/usr/bin/env bash
# Run `nodetune check` for Slurm and drain or resume this node from its result.
#
#   nodetune-slurm.sh healthcheck   (slurm.conf HealthCheckProgram, via nodetune-healthcheck)
#   nodetune-slurm.sh prolog        (slurm.conf Prolog, via nodetune-prolog)
#
# nodetune check exits 0 healthy, 1 unhealthy, 3 could not run; its first stdout line is the
# drain reason ("nodetune: GPU3 PCIe x8 (expected x16)").
#   healthy    resume the node, but only when it is drained with a reason nodetune wrote
#              (prefix "nodetune:"); a node an admin drained stays drained.
#   unhealthy  drain with the reason (a node already drained for another reason keeps it).
#              The prolog then exits 1: Slurm requeues the job and keeps the node drained.
#   no result  (nodetune error, timeout, nodetune missing) change nothing and exit 0 in the
#              prolog, so that a broken nodetune install cannot drain a whole cluster;
#              NODETUNE_ON_ERROR=drain drains instead.
# Every scontrol/sinfo call is bounded by NODETUNE_SCONTROL_TIMEOUT: when slurmctld is
# unreachable nothing is changed and the failure is logged (syslog tag nodetune-slurm).
#
# Settings come from the environment, after /etc/default/nodetune (or $NODETUNE_DEFAULTS) is
# sourced when it exists, e.g. NODETUNE_CHECK_ARGS="--profile dgx-h100 --mount /scratch".
# All optional:
#   NODETUNE                  nodetune executable (default: nodetune on PATH, /usr/local/bin)
#   NODETUNE_CHECK_ARGS       extra `nodetune check` arguments, split on spaces
#                             (e.g. "--profile dgx-h100 --tier quick")
#   NODETUNE_TIER             quick (default) or standard
#   NODETUNE_FROM_AGENT       1 (default): answer from the nodetune agent's last check
#                             (`nodetune check --from-agent`) when it is at most
#                             NODETUNE_MAX_AGE old, of this boot and with the same options
#                             (it adds --profile auto, as the agent matches one, unless
#                             NODETUNE_CHECK_ARGS names a profile), else run the full check;
#                             0: always check (reusing a cached
#                             result at most NODETUNE_MAX_AGE old)
#   NODETUNE_MAX_AGE          seconds an answer may be old (default 360 with the agent: its
#                             default --interval 300 s, jitter and one cycle; 60 without)
#   NODETUNE_TIMEOUT          seconds `nodetune check` may take (default 30)
#   NODETUNE_SCONTROL_TIMEOUT seconds each scontrol/sinfo call may take (default 10)
#   NODETUNE_ON_ERROR         ignore (default) or drain when nodetune cannot give a result
#   NODETUNE_EXPECT_IDLE      1: the prolog also requires every GPU free of compute processes
#                             (--expect-idle); only for nodes given whole to one job, since
#                             jobs sharing a node hold the other GPUs (default 0)
#   NODETUNE_SLURM_NODE       node name (default: $SLURMD_NODENAME, else hostname -s)
#   NODETUNE_PROFILES_DIR     site profile directories (":"-separated), searched before the
#                             shipped profiles, as `--profiles-dir` (exported to nodetune check)
set -u

MODE=${1:-}
case "$MODE" in
  healthcheck|prolog) ;;
  *) echo "usage: $0 healthcheck|prolog" >&2; exit 2 ;;
esac

DEFAULTS=${NODETUNE_DEFAULTS:-/etc/default/nodetune}
# shellcheck source=/dev/null
[ -r "$DEFAULTS" ] && . "$DEFAULTS"

PREFIX="nodetune:"
NODE=${NODETUNE_SLURM_NODE:-${SLURMD_NODENAME:-$(hostname -s)}}
TIER=${NODETUNE_TIER:-quick}
FROM_AGENT=${NODETUNE_FROM_AGENT:-1}
if [ "$FROM_AGENT" = 1 ]; then
  MAX_AGE=${NODETUNE_MAX_AGE:-360}
  source_args=(--from-agent)
  # The agent checks against the profile the node matches (its default): ask the same question,
  # or its answer never applies. A --profile in NODETUNE_CHECK_ARGS overrides this.
  case " ${NODETUNE_CHECK_ARGS:-} " in
    *" --profile "*|*" --profile="*) ;;
    *) source_args+=(--profile auto) ;;
  esac
else
  MAX_AGE=${NODETUNE_MAX_AGE:-60}
  source_args=()
fi
CHECK_TIMEOUT=${NODETUNE_TIMEOUT:-30}
SCONTROL_TIMEOUT=${NODETUNE_SCONTROL_TIMEOUT:-10}
ON_ERROR=${NODETUNE_ON_ERROR:-ignore}
NODETUNE=${NODETUNE:-$(command -v nodetune || echo /usr/local/bin/nodetune)}
[ -n "${NODETUNE_PROFILES_DIR:-}" ] && export NODETUNE_PROFILES_DIR

log() {
  logger -t nodetune-slurm -- "$NODE: $*" 2>/dev/null
  echo "nodetune-slurm: $NODE: $*" >&2
}

bounded() { timeout -k 2 "$SCONTROL_TIMEOUT" "$@"; }

# Prints "<state> <reason>" of this node, e.g. "drained nodetune: GPU3 PCIe x8 (expected x16)"
# or "idle none"; fails when slurmctld does not answer.
node_state() {
  local line
  line=$(bounded sinfo --noheader --Node --nodes="$NODE" --format='%T %E' 2>/dev/null | head -n 1)
  [ -n "$line" ] || return 1
  printf '%s\n' "$line"
}

drain() {
  local reason=$1 current state
  if current=$(node_state); then
    state=${current%% *}
    local old_reason=${current#* }
    if [[ "$state" == *drain* && "$old_reason" != "$PREFIX"* ]]; then
      log "already drained by someone else ($old_reason); not replacing that reason with: $reason"
      return 0
    fi
    if [[ "$state" == *drain* && "$old_reason" == "$reason" ]]; then
      return 0
    fi
  fi
  if bounded scontrol update nodename="$NODE" state=drain reason="$reason" >/dev/null 2>&1; then
    log "drained: $reason"
  else
    log "could not drain (slurmctld unreachable?): $reason"
    return 1
  fi
}

resume_if_ours() {
  local current state reason
  if ! current=$(node_state); then
    log "slurmctld did not answer; node state left as it is"
    return 1
  fi
  state=${current%% *}
  reason=${current#* }
  if [[ "$state" == *drain* && "$reason" == "$PREFIX"* ]]; then
    if bounded scontrol update nodename="$NODE" state=resume >/dev/null 2>&1; then
      log "healthy again; resumed (was: $reason)"
    else
      log "healthy again, but could not resume (slurmctld unreachable?)"
      return 1
    fi
  fi
}

errfile=$(mktemp "${TMPDIR:-/tmp}/nodetune-slurm.XXXXXX")
trap 'rm -f "$errfile"' EXIT
# shellcheck disable=SC2086  # NODETUNE_CHECK_ARGS is split on purpose
mode_args=()
[ "$MODE" = prolog ] && [ "${NODETUNE_EXPECT_IDLE:-0}" = 1 ] && mode_args=(--expect-idle)
out=$(timeout -k 5 "$((CHECK_TIMEOUT + 10))" "$NODETUNE" check --tier "$TIER" \
      "${source_args[@]}" --max-age "$MAX_AGE" --timeout "$CHECK_TIMEOUT" "${mode_args[@]}" \
      ${NODETUNE_CHECK_ARGS:-} 2>"$errfile")
rc=$?
summary=$(printf '%s\n' "$out" | head -n 1 | tr -d '"\r' | cut -c 1-250)

case "$rc" in
  0)
    resume_if_ours
    exit 0
    ;;
  1)
    [[ "$summary" == "$PREFIX"* ]] || summary="$PREFIX unhealthy"
    drain "$summary"
    exit 1
    ;;
  *)
    # the first line that is not --from-agent's note about running the full check
    err=$(grep -v -m 1 "^nodetune: not using the agent's answer" "$errfile" | cut -c 1-200)
    log "nodetune check could not run (exit $rc): ${err:-no output}"
    if [ "$ON_ERROR" = drain ]; then
      drain "$PREFIX check could not run (exit $rc)"
      exit 1
    fi
    [ "$MODE" = prolog ] && exit 0
    exit "$rc"
    ;;
esac
