#!/usr/bin/env bash
# scripts/node-exporter.sh TEXTFILE_DIR [LISTEN] — run Debian's
# prometheus-node-exporter in the foreground with only its textfile
# collector, reading TEXTFILE_DIR (where `imgcache stats --prometheus
# DIR/imgcache.prom` writes), listening on LISTEN (default 127.0.0.1:9100).
# Installs the package when it is missing. Used by the e2e test and by hand:
#   scripts/node-exporter.sh /var/lib/prometheus/node-exporter 127.0.0.1:9100
set -euo pipefail
dir=${1:?usage: scripts/node-exporter.sh TEXTFILE_DIR [LISTEN]}
listen=${2:-127.0.0.1:9100}
if ! command -v prometheus-node-exporter >/dev/null 2>&1; then
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "node-exporter.sh: installing prometheus-node-exporter (Debian package)" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter >/dev/null
fi
exec prometheus-node-exporter --web.listen-address="$listen" \
  --collector.disable-defaults --collector.textfile --collector.textfile.directory="$dir"
