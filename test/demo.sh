#!/usr/bin/env bash
# The README's first command (`npm run demo`): a real job on a local file:// cache. It builds a small
# closure with Nix, pushes it with `cachectl push`, then lets Nix itself check the cache (signatures, NAR
# hashes, closure completeness) and substitute the closure into a fresh store, as a second machine would.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=${CACHECTL_DEMO_DIR:-$PWD/demo-cache}
mkdir -p "$demo"
export NIX_CONFIG=$'build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command\nnarinfo-cache-negative-ttl = 0\nnarinfo-cache-positive-ttl = 0'
export XDG_CACHE_HOME=$demo/xdg-cache
cachectl() { node dist/src/bin/cachectl.js "$@"; }

step() { printf '\n==> %s\n' "$*"; }

if [ ! -f "$demo/cache-key.sec" ]; then
  step "cachectl keygen demo-cache-1"
  cachectl keygen demo-cache-1 --secret-key-file "$demo/cache-key.sec"
fi
public_key=$(cat "$demo/cache-key.sec.pub")

step "nix-build (a fresh closure: hello and the greeting it references)"
out=$(nix-build test/demo.nix --no-out-link --argstr nonce "$(date +%s%N)")
echo "$out"

step "cachectl push --to file://$demo/cache $out"
cachectl push --to "file://$demo/cache" --secret-key-file "$demo/cache-key.sec" "$out"

step "nix store verify: signatures by $public_key, NAR hashes, closure complete"
nix store verify --store "file://$demo/cache" --trusted-public-keys "$public_key" -r "$out"

step "nix copy --from the cache into a fresh store, as another machine would substitute"
fresh=$(mktemp -d /tmp/cachectl-demo-store.XXXXXX)
nix copy --from "file://$demo/cache" --to "$fresh" --option trusted-public-keys "$public_key" "$out"
nix path-info --store "$fresh" -r "$out" | sed 's/^/    now in the fresh store: /'
rm -rf "$fresh"

step "done: the cache is $demo/cache ($(ls "$demo"/cache/*.narinfo | wc -l) narinfos)"
