#!/usr/bin/env bash
# scripts/test.sh [FUZZTIME] — the whole test suite, exactly what CI runs
# (.ci/run calls this and nothing else). It installs what a fresh Debian
# machine with Go lacks (gcc for cgo and -race, Debian's docker.io,
# prometheus-node-exporter, busybox-static, git, bzip2, xz-utils, zstd,
# qemu-user-static and binfmt-support, docker-registry and skopeo;
# nektos/act through
# scripts/act.sh), starts a
# Docker daemon if none answers, then runs:
#   1. gofmt and go vet, with cgo (libzstd encoder) and without (pure Go);
#   2. every test with -race, the end-to-end suite against the real daemon
#      included (IMGCACHE_E2E=1; with CI=true a missing daemon fails);
#   3. the tests too slow under the race detector, without it (-short=false):
#      two unit tests, and the e2e tests that SIGKILL the binary or run many
#      processes of it (the race pass skips them);
#   4. the engine-facing e2e tests again, against Podman's Docker-compatible
#      API (scripts/podman.sh installs and starts it);
#   5. every fuzz target for FUZZTIME (default 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
export CI=${CI:-true}
export IMGCACHE_E2E=1
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"

log() { echo "test.sh: $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

go version
if ! command -v gcc >/dev/null 2>&1; then
  log "installing gcc (cgo: the libzstd encoder and the race detector need it)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
fi
need=()
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter) # the textfile export is scraped by it
[ -x /bin/busybox ] || need+=(busybox-static) # a runnable image: the layer tests run the images they load
command -v git >/dev/null 2>&1 || need+=(git) # the old-binary test builds the previous release
command -v bzip2 >/dev/null 2>&1 || need+=(bzip2) # compressed input is tested with the real compressors
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v qemu-riscv64-static >/dev/null 2>&1 || need+=(qemu-user-static binfmt-support) # get --platform runs a riscv64 image under emulation
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry) # the fleet tier's tests run registries of their own (scripts/registry.sh)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)                   # a standard OCI client reads what push wrote
# binfmt_misc first, so that installing qemu registers its handlers there.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || log "binfmt_misc cannot be mounted: the emulation test will say so"
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -e /proc/sys/fs/binfmt_misc/status ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-riscv64 ]; then
  $SUDO update-binfmts --enable qemu-riscv64 >/dev/null 2>&1 || log "qemu-riscv64 could not be registered"
fi
go mod download
log "act (the e2e suite runs workflows with it; built once from the Go module proxy)"
scripts/act.sh --version
scripts/dockerd.sh

log "lint"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1
fi
go vet ./...
CGO_ENABLED=0 go vet ./...

log "tests, race detector on (e2e against the real daemon included)"
go test -race -count=1 -timeout 30m ./...

log "tests that are too slow under the race detector, without it"
slow=$(mktemp); trap 'rm -f "$slow"' EXIT
go test -count=1 -v -run '^(TestDecodeTooLarge|TestReadTooManyEntries)$' ./manifest/ ./archive/ | tee "$slow" | grep -E '^(--- |ok|FAIL)' || true
if ! [ "$(grep -c -- '^--- PASS' "$slow")" -eq 2 ]; then
  echo "test.sh: the slow tests did not both run and pass" >&2; exit 1
fi

log "SIGKILL and many-process e2e tests against Docker, without the race detector (the race pass skips them)"
norace_tests='^(TestManyProcesses|TestCrashDuringPut|TestCrashDuringGC|TestCrashDuringGet|TestCrashDuringMigrate|TestPutCompressedInput)$'
norace_out=$(mktemp); trap 'rm -f "$slow" "$norace_out"' EXIT
if ! E2E_NORACE=1 go test -count=1 -timeout 20m -v -run "$norace_tests" ./e2e >"$norace_out" 2>&1; then
  grep -E '^(--- |ok|FAIL)|_test.go:[0-9]+:' "$norace_out" >&2 || cat "$norace_out" >&2
  echo "test.sh: the no-race e2e pass failed" >&2; exit 1
fi
grep -E '^(--- (PASS|SKIP)|ok)' "$norace_out" || true
if ! [ "$(grep -c '^--- PASS' "$norace_out")" -eq 6 ]; then
  echo "test.sh: the no-race e2e pass did not run and pass all 6 tests" >&2; exit 1
fi

log "engine-facing e2e tests against Podman (scripts/podman.sh starts its API service)"
podman_tests='^(TestColdThenWarmGet|TestConcurrentColdGet|TestTamperedBlobIsNeverLoaded|TestTruncatedBlobIsNeverLoaded|TestSaveRoundTrip|TestOCIArchiveGet|TestMetadataFarFromTheEnd|TestDaemonRejectsArchive|TestOtherArchitectureRefused|TestGCDockerUntagsButNeverForces|TestGetThenGCKeepsTheJobsImage|TestGCDockerSupersededImages|TestGCDockerMinFree|TestBuild|TestBuildFailingDockerfile|TestGetBuildOnMiss|TestGetBuildConcurrentMissBuildsOnce|TestLayersSharedBase|TestSkopeoOCIArchive|TestPutCompressedInput|TestActRunsJobInCachedImage)$'
podman_host=$(scripts/podman.sh)
podman_out=$(mktemp); trap 'rm -f "$slow" "$norace_out" "$podman_out"' EXIT
# IMGCACHE_E2E_ENGINE makes the suite refuse to run unless DOCKER_HOST is Podman.
# Without the race detector: the Docker pass ran this code under it already.
if ! DOCKER_HOST=$podman_host IMGCACHE_E2E_ENGINE=podman E2E_NORACE=1 go test -count=1 -timeout 20m -v -run "$podman_tests" ./e2e >"$podman_out" 2>&1; then
  grep -E '^(--- |=== RUN|ok|FAIL)|_test.go:[0-9]+:' "$podman_out" | grep -v '^=== RUN' >&2 || cat "$podman_out" >&2
  echo "test.sh: the Podman pass failed" >&2; exit 1
fi
grep -E '^(--- (PASS|SKIP)|ok)' "$podman_out" | grep -v '^    ' || true
ran=$(grep -c '^--- PASS' "$podman_out" || true)
if [ "$ran" -lt 21 ]; then
  echo "test.sh: the Podman pass ran $ran tests, want all 21 named" >&2; exit 1
fi

log "fuzzing, $fuzztime per target"
scripts/fuzz.sh "$fuzztime"
