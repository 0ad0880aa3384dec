#!/usr/bin/env bash
# scripts/fuzz.sh DURATION — run every fuzz target in the module for DURATION
# each (go test -fuzz takes one target per run). New crashers land in the
# package's testdata/fuzz/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-15s}
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "fuzz: $pkg $target for $time" >&2
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$time" -fuzzminimizetime=5s "$pkg" 2>&1 | tail -n 3
  done
done
