#!/usr/bin/env bash
# scripts/dockerd.sh — make sure a Docker daemon answers on this machine.
#
# Installs Debian's docker.io when dockerd is missing, starts dockerd in the
# background when `docker version` does not answer, and waits until it does.
# Used by the Justfile, .ci/run and the README's demo, so users and CI get a
# daemon the same way. Idempotent: a running daemon is left alone.
set -euo pipefail

log() { echo "dockerd.sh: $*" >&2; }

answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io (Debian package)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

LOG=${DOCKERD_LOG:-/var/log/imgcache-dockerd.log}
log "starting dockerd (log: $LOG)"
# Debian's package may ship without a running init; start it directly.
$SUDO sh -c "nohup dockerd >>'$LOG' 2>&1 &"

for _ in $(seq 1 60); do
  if answers; then
    log "daemon up: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within 60s; last lines of $LOG:"
tail -n 20 "$LOG" >&2 || true
exit 1
