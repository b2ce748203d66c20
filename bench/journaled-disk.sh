#!/usr/bin/env bash
# Runs a benchmark with its temporary files (the caches it writes, s3rver's objects, Nix's narinfo caches) on a
# fresh journaled ext4, as a builder's disk is: TMPDIR points there.
#
#   bash bench/journaled-disk.sh [--sid-root] CMD...
#
# Why: this VM's root file system is ext4 without a journal, where every file created scans the inodes deleted in
# the last 30 s (`perf`: recently_deleted under __ext4_new_inode); that, not the tools, was most of the time of a
# thousand small files, and it varied from run to run. On a journaled file system fsync is also what users pay:
# a journal commit. The disk is a sparse file on a loop device, made anew for each run and removed after.
# With --sid-root, CMD runs in the Debian sid root (test/sid-root.sh) and the disk is mounted inside it.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "journaled-disk.sh: needs root (mkfs, mount)" >&2; exit 2; }
sid=
if [ "${1:-}" = --sid-root ]; then
  sid=1
  shift
fi
[ $# -gt 0 ] || { echo "usage: journaled-disk.sh [--sid-root] CMD..." >&2; exit 2; }

checkout=$(realpath "$(dirname "$0")/..")
image=$(mktemp /var/tmp/cachectl-bench-disk.XXXXXX)
mountpoint=/mnt/cachectl-bench-$$
inner=$mountpoint
if [ -n "$sid" ]; then
  bash "$checkout/test/sid-root.sh" make
  mountpoint=$(bash "$checkout/test/sid-root.sh" path)$inner
fi
cleanup() {
  umount "$mountpoint" 2>/dev/null || true
  rmdir "$mountpoint" 2>/dev/null || true
  rm -f "$image"
}
trap cleanup EXIT

# 16 GB at most; only what is written takes space
truncate -s 16G "$image"
mkfs.ext4 -q -F "$image"
mkdir -p "$mountpoint"
mount -o loop "$image" "$mountpoint"
chmod 1777 "$mountpoint"

if [ -n "$sid" ]; then
  TMPDIR=$inner bash "$checkout/test/sid-root.sh" run "$@"
else
  TMPDIR=$inner "$@"
fi
