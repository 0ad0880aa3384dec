package main

import (
	"context"
	"os"
	"time"

	"github.com/posener/complete"

	"github.com/imgcache/imgcache/manifest"
)

// namePredictor completes cache names from the manifest of $IMGCACHE_DIR
// (or the default directory). It never creates anything.
type namePredictor struct{}

func (namePredictor) Predict(complete.Args) []string {
	dir := os.Getenv("IMGCACHE_DIR")
	if dir == "" {
		dir = defaultDir()
	}
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m, err := manifest.Open(dir).Load(ctx)
	if err != nil {
		return nil
	}
	return m.Names()
}
