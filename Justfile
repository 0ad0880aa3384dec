# imgcache — `just` lists the recipes.

version := `git describe --tags --always --dirty 2>/dev/null || echo dev`

_help:
    @just --list

# Build bin/imgcache.
build:
    mkdir -p bin
    go build -ldflags "-X main.version={{version}}" -o bin/imgcache ./cmd/imgcache

# Start a Docker daemon if none answers (installs docker.io when missing).
dockerd:
    scripts/dockerd.sh

# An OCI registry on 127.0.0.1:5000 for the fleet tier (installs docker-registry when missing); prints its address.
registry:
    scripts/registry.sh

# Set up and run the main job: daemon, build, make an image, put, ls, get.
demo:
    scripts/demo.sh

# Everything CI runs (scripts/test.sh): lint, unit + e2e tests with the race detector against a real daemon, the slow tests without it, short fuzzing.
test:
    scripts/test.sh

# gofmt and go vet, with cgo (libzstd encoder) and without (pure-Go fallback).
lint:
    test -z "$(gofmt -l $(git ls-files '*.go'))" || (gofmt -l $(git ls-files '*.go'); exit 1)
    go vet ./...
    CGO_ENABLED=0 go vet ./...

# Fuzz every target for longer (default 2m each).
fuzz time="2m":
    scripts/fuzz.sh {{time}}

# Benchmark imgcache against plain docker load/save, zstd and sha256sum.
bench *args: dockerd
    go run ./bench {{args}}
