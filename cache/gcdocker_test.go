package cache_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/naming"
)

// gcEngine is gc through the fake engine (the gc helper refuses Docker).
func gcEngine(t *testing.T, c *cache.Cache, opt cache.GCOptions) *cache.GCReport {
	t.Helper()
	rep, err := c.GC(context.Background(), opt)
	if err != nil {
		t.Fatalf("GC(%+v): %v", opt, err)
	}
	return rep
}

// getRef gets name and returns its pinned ref.
func getRef(t *testing.T, c *cache.Cache, name string) string {
	t.Helper()
	res, err := c.Get(context.Background(), mustName(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return res.Ref
}

// TestGCDockerSupersededVersions: after a re-put moves a name, gc --docker
// removes the old version's tag from the daemon, but only once the job that
// got it is past the min-age and no hold on the old digest lasts; the
// current version and the latest tag stay. Before, the old image stayed in
// the daemon for ever.
func TestGCDockerSupersededVersions(t *testing.T) {
	t.Parallel()
	c, eng, clk := engineCache(t)
	ctx := context.Background()
	v1, img1 := image(t, "t/x:1", 1)
	v2, _ := image(t, "t/x:2", 2)
	put(t, c, "capy-debian-13-a", v1)
	old := getRef(t, c, "capy-debian-13-a") // the job's image
	clk.Advance(time.Minute)
	put(t, c, "capy-debian-13-a", v2)
	cur := getRef(t, c, "capy-debian-13-a")
	opt := cache.GCOptions{Docker: true, Limits: lru.Limits{MinAge: 10 * time.Minute}}

	rep := gcEngine(t, c, opt)
	if !slices.Contains(rep.DockerProtected, old) || slices.Contains(rep.Docker, old) {
		t.Fatalf("within the min-age of the old version's last use: removed %v, protected %v", rep.Docker, rep.DockerProtected)
	}
	// A hold on the old digest outlives the min-age.
	if err := c.Hold(ctx, mustName(t, "capy-debian-13-a"), sha(v1), clk.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(20 * time.Minute)
	if rep = gcEngine(t, c, opt); slices.Contains(rep.Docker, old) {
		t.Fatalf("held, the old version was removed: %v", rep.Docker)
	}
	clk.Advance(time.Hour)
	rep = gcEngine(t, c, opt)
	if !slices.Equal(rep.Docker, []string{old}) {
		t.Fatalf("past the min-age and the hold: removed %v, want [%s]", rep.Docker, old)
	}
	if _, err := eng.Inspect(ctx, img1.ImageID.String()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("the old image is still in the daemon: %v", err)
	}
	for _, ref := range []string{cur, naming.LatestRef(mustName(t, "capy-debian-13-a"))} {
		if _, err := eng.Inspect(ctx, ref); err != nil {
			t.Errorf("%s: %v", ref, err)
		}
	}
}

// TestGCDockerMinFree: the daemon-side limit removes imgcache's images
// least recently used first until the data root has the target free; the
// pinned entry's image and those within the min-age stay, the blobs stay,
// an image that also carries a tag imgcache did not make is untagged, not
// deleted; a daemon that is not on this host is refused.
func TestGCDockerMinFree(t *testing.T) {
	t.Parallel()
	c, eng, clk := engineCache(t)
	ctx := context.Background()
	var sizes []int64
	names := []string{"capy-debian-13-a", "capy-debian-13-b", "capy-debian-13-c", "capy-debian-13-d"}
	for i, n := range names {
		data, _ := image(t, "t/x:1", int64(10+i))
		put(t, c, n, data)
		sizes = append(sizes, int64(len(data)))
		getRef(t, c, n)
		clk.Advance(time.Hour)
	}
	c.SetPinned(ctx, mustName(t, names[1]), true)
	eng.Tag(ctx, "imgcache/"+names[2]+":latest", "other/keep:1") // not imgcache's tag
	// Free space: what the fake engine's deleted images gave back.
	base := int64(1000)
	cache.SetFreeBytes(c, func(string) (int64, error) {
		imgs, _ := eng.Images(ctx)
		free := base + sizes[0] + sizes[1] + sizes[2] + sizes[3]
		for _, img := range imgs {
			free -= img.Size
		}
		return free, nil
	})
	getRef(t, c, names[3]) // used just now: within the min-age

	// The target needs a's and d's bytes back (c's image, untagged, stays).
	opt := cache.GCOptions{DockerMinFree: base + sizes[0] + sizes[3], Limits: lru.Limits{MinAge: 10 * time.Minute}}
	if _, err := c.GC(ctx, opt); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a daemon not on this host: %v, want ErrInvalid", err)
	}
	eng.dataRoot = t.TempDir()
	rep := gcEngine(t, c, opt)
	// a goes (least recent); b is pinned; c is untagged but stays for its
	// other tag (frees nothing); d is within the min-age: target missed.
	for _, ref := range []string{"imgcache/" + names[0] + ":latest", "imgcache/" + names[2] + ":latest"} {
		if !slices.Contains(rep.Docker, ref) {
			t.Errorf("%s not removed: %v", ref, rep.Docker)
		}
	}
	for _, n := range []string{names[1], names[3]} {
		if _, err := eng.Inspect(ctx, "imgcache/"+n+":latest"); err != nil {
			t.Errorf("%s's image was removed: %v", n, err)
		}
	}
	if _, err := eng.Inspect(ctx, "other/keep:1"); err != nil {
		t.Errorf("the image with a foreign tag was deleted: %v", err)
	}
	if rep.DockerMissing <= 0 || !rep.Short() || !slices.Contains(rep.DockerProtected, "imgcache/"+names[3]+":latest") {
		t.Errorf("the target cannot be met (d is protected): missing %d, protected %v", rep.DockerMissing, rep.DockerProtected)
	}
	if got := listNames(t, c); !slices.Equal(got, names) {
		t.Errorf("the cache lost entries: %v", got)
	}
	// With the min-age waived, d goes too, and the target is met.
	opt.Limits.MinAge = 0
	if rep = gcEngine(t, c, opt); rep.DockerMissing != 0 || !slices.Contains(rep.Docker, "imgcache/"+names[3]+":latest") {
		t.Errorf("min-age 0: removed %v, missing %d", rep.Docker, rep.DockerMissing)
	}
}
