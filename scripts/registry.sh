#!/usr/bin/env bash
# scripts/registry.sh [start|stop] — an OCI registry on loopback for the
# fleet tier (`--remote`), as users, tests and CI get it.
#
#   remote=$(scripts/registry.sh)/ci/imgcache   # 127.0.0.1:5000/ci/imgcache
#   scripts/registry.sh stop
#
# Installs Debian's docker-registry (CNCF Distribution 2.8) when missing and
# runs `docker-registry serve CONFIG.yml` in the background with a storage
# directory of its own, deletes enabled (`imgcache rm --remote`). Prints
# the address. Environment:
#   REGISTRY_ADDR      listen address, default 127.0.0.1:5000 (loopback only:
#                      imgcache speaks plain HTTP only to loopback registries)
#   REGISTRY_DIR       config, storage, pid and log, default /tmp/imgcache-registry
#   REGISTRY_HTPASSWD  an htpasswd file (bcrypt): basic auth required
#   REGISTRY_TLS_CERT, REGISTRY_TLS_KEY  PEM files: serve HTTPS (imgcache
#                      then needs --remote-ca for a self-signed certificate)
# Idempotent: a registry that answers at REGISTRY_ADDR is left alone.
set -euo pipefail

addr=${REGISTRY_ADDR:-127.0.0.1:5000}
dir=${REGISTRY_DIR:-/tmp/imgcache-registry}
log() { echo "registry.sh: $*" >&2; }
scheme=http
if [ -n "${REGISTRY_TLS_CERT:-}" ]; then scheme=https; fi
answers() {
  local code
  code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$scheme://$addr/v2/" || true)
  [ "$code" = 200 ] || [ "$code" = 401 ]
}

case "${1:-start}" in
stop)
  if [ -f "$dir/pid" ]; then
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  exit 0
  ;;
start) ;;
*)
  echo "usage: $0 [start|stop]" >&2
  exit 2
  ;;
esac

case "$addr" in
127.* | localhost:* | "[::1]":*) ;;
*)
  log "REGISTRY_ADDR=$addr is not a loopback address; this script serves plain HTTP on loopback only"
  exit 2
  ;;
esac

if answers; then
  echo "$addr"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v docker-registry >/dev/null 2>&1; then
  log "installing docker-registry (Debian package)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
fi

mkdir -p "$dir/storage"
tls=""
if [ -n "${REGISTRY_TLS_CERT:-}" ]; then
  tls=$(printf '  tls:\n    certificate: %s\n    key: %s\n' "$REGISTRY_TLS_CERT" "$REGISTRY_TLS_KEY")
fi
auth=""
if [ -n "${REGISTRY_HTPASSWD:-}" ]; then
  auth=$(printf 'auth:\n  htpasswd:\n    realm: imgcache-test\n    path: %s\n' "$REGISTRY_HTPASSWD")
fi
cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $addr
$tls
$auth
EOF

log "starting docker-registry on $addr (storage $dir/storage, log $dir/registry.log)"
nohup docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 &
echo $! >"$dir/pid"
for _ in $(seq 1 50); do
  if answers; then
    echo "$addr"
    exit 0
  fi
  sleep 0.2
done
log "docker-registry did not answer within 10s; last lines of $dir/registry.log:"
tail -n 20 "$dir/registry.log" >&2 || true
exit 1
