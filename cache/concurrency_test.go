package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/naming"
)

// TestConcurrentOperations runs random operations from several goroutines,
// each with its own Cache on one directory, as separate processes would,
// on a whole-tar cache and on a layered one (whose images share layers).
func TestConcurrentOperations(t *testing.T) {
	t.Parallel()
	for _, layered := range []bool{false, true} {
		t.Run(fmt.Sprintf("layered=%v", layered), func(t *testing.T) {
			t.Parallel()
			concurrentOperations(t, layered)
		})
	}
}

func concurrentOperations(t *testing.T, layered bool) {
	const (
		workers = 8
		ops     = 20
	)
	dir := t.TempDir()
	if !layered {
		wholeTar(t, dir)
	}
	var images [][]byte
	var maxStored int64
	for i := range 4 {
		// Large enough files that the layers are pieces of their own; two
		// images share their first layer.
		data, _ := imageOpts(t, testimage.Options{Tag: fmt.Sprintf("t/img:%d", i), Seed: int64(1000 + i), FileSize: 70 << 10, SharedLayers: i % 2})
		images = append(images, data)
	}
	{
		// Learn the stored size of one image for a tight MaxSize.
		probe, _ := openAny(t, t.TempDir())
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

	c, _ := openAny(t, dir)
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
		for _, k := range entryBlobKeys(&e) {
			named[k] = true
		}
	}
	for _, k := range allBlobKeys(t, c) {
		if !named[k] {
			t.Errorf("blob %s survives gc without a name", k)
		}
		delete(named, k)
	}
	if len(named) > 0 {
		t.Errorf("named blobs missing: %v", named)
	}
}

// warnings counts the cache's log records at warning level and above.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool { msg += " " + a.String(); return true })
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// TestConcurrentPutsOfOneNameKeepItsLink: puts of one name from several
// goroutines of one process (an executor using the library, or several
// hosts whose process IDs collide) must not trip over each other's link
// updates.
func TestConcurrentPutsOfOneNameKeepItsLink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, _ := image(t, "t/x:1", 1)
	b, _ := image(t, "t/x:1", 2)
	const name = "capy-ubuntu-25.04-gcc15"
	w := &warnings{}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opt := baseOptions(t)
			opt.Log = slog.New(w)
			c, err := cache.Open(dir, opt)
			if err != nil {
				t.Error(err)
				return
			}
			for i := range 8 {
				data := a
				if (g+i)%2 == 1 {
					data = b
				}
				if _, err := c.Put(context.Background(), naming.MustParse(name), bytes.NewReader(data), int64(len(data))); err != nil {
					t.Errorf("put: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	for _, m := range w.msgs {
		t.Errorf("warning: %s", m)
	}
	c, _ := openCache(t, dir)
	e := inspect(t, c, name)
	if target, _ := os.Readlink(linkPath(c, name)); !strings.Contains(target, e.Digest.Encoded()) {
		t.Logf("link → %s while the entry names %s (a put's link landed after a later put's)", target, e.Digest)
	}
}
