package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/errdefs"
)

func put(t *testing.T, s *Store, entries ...*Entry) {
	t.Helper()
	err := s.Update(ctxT(t), func(m *Manifest) error {
		for _, e := range entries {
			m.Entries[e.Name] = e
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func lastUsed(t *testing.T, s *Store, name string) time.Time {
	t.Helper()
	m, err := s.Load(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	e, ok := m.Entries[name]
	if !ok {
		t.Fatalf("no entry %s", name)
	}
	// Lookup must agree with Load.
	le, ok, err := s.Lookup(ctxT(t), name)
	if err != nil || !ok || !reflect.DeepEqual(le, *e) {
		t.Fatalf("Lookup(%s) = %+v, %v, %v; Load has %+v", name, le, ok, err, *e)
	}
	return e.LastUsed
}

// TestTouch: a use moves LastUsed forward, only for the digest used, never
// back; it is seen by Load and Lookup before any fold, survives the fold a
// write does, and the fold empties the log.
func TestTouch(t *testing.T) {
	dir := t.TempDir()
	s := Open(dir)
	ctx := ctxT(t)
	a, b := minimalEntry("a-b-c-d", digestA), minimalEntry("e-f-g-h", digestB)
	put(t, s, a, b)
	t0 := a.LastUsed
	t1 := t0.Add(time.Hour)

	if err := s.Touch(ctx, "a-b-c-d", digestA, t1); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(t, s, "a-b-c-d"); !got.Equal(t1) {
		t.Fatalf("after Touch: LastUsed %v, want %v", got, t1)
	}
	// manifest.json itself is unchanged until a write folds the log in.
	raw, _ := os.ReadFile(s.Path())
	if bytes.Contains(raw, []byte(t1.Format(time.RFC3339Nano))) {
		t.Fatal("Touch rewrote manifest.json")
	}
	// An earlier use, a use of another digest, a use of a missing name:
	// no effect.
	for _, u := range []struct {
		name string
		d    digest.Digest
		t    time.Time
	}{{"a-b-c-d", digestA, t0}, {"a-b-c-d", digestB, t1.Add(time.Hour)}, {"x-y-z-w", digestA, t1.Add(time.Hour)}} {
		if err := s.Touch(ctx, u.name, u.d, u.t); err != nil {
			t.Fatal(err)
		}
	}
	if got := lastUsed(t, s, "a-b-c-d"); !got.Equal(t1) {
		t.Fatalf("LastUsed %v, want %v", got, t1)
	}
	if got := lastUsed(t, s, "e-f-g-h"); !got.Equal(b.LastUsed) {
		t.Fatalf("e-f-g-h LastUsed moved to %v", got)
	}
	// A write folds the log in and removes it.
	put(t, s)
	if _, err := os.Stat(s.UsesPath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("use log after a write: %v", err)
	}
	f, _ := os.Open(s.Path())
	m, err := Decode(f)
	f.Close()
	if err != nil || !m.Entries["a-b-c-d"].LastUsed.Equal(t1) {
		t.Fatalf("manifest.json after the fold: %v, %+v", err, m)
	}
	assertOnlyFiles(t, dir, "lock", "manifest.json")
}

// TestTouchFolds: past UsesFoldSize, Touch folds the log itself.
func TestTouchFolds(t *testing.T) {
	s := Open(t.TempDir())
	ctx := ctxT(t)
	e := minimalEntry("a-b-c-d", digestA)
	put(t, s, e)
	line, _ := useLine(e.Name, e.Digest, e.LastUsed)
	n := UsesFoldSize/len(line) + 1
	var last time.Time
	for i := range n {
		last = e.LastUsed.Add(time.Duration(i+1) * time.Second)
		if err := s.Touch(ctx, e.Name, e.Digest, last); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(s.UsesPath())
	if err == nil && fi.Size() > UsesFoldSize {
		t.Fatalf("use log is %d bytes after %d uses", fi.Size(), n)
	}
	if got := lastUsed(t, s, e.Name); !got.Equal(last) {
		t.Fatalf("LastUsed %v, want %v", got, last)
	}
}

// TestTouchConcurrent: uses appended while other goroutines rewrite the
// manifest are all kept (the fold never drops a line appended around it).
func TestTouchConcurrent(t *testing.T) {
	s := Open(t.TempDir())
	ctx := ctxT(t)
	const names = 8
	const uses = 60
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var entries []*Entry
	for i := range names {
		e := minimalEntry(fmt.Sprintf("p-os-v-n%d", i), digestA)
		e.LastUsed = base
		entries = append(entries, e)
	}
	put(t, s, entries...)
	var wg sync.WaitGroup
	errs := make(chan error, names+1)
	for i := range names {
		wg.Go(func() {
			for j := range uses {
				if err := s.Touch(ctx, entries[i].Name, digestA, base.Add(time.Duration(j+1)*time.Minute)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() { // a writer folding all along
		for range uses {
			if err := s.Update(ctx, func(m *Manifest) error { m.Entries["other-x-y-z"] = minimalEntry("other-x-y-z", digestB); return nil }); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, e := range entries {
		if got, want := lastUsed(t, s, e.Name), base.Add(uses*time.Minute); !got.Equal(want) {
			t.Errorf("%s: LastUsed %v, want %v: a use was lost", e.Name, got, want)
		}
	}
}

func TestTouchRejects(t *testing.T) {
	s := Open(t.TempDir())
	now := time.Now()
	for _, tt := range []struct {
		name string
		d    digest.Digest
	}{{"", digestA}, {"a b", digestA}, {"a\nb", digestA}, {"a-b-c-d", "sha256:zz"}, {strings.Repeat("x", 600), digestA}} {
		if err := s.Touch(ctxT(t), tt.name, tt.d, now); err == nil {
			t.Errorf("Touch(%q, %q) accepted", tt.name, tt.d)
		}
	}
}

func TestParseUses(t *testing.T) {
	t1 := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	good := fmt.Sprintf("%s %s a-b-c-d\n", t1.Format(time.RFC3339Nano), digestA)
	in := strings.Join([]string{
		good,
		"garbage\n",
		"\n",
		fmt.Sprintf("yesterday %s a-b-c-d\n", digestA),
		fmt.Sprintf("%s md5:abc a-b-c-d\n", t1.Format(time.RFC3339Nano)),
		fmt.Sprintf("%s %s \n", t1.Format(time.RFC3339Nano), digestA),
		fmt.Sprintf("%s %s a b\n", t1.Format(time.RFC3339Nano), digestA),
		strings.Repeat("y", 100<<10) + "\n", // longer than the read buffer
		good,
		good[:len(good)-1], // torn: no newline
	}, "")
	uses, err := ParseUses(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Use{Time: t1, Digest: digestA, Name: "a-b-c-d"}
	if !reflect.DeepEqual(uses, []Use{want, want}) {
		t.Fatalf("ParseUses = %+v", uses)
	}
}

// TestLookup: Lookup agrees with Load on every entry and on absence, and
// refuses what Load refuses for the version and for the entry it decodes.
func TestLookup(t *testing.T) {
	s := Open(t.TempDir())
	ctx := ctxT(t)
	if _, ok, err := s.Lookup(ctx, "a-b-c-d"); ok || err != nil {
		t.Fatalf("Lookup with no manifest: %v, %v", ok, err)
	}
	full := fullEntry("capy-ubuntu-25.04-gcc15")
	put(t, s, full, minimalEntry("a-b-c-d", digestB))
	for _, name := range []string{"capy-ubuntu-25.04-gcc15", "a-b-c-d"} {
		lastUsed(t, s, name) // compares Lookup with Load
	}
	if _, ok, err := s.Lookup(ctx, "nope-x-y-z"); ok || err != nil {
		t.Fatalf("Lookup of a missing name: %v, %v", ok, err)
	}
	if err := os.WriteFile(s.Path(), []byte(`{"version":3,"entries":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Lookup(ctx, "a-b-c-d"); !errors.Is(err, ErrNewerSchema) || errors.Is(err, errdefs.ErrCorrupt) {
		t.Errorf("newer: Lookup = %v, want ErrNewerSchema and not ErrCorrupt", err)
	}
	for _, tt := range []struct{ name, json string }{
		{"no version", `{"entries":{}}`},
		{"not json", `{"version":1,"entries":{`},
		{"bad entry", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:zz"}}}`},
		{"unknown field", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","colour":"red"}}}`},
		{"null entry", `{"version":1,"entries":{"a-b-c-d":null}}`},
	} {
		if err := os.WriteFile(s.Path(), []byte(tt.json), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Lookup(ctx, "a-b-c-d"); !errors.Is(err, errdefs.ErrCorrupt) {
			t.Errorf("%s: Lookup = %v, want ErrCorrupt", tt.name, err)
		}
	}
}

// benchManifest writes a manifest of n entries and returns its store.
func benchManifest(b *testing.B, n int) *Store {
	s := Open(b.TempDir())
	m := New()
	for i := range n {
		e := fullEntry(fmt.Sprintf("p%d-linux-1-v%d", i%50, i))
		e.Digest = digest.FromString(e.Name)
		m.Entries[e.Name] = e
	}
	if err := s.Replace(b.Context(), m); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkWarmPath compares what a warm get does to the manifest among
// 10,000 entries, before (Load, then Update to record the use) and now
// (Lookup, then Touch).
func BenchmarkWarmPath(b *testing.B) {
	const n = 10000
	name := "p7-linux-1-v7"
	b.Run("load+update", func(b *testing.B) {
		s := benchManifest(b, n)
		for b.Loop() {
			m, err := s.Load(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			d := m.Entries[name].Digest
			if err := s.Update(b.Context(), func(m *Manifest) error { m.Entries[name].LastUsed = time.Now(); _ = d; return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lookup+touch", func(b *testing.B) {
		s := benchManifest(b, n)
		for b.Loop() {
			e, ok, err := s.Lookup(b.Context(), name)
			if err != nil || !ok {
				b.Fatal(ok, err)
			}
			if err := s.Touch(b.Context(), name, e.Digest, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestLookupTruncatedWhileMapped: manifest.json truncated in place while
// Lookup reads its mapping is an ErrCorrupt error, not a crash (SIGBUS).
func TestLookupTruncatedWhileMapped(t *testing.T) {
	s := Open(t.TempDir())
	m := New()
	for i := range 2000 { // several pages
		e := minimalEntry(fmt.Sprintf("p-os-v-n%d", i), digestA)
		m.Entries[e.Name] = e
	}
	put(t, s, slices.Collect(maps.Values(m.Entries))...)
	testHookMapped = func(f *os.File) {
		if err := os.Truncate(f.Name(), 0); err != nil {
			t.Error(err)
		}
	}
	defer func() { testHookMapped = nil }()
	_, _, err := s.Lookup(ctxT(t), "p-os-v-n1999")
	if !errors.Is(err, errdefs.ErrCorrupt) || !strings.Contains(err.Error(), "changed while it was read") {
		t.Fatalf("Lookup of a file truncated under it = %v", err)
	}
}
