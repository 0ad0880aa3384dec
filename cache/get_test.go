package cache_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/naming"
)

func get(t *testing.T, c *cache.Cache, name string) *cache.GetResult {
	t.Helper()
	res, err := c.Get(context.Background(), mustName(t, name))
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return res
}

// TestGetColdThenWarm: a cold Get streams exactly the stored tar into the
// engine (its digest is the entry's, every layer present) and tags both
// refs; a warm Get loads nothing and only records the use.
func TestGetColdThenWarm(t *testing.T) {
	c, eng, clk := engineCache(t)
	data, img := image(t, "t/app:1", 1)
	const name = "capy-ubuntu-25.04-gcc15"
	put(t, c, name, data)

	res := get(t, c, name)
	n := mustName(t, name)
	if !res.Loaded || res.Ref != naming.PinnedRef(n, img.Digest.Encoded()) || res.Latest != naming.LatestRef(n) {
		t.Errorf("cold Get = %+v", res)
	}
	loads := eng.committedLoads()
	if len(loads) != 1 || loads[0].Digest != img.Digest || loads[0].Size != img.Size || loads[0].ImageID != img.ImageID.String() || loads[0].Layers != 2 {
		t.Fatalf("engine loads = %+v, want one load of %s (%d bytes, 2 layers)", loads, img.Digest, img.Size)
	}
	for _, ref := range []string{res.Ref, res.Latest} {
		if eng.tagged(ref) != img.ImageID.String() {
			t.Errorf("%s tags %q, want %s", ref, eng.tagged(ref), img.ImageID)
		}
	}

	clk.Advance(1e9)
	warm := get(t, c, name)
	if warm.Loaded || warm.Ref != res.Ref {
		t.Errorf("warm Get = %+v", warm)
	}
	if got := len(eng.allLoads()); got != 1 {
		t.Errorf("%d loads after a warm Get, want 1", got)
	}
	if e := inspect(t, c, name); !e.LastUsed.Equal(clk.Now()) {
		t.Errorf("last use %v, want the warm get's %v", e.LastUsed, clk.Now())
	}
	st, err := c.Stats(context.Background())
	if err != nil || st.Counters.WarmHits != 1 || st.Counters.Loads != 1 {
		t.Errorf("stats = %+v, %v; want 1 warm hit, 1 load", st, err)
	}
	// A tag lost in the engine is put back on the warm path.
	if err := eng.Remove(context.Background(), res.Latest); err != nil {
		t.Fatal(err)
	}
	get(t, c, name)
	if eng.tagged(res.Latest) != img.ImageID.String() {
		t.Errorf("warm Get did not re-tag %s", res.Latest)
	}
}

// TestGetTampered: content that does not match the digest never reaches
// the engine as a committed load: the body fails, the blob is quarantined,
// the error is an integrity failure. The second case is a valid zstd blob
// of an archive with a retagged manifest.json, which a plain load accepts.
func TestGetTampered(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, path string, data []byte)
	}{
		{"flipped byte", func(t *testing.T, p string, _ []byte) { flipByte(t, p) }},
		{"other valid archive", func(t *testing.T, p string, data []byte) {
			other := bytes.Replace(data, []byte(`"t/app:1"`), []byte(`"t/evil:1"`), 1)
			if bytes.Equal(other, data) {
				t.Fatal("manifest.json tag not found")
			}
			enc, _ := zstd.NewWriter(nil)
			os.Chmod(p, 0o644)
			if err := os.WriteFile(p, enc.EncodeAll(other, nil), 0o444); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, eng, _ := engineCache(t)
			data, img := image(t, "t/app:1", 1)
			const name = "capy-ubuntu-25.04-gcc15"
			put(t, c, name, data)
			tc.tamper(t, blobPath(c, img.Digest), data)

			_, err := c.Get(context.Background(), mustName(t, name))
			if !errors.Is(err, errdefs.ErrIntegrity) {
				t.Fatalf("Get of a tampered blob = %v, want ErrIntegrity", err)
			}
			if got := eng.committedLoads(); len(got) != 0 {
				t.Errorf("the engine committed %+v", got)
			}
			if eng.has(img.ImageID.String()) {
				t.Error("the image is in the engine")
			}
			if hasBlob(t, c, img.Digest) {
				t.Error("the tampered blob is still in blobs/")
			}
			// Asked again: still an integrity failure, naming the quarantine.
			_, err = c.Get(context.Background(), mustName(t, name))
			if !errors.Is(err, errdefs.ErrIntegrity) || !bytes.Contains([]byte(err.Error()), []byte("quarantine")) {
				t.Errorf("second Get = %v", err)
			}
		})
	}
}

// TestGetRefused: an engine that refuses the archive leaves the blob in
// place (it is not damaged) and the error is a refusal.
func TestGetRefused(t *testing.T) {
	c, eng, _ := engineCache(t)
	data, img := image(t, "t/app:1", 1)
	put(t, c, "capy-ubuntu-25.04-gcc15", data)
	eng.rejectLoads = errdefs.ErrRejected
	_, err := c.Get(context.Background(), mustName(t, "capy-ubuntu-25.04-gcc15"))
	if !errors.Is(err, errdefs.ErrRejected) {
		t.Fatalf("Get = %v, want ErrRejected", err)
	}
	if !hasBlob(t, c, img.Digest) {
		t.Error("a refused blob was moved")
	}
	if l := eng.allLoads(); len(l) != 1 || l[0].Digest != img.Digest {
		t.Errorf("loads %+v: the archive was not sent whole", l)
	}
}

// TestGetOtherArchitecture: an image for another platform is refused before
// anything is sent.
func TestGetOtherArchitecture(t *testing.T) {
	c, eng, _ := engineCache(t)
	arch := "s390x"
	if eng.arch == arch {
		arch = "arm64"
	}
	data, _ := imageOpts(t, testimage.Options{Tag: "t/app:1", Seed: 1, Architecture: arch})
	put(t, c, "capy-ubuntu-25.04-s390x", data)
	_, err := c.Get(context.Background(), mustName(t, "capy-ubuntu-25.04-s390x"))
	if !errors.Is(err, errdefs.ErrRejected) || !bytes.Contains([]byte(err.Error()), []byte(arch)) {
		t.Fatalf("Get = %v, want ErrRejected naming %s", err, arch)
	}
	if l := eng.allLoads(); len(l) != 0 {
		t.Errorf("loads %+v, want none", l)
	}
}

// TestGetPlatform: --platform loads an image of another platform only when
// it names the image's own platform and the engine emulates it; the
// default refusal says how to ask.
func TestGetPlatform(t *testing.T) {
	c, eng, _ := engineCache(t)
	arch := "riscv64"
	data, res := imageOpts(t, testimage.Options{Tag: "t/app:1", Seed: 2, Architecture: arch})
	put(t, c, "capy-debian-13-rv", data)
	ctx := context.Background()
	n := mustName(t, "capy-debian-13-rv")
	if _, err := c.Get(ctx, n); !errors.Is(err, errdefs.ErrRejected) || !strings.Contains(err.Error(), "get --platform linux/riscv64") {
		t.Fatalf("default: %v, want ErrRejected suggesting --platform", err)
	}
	for _, tc := range []struct {
		platform string
		want     error
		says     string
	}{
		{"linux/arm64", errdefs.ErrRejected, "not linux/arm64"},
		{"riscv64", errdefs.ErrInvalid, "want os/arch"},
		{"linux/riscv64", errdefs.ErrRejected, "cannot run it: the fake engine does not emulate riscv64"},
	} {
		if _, err := c.GetWith(ctx, n, cache.GetOptions{Platform: tc.platform}); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("--platform %s: %v, want %v saying %q", tc.platform, err, tc.want, tc.says)
		}
	}
	if l := eng.allLoads(); len(l) != 0 {
		t.Fatalf("refused gets sent %d loads", len(l))
	}
	eng.emulates = map[string]bool{arch: true}
	got, err := c.GetWith(ctx, n, cache.GetOptions{Platform: "linux/riscv64"})
	if err != nil || !got.Loaded {
		t.Fatalf("--platform linux/riscv64 on an engine that emulates it: %v", err)
	}
	if _, err := eng.Inspect(ctx, res.ImageID.String()); err != nil {
		t.Errorf("the image is not in the engine: %v", err)
	}
}

// TestGetNoEngine: an unreachable engine is ErrDaemon; a missing name is
// ErrNotFound without asking the engine.
func TestGetNoEngine(t *testing.T) {
	c, eng, _ := engineCache(t)
	data, _ := image(t, "t/app:1", 1)
	put(t, c, "capy-ubuntu-25.04-gcc15", data)
	if _, err := c.Get(context.Background(), mustName(t, "capy-ubuntu-25.04-none")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get of a missing name = %v", err)
	}
	eng.connectErr = errdefs.ErrDaemon
	if _, err := c.Get(context.Background(), mustName(t, "capy-ubuntu-25.04-gcc15")); !errors.Is(err, errdefs.ErrDaemon) {
		t.Errorf("Get without an engine = %v", err)
	}
}

// TestGetConcurrentColdLoadsOnce: Gets of one cold image at once cause one
// load; the others wait on the blob lock and find it warm. Fails if Get
// stops re-checking warm after taking the lock.
func TestGetConcurrentColdLoadsOnce(t *testing.T) {
	dir := t.TempDir()
	c, eng, _ := engineCacheIn(t, dir)
	data, img := image(t, "t/app:1", 1)
	put(t, c, "capy-ubuntu-25.04-gcc15", data)
	eng.loadStarted, eng.releaseLoads = make(chan struct{}), make(chan struct{})
	started := eng.loadStarted
	const n = 6
	var wg sync.WaitGroup
	results := make([]*cache.GetResult, n)
	errs := make([]error, n)
	for i := range n {
		// Separate Cache values: as separate processes, one engine.
		other, err := cache.Open(dir, cache.Options{Engine: eng.connect, Log: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		wg.Go(func() { results[i], errs[i] = other.Get(context.Background(), mustName(t, "capy-ubuntu-25.04-gcc15")) })
	}
	<-started // one is loading, holding the blob's lock; the others queue behind it
	close(eng.releaseLoads)
	wg.Wait()
	loaded := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Get %d: %v", i, errs[i])
		}
		if results[i].Loaded {
			loaded++
		}
	}
	if l := eng.allLoads(); len(l) != 1 || loaded != 1 || l[0].Digest != img.Digest {
		t.Errorf("%d loads (%d reported), want exactly 1: %+v", len(l), loaded, l)
	}
}

// TestSaveFromEngine: Save streams the engine's tar into the cache under a
// name; the entry records the engine's tags when the archive has none.
func TestSaveFromEngine(t *testing.T) {
	c, eng, _ := engineCache(t)
	data, img := image(t, "", 7) // untagged archive
	if _, err := eng.Load(context.Background(), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	eng.Tag(context.Background(), img.ImageID.String(), "example/app:2")
	res, err := c.Save(context.Background(), "example/app:2", mustName(t, "capy-ubuntu-25.04-app"))
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	if res.Entry.Digest != img.Digest || res.Entry.ImageID != img.ImageID.String() || !slices.Equal(res.Entry.RepoTags, []string{"example/app:2"}) {
		t.Errorf("saved entry %+v", res.Entry)
	}
	if got := eng.saves; len(got) != 1 || got[0] != img.ImageID.String() {
		t.Errorf("engine saves %v, want the image by ID", got)
	}
	if _, err := c.Save(context.Background(), "example/none:1", mustName(t, "capy-ubuntu-25.04-none")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Save of a missing image = %v", err)
	}
	if _, err := c.Inspect(context.Background(), mustName(t, "capy-ubuntu-25.04-none")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a failed save left an entry: %v", err)
	}
}

// TestGCDockerUntags: gc --docker removes the evicted names' refs from the
// engine, and leaves an image a container uses alone, reported.
func TestGCDockerUntags(t *testing.T) {
	c, eng, clk := engineCache(t)
	a, imgA := image(t, "t/a:1", 1)
	b, imgB := image(t, "t/b:1", 2)
	put(t, c, "capy-ubuntu-25.04-a", a)
	clk.Advance(3600e9)
	put(t, c, "capy-ubuntu-25.04-b", b)
	ra := get(t, c, "capy-ubuntu-25.04-a")
	rb := get(t, c, "capy-ubuntu-25.04-b")
	clk.Advance(3600e9)
	get(t, c, "capy-ubuntu-25.04-b") // b is the most recently used
	rep, err := c.GC(context.Background(), cache.GCOptions{Docker: true, Limits: lru.Limits{MaxSize: inspect(t, c, "capy-ubuntu-25.04-b").StoredSize}})
	if err != nil {
		t.Fatal(err)
	}
	if eng.tagged(ra.Ref) != "" || eng.tagged(ra.Latest) != "" || eng.has(imgA.ImageID.String()) {
		t.Errorf("a's refs still in the engine; report %s", toJSON(rep))
	}
	if eng.tagged(rb.Ref) != imgB.ImageID.String() || eng.tagged(rb.Latest) != imgB.ImageID.String() || len(rep.DockerErrors) != 0 {
		t.Errorf("b's refs must stay: %s", toJSON(rep))
	}
	// An image a container uses is never forced out: the refusal is reported.
	eng.inUse[imgB.ImageID.String()] = true
	rep, err = c.GC(context.Background(), cache.GCOptions{Docker: true, Limits: lru.Limits{MaxSize: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if !eng.has(imgB.ImageID.String()) || len(rep.DockerErrors) != 2 {
		t.Errorf("in-use image: %s", toJSON(rep))
	}
}
