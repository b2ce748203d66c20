#!/usr/bin/env bash
# `npm test`, after test/setup.sh and a build: the tiers, each run with the Nix it is about, then a line per tier
# with how it went and how long it took. A tier that fails does not stop the next; the run fails if any did.
#
#   unit      test/unit: no Nix, no S3 server
#   nix-2.34  every end-to-end suite that runs Nix, inside the Debian sid root (test/sid-root.sh): Nix 2.34, the
#             Nix users run, builds and reads, and cachectl runs beside it as on a user's machine
#   swift     push, daemon and GC again, against OpenStack Swift's s3api (test/swift/), from the sid root
#   nix-2.8   the oracle checks again with Debian 12's Nix 2.8, the oldest Nix supported: push, substitution and
#             nix store verify, NAR bytes, the hook, logs, listings, realisations, verify, the demo's flow
#   machine   what needs this machine's own services: the shipped units under systemd-analyze, Prometheus, and
#             the systemd suite, which boots Debian 12 and the sid root
#
#   test/run.sh [TIER...]   runs those tiers only (all by default)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

suite() {
  node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=spec "$@"
}
host_only=(operations monitoring systemd)
nix_2_8=(push nar hook cache-objects verify demo)

# Runs the suites named (test/NAME.test.ts), or with --e2e every one but the host's own.
suites() {
  local files=() file name
  if [ "$1" = --e2e ]; then
    for file in dist/test/*.test.js; do
      name=$(basename "$file" .test.js)
      [[ " ${host_only[*]} " == *" $name "* ]] || files+=("$file")
    done
  else
    for name in "$@"; do files+=("dist/test/$name.test.js"); done
  fi
  suite "${files[@]}"
}

run_tier() {
  case $1 in
    unit) suite dist/test/unit/*.test.js ;;
    nix-2.34) bash test/sid-root.sh run bash test/run.sh --suites --e2e ;;
    swift) bash test/swift/test.sh ;;
    nix-2.8) suites "${nix_2_8[@]}" ;;
    machine) suites "${host_only[@]}" ;;
    *)
      echo "test/run.sh: no tier $1 (unit, nix-2.34, swift, nix-2.8, machine)" >&2
      return 2
      ;;
  esac
}

# How a tier runs suites inside the sid root: this script again, there.
if [ "${1:-}" = --suites ]; then
  shift
  suites "$@"
  exit
fi

tiers=("$@")
[ ${#tiers[@]} -gt 0 ] || tiers=(unit nix-2.34 swift nix-2.8 machine)
summary=()
failed=0
for tier in "${tiers[@]}"; do
  printf '\n=== tier %s\n' "$tier"
  started=$SECONDS
  if run_tier "$tier"; then outcome=passed; else outcome=FAILED failed=1; fi
  summary+=("$(printf '%-9s %-7s %5d s' "$tier" "$outcome" $((SECONDS - started)))")
done
printf '\n=== tiers\n'
printf '%s\n' "${summary[@]}"
exit "$failed"
