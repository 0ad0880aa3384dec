package cache_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/lockfile"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// gcFixture is a cache holding names[i] put at t0+i hours, each its own
// image, then names[0] exported at t0+4h: least recently used first, the
// order is names[1], names[2], names[3], names[0]. The clock is at t0+5h.
type gcFixture struct {
	c      *cache.Cache
	clk    *fakeClock
	names  []string
	digest map[string]digest.Digest
	stored map[string]int64
}

func newGCFixture(t *testing.T) *gcFixture {
	t.Helper()
	c, clk := newCache(t)
	f := &gcFixture{
		c: c, clk: clk,
		names:  []string{"capy-ubuntu-25.04-gcc15", "capy-ubuntu-25.04-gcc14", "other-debian-13-base", "zeta-alpine-3.22-musl"},
		digest: map[string]digest.Digest{},
		stored: map[string]int64{},
	}
	for i, n := range f.names {
		clk.Set(t0.Add(time.Duration(i) * time.Hour))
		data, _ := image(t, "t/x:1", int64(100+i))
		e := put(t, c, n, data).Entry
		f.digest[n], f.stored[n] = e.Digest, e.StoredSize
	}
	clk.Set(t0.Add(4 * time.Hour))
	export(t, c, f.names[0])
	clk.Set(t0.Add(5 * time.Hour))
	return f
}

func (f *gcFixture) sum(names ...string) int64 {
	var s int64
	for _, n := range names {
		s += f.stored[n]
	}
	return s
}

// victimNames flattens the victims' names, in report order.
func victimNames(rep *cache.GCReport) []string {
	var out []string
	for _, v := range rep.Victims {
		out = append(out, v.Names...)
	}
	return out
}

func TestGCMaxSizeEvictsLeastRecentlyUsedFirst(t *testing.T) {
	t.Parallel()
	f0 := newGCFixture(t) // only to learn the sizes; each case builds its own
	n := f0.names
	tests := []struct {
		name    string
		maxSize int64
		evicted []string // in order
	}{
		{"everything fits", f0.sum(n...), nil},
		{"one byte over", f0.sum(n...) - 1, []string{n[1]}},
		{"room for two", f0.sum(n[3], n[0]), []string{n[1], n[2]}},
		{"room for the most recent only", f0.sum(n[0]), []string{n[1], n[2], n[3]}},
		{"room for nothing", 1, []string{n[1], n[2], n[3], n[0]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newGCFixture(t)
			if f.sum(n...) != f0.sum(n...) {
				t.Fatal("stored sizes are not deterministic")
			}
			rep := gc(t, f.c, cache.GCOptions{Limits: lru.Limits{MaxSize: tt.maxSize}})
			t.Logf("report: %s", toJSON(rep))
			if got := victimNames(rep); !slices.Equal(got, tt.evicted) {
				t.Fatalf("evicted %v, want %v (LRU first)", got, tt.evicted)
			}
			for _, v := range rep.Victims {
				if v.Reason != string(lru.ReasonMaxSize) || len(v.Names) != 1 || v.Blob != f.digest[v.Names[0]].String() || v.Freed != f.stored[v.Names[0]] {
					t.Errorf("victim %s", toJSON(v))
				}
			}
			if rep.Freed != f.sum(tt.evicted...) {
				t.Errorf("Freed = %d, want %d", rep.Freed, f.sum(tt.evicted...))
			}
			if rep.StoredBefore != f.sum(n...) || rep.StoredAfter != rep.StoredBefore-rep.Freed {
				t.Errorf("StoredBefore/After = %d/%d", rep.StoredBefore, rep.StoredAfter)
			}
			if tt.maxSize > 1 && (rep.StoredAfter > tt.maxSize || rep.Short()) {
				t.Errorf("StoredAfter %d > MaxSize %d or short: %s", rep.StoredAfter, tt.maxSize, toJSON(rep.Shortfalls))
			}
			for _, name := range n {
				gone := slices.Contains(tt.evicted, name)
				if hasBlob(t, f.c, f.digest[name]) == gone {
					t.Errorf("%s: blob present=%v, evicted=%v", name, !gone, gone)
				}
				if exists(t, linkPath(f.c, name)) == gone {
					t.Errorf("%s: link present=%v, evicted=%v", name, !gone, gone)
				}
				if gone && exists(t, lockPath(f.c, f.digest[name])) {
					t.Errorf("%s: lock file of the deleted blob left", name)
				}
			}
			var kept []string
			for _, name := range n {
				if !slices.Contains(tt.evicted, name) {
					kept = append(kept, name)
				}
			}
			if got := listNames(t, f.c); !slices.Equal(got, sortedCopy(kept)) {
				t.Errorf("names left %v, want %v", got, sortedCopy(kept))
			}
			if v := verify(t, f.c, false); !v.OK() || len(v.Problems) != 0 {
				t.Errorf("verify after gc: %s", toJSON(v.Problems))
			}
		})
	}
}

// TestGCMinAge: entries used within the min-age are never evicted; what
// they keep over the limit is a shortfall. (Fixture recency: names[1] 4h
// ago, names[2] 3h, names[3] 2h, names[0] 1h.)
func TestGCMinAge(t *testing.T) {
	t.Parallel()
	f := newGCFixture(t)
	rep := gc(t, f.c, cache.GCOptions{Limits: lru.Limits{MaxSize: f.sum(f.names[0]), MinAge: 150 * time.Minute}})
	if got := victimNames(rep); !slices.Equal(got, []string{f.names[1], f.names[2]}) {
		t.Errorf("evicted %v, want %v", got, f.names[1:3])
	}
	if want := sortedCopy([]string{f.names[0], f.names[3]}); !slices.Equal(rep.Protected, want) {
		t.Errorf("Protected = %v, want %v", rep.Protected, want)
	}
	if !rep.Short() || rep.Shortfalls[0].Recent.Blobs == 0 {
		t.Errorf("shortfalls %s: want max-size missed, held by recent entries", toJSON(rep.Shortfalls))
	}
	if got := listNames(t, f.c); !slices.Equal(got, sortedCopy([]string{f.names[0], f.names[3]})) {
		t.Errorf("names left %v", got)
	}
}

// TestGCHold: a hold keeps its entry past the min-age until it expires,
// and only for the digest it was taken on.
func TestGCHold(t *testing.T) {
	t.Parallel()
	f := newGCFixture(t)
	ctx := context.Background()
	held := naming.MustParse(f.names[1])
	if err := f.c.Hold(ctx, held, f.digest[f.names[1]], f.clk.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Hold(ctx, naming.MustParse(f.names[2]), f.digest[f.names[3]], f.clk.Now().Add(time.Hour)); err != nil { // another digest: no hold on names[2]
		t.Fatal(err)
	}
	rep := gc(t, f.c, cache.GCOptions{Limits: lru.Limits{MaxSize: f.sum(f.names[1])}})
	if got := victimNames(rep); !slices.Equal(got, []string{f.names[2], f.names[3], f.names[0]}) {
		t.Errorf("evicted %v: want all but the held %s", got, f.names[1])
	}
	if !slices.Equal(rep.Protected, []string{f.names[1]}) {
		t.Errorf("Protected = %v", rep.Protected)
	}
	f.clk.Advance(2 * time.Hour)
	rep = gc(t, f.c, cache.GCOptions{Limits: lru.Limits{MaxSize: 1}})
	if got := victimNames(rep); !slices.Equal(got, []string{f.names[1]}) {
		t.Errorf("after the hold expired, evicted %v", got)
	}
}

// TestGCHoldAfterPlan: a hold taken between gc's plan and its commit wins
// (the commit reads the holds again under the manifest's lock).
// Mutation: drop the HeldUntil check in commitGC and the entry goes.
func TestGCHoldAfterPlan(t *testing.T) {
	t.Parallel()
	f := newGCFixture(t)
	n := naming.MustParse(f.names[1])
	cache.SetGCPlannedHook(f.c, func() {
		if err := f.c.Hold(context.Background(), n, f.digest[f.names[1]], f.clk.Now().Add(time.Hour)); err != nil {
			t.Error(err)
		}
	})
	rep := gc(t, f.c, cache.GCOptions{Limits: lru.Limits{MaxSize: 1}})
	if slices.Contains(victimNames(rep), f.names[1]) || !slices.Contains(listNames(t, f.c), f.names[1]) {
		t.Errorf("the entry held after the plan was evicted: victims %v", victimNames(rep))
	}
}

func TestGCSharedBlobGoesWithAllItsNames(t *testing.T) {
	t.Parallel()
	c, clk := newCache(t)
	a, imgA := image(t, "t/a:1", 1)
	b, imgB := image(t, "t/b:1", 2)
	put(t, c, "capy-ubuntu-25.04-gcc15", a)
	clk.Advance(time.Hour)
	put(t, c, "capy-ubuntu-25.04-alias", a) // a's recency is its latest name's use
	clk.Advance(time.Hour)
	put(t, c, "other-debian-13-base", b)
	clk.Advance(time.Hour)
	eb := inspect(t, c, "other-debian-13-base")

	rep := gc(t, c, cache.GCOptions{Limits: lru.Limits{MaxSize: eb.StoredSize + 1}})
	if len(rep.Victims) != 1 || !slices.Equal(rep.Victims[0].Names, []string{"capy-ubuntu-25.04-alias", "capy-ubuntu-25.04-gcc15"}) || rep.Victims[0].Blob != imgA.Digest.String() {
		t.Errorf("victims = %s, want both names of blob a in one step", toJSON(rep.Victims))
	}
	if hasBlob(t, c, imgA.Digest) || !hasBlob(t, c, imgB.Digest) {
		t.Error("wrong blob deleted")
	}
	if got := listNames(t, c); !slices.Equal(got, []string{"other-debian-13-base"}) {
		t.Errorf("names left = %v", got)
	}
}

func TestGCPinnedNeverEvicted(t *testing.T) {
	t.Parallel()
	f := newGCFixture(t)
	pinned := f.names[1] // the least recently used
	if err := f.c.SetPinned(t.Context(), mustName(t, pinned), true); err != nil {
		t.Fatal(err)
	}
	rep := gc(t, f.c, cache.GCOptions{Limits: lru.Limits{MaxSize: 1}})
	t.Logf("report: %s", toJSON(rep))
	if got, want := victimNames(rep), []string{f.names[2], f.names[3], f.names[0]}; !slices.Equal(got, want) {
		t.Errorf("evicted %v, want %v", got, want)
	}
	if !slices.Contains(rep.Skipped, f.digest[pinned].String()) {
		t.Errorf("Skipped = %v, want the pinned blob %s", rep.Skipped, f.digest[pinned])
	}
	if !rep.Short() || len(rep.Shortfalls) != 1 {
		t.Fatalf("Shortfalls = %s, want one", toJSON(rep.Shortfalls))
	}
	sf := rep.Shortfalls[0]
	if sf.Limit != lru.LimitMaxSize || sf.Missing != f.stored[pinned]-1 || sf.Pinned != (lru.Held{Blobs: 1, Bytes: f.stored[pinned]}) {
		t.Errorf("Shortfall = %s, want max-size missing %d, held by the pinned blob", toJSON(sf), f.stored[pinned]-1)
	}
	if !hasBlob(t, f.c, f.digest[pinned]) || !slices.Equal(listNames(t, f.c), []string{pinned}) {
		t.Error("pinned entry evicted")
	}
	assertLink(t, f.c, pinned, f.digest[pinned])

	// Max age does not drop a pinned name either.
	f.clk.Advance(365 * 24 * time.Hour)
	rep = gc(t, f.c, cache.GCOptions{Limits: lru.Limits{MaxAge: time.Hour}})
	if len(rep.Victims) != 0 || !slices.Equal(listNames(t, f.c), []string{pinned}) {
		t.Errorf("max-age evicted a pinned entry: %s", toJSON(rep.Victims))
	}
}

// snapshot is the state a dry run must not change.
type snapshot struct {
	manifest []byte
	blobs    []string
	names    []string
	tmp      []string
}

func takeSnapshot(t *testing.T, c *cache.Cache) snapshot {
	t.Helper()
	var links []string
	for _, p := range dirNames(t, filepath.Join(c.Dir(), "names")) {
		for _, l := range dirNames(t, filepath.Join(c.Dir(), "names", p)) {
			target, _ := os.Readlink(filepath.Join(c.Dir(), "names", p, l))
			links = append(links, p+"/"+l+" -> "+target)
		}
	}
	return snapshot{
		manifest: readFile(t, filepath.Join(c.Dir(), "manifest.json")),
		blobs:    dirNames(t, filepath.Join(c.Dir(), "blobs", "sha256")),
		names:    links,
		tmp:      dirNames(t, filepath.Join(c.Dir(), "tmp")),
	}
}

func (s snapshot) equal(o snapshot) bool {
	return bytes.Equal(s.manifest, o.manifest) && slices.Equal(s.blobs, o.blobs) && slices.Equal(s.names, o.names) && slices.Equal(s.tmp, o.tmp)
}

func TestGCDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		limits lru.Limits
		prep   func(t *testing.T, f *gcFixture)
	}{
		{"max size", lru.Limits{MaxSize: 1}, nil},
		{"max age", lru.Limits{MaxAge: 2*time.Hour + 30*time.Minute}, nil},
		{"orphans", lru.Limits{}, func(t *testing.T, f *gcFixture) {
			if err := f.c.Remove(t.Context(), mustName(t, f.names[2])); err != nil {
				t.Fatal(err)
			}
		}},
		{"pinned and orphan", lru.Limits{MaxSize: 1}, func(t *testing.T, f *gcFixture) {
			if err := f.c.SetPinned(t.Context(), mustName(t, f.names[0]), true); err != nil {
				t.Fatal(err)
			}
			if err := f.c.Remove(t.Context(), mustName(t, f.names[3])); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newGCFixture(t)
			if tt.prep != nil {
				tt.prep(t, f)
			}
			writeDeadIngest(t, f.c, "dead")
			before := takeSnapshot(t, f.c)
			dry := gc(t, f.c, cache.GCOptions{Limits: tt.limits, DryRun: true})
			if !dry.DryRun {
				t.Error("report of a dry run says DryRun=false")
			}
			if after := takeSnapshot(t, f.c); !after.equal(before) {
				t.Fatalf("dry run changed the cache:\nbefore %+v\nafter  %+v", before, after)
			}
			if len(dry.Victims) == 0 {
				t.Fatal("dry run plans nothing; the case tests nothing")
			}
			if dry.TmpFiles != 0 {
				t.Errorf("dry run reports %d tmp files removed", dry.TmpFiles)
			}
			real := gc(t, f.c, cache.GCOptions{Limits: tt.limits})
			t.Logf("dry: %s\nreal: %s", toJSON(dry.Victims), toJSON(real.Victims))
			if toJSON(dry.Victims) != toJSON(real.Victims) || dry.Freed != real.Freed ||
				!slices.Equal(dry.Skipped, real.Skipped) || toJSON(dry.Shortfalls) != toJSON(real.Shortfalls) ||
				dry.StoredAfter != real.StoredAfter {
				t.Errorf("dry run and real run differ:\ndry  %s\nreal %s", toJSON(dry), toJSON(real))
			}
			if real.TmpFiles != 1 {
				t.Errorf("real run removed %d tmp files, want 1", real.TmpFiles)
			}
		})
	}
}

// writeDeadIngest leaves what a killed ingest leaves in tmp/: a data file
// and its lock file, which nobody holds.
func writeDeadIngest(t *testing.T, c *cache.Cache, id string) (data, lock string) {
	t.Helper()
	data = filepath.Join(c.Dir(), "tmp", "ingest-"+id+".tar.zst")
	lock = filepath.Join(c.Dir(), "tmp", "ingest-"+id+".lock")
	if err := os.WriteFile(data, bytes.Repeat([]byte("x"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return data, lock
}

func TestGCSkipsBlobInUse(t *testing.T) {
	t.Parallel()
	f := newGCFixture(t)
	busy := f.names[1] // the least recently used: first to go
	l, err := lockfile.Acquire(t.Context(), lockPath(f.c, f.digest[busy]), false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()

	// Room for two blobs: without the lock names[1] and names[2] would go.
	rep := gc(t, f.c, cache.GCOptions{Limits: lru.Limits{MaxSize: f.sum(busy, f.names[0])}})
	t.Logf("report: %s", toJSON(rep))
	if !slices.Equal(rep.Skipped, []string{f.digest[busy].String()}) {
		t.Errorf("Skipped = %v, want the busy blob %s", rep.Skipped, f.digest[busy])
	}
	if got, want := victimNames(rep), []string{f.names[2], f.names[3]}; !slices.Equal(got, want) {
		t.Errorf("evicted %v, want %v: the next ones in LRU order", got, want)
	}
	if !hasBlob(t, f.c, f.digest[busy]) {
		t.Fatal("gc deleted a blob somebody holds")
	}
	if !slices.Contains(listNames(t, f.c), busy) {
		t.Error("gc dropped the busy blob's name")
	}
	assertLink(t, f.c, busy, f.digest[busy])
	if !exists(t, lockPath(f.c, f.digest[busy])) {
		t.Error("gc removed the lock file somebody holds")
	}
	for _, n := range []string{f.names[2], f.names[3]} {
		if hasBlob(t, f.c, f.digest[n]) {
			t.Errorf("%s: blob not evicted", n)
		}
	}

	// An unreferenced blob in use is skipped too, and reclaimed once free.
	if err := f.c.Remove(t.Context(), mustName(t, busy)); err != nil {
		t.Fatal(err)
	}
	rep = gc(t, f.c, cache.GCOptions{})
	if len(rep.Victims) != 0 || !slices.Equal(rep.Skipped, []string{f.digest[busy].String()}) || !hasBlob(t, f.c, f.digest[busy]) {
		t.Errorf("orphan in use: victims %s skipped %v", toJSON(rep.Victims), rep.Skipped)
	}
	l.Release()
	rep = gc(t, f.c, cache.GCOptions{})
	if len(rep.Victims) != 1 || rep.Victims[0].Blob != f.digest[busy].String() || hasBlob(t, f.c, f.digest[busy]) {
		t.Errorf("released orphan not reclaimed: %s", toJSON(rep))
	}
}

func TestGCCleansDeadIngests(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t)
	data, _ := image(t, "t/x:1", 1)
	put(t, c, "capy-ubuntu-25.04-gcc15", data)

	deadData, deadLock := writeDeadIngest(t, c, "dead")
	// A data file whose lock file is gone.
	orphanData := filepath.Join(c.Dir(), "tmp", "ingest-nolock.tar.zst")
	if err := os.WriteFile(orphanData, make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	// A lock file without data.
	lonelyLock := filepath.Join(c.Dir(), "tmp", "ingest-lonely.lock")
	if err := os.WriteFile(lonelyLock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A live ingest: its lock is held.
	liveData, liveLock := writeDeadIngest(t, c, "live")
	l, err := lockfile.Acquire(t.Context(), liveLock, true)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()

	rep := gc(t, c, cache.GCOptions{})
	t.Logf("report: %s", toJSON(rep))
	if rep.TmpFiles != 2 || rep.TmpFreed != 4096+100 {
		t.Errorf("TmpFiles=%d TmpFreed=%d, want 2 files of 4196 bytes", rep.TmpFiles, rep.TmpFreed)
	}
	for _, p := range []string{deadData, deadLock, orphanData, lonelyLock} {
		if exists(t, p) {
			t.Errorf("%s left", filepath.Base(p))
		}
	}
	for _, p := range []string{liveData, liveLock} {
		if !exists(t, p) {
			t.Errorf("gc removed %s of a live ingest", filepath.Base(p))
		}
	}
	if len(rep.Victims) != 0 || len(listNames(t, c)) != 1 {
		t.Errorf("gc of tmp/ evicted entries: %s", toJSON(rep.Victims))
	}
}

func TestGCMaxAge(t *testing.T) {
	t.Parallel()
	const day = 24 * time.Hour
	tests := []struct {
		name    string
		pin     bool
		shared  bool // the old name shares its blob with the recent one
		dropped []string
		blobGo  bool // the old name's blob is deleted
	}{
		{"old name dropped with its blob", false, false, []string{"capy-ubuntu-25.04-old"}, true},
		{"old name dropped, shared blob stays", false, true, []string{"capy-ubuntu-25.04-old"}, false},
		{"pinned old name kept", true, false, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, clk := newCache(t)
			old, imgOld := image(t, "t/x:1", 1)
			recent, _ := image(t, "t/x:1", 2)
			if tt.shared {
				recent = old
			}
			put(t, c, "capy-ubuntu-25.04-old", old)
			if tt.pin {
				if err := c.SetPinned(t.Context(), mustName(t, "capy-ubuntu-25.04-old"), true); err != nil {
					t.Fatal(err)
				}
			}
			clk.Advance(30 * day)
			put(t, c, "capy-ubuntu-25.04-new", recent)
			clk.Advance(day)

			rep := gc(t, c, cache.GCOptions{Limits: lru.Limits{MaxAge: 7 * day}})
			t.Logf("report: %s", toJSON(rep))
			if got := victimNames(rep); !slices.Equal(got, tt.dropped) {
				t.Errorf("dropped %v, want %v", got, tt.dropped)
			}
			for _, v := range rep.Victims {
				if v.Reason != string(lru.ReasonMaxAge) {
					t.Errorf("victim reason %q", v.Reason)
				}
			}
			if hasBlob(t, c, imgOld.Digest) == tt.blobGo {
				t.Errorf("old blob present=%v, want deleted=%v", !tt.blobGo, tt.blobGo)
			}
			if !slices.Contains(listNames(t, c), "capy-ubuntu-25.04-new") {
				t.Error("recent name dropped")
			}
			if exists(t, linkPath(c, "capy-ubuntu-25.04-old")) != (len(tt.dropped) == 0) {
				t.Error("old name's link does not follow its entry")
			}
			if v := verify(t, c, false); !v.OK() {
				t.Errorf("verify after gc: %s", toJSON(v.Problems))
			}
		})
	}
}

func TestGCInvalidLimits(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t)
	for _, l := range []lru.Limits{{MaxSize: -1}, {MaxAge: -time.Hour}, {MinFree: 10, TargetFree: 5}, {TargetFree: 5}} {
		_, err := c.GC(t.Context(), cache.GCOptions{Limits: l})
		t.Logf("%+v: %v", l, err)
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("GC(%+v) = %v, want ErrInvalid", l, err)
		}
	}
}

// TestGCCommitKeepsWhatChangedSincePlan: gc plans without the manifest's
// lock; what happens between plan and commit wins: a victim used since is
// kept, one re-put with other content is kept (and its new blob), one
// pinned is kept, and a victim whose blob another name took up again keeps
// its blob. Fails if commitGC drops names by the plan alone.
func TestGCCommitKeepsWhatChangedSincePlan(t *testing.T) {
	f := newGCFixture(t)
	ctx := t.Context()
	other, _ := image(t, "t/other:1", 999)
	cache.SetGCPlannedHook(f.c, func() {
		// Used, as a warm get does (no blob lock: gc holds the victims').
		if err := manifest.Open(f.c.Dir()).Touch(ctx, f.names[1], f.digest[f.names[1]], f.clk.Now()); err != nil {
			t.Error(err)
		}
		put(t, f.c, f.names[2], other)
		if err := f.c.SetPinned(ctx, mustName(t, f.names[3]), true); err != nil {
			t.Error(err)
		}
	})
	rep, err := f.c.GC(ctx, cache.GCOptions{Limits: lru.Limits{MaxSize: 1}})
	if err != nil {
		t.Fatal(err)
	}
	left := listNames(t, f.c)
	if want := []string{f.names[1], f.names[2], f.names[3]}; !slices.Equal(left, sortedCopy(want)) {
		t.Errorf("left %v, want %v (changed after the plan); report %s", left, want, toJSON(rep))
	}
	if got := victimNames(rep); !slices.Equal(got, []string{f.names[0]}) {
		t.Errorf("reported victims %v, want only %s", got, f.names[0])
	}
	for _, n := range left {
		e := inspect(t, f.c, n)
		if !hasBlob(t, f.c, e.Digest) {
			t.Errorf("%s kept without its blob", n)
		}
	}
	if inspect(t, f.c, f.names[2]).Digest != sha(other) {
		t.Errorf("the re-put was undone")
	}
	if rep := verify(t, f.c, false); !rep.OK() {
		t.Errorf("verify after gc: %s", toJSON(rep.Problems))
	}
}
