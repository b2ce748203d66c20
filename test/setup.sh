#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need and that npm does not bring: Debian's Nix
# (nix-bin, without the Recommends that add systemd units and build users), sqlite3 (the hook's), zstd, xz,
# systemd-nspawn (systemd-container: the systemd suite boots a machine with it), python3 (which marks that
# machine's overlay directories opaque), shellcheck (npm run lint), strace (the file:// durability test
# watches the flushes and renames) and prometheus (with promtool: the monitoring test runs the shipped dashboard
# and alert rules there; its service is not started on a machine without systemd); then the Debian sid root
# with the Nix users run (test/sid-root.sh: Nix 2.34, made once and reused). Idempotent; Nix itself is configured
# per run through NIX_CONFIG, never by editing /etc/nix. The systemd suite's own machine gets nix-setup-systemd,
# inside its overlay only.
set -euo pipefail

packages=(nix-bin sqlite3 zstd xz-utils systemd-container python3 shellcheck strace prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test/setup.sh: missing ${missing[*]}; run as root, or:" \
      "sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "test/setup.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_install() {
    # DPkg::Lock::Timeout waits for another apt run instead of failing.
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2
  }
  apt-cache show nix-bin >/dev/null 2>&1 || apt-get update -q -o DPkg::Lock::Timeout=600 >&2
  apt_install || { apt-get update -q -o DPkg::Lock::Timeout=600 >&2 && apt_install; }
fi

# Nix creates its store and database on first use; --init does only that.
export NIX_CONFIG=$'build-users-group ='
nix-store --init
test -e /nix/var/nix/db/db.sqlite || { echo "test/setup.sh: Nix did not create /nix/var/nix/db/db.sqlite" >&2; exit 1; }
echo "test/setup.sh: nix $(nix-store --version | awk '{print $NF}'), sqlite3, zstd, xz, systemd-nspawn, python3," \
  "shellcheck, strace, prometheus ready" >&2
bash "$(dirname "$0")/sid-root.sh" make
