#!/usr/bin/env bash
# Build a Debian chroot holding a newer Slurm (slurmctld, scontrol) and munge than the host's,
# for the tests that need it: trixie's Slurm 24.11 has topology/block (Slurm 23.11+; Debian
# 12 ships 22.05), sid's (26.05 when written) also reads topology.yaml (Slurm 25.05+).
#   bash tests/slurm_chroot.sh [SUITE]     (SUITE: trixie, the default, or sid)
# Needs root and deb.debian.org (or $NODETUNE_DEBIAN_MIRROR). The chroot lands in
# $NODETUNE_SLURM_CHROOTS/SUITE (default /var/cache/nodetune/slurm-SUITE), where the tests
# look for it; they skip when it is absent. A finished chroot is reused: delete it to rebuild.
set -euo pipefail

SUITE="${1:-trixie}"
BASE="${NODETUNE_SLURM_CHROOTS:-/var/cache/nodetune}"
DIR="$BASE/slurm-$SUITE"
MIRROR="${NODETUNE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="slurmctld slurm-client munge"

if [ -x "$DIR/usr/sbin/slurmctld" ] && [ -x "$DIR/usr/bin/scontrol" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "slurm_chroot.sh: debootstrap and chroot need root" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
fi

start=$(date +%s)
partial="$DIR.partial"
rm -rf "$partial"
mkdir -p "$BASE"
debootstrap --variant=minbase "$SUITE" "$partial" "$MIRROR"
# No daemon may start inside the chroot while packages install (policy-rc.d, 101: refused).
printf '#!/bin/sh\nexit 101\n' >"$partial/usr/sbin/policy-rc.d"
chmod 755 "$partial/usr/sbin/policy-rc.d"
# A mirror that serves an unstable suite's Release past its Valid-Until date is still signed;
# the chroot only runs test daemons.
echo 'Acquire::Check-Valid-Until "false";' >"$partial/etc/apt/apt.conf.d/99nodetune-tests"
chroot "$partial" apt-get update -q
DEBIAN_FRONTEND=noninteractive chroot "$partial" \
  apt-get install -y -q --no-install-recommends $PACKAGES
chroot "$partial" apt-get clean
mv "$partial" "$DIR"
echo "slurm_chroot.sh: $(chroot "$DIR" slurmctld -V) in $DIR ($(( $(date +%s) - start )) s)"
