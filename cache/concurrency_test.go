package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/naming"
)

// TestConcurrentOperations runs random operations from several goroutines,
// each with its own Cache on one directory, as separate processes would.
func TestConcurrentOperations(t *testing.T) {
	const (
		workers = 8
		ops     = 20
	)
	dir := t.TempDir()
	var images [][]byte
	var maxStored int64
	for i := range 4 {
		data, _ := image(t, fmt.Sprintf("t/img:%d", i), int64(1000+i))
		images = append(images, data)
	}
	{
		// Learn the stored size of one image for a tight MaxSize.
		probe, _ := newCache(t)
		maxStored = put(t, probe, "probe-a-b-c", images[0]).Entry.StoredSize
	}
	names := []string{
		"capy-ubuntu-25.04-gcc15", "capy-ubuntu-25.04-clang20-asan", "capy-debian-13-base",
		"other-alpine-3.22-musl", "other-ubuntu-24.04-gcc14", "zeta-fedora-42-base",
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := cache.Open(dir, baseOptions(t))
			if err != nil {
				t.Errorf("worker %d: Open: %v", w, err)
				return
			}
			defer c.Close()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			ctx := context.Background()
			for i := range ops {
				name := naming.MustParse(names[rng.IntN(len(names))])
				var err error
				var op string
				switch k := rng.IntN(10); {
				case k < 4:
					img := images[rng.IntN(len(images))]
					op = "put " + name.String()
					_, err = c.Put(ctx, name, bytes.NewReader(img), int64(len(img)))
				case k < 6:
					op = "remove " + name.String()
					err = c.Remove(ctx, name)
					if errors.Is(err, errdefs.ErrNotFound) {
						err = nil
					}
				case k < 7:
					op = "gc"
					_, err = c.GC(ctx, cache.GCOptions{Limits: lru.Limits{MaxSize: 2 * maxStored}})
				case k < 8:
					op = "verify"
					_, err = c.Verify(ctx, nil, false)
				case k < 9:
					op = "export " + name.String()
					var h bytes.Buffer
					_, err = c.Export(ctx, name, &h)
					if errors.Is(err, errdefs.ErrNotFound) {
						err = nil // removed or evicted meanwhile
					}
				default:
					op = "list"
					_, err = c.List(ctx)
				}
				if err != nil {
					t.Errorf("worker %d op %d (%s): %v", w, i, op, err)
				}
			}
		}()
	}
	wg.Wait()

	c, _ := openCache(t, dir)
	rep := verify(t, c, false)
	if !rep.OK() {
		t.Errorf("verify after the storm: %s", toJSON(rep.Problems))
	}
	entries := list(t, c)
	t.Logf("%d entries left, %d problems fixed or noted", len(entries), len(rep.Problems))
	for _, e := range entries {
		assertLink(t, c, e.Name, e.Digest)
		if d := hashExport(t, c, e.Name); d != e.Digest {
			t.Errorf("%s: export hashes to %s, entry says %s", e.Name, d, e.Digest)
		}
	}
	// A second verify finds nothing to fix.
	if again := verify(t, c, false); !again.OK() || len(problems(again, cache.ProblemLink)) > 0 {
		t.Errorf("second verify: %s", toJSON(again.Problems))
	}
	// gc with no limits leaves exactly the named blobs.
	gc(t, c, cache.GCOptions{})
	named := map[string]bool{}
	for _, e := range entries {
		named[e.Digest.String()] = true
	}
	for _, d := range blobDigests(t, c) {
		if !named[d.String()] {
			t.Errorf("blob %s survives gc without a name", d)
		}
		delete(named, d.String())
	}
	if len(named) > 0 {
		t.Errorf("named blobs missing: %v", named)
	}
}
