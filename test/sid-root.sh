#!/usr/bin/env bash
# The Nix users run: a Debian sid root with its nix-bin (2.34 on 2026-12), where the tests run Nix and cachectl
# as a user's machine runs them. Debian 12 cannot install a newer Nix (sid's needs a newer glibc), but a
# debootstrapped root can, and this machine's Node binary runs in it.
#
#   sid-root.sh make        makes the root if it is missing or was left half made (about a minute), else checks it
#   sid-root.sh run CMD...  runs CMD inside the root as root, from the current directory, with this checkout at
#                           the same path; /proc, /dev and /sys are mounted in a private mount namespace, so
#                           nothing stays mounted when CMD ends however it ends
#   sid-root.sh path        prints the root's directory
#
# The root is at $CACHECTL_SID_ROOT (default /var/cache/cachectl/sid-root) and is reused by every later run; it
# has its own /nix, so its store and database are not this machine's. Two snags of debootstrap here, and their
# fixes: dpkg trips on a virtual dependency (libdbd-sqlite3-perl needs perl-dbdabi-94, which libdbi-perl
# provides), so debootstrap ends with errors and nix-bin unconfigured until `apt-get -f install` and
# `dpkg --configure -a` run inside; and sid's Release file in the registry's snapshot may be expired, so apt
# runs with Check-Valid-Until=false.
set -euo pipefail

root=${CACHECTL_SID_ROOT:-/var/cache/cachectl/sid-root}
checkout=$(realpath "$(dirname "$0")/..")
mirror=${CACHECTL_SID_MIRROR:-http://deb.debian.org/debian}
# What the suites run inside: Nix, the hook's sqlite3, the compressors, ps, strace (the durability test) and curl;
# and what the systemd suite boots it with: systemd as PID 1, D-Bus, and nix-setup-systemd's nix-daemon units and
# build users (installed, never started here).
packages=nix-bin,ca-certificates,zstd,sqlite3,xz-utils,bzip2,procps,strace,curl
packages+=,systemd,systemd-sysv,dbus,nix-setup-systemd
# Written last: a root without it (a run killed midway, an older recipe) is made again.
stamp=$root/.cachectl-sid-root
recipe="v1 $packages"

die() { echo "sid-root.sh: $*" >&2; exit 2; }

# Runs CMD inside the root in a private mount namespace: its mounts end with it.
inside() {
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare --mount --propagation private -- bash -c '
    set -e
    root=$1 checkout=$2; shift 2
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --rbind /sys "$root/sys"
    mkdir -p "$root$checkout"
    mount --bind "$checkout" "$root$checkout"
    exec chroot "$root" /usr/bin/env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root bash -c "cd \"\$1\" 2>/dev/null || cd /; shift; exec \"\$@\"" cd "$PWD" "$@"
  ' inside "$root" "$checkout" "$@"
}

make_root() {
  [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$recipe" ]; then
    cp -u "$(command -v node)" "$root/usr/local/bin/node"
    return
  fi
  echo "sid-root.sh: making a Debian sid root with Nix in $root (about a minute)" >&2
  command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
      debootstrap >&2 || { apt-get update -q -o DPkg::Lock::Timeout=600 >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2; }
  }
  rm -rf "$root"
  mkdir -p "$root"
  local log=$root.debootstrap.log
  # Ends with errors on the virtual dependency: what it could not configure is configured below.
  debootstrap --variant=minbase --include="$packages" sid "$root" "$mirror" >"$log" 2>&1 || true
  [ -x "$root/usr/bin/apt-get" ] || die "debootstrap of sid from $mirror failed; see $log"
  echo "deb $mirror sid main" >"$root/etc/apt/sources.list"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  mkdir -p "$root/usr/local/bin"
  cp "$(command -v node)" "$root/usr/local/bin/node"
  # shellcheck disable=SC2016 # expanded by the inner shell
  inside bash -c 'export DEBIAN_FRONTEND=noninteractive
    apt="apt-get -q -o Acquire::Check-Valid-Until=false"
    $apt update && $apt -f install -y && dpkg --configure -a' >>"$log" 2>&1 ||
    die "installing Nix inside $root failed; see $log"
  inside nix-store --version >/dev/null 2>&1 || die "Nix does not run inside $root; see $log"
  echo "$recipe" >"$stamp"
}

case ${1:-} in
  make)
    make_root
    echo "sid-root.sh: $(inside nix-store --version) in $root" >&2
    ;;
  run)
    shift
    [ $# -gt 0 ] || die "usage: sid-root.sh run CMD..."
    [ -f "$stamp" ] || die "no sid root in $root: run bash test/setup.sh"
    inside "$@"
    ;;
  path) echo "$root" ;;
  *) die "usage: sid-root.sh make | run CMD... | path" ;;
esac
