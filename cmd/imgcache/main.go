// Command imgcache is the command-line face of the imgcache packages: it
// parses flags (kong), wires a cache.Cache, calls it and prints the result.
// Results go to stdout; progress, logs and warnings to stderr. It holds no
// logic of its own beyond that.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
