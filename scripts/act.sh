#!/usr/bin/env bash
# scripts/act.sh [ACT ARGS...] — run nektos/act, the local GitHub Actions
# runner, at the version imgcache is tested with (ACT_VERSION, default
# v0.2.89). The first call builds it from the Go module proxy (about a
# minute on 2 cores) into ${XDG_CACHE_HOME:-~/.cache}/imgcache/act-VERSION;
# later calls run that binary. Used by the e2e test and by hand:
#   ref=$(imgcache get capy-busybox-1-base)
#   scripts/act.sh push -P ubuntu-latest="$ref" --pull=false
set -euo pipefail
version=${ACT_VERSION:-v0.2.89}
bindir="${XDG_CACHE_HOME:-$HOME/.cache}/imgcache/act-$version"
if [ ! -x "$bindir/act" ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "act.sh: act $version is not built and go is not on PATH (install Go, or put /usr/local/go/bin on PATH)" >&2
    exit 1
  fi
  echo "act.sh: building nektos/act $version from the Go module proxy (once)" >&2
  mkdir -p "$bindir"
  env -u GOFLAGS GOBIN="$bindir" go install "github.com/nektos/act@$version"
fi
exec "$bindir/act" "$@"
