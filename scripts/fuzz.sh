#!/usr/bin/env bash
# scripts/fuzz.sh DURATION — run every fuzz target in the module for DURATION
# each (go test -fuzz takes one target per run). New crashers land in the
# package's testdata/fuzz/ and fail the run.
#
# Go 1.26's fuzz coordinator can end a run with a bare "context deadline
# exceeded" when a worker is mid-exec as -fuzztime expires (go.dev/issue/75804,
# fixed in Go 1.27): no failing input, nothing to reproduce. Such a run is
# accepted only if it wrote no input, printed no other failure, and the
# target's corpus then replays clean; anything else fails.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-15s}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "fuzz: $pkg $target for $time" >&2
    if go test -run='^$' -fuzz="^${target}\$" -fuzztime="$time" -fuzzminimizetime=5s "$pkg" >"$out" 2>&1; then
      tail -n 3 "$out"
      continue
    fi
    # Failure messages are the indented lines under "--- FAIL".
    others=$(grep -E '^ {4}' "$out" | grep -vxF '    context deadline exceeded' || true)
    if grep -q 'Failing input written' "$out" || ! grep -qxF '    context deadline exceeded' "$out" || [ -n "$others" ]; then
      cat "$out"
      exit 1
    fi
    echo "fuzz: $target: bare deadline at the end of -fuzztime, no failing input (go.dev/issue/75804); replaying its corpus" >&2
    go test -count=1 -run="^${target}\$" "$pkg"
  done
done
