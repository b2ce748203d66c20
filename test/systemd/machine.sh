#!/usr/bin/env bash
# A throw-away machine for test/systemd.test.ts: systemd as PID 1 in systemd-nspawn, over an overlay of a root
# (this machine's, Debian 12, or the Debian sid root of test/sid-root.sh), with Debian's nix-setup-systemd
# (nix-daemon.service/.socket, the nixbld users) and cachectl installed as `npm install -g` lays it out. Nothing
# is installed in the root itself, and nothing stays mounted: every exit path (EOF on stdin, a signal, an error)
# unmounts and deletes the overlay.
#
#   machine.sh CHECKOUT [ROOT]   a built checkout (npm ci && npm run build); ROOT / (the default) or the sid root,
#                                which has nix-setup-systemd already and whose systemd (>= 258) needs the
#                                unified cgroup hierarchy
#
# The checkout is at /mnt/checkout inside (read-only), for the tests' fixtures and s3rver, not for cachectl itself.
# Prints `prepared ROOT` once the overlay is ready, then reads commands on stdin, one per line:
#   boot       boots the machine; prints `booted PID` (PID 1 of the container, for nsenter) once systemd has
#              finished starting up
#   wait-off   waits (up to 60 s) for the machine to power off; prints `off RC` (systemd-nspawn's exit code)
# EOF on stdin ends it: a machine still running is powered off, then everything is removed. Progress and
# errors go to stderr; the container's console goes to ROOT/../console-bootN.log.
set -euo pipefail

die() { echo "machine.sh: $*" >&2; exit 2; }
say() { printf 'machine.sh [%s] %s\n' "$(date +%T.%3N)" "$*" >&2; }

{ [ $# -ge 1 ] && [ $# -le 2 ]; } || die "usage: machine.sh CHECKOUT [ROOT]"
checkout=$(realpath "$1")
lower=$(realpath "${2:-/}")
[ "$(id -u)" = 0 ] || die "needs root (overlay mounts, systemd-nspawn)"
command -v systemd-nspawn >/dev/null ||
  die "systemd-nspawn is missing: run bash test/setup.sh (installs systemd-container)"
[ -f "$checkout/dist/src/bin/cachectl.cjs" ] || die "$checkout is not built: run npm ci && npm run build there"

prefix=/tmp/cachectl-machine.
# What a killed run (its supervisor gone, so no cleanup ran) left behind.
for stale in "$prefix"*; do
  [ -d "$stale" ] || continue
  pid=$(cat "$stale/supervisor.pid" 2>/dev/null || echo 0)
  if [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
  say "removing $stale, left by a run that was killed"
  pkill -KILL -f "systemd-nspawn .*-D $stale/root" && sleep 1
  grep -o " $stale/[^ ]*" /proc/mounts | sort -r | while read -r mnt; do umount -l "$mnt" || true; done
  rm -rf "$stale"
done

work=$(mktemp -d "${prefix}XXXXXX")
echo $$ >"$work/supervisor.pid"
root=$work/root
nspawn_pid=
boots=0
chroot_binds=()

cleanup() {
  local rc=$?
  trap - EXIT
  trap '' INT TERM # a second signal must not cut the cleanup short
  set +e
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    say "powering the machine off"
    kill -TERM "$nspawn_pid" # nspawn turns SIGTERM into a clean power-off of the container
    for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nspawn_pid" 2>/dev/null
    wait "$nspawn_pid" 2>/dev/null
  fi
  rm -rf /run/systemd/nspawn/propagate/cachectl-test-$$-*
  for ((i = ${#chroot_binds[@]} - 1; i >= 0; i--)); do
    umount "${chroot_binds[$i]}" 2>/dev/null || umount -l "${chroot_binds[$i]}"
  done
  if mountpoint -q "$root"; then
    umount "$root" 2>/dev/null || { sleep 1; umount "$root" 2>/dev/null; } ||
      { say "overlay busy: detaching it lazily"; umount -l "$root"; }
  fi
  rm -rf "$work"
  if [ -e "$work" ]; then say "could not remove $work"; else say "overlay unmounted and removed"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Directories the machine starts with empty: opaque in the upper layer, so nothing of this machine's shows
# through. nspawn wants an unpopulated /dev; a fresh Nix store and state; no /run or /tmp leftovers (/tmp also
# holds this overlay); no units enabled on this machine; no global npm packages of this machine; an empty
# /var/log/journal makes the container's journal persistent.
mkdir -p "$work"/{upper,work,root}
opaque=(dev run tmp var/tmp nix etc/nix etc/cachectl etc/systemd/system var/lib/cachectl var/cache/cachectl
  var/log/journal
  usr/local/lib/node_modules srv)
for dir in "${opaque[@]}"; do
  mkdir -p "$work/upper/$dir"
  python3 -c 'import os, sys; os.setxattr(sys.argv[1], "trusted.overlay.opaque", b"y")' "$work/upper/$dir"
done
chmod 1777 "$work/upper/tmp" "$work/upper/var/tmp"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/upper,workdir=$work/work" "$root"
say "overlay of $lower mounted at $root"

if [ "$lower" = / ]; then
  # nix-setup-systemd, through chroot; policy-rc.d keeps its maintainer scripts from starting anything.
  for dir in proc sys dev; do mount --bind "/$dir" "$root/$dir"; chroot_binds+=("$root/$dir"); done
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
  apt_install() {
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends \
      -o DPkg::Lock::Timeout=600 nix-setup-systemd
  }
  if ! apt_install >"$work/apt.log" 2>&1; then
    chroot "$root" apt-get update -q >>"$work/apt.log" 2>&1 || true
    apt_install >>"$work/apt.log" 2>&1 ||
      { tail -n 20 "$work/apt.log" >&2; die "apt-get install nix-setup-systemd failed in the overlay"; }
  fi
  rm -f "$root/usr/sbin/policy-rc.d"
  for ((i = ${#chroot_binds[@]} - 1; i >= 0; i--)); do umount "${chroot_binds[$i]}"; done
  chroot_binds=()
  find "$root/dev" -mindepth 1 -delete # whatever the maintainer scripts left there
else
  # Installed in the root already; its units enabled again here, as the opaque /etc/systemd/system hides the root's.
  systemctl --root="$root" --quiet enable nix-daemon.socket
fi
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
say "nix-setup-systemd $(chroot "$root" dpkg-query -W -f '${Version}' nix-setup-systemd) installed in the overlay"

# cachectl as `npm install -g` lays it out: what `npm pack` puts in the package, its production
# dependencies, and /usr/local/bin/cachectl a symlink to the bin script, made executable.
package=$root/usr/local/lib/node_modules/cachectl
mkdir -p "$package/node_modules" "$root/usr/local/bin"
tarball=$(cd "$checkout" && npm pack --silent --pack-destination "$work")
tar -xzf "$work/$tarball" -C "$package" --strip-components=1
(cd "$checkout" && npm ls --omit=dev --all --parseable) | sed -n "s|^$checkout/node_modules/||p" |
  awk -F/ '{ print ($1 ~ /^@/) ? $1 "/" $2 : $1 }' | sort -u | while read -r dep; do
  mkdir -p "$package/node_modules/$(dirname "$dep")"
  cp -a "$checkout/node_modules/$dep" "$package/node_modules/$dep"
done
bin=$(cd "$package" && node -p 'require("./package.json").bin.cachectl')
chmod 755 "$package/$bin"
ln -s "../lib/node_modules/cachectl/$bin" "$root/usr/local/bin/cachectl"
say "cachectl $(node -p "require('$package/package.json').version") installed at /usr/local/lib/node_modules/cachectl"

# systemd >= 258 runs only on the unified cgroup hierarchy, which this host does not use: nspawn gives the
# container one of its own.
unified=0
[ "$lower" = / ] || unified=1
systemd-id128 new >"$root/etc/machine-id"
echo cachectl-test >"$root/etc/hostname"
echo "prepared $root"

boot() {
  boots=$((boots + 1))
  # A name of its own for each boot: nspawn keeps a directory per name under /run (here on disk) that it cannot
  # remove, and refuses to boot a name whose directory is there.
  SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=$unified systemd-nspawn --quiet --keep-unit --register=no --link-journal=no \
    --private-network -D "$root" -M "cachectl-test-$$-$boots" --console=pipe --bind-ro="$checkout:/mnt/checkout" -b \
    >"$work/console-boot$boots.log" 2>&1 </dev/null &
  nspawn_pid=$!
  # PID 1 of the container: the child of nspawn that is pid 1 in its own namespace.
  local leader='' deadline=$((SECONDS + 60))
  while [ -z "$leader" ]; do
    kill -0 "$nspawn_pid" 2>/dev/null ||
      { cat "$work/console-boot$boots.log" >&2; die "systemd-nspawn exited during boot $boots"; }
    [ $SECONDS -lt $deadline ] || die "no PID 1 in the container after 60 s"
    for pid in $(pgrep -P "$nspawn_pid" || true); do
      grep -qE '^NSpid:\s+[0-9]+\s+1$' "/proc/$pid/status" 2>/dev/null && leader=$pid
    done
    [ -n "$leader" ] || sleep 0.05
  done
  # is-system-running --wait returns once start-up is over: running, or degraded when a unit failed.
  until state=$(nsenter --target "$leader" --all --root --wd -- systemctl is-system-running --wait 2>/dev/null) ||
    [ "$state" = degraded ]; do
    [ $SECONDS -lt $deadline ] ||
      die "systemd in the container did not finish starting in 60 s (state: ${state:-unknown})"
    sleep 0.1
  done
  say "boot $boots: system $state"
  echo "booted $leader"
}

wait_off() {
  local deadline=$((SECONDS + 60))
  while kill -0 "$nspawn_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
  kill -0 "$nspawn_pid" 2>/dev/null &&
    { say "the machine did not power off in 60 s: killing it"; kill -KILL "$nspawn_pid"; }
  local rc=0
  wait "$nspawn_pid" || rc=$?
  nspawn_pid=
  rm -rf "/run/systemd/nspawn/propagate/cachectl-test-$$-$boots"
  echo "off $rc"
}

while read -r command; do
  case $command in
    boot) boot ;;
    wait-off) wait_off ;;
    *) die "unknown command: $command" ;;
  esac
done
