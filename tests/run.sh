#!/usr/bin/env bash
# Set up a fresh Debian machine and run nodetune's whole test suite.
#   bash tests/run.sh            (as root, or with sudo available)
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k audit`.
# It installs nodetune with every extra and the test and lint dependency groups into .venv
# (or $NODETUNE_VENV); NODETUNE_SETUP_ONLY=1 stops after that.
# As root it also builds (once, then reuses) Debian trixie and sid chroots with Slurm 24.11
# and 26.05 for the topology/block and topology.yaml tests (tests/slurm_chroot.sh, about 35 s
# each); NODETUNE_SLURM_CHROOT=0 skips that, and those tests then skip.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# tuned: tests/test_tuned.py loads profiles with its parser; its daemon is not wanted (below)
APT_PACKAGES="fio numactl hwloc prometheus slurm-wlm munge debootstrap tuned"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
  # the package starts TuneD where systemd runs: stop it, so the tests never tune this machine
  case "$missing" in *" tuned"*)
    if [ -d /run/systemd/system ]; then $SUDO systemctl disable --now tuned || true; fi ;;
  esac
fi

if [ "$(id -u)" = 0 ] && [ "${NODETUNE_SLURM_CHROOT:-1}" != 0 ]; then
  for suite in trixie sid; do
    bash tests/slurm_chroot.sh "$suite" >/tmp/nodetune-slurm-$suite.log 2>&1 ||
      echo "tests/run.sh: no Slurm chroot for $suite (see /tmp/nodetune-slurm-$suite.log);" \
        "its tests will skip" >&2
  done
fi

VENV="${NODETUNE_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# `--group` (PEP 735 dependency groups) needs pip 25.1 or later
"$VENV/bin/python" -m pip install -q --upgrade 'pip>=25.1'
"$VENV/bin/python" -m pip install -q -e '.[all]' --group test --group lint
[ -z "${NODETUNE_SETUP_ONLY:-}" ] || exit 0  # .ci/run: set up, lint, then test

export PATH="$PWD/$VENV/bin:$PATH"
exec "$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
