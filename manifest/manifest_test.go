package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/lockfile"
)

const (
	hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	hexB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

var (
	digestA = digest.Digest("sha256:" + hexA)
	digestB = digest.Digest("sha256:" + hexB)
)

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fullEntry sets every field, so a round trip that drops one shows.
func fullEntry(name string) *Entry {
	return &Entry{
		Name:           name,
		Digest:         digestA,
		Size:           123456,
		StoredSize:     65432,
		Format:         "docker-archive",
		ImageID:        "sha256:" + hexB,
		RepoTags:       []string{"capy:gcc15", "docker.io/library/capy:latest"},
		OS:             "linux",
		Arch:           "arm64",
		Variant:        "v8",
		MetadataOffset: 120000,
		Created:        time.Date(2025, 4, 1, 12, 30, 0, 123456789, time.UTC),
		Added:          time.Date(2025, 5, 2, 8, 0, 0, 0, time.UTC),
		LastUsed:       time.Date(2025, 6, 3, 9, 15, 1, 0, time.UTC),
		Pinned:         true,
		Base:           &Base{Name: "capy-ubuntu-25.04-gcc15", Digest: digestB},
		Recipe: &Recipe{
			Dockerfile: "FROM base\nRUN make\n",
			Context:    "/src/capy",
			BuildArgs:  map[string]string{"JOBS": "8", "CC": "gcc-15"},
		},
	}
}

// minimalEntry sets only what Decode requires.
func minimalEntry(name string, d digest.Digest) *Entry {
	return &Entry{
		Name:     name,
		Digest:   d,
		Size:     10,
		Added:    time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		LastUsed: time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC),
	}
}

func encode(t *testing.T, m *Manifest) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Encode(&buf, m); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return buf.Bytes()
}

func TestLoadMissingIsEmpty(t *testing.T) {
	dir := t.TempDir()
	m, err := Open(dir).Load(ctxT(t))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// Of the whole-tar schema: only a cache this imgcache creates starts
	// at schema 2 (Create), one an older imgcache made without a put yet
	// must stay readable to it.
	if !reflect.DeepEqual(m, &Manifest{Version: WholeTarSchema, Entries: map[string]*Entry{}}) {
		t.Fatalf("Load of a missing file = %+v, want an empty manifest", m)
	}
	if m.Version != WholeTarSchema || m.Entries == nil {
		t.Fatalf("empty manifest: version %d, entries %v", m.Version, m.Entries)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load created manifest.json: %v", err)
	}
}

func TestUpdateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := Open(dir)
	if s.Path() != filepath.Join(dir, "manifest.json") {
		t.Fatalf("Path() = %s", s.Path())
	}
	ctx := ctxT(t)
	want := New()
	want.Version = WholeTarSchema // a missing file is an empty schema-1 cache, and stays one
	for _, e := range []*Entry{fullEntry("capy-ubuntu-25.04-gcc15"), minimalEntry("capy-debian-13-clang20", digestB), minimalEntry("zed-alpine-3.22-musl", digestA)} {
		err := s.Update(ctx, func(m *Manifest) error {
			m.Entries[e.Name] = e
			return nil
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		want.Entries[e.Name] = e
		got, err := s.Load(ctx)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Load after Update:\n got %s\nwant %s", encode(t, got), encode(t, want))
		}
	}
	got, _ := s.Load(ctx)
	if names := got.Names(); !reflect.DeepEqual(names, []string{"capy-debian-13-clang20", "capy-ubuntu-25.04-gcc15", "zed-alpine-3.22-musl"}) {
		t.Errorf("Names() = %v", names)
	}
	if !got.Referenced(digestA) || !got.Referenced(digestB) || got.Referenced(digest.Digest("sha256:"+strings.Repeat("c", 64))) {
		t.Error("Referenced is wrong")
	}
	// A version written by someone else is set back to ours on write.
	if err := s.Update(ctx, func(m *Manifest) error { m.Version = 7; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx); err != nil {
		t.Fatalf("Load after an Update that changed the version: %v", err)
	}
	assertOnlyFiles(t, dir, "lock", "manifest.json")
}

func TestUpdateErrorWritesNothing(t *testing.T) {
	errFn := errors.New("changed my mind")
	tests := []struct {
		name  string
		start *Manifest // nil: no manifest.json
	}{
		{name: "no manifest yet"},
		{name: "existing manifest", start: &Manifest{Version: SchemaVersion, Entries: map[string]*Entry{"a-b-c-d": minimalEntry("a-b-c-d", digestA)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := Open(dir)
			ctx := ctxT(t)
			if tt.start != nil {
				if err := s.Replace(ctx, tt.start); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := os.ReadFile(s.Path())
			err := s.Update(ctx, func(m *Manifest) error {
				m.Entries["x-y-z-w"] = minimalEntry("x-y-z-w", digestB)
				delete(m.Entries, "a-b-c-d")
				return errFn
			})
			if !errors.Is(err, errFn) {
				t.Fatalf("Update = %v, want fn's error", err)
			}
			after, err := os.ReadFile(s.Path())
			if tt.start == nil {
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("manifest.json after a failed Update: %v", err)
				}
				assertOnlyFiles(t, dir, "lock")
				return
			}
			if !bytes.Equal(before, after) {
				t.Fatalf("manifest.json changed:\n%s\n→\n%s", before, after)
			}
			assertOnlyFiles(t, dir, "lock", "manifest.json")
		})
	}
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	s := Open(dir)
	ctx := ctxT(t)
	if err := os.WriteFile(s.Path(), []byte(`{"version":1,"entries":{`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx); !errors.Is(err, errdefs.ErrCorrupt) || !strings.Contains(err.Error(), "verify --repair") {
		t.Fatalf("Load of a corrupt file = %v, want ErrCorrupt with a hint", err)
	}
	called := false
	if err := s.Update(ctx, func(*Manifest) error { called = true; return nil }); !errors.Is(err, errdefs.ErrCorrupt) || called {
		t.Fatalf("Update of a corrupt file = %v (fn called: %v), want ErrCorrupt without calling fn", err, called)
	}
	// Replace is how repair gets out of it.
	m := New()
	m.Entries["a-b-c-d"] = minimalEntry("a-b-c-d", digestA)
	if err := s.Replace(ctx, m); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	got, err := s.Load(ctx)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("Load after Replace = %+v, %v", got, err)
	}
}

// spaces yields n bytes of ' ' without holding them.
type spaces struct{ n int64 }

var spaceBlock = bytes.Repeat([]byte{' '}, 64<<10)

func (s *spaces) Read(p []byte) (int, error) {
	if s.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.n {
		p = p[:s.n]
	}
	n := 0
	for n < len(p) {
		n += copy(p[n:], spaceBlock)
	}
	s.n -= int64(n)
	return n, nil
}

// brokenManifests are inputs Decode must refuse with errdefs.ErrCorrupt.
// The fuzz target uses them as seeds.
var brokenManifests = []struct {
	name string
	json string
}{
	{"empty", ``},
	{"truncated", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10`},
	{"invalid JSON", `{"version":1,"entries":{,}}`},
	{"not an object", `[1]`},
	{"no version", `{"entries":{}}`},
	{"null version", `{"version":null,"entries":{}}`},
	{"version 0", `{"version":0,"entries":{}}`},
	{"version as string", `{"version":"1","entries":{}}`},
	{"unknown top-level field", `{"version":1,"entries":{},"layers":{}}`},
	{"unknown entry field", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10,"colour":"red"}}}`},
	{"trailing data", `{"version":1,"entries":{}} {"version":1}`},
	{"trailing garbage", `{"version":1,"entries":{}}x`},
	{"trailing brace", `{"version":1,"entries":{}}}{`},
	{"key != name", `{"version":1,"entries":{"a-b-c-d":{"name":"e-f-g-h","digest":"sha256:` + hexA + `","size":10}}}`},
	{"no name", `{"version":1,"entries":{"a-b-c-d":{"digest":"sha256:` + hexA + `","size":10}}}`},
	{"bad digest", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:xyz","size":10}}}`},
	{"no digest", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","size":10}}}`},
	{"sha512 digest", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha512:` + hexA + hexA + `","size":10}}}`},
	{"uppercase digest", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + strings.ToUpper(hexA) + `","size":10}}}`},
	{"negative size", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":-1}}}`},
	{"negative stored size", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10,"stored_size":-5}}}`},
	{"negative metadata_offset", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10,"metadata_offset":-1}}}`},
	{"metadata_offset > size", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10,"metadata_offset":11}}}`},
	{"size not an integer", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":1.5}}}`},
	{"null entry", `{"version":1,"entries":{"a-b-c-d":null}}`},
	{"bad base digest", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10,"base":{"name":"x","digest":"../../etc"}}}}`},
	{"bad time", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10,"added":"yesterday"}}}`},
}

func TestDecodeRejects(t *testing.T) {
	for _, tt := range brokenManifests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode(strings.NewReader(tt.json))
			if !errors.Is(err, errdefs.ErrCorrupt) {
				t.Fatalf("Decode(%s) = %+v, %v; want an error wrapping ErrCorrupt", tt.json, m, err)
			}
			if m != nil {
				t.Errorf("Decode returned a manifest with its error")
			}
		})
	}
}

// TestDecodeTooLarge feeds Decode a valid manifest padded with spaces to
// MaxFileSize+1 bytes: refused for its size, not for its content. Fails if
// decode's size check goes (the padded manifest then decodes). Skipped
// under -race; scripts/test.sh runs it without the race detector.
func TestDecodeTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 256 MiB")
	}
	if raceEnabled() {
		// Decode buffers up to MaxFileSize; under the race detector that
		// alone takes close to a minute. The test runs without -race.
		t.Skip("reads 256 MiB: too slow under -race")
	}
	const head = `{"version":1,"entries":{}}`
	_, err := Decode(io.MultiReader(strings.NewReader(head), &spaces{n: MaxFileSize + 1 - int64(len(head))}))
	if !errors.Is(err, errdefs.ErrCorrupt) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Decode = %v, want ErrCorrupt for size", err)
	}
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestDecodeReadError(t *testing.T) {
	_, err := Decode(io.MultiReader(strings.NewReader(`{"version":1,`), failingReader{}))
	if !errors.Is(err, errdefs.ErrCorrupt) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Decode = %v, want ErrCorrupt wrapping the read error", err)
	}
}

func TestDecodeNewerSchema(t *testing.T) {
	tests := []struct {
		name      string
		json      string
		wantNewer bool
	}{
		{"version 3", `{"version":3,"entries":{}}`, true},
		{"version 99 with unknown fields", `{"version":99,"layers":{}}`, true},
		{"version 0", `{"version":0,"entries":{}}`, false},
		{"version -1", `{"version":-1,"entries":{}}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tt.json))
			// A newer schema is its own category (exit 10), never a corruption
			// (exit 4, which suggests the repair that would overwrite it).
			if errors.Is(err, ErrNewerSchema) != tt.wantNewer || errors.Is(err, errdefs.ErrCorrupt) == tt.wantNewer {
				t.Fatalf("Decode = %v; want ErrNewerSchema: %v, ErrCorrupt: %v", err, tt.wantNewer, !tt.wantNewer)
			}
		})
	}
	// Load says so too, without suggesting a repair that would lose data.
	dir := t.TempDir()
	s := Open(dir)
	if err := os.WriteFile(s.Path(), []byte(`{"version":3,"entries":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load(ctxT(t))
	if !errors.Is(err, ErrNewerSchema) || strings.Contains(err.Error(), "--repair") {
		t.Fatalf("Load of a newer manifest = %v", err)
	}
}

// TestDecodeCanonical: what Encode leaves out decodes as the zero value, so
// a decoded manifest survives Encode→Decode unchanged (found by FuzzDecode).
func TestDecodeCanonical(t *testing.T) {
	in := `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10,` +
		`"repo_tags":[],"created":"0001-01-01T01:00:00+01:00","recipe":{"dockerfile":"","context":"","build_args":{}}}}}`
	m, err := Decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	e := m.Entries["a-b-c-d"]
	if e.RepoTags != nil || e.Recipe.BuildArgs != nil || e.Created != (time.Time{}) {
		t.Fatalf("not canonical: repo_tags %#v, build_args %#v, created %#v", e.RepoTags, e.Recipe.BuildArgs, e.Created)
	}
	m2, err := Decode(bytes.NewReader(encode(t, m)))
	if err != nil || !reflect.DeepEqual(m, m2) {
		t.Fatalf("round trip differs (%v)", err)
	}
}

func TestUpdateThen(t *testing.T) {
	dir := t.TempDir()
	s := Open(dir)
	ctx := ctxT(t)
	var seen *Manifest
	err := s.UpdateThen(ctx, func(m *Manifest) error {
		m.Entries["a-b-c-d"] = minimalEntry("a-b-c-d", digestA)
		return nil
	}, func(m *Manifest) {
		seen = m
		// Written already, and the lock is still held.
		if _, err := os.Stat(s.Path()); err != nil {
			t.Errorf("then ran before the write: %v", err)
		}
		if _, ok, err := lockfileTry(s); ok || err != nil {
			t.Errorf("then ran without the lock (TryAcquire ok=%v, %v)", ok, err)
		}
	})
	if err != nil || seen == nil || seen.Entries["a-b-c-d"] == nil {
		t.Fatalf("UpdateThen = %v, then saw %+v", err, seen)
	}
	errFn := errors.New("no")
	called := false
	if err := s.UpdateThen(ctx, func(*Manifest) error { return errFn }, func(*Manifest) { called = true }); !errors.Is(err, errFn) || called {
		t.Fatalf("UpdateThen with a failing fn = %v, then called: %v", err, called)
	}
}

// lockfileTry tries the manifest lock shared, releasing it at once.
func lockfileTry(s *Store) (*lockfile.Lock, bool, error) {
	l, ok, err := lockfile.TryAcquire(s.lockPath(), false)
	if ok {
		l.Release()
	}
	return l, ok, err
}

func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name string
		json string
		want *Manifest
	}{
		{"empty entries", `{"version":2,"entries":{}}`, New()},
		{"null entries", `{"version":2,"entries":null}`, New()},
		{"no entries", `{"version":2}`, New()},
		{"surrounding whitespace", " \n\t{\"version\":2,\"entries\":{}}\n\n", New()},
		{"schema 1", `{"version":1,"entries":{}}`, &Manifest{Version: WholeTarSchema, Entries: map[string]*Entry{}}},
		{"minimal entry", `{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10,"metadata_offset":10,"added":"2025-01-01T00:00:00Z","last_used":"2025-01-02T00:00:00Z"}}}`,
			&Manifest{Version: 1, Entries: map[string]*Entry{"a-b-c-d": func() *Entry { e := minimalEntry("a-b-c-d", digestA); e.MetadataOffset = 10; return e }()}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode(strings.NewReader(tt.json))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(m, tt.want) {
				t.Fatalf("Decode = %s, want %s", encode(t, m), encode(t, tt.want))
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    *Manifest
	}{
		{"empty", New()},
		{"full entry", &Manifest{Version: SchemaVersion, Entries: map[string]*Entry{"capy-ubuntu-25.04-gcc15": fullEntry("capy-ubuntu-25.04-gcc15")}}},
		{"several entries sharing a blob", &Manifest{Version: SchemaVersion, Entries: map[string]*Entry{
			"capy-ubuntu-25.04-gcc15": fullEntry("capy-ubuntu-25.04-gcc15"),
			"capy-ubuntu-25.04-gcc14": fullEntry("capy-ubuntu-25.04-gcc14"),
			"x-y-z-w":                 minimalEntry("x-y-z-w", digestB),
		}}},
		{"odd strings", &Manifest{Version: SchemaVersion, Entries: map[string]*Entry{
			"ü-\"<>&\u2028-x-y": func() *Entry {
				e := fullEntry("ü-\"<>&\u2028-x-y")
				e.Recipe.Dockerfile = "\x00\x01\ttab\r\n<script>"
				return e
			}(),
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := encode(t, tt.m)
			got, err := Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("Decode(Encode(m)): %v\n%s", err, data)
			}
			if !reflect.DeepEqual(got, tt.m) {
				t.Fatalf("round trip differs:\n got %s\nwant %s", encode(t, got), data)
			}
			// The schema is stable: field names as documented.
			var raw map[string]any
			if err := json.Unmarshal(data, &raw); err != nil {
				t.Fatal(err)
			}
			if raw["version"] != float64(SchemaVersion) {
				t.Errorf("version field = %v", raw["version"])
			}
		})
	}
}

// TestConcurrentUpdates: 16 writers × 50 read-modify-write increments must
// give 800 exactly; while they run, manifest.json always decodes and no temp
// file other than manifest.json.tmp ever appears.
func TestConcurrentUpdates(t *testing.T) {
	const (
		writers = 16
		updates = 50
		name    = "counter-x-y-z"
	)
	dir := t.TempDir()
	s := Open(dir)
	ctx := ctxT(t)
	if err := s.Update(ctx, func(m *Manifest) error {
		m.Entries[name] = minimalEntry(name, digestA)
		m.Entries[name].Size = 0
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var observed atomic.Int64
	observerErr := make(chan error, 1)
	go func() {
		allowed := map[string]bool{"manifest.json": true, "manifest.json.tmp": true, "lock": true}
		for !stop.Load() {
			ents, err := os.ReadDir(dir)
			if err != nil {
				observerErr <- err
				return
			}
			for _, e := range ents {
				if !allowed[e.Name()] {
					observerErr <- errors.New("unexpected file " + e.Name())
					return
				}
			}
			// Read without the lock, as a crash would find the file.
			f, err := os.Open(s.Path())
			if err != nil {
				observerErr <- err
				return
			}
			m, err := Decode(f)
			f.Close()
			if err != nil {
				observerErr <- err
				return
			}
			if m.Entries[name] == nil {
				observerErr <- errors.New("counter entry missing")
				return
			}
			observed.Add(1)
		}
		observerErr <- nil
	}()

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for range updates {
				err := s.Update(ctx, func(m *Manifest) error {
					m.Entries[name].Size++
					m.Entries[name].MetadataOffset = m.Entries[name].Size
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	stop.Store(true)
	close(errs)
	for err := range errs {
		t.Fatalf("Update: %v", err)
	}
	if err := <-observerErr; err != nil {
		t.Fatalf("observer: %v", err)
	}
	m, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Entries[name].Size; got != writers*updates {
		t.Fatalf("counter = %d after %d increments: updates were lost", got, writers*updates)
	}
	if observed.Load() == 0 {
		t.Error("the observer never read the file")
	}
	t.Logf("observer decoded manifest.json %d times", observed.Load())
	assertOnlyFiles(t, dir, "lock", "manifest.json")
}

// assertOnlyFiles checks that dir holds exactly these names.
func assertOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !reflect.DeepEqual(got, names) {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}
