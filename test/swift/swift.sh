#!/usr/bin/env bash
# A single-node OpenStack Swift with its s3api middleware on 127.0.0.1, the strict second S3 server of the tests:
# real SigV4 checks, Content-MD5 validation, S3-style multipart ETags (s3rver has none of these).
#
#   bash test/swift/swift.sh start   installs Debian's Swift if missing, configures it under $SWIFT_DIR, starts it
#   bash test/swift/swift.sh stop    stops it
#
# S3 endpoint http://127.0.0.1:$SWIFT_PORT, credentials nix:admin / secretkey (tempauth); a public-read bucket B
# is readable by Nix at http://127.0.0.1:$SWIFT_PORT/v1/AUTH_nix/B. Swift's conditional PUTs answer 501, and
# DeleteObjects needs Content-MD5 (cachectl adds it).
set -euo pipefail
SWIFT_DIR=${SWIFT_DIR:-/tmp/cachectl-swift}
SWIFT_PORT=${SWIFT_PORT:-18080}
MEMCACHED_PORT=${MEMCACHED_PORT:-11311}

stop() {
  for name in proxy account container object memcached; do
    pidfile=$SWIFT_DIR/run/$name.pid
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
  done
}

install_swift() {
  command -v swift-proxy-server >/dev/null && command -v memcached >/dev/null && return
  if [ "$(id -u)" -ne 0 ]; then
    echo "test/swift/swift.sh: Swift is missing; run as root, or: sudo apt-get install --no-install-recommends" \
      "swift-proxy swift-account swift-container swift-object memcached" >&2
    exit 1
  fi
  echo "installing Swift from Debian (about 70 packages)"
  export DEBIAN_FRONTEND=noninteractive
  local packages=(swift-proxy swift-account swift-container swift-object memcached)
  apt_install() { apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${packages[@]}" >&2; }
  apt_install || { apt-get update -q -o DPkg::Lock::Timeout=600 >&2 && apt_install; }
}

configure() {
  rm -rf "$SWIFT_DIR"
  mkdir -p "$SWIFT_DIR/srv/d1" "$SWIFT_DIR/run"
  cd "$SWIFT_DIR"
  # Swift reads its hash prefix and storage policies from /etc/swift/swift.conf (installed by the package).
  for server in account:6212 container:6211 object:6210; do
    name=${server%%:*} port=${server##*:}
    swift-ring-builder "$name.builder" create 6 1 1 >/dev/null
    swift-ring-builder "$name.builder" add "r1z1-127.0.0.1:$port/d1" 1 >/dev/null
    swift-ring-builder "$name.builder" rebalance >/dev/null || true
    cat >"$name-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = 0
devices = $SWIFT_DIR/srv
mount_check = false
swift_dir = $SWIFT_DIR
log_level = WARNING
[pipeline:main]
pipeline = $name-server
[app:$name-server]
use = egg:swift#$name
CONF
  done
  cat >proxy-server.conf <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $SWIFT_PORT
workers = 0
swift_dir = $SWIFT_DIR
log_level = WARNING
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_nix_admin = secretkey .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MEMCACHED_PORT
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
CONF
}

start() {
  stop
  install_swift
  configure
  memcached -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -u root -m 64 >run/memcached.log 2>&1 &
  echo $! >run/memcached.pid
  for name in object container account proxy; do
    "/usr/bin/swift-$name-server" "$SWIFT_DIR/$name-server.conf" >"run/$name.log" 2>&1 &
    echo $! >"run/$name.pid"
  done
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://127.0.0.1:$SWIFT_PORT/healthcheck" 2>/dev/null; then
      echo "swift s3api on http://127.0.0.1:$SWIFT_PORT"
      return
    fi
    sleep 0.2
  done
  echo "swift did not start; its logs:" >&2
  tail -n 20 run/*.log >&2
  stop
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
