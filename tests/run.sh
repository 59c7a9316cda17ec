#!/usr/bin/env bash
# Set up a fresh Debian machine and run nodetune's whole test suite.
#   bash tests/run.sh            (as root, or with sudo available)
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k audit`.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

APT_PACKAGES="fio numactl hwloc prometheus slurm-wlm munge"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

VENV="${NODETUNE_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e . pytest pytest-xdist ansible-lint kubernetes-validate

export PATH="$PWD/$VENV/bin:$PATH"
exec "$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
