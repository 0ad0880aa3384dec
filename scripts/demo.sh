#!/usr/bin/env bash
# scripts/demo.sh — the main job on a fresh machine: start a Docker daemon if
# needed, build imgcache, make a small image, put it, list it, get it and
# print the ref a CI job would run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/dockerd.sh
mkdir -p bin
go build -o bin/imgcache ./cmd/imgcache
export IMGCACHE_DIR=${IMGCACHE_DIR:-$PWD/.demo-cache}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

go run ./internal/cmd/mkimage -o "$work/capy.tar" -tag demo/capy:gcc15 -layers 3 -size 65536
echo "+ imgcache put capy-ubuntu-25.04-gcc15 capy.tar" >&2
bin/imgcache put capy-ubuntu-25.04-gcc15 "$work/capy.tar"
echo "+ sha256sum capy.tar" >&2
sha256sum "$work/capy.tar"
echo "+ imgcache ls" >&2
bin/imgcache ls
echo "+ ref=\$(imgcache get capy-ubuntu-25.04-gcc15)" >&2
ref=$(bin/imgcache get capy-ubuntu-25.04-gcc15)
echo "+ imgcache verify" >&2
bin/imgcache verify
echo "ready: $ref"
