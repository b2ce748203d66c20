#!/usr/bin/env bash
# The README's first command (`npm run demo`): the real job on a local file:// cache. A cachectl daemon
# runs; nix-build builds a small closure with post-build-hook set to hook/post-build-hook; the hook queues
# each built path and the daemon uploads it. Then Nix itself checks the cache (signatures, NAR hashes,
# closure completeness) and substitutes the closure into a fresh store, as a second machine would.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=${CACHECTL_DEMO_DIR:-$PWD/demo-cache}
mkdir -p "$demo"
export NIX_CONFIG=$'build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command'
export XDG_CACHE_HOME=$demo/xdg-cache
# The queue and the GC roots of this demo, apart from a system-wide cachectl's.
export CACHECTL_QUEUE=$demo/queue.db CACHECTL_GC_ROOTS=/nix/var/nix/gcroots/cachectl-demo
cachectl() { node dist/src/bin/cachectl.cjs "$@"; }

step() { printf '\n==> %s\n' "$*"; }

if [ ! -f "$demo/cache-key.sec" ]; then
  step "cachectl keygen demo-cache-1"
  cachectl keygen demo-cache-1 --secret-key-file "$demo/cache-key.sec"
fi
public_key=$(cat "$demo/cache-key.sec.pub")

step "cachectl daemon --to file://$demo/cache (log: $demo/daemon.log)"
# exec, not the shell function: $! must be the daemon itself for the SIGTERM below
node dist/src/bin/cachectl.cjs daemon --to "file://$demo/cache" --secret-key-file "$demo/cache-key.sec" \
  >"$demo/daemon.log" 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q '"msg":"ready"' "$demo/daemon.log" && break
  kill -0 "$daemon" || { cat "$demo/daemon.log"; exit 1; }
  sleep 0.1
done

step "nix-build --post-build-hook hook/post-build-hook (Nix $(nix-store --version | awk '{print $NF}'); a fresh" \
  "closure: hello and the greeting it references)"
started=$(date +%s%N)
out=$(nix-build test/demo.nix --no-out-link --argstr nonce "$(date +%s%N)" \
  --post-build-hook "$PWD/hook/post-build-hook")
echo "$out  (built in $(( ($(date +%s%N) - started) / 1000000 )) ms, hooks included)"

step "waiting for the daemon to upload it"
for _ in $(seq 300); do
  [ -f "$demo/cache/$(basename "$out" | cut -c1-32).narinfo" ] && break
  sleep 0.05
done
cachectl status --queue "$demo/queue.db"

step "nix store verify: signatures by $public_key, NAR hashes, closure complete"
nix store verify --store "file://$demo/cache" --trusted-public-keys "$public_key" -r "$out"

step "nix copy --from the cache into a fresh store, as another machine would substitute"
fresh=$(mktemp -d /tmp/cachectl-demo-store.XXXXXX)
nix copy --from "file://$demo/cache" --to "$fresh" --option trusted-public-keys "$public_key" "$out"
nix path-info --store "$fresh" -r "$out" | sed 's/^/    now in the fresh store: /'
rm -rf "$fresh"

step "stopping the daemon (SIGTERM: it drains, then exits 0)"
kill -TERM "$daemon"
wait "$daemon"
trap - EXIT
tail -n 3 "$demo/daemon.log"

step "done: the cache is $demo/cache ($(find "$demo/cache" -maxdepth 1 -name "*.narinfo" | wc -l) narinfos)"
