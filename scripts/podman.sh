#!/usr/bin/env bash
# scripts/podman.sh [SOCKET] — make sure Podman's Docker-compatible API
# answers on SOCKET (default /run/imgcache-podman/podman.sock), and print
# the DOCKER_HOST that reaches it:
#
#   export DOCKER_HOST=$(scripts/podman.sh)   # imgcache now talks to Podman
#
# Installs Debian's podman when missing and starts `podman system service`
# in the background on that socket, with a containers.conf of its own
# beside it: containers get nofile and nproc limits of 4096, since runc may
# not raise a limit in some sandboxes and VMs, where Podman's defaults (the
# host's, or higher) then make every container fail to start. Used by
# scripts/test.sh, which runs the engine-facing e2e tests against it.
# Idempotent: a service that answers is left alone.
set -euo pipefail

sock=${1:-/run/imgcache-podman/podman.sock}
dir=$(dirname "$sock")
log() { echo "podman.sh: $*" >&2; }
answers() { timeout 10 podman --url "unix://$sock" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v podman >/dev/null 2>&1; then
  log "installing podman (Debian package)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
fi
if [ -S "$sock" ] && answers; then
  echo "unix://$sock"
  exit 0
fi

$SUDO mkdir -p "$dir"
conf="$dir/containers.conf"
printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n' | $SUDO tee "$conf" >/dev/null
LOG=${PODMAN_LOG:-$dir/podman-service.log}
log "starting podman system service on $sock (log: $LOG)"
$SUDO rm -f "$sock"
$SUDO env CONTAINERS_CONF="$conf" sh -c "nohup podman system service --time=0 'unix://$sock' >>'$LOG' 2>&1 &"
for _ in $(seq 1 60); do
  if [ -S "$sock" ] && answers; then
    log "podman up: $(podman --url "unix://$sock" version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
    echo "unix://$sock"
    exit 0
  fi
  sleep 1
done
log "podman did not answer within 60s; last lines of $LOG:"
tail -n 20 "$LOG" >&2 || true
exit 1
