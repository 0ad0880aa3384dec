package cache_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/manifest"
)

// verifyFixture is a cache with three names over two blobs.
type verifyFixture struct {
	c     *cache.Cache
	names []string
	data  map[string][]byte
}

func newVerifyFixture(t *testing.T) *verifyFixture {
	t.Helper()
	c, _ := newCache(t)
	a, _ := image(t, "t/a:1", 1)
	b, _ := image(t, "t/b:2", 2)
	f := &verifyFixture{
		c:     c,
		names: []string{"capy-ubuntu-25.04-clang20-asan", "capy-ubuntu-25.04-gcc15", "other-debian-13-base"},
	}
	f.data = map[string][]byte{f.names[0]: a, f.names[1]: a, f.names[2]: b}
	for _, n := range f.names {
		put(t, c, n, f.data[n])
	}
	return f
}

func (f *verifyFixture) digest(name string) digest.Digest { return sha(f.data[name]) }

func TestVerifyCleanCache(t *testing.T) {
	t.Parallel()
	f := newVerifyFixture(t)
	rep := verify(t, f.c, false)
	if !rep.OK() || len(rep.Problems) != 0 || rep.Failures() != 0 {
		t.Errorf("clean cache: OK=%v problems=%s", rep.OK(), toJSON(rep.Problems))
	}
	if rep.Entries != 3 || rep.Blobs != 2 {
		t.Errorf("Entries=%d Blobs=%d, want 3 entries over 2 blobs", rep.Entries, rep.Blobs)
	}
	if want := int64(len(f.data[f.names[0]]) + len(f.data[f.names[2]])); rep.Bytes != want {
		t.Errorf("Bytes = %d, want %d", rep.Bytes, want)
	}
	sub := verify(t, f.c, false, f.names[2])
	if !sub.OK() || sub.Entries != 1 || sub.Blobs != 1 {
		t.Errorf("verify of one name: %s", toJSON(sub))
	}
	// An empty cache verifies clean too.
	empty, _ := newCache(t)
	if rep := verify(t, empty, false); !rep.OK() || len(rep.Problems) != 0 {
		t.Errorf("empty cache: %s", toJSON(rep))
	}
}

func TestVerifyFindsAndFixes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// damage breaks the fixture and returns the path that must be
		// checked afterwards ("" for none).
		damage func(t *testing.T, f *verifyFixture)
		repair bool
		// want lists the problem kinds, in any order.
		want   []cache.ProblemKind
		wantOK bool
		check  func(t *testing.T, f *verifyFixture)
	}{
		{
			name:   "flipped byte in a blob",
			damage: func(t *testing.T, f *verifyFixture) { flipByte(t, blobPath(f.c, f.digest(f.names[2]))) },
			want:   []cache.ProblemKind{cache.ProblemMismatch},
			check: func(t *testing.T, f *verifyFixture) {
				d := f.digest(f.names[2])
				if hasBlob(t, f.c, d) {
					t.Error("corrupt blob not moved out of blobs/")
				}
				q := dirNames(t, filepath.Join(f.c.Dir(), "quarantine"))
				if len(q) != 1 || !strings.HasPrefix(q[0], d.Encoded()+"-") {
					t.Errorf("quarantine/ = %v, want the blob %s", q, d.Encoded())
				}
				// Still reported, now as quarantined, and still not OK.
				again := verify(t, f.c, false)
				if again.OK() || !slices.Equal(kinds(again), []cache.ProblemKind{cache.ProblemQuarantined}) {
					t.Errorf("second verify: %s", toJSON(again.Problems))
				}
				// Repair drops the entry; the shared blob of the others is fine.
				fixed := verify(t, f.c, true)
				if !fixed.OK() {
					t.Errorf("verify --repair: %s", toJSON(fixed.Problems))
				}
				if got := listNames(t, f.c); !slices.Equal(got, f.names[:2]) {
					t.Errorf("names after repair = %v", got)
				}
				if exists(t, linkPath(f.c, f.names[2])) {
					t.Error("link of the dropped entry left behind")
				}
			},
		},
		{
			name:   "flipped byte in a shared blob, repair",
			damage: func(t *testing.T, f *verifyFixture) { flipByte(t, blobPath(f.c, f.digest(f.names[0]))) },
			repair: true,
			// Fixed: both names dropped, and their links with them.
			want:   []cache.ProblemKind{cache.ProblemMismatch, cache.ProblemMismatch, cache.ProblemStrayLink, cache.ProblemStrayLink},
			wantOK: true,
			check: func(t *testing.T, f *verifyFixture) {
				if got := listNames(t, f.c); !slices.Equal(got, f.names[2:]) {
					t.Errorf("names after repair = %v", got)
				}
			},
		},
		{
			name: "missing blob",
			damage: func(t *testing.T, f *verifyFixture) {
				if err := os.Remove(blobPath(f.c, f.digest(f.names[2]))); err != nil {
					t.Fatal(err)
				}
			},
			want: []cache.ProblemKind{cache.ProblemMissingBlob},
			check: func(t *testing.T, f *verifyFixture) {
				if got := listNames(t, f.c); len(got) != 3 {
					t.Errorf("verify without repair dropped names: %v", got)
				}
			},
		},
		{
			name: "missing blob, repair",
			damage: func(t *testing.T, f *verifyFixture) {
				if err := os.Remove(blobPath(f.c, f.digest(f.names[2]))); err != nil {
					t.Fatal(err)
				}
			},
			repair: true,
			want:   []cache.ProblemKind{cache.ProblemMissingBlob, cache.ProblemStrayLink},
			wantOK: true,
			check: func(t *testing.T, f *verifyFixture) {
				if got := listNames(t, f.c); !slices.Equal(got, f.names[:2]) {
					t.Errorf("names after repair = %v", got)
				}
			},
		},
		{
			name: "stale link",
			damage: func(t *testing.T, f *verifyFixture) {
				p := linkPath(f.c, f.names[2])
				os.Remove(p)
				if err := os.Symlink(filepath.Join("..", "..", "blobs", "sha256", f.digest(f.names[0]).Encoded()+".tar.zst"), p); err != nil {
					t.Fatal(err)
				}
			},
			want:   []cache.ProblemKind{cache.ProblemLink},
			wantOK: true,
		},
		{
			name: "dangling link",
			damage: func(t *testing.T, f *verifyFixture) {
				p := linkPath(f.c, f.names[2])
				os.Remove(p)
				if err := os.Symlink("/nonexistent/x.tar.zst", p); err != nil {
					t.Fatal(err)
				}
			},
			want:   []cache.ProblemKind{cache.ProblemLink},
			wantOK: true,
		},
		{
			name: "missing link",
			damage: func(t *testing.T, f *verifyFixture) {
				if err := os.Remove(linkPath(f.c, f.names[0])); err != nil {
					t.Fatal(err)
				}
			},
			want:   []cache.ProblemKind{cache.ProblemLink},
			wantOK: true,
		},
		{
			name: "missing project directory",
			damage: func(t *testing.T, f *verifyFixture) {
				if err := os.RemoveAll(filepath.Join(f.c.Dir(), "names", "capy")); err != nil {
					t.Fatal(err)
				}
			},
			want:   []cache.ProblemKind{cache.ProblemLink, cache.ProblemLink},
			wantOK: true,
		},
		{
			name: "stray link for no entry",
			damage: func(t *testing.T, f *verifyFixture) {
				dir := filepath.Join(f.c.Dir(), "names", "ghost")
				os.MkdirAll(dir, 0o755)
				if err := os.Symlink(filepath.Join("..", "..", "blobs", "sha256", f.digest(f.names[0]).Encoded()+".tar.zst"), filepath.Join(dir, "ghost-a-b-c.tar.zst")); err != nil {
					t.Fatal(err)
				}
			},
			want:   []cache.ProblemKind{cache.ProblemStrayLink},
			wantOK: true,
			check: func(t *testing.T, f *verifyFixture) {
				if exists(t, filepath.Join(f.c.Dir(), "names", "ghost", "ghost-a-b-c.tar.zst")) {
					t.Error("stray link not removed")
				}
				if !hasBlob(t, f.c, f.digest(f.names[0])) {
					t.Error("removing the stray link removed its target")
				}
			},
		},
		{
			name: "stray link in the wrong project directory",
			damage: func(t *testing.T, f *verifyFixture) {
				dir := filepath.Join(f.c.Dir(), "names", "other")
				if err := os.Symlink(filepath.Join("..", "..", "blobs", "sha256", f.digest(f.names[0]).Encoded()+".tar.zst"), filepath.Join(dir, f.names[0]+".tar.zst")); err != nil {
					t.Fatal(err)
				}
			},
			want:   []cache.ProblemKind{cache.ProblemStrayLink},
			wantOK: true,
		},
		{
			name: "stray regular file under names",
			damage: func(t *testing.T, f *verifyFixture) {
				if err := os.WriteFile(filepath.Join(f.c.Dir(), "names", "capy", "notes.txt"), []byte("mine"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: []cache.ProblemKind{cache.ProblemStrayFile},
			check: func(t *testing.T, f *verifyFixture) {
				if got := readFile(t, filepath.Join(f.c.Dir(), "names", "capy", "notes.txt")); string(got) != "mine" {
					t.Error("stray regular file changed")
				}
			},
		},
		{
			name: "unreferenced blob is not a failure",
			damage: func(t *testing.T, f *verifyFixture) {
				if err := f.c.Remove(t.Context(), mustName(t, f.names[2])); err != nil {
					t.Fatal(err)
				}
			},
			want:   []cache.ProblemKind{cache.ProblemUnreferenced},
			wantOK: true,
		},
		{
			name: "manifest names a digest with no blob",
			damage: func(t *testing.T, f *verifyFixture) {
				m := readManifest(t, f.c)
				m.Entries[f.names[2]].Digest = sha([]byte("no such content"))
				writeManifest(t, f.c, m)
			},
			// The real blob is now unreferenced; the link is re-derived.
			want: []cache.ProblemKind{cache.ProblemMissingBlob, cache.ProblemLink, cache.ProblemUnreferenced},
			check: func(t *testing.T, f *verifyFixture) {
				fixed := verify(t, f.c, true)
				if !fixed.OK() {
					t.Errorf("verify --repair: %s", toJSON(fixed.Problems))
				}
				if got := listNames(t, f.c); !slices.Equal(got, f.names[:2]) {
					t.Errorf("names after repair = %v, want the bad entry dropped", got)
				}
				if exists(t, linkPath(f.c, f.names[2])) {
					t.Error("link of the dropped entry left behind")
				}
				if again := verify(t, f.c, false); !again.OK() {
					t.Errorf("verify after repair: %s", toJSON(again.Problems))
				}
			},
		},
		{
			name: "manifest names a digest with no blob, repair",
			damage: func(t *testing.T, f *verifyFixture) {
				m := readManifest(t, f.c)
				m.Entries[f.names[2]].Digest = sha([]byte("no such content"))
				writeManifest(t, f.c, m)
			},
			repair: true,
			want:   []cache.ProblemKind{cache.ProblemMissingBlob, cache.ProblemStrayLink, cache.ProblemUnreferenced},
			wantOK: true,
			check: func(t *testing.T, f *verifyFixture) {
				if got := listNames(t, f.c); !slices.Equal(got, f.names[:2]) {
					t.Errorf("names after repair = %v, want the bad entry dropped", got)
				}
			},
		},
		{
			name: "manifest size disagrees with the blob",
			damage: func(t *testing.T, f *verifyFixture) {
				m := readManifest(t, f.c)
				m.Entries[f.names[2]].Size++
				writeManifest(t, f.c, m)
			},
			want: []cache.ProblemKind{cache.ProblemSize},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newVerifyFixture(t)
			tt.damage(t, f)
			rep := verify(t, f.c, tt.repair)
			if got, want := sortedCopy(kinds(rep)), sortedCopy(tt.want); !slices.Equal(got, want) {
				t.Errorf("problems = %v, want %v", got, want)
			}
			if rep.OK() != tt.wantOK {
				t.Errorf("OK() = %v, want %v (failures %d)", rep.OK(), tt.wantOK, rep.Failures())
			}
			for _, p := range rep.Problems {
				if p.Detail == "" {
					t.Errorf("problem %s without detail", p.Kind)
				}
				if p.Kind == cache.ProblemLink && !p.Fixed {
					t.Errorf("stale link not fixed: %+v", p)
				}
			}
			if tt.check != nil {
				tt.check(t, f)
			}
			// Every remaining entry's link resolves to its blob.
			for _, e := range list(t, f.c) {
				if hasBlob(t, f.c, e.Digest) {
					assertLink(t, f.c, e.Name, e.Digest)
				}
			}
		})
	}
}

func TestVerifyCorruptManifest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		corrupt func(orig []byte) []byte
	}{
		{"truncated", func(orig []byte) []byte { return orig[:len(orig)/2] }},
		{"empty file", func([]byte) []byte { return nil }},
		{"invalid JSON", func([]byte) []byte { return []byte("{\"version\": 1, \"entries\": {,,}") }},
		{"not JSON at all", func([]byte) []byte { return []byte("\x00\x01garbage") }},
		{"version 0", func(orig []byte) []byte {
			return bytes.Replace(orig, []byte(`"version": 1`), []byte(`"version": 0`), 1)
		}},
		{"no version", func(orig []byte) []byte {
			return bytes.Replace(orig, []byte(`"version": 1,`), nil, 1)
		}},
		{"trailing garbage", func(orig []byte) []byte { return append(append([]byte{}, orig...), "}{"...) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newVerifyFixture(t)
			// Pin one entry: repair cannot recover pins (documented).
			if err := f.c.SetPinned(t.Context(), mustName(t, f.names[0]), true); err != nil {
				t.Fatal(err)
			}
			want := list(t, f.c)
			mpath := filepath.Join(f.c.Dir(), "manifest.json")
			bad := tt.corrupt(readFile(t, mpath))
			if err := os.WriteFile(mpath, bad, 0o644); err != nil {
				t.Fatal(err)
			}

			rep := verify(t, f.c, false)
			if rep.OK() || !slices.Equal(kinds(rep), []cache.ProblemKind{cache.ProblemManifest}) {
				t.Fatalf("verify without repair: OK=%v problems=%s", rep.OK(), toJSON(rep.Problems))
			}
			if got := readFile(t, mpath); !bytes.Equal(got, bad) {
				t.Error("verify without repair changed the corrupt manifest")
			}
			if _, err := f.c.List(t.Context()); err == nil {
				t.Error("List of a corrupt manifest succeeded")
			} else {
				t.Logf("List: %v", err)
			}

			rep = verify(t, f.c, true)
			if !rep.OK() {
				t.Fatalf("verify --repair not OK: %s", toJSON(rep.Problems))
			}
			if p := problems(rep, cache.ProblemManifest); len(p) != 1 || !p[0].Fixed {
				t.Errorf("verify --repair: manifest problem %s, want one, fixed", toJSON(p))
			}
			got := list(t, f.c)
			if len(got) != len(want) {
				t.Fatalf("rebuilt %d entries, want %d", len(got), len(want))
			}
			for i, e := range got {
				w := want[i]
				if e.Name != w.Name || e.Digest != w.Digest || e.ImageID != w.ImageID || !slices.Equal(e.RepoTags, w.RepoTags) ||
					e.Size != w.Size || e.StoredSize != w.StoredSize || e.OS != w.OS || e.Arch != w.Arch ||
					e.MetadataOffset != w.MetadataOffset || e.Format != w.Format || !e.Created.Equal(w.Created) {
					t.Errorf("rebuilt entry\n%s\nwant\n%s", toJSON(e), toJSON(w))
				}
				if e.Pinned {
					t.Errorf("%s: pin survived a rebuild it cannot recover from", e.Name)
				}
				assertLink(t, f.c, e.Name, e.Digest)
			}
			kept, _ := filepath.Glob(mpath + ".corrupt-*")
			if len(kept) != 1 || !bytes.Equal(readFile(t, kept[0]), bad) {
				t.Errorf("damaged manifest not kept aside: %v", kept)
			}
			if again := verify(t, f.c, false); !again.OK() || len(again.Problems) != 0 {
				t.Errorf("verify after repair: %s", toJSON(again.Problems))
			}
			for _, e := range got {
				if d := hashExport(t, f.c, e.Name); d != e.Digest {
					t.Errorf("export of %s hashes to %s", e.Name, d)
				}
			}
		})
	}
}

func TestVerifyRepairSkipsUnusableLinks(t *testing.T) {
	t.Parallel()
	f := newVerifyFixture(t)
	// A link whose blob is corrupt, a link to an absolute path, a link
	// whose name is bad: none may come back as an entry.
	flipByte(t, blobPath(f.c, f.digest(f.names[2])))
	abs := filepath.Join(f.c.Dir(), "names", "capy", "capy-ubuntu-25.04-abs.tar.zst")
	if err := os.Symlink(blobPath(f.c, f.digest(f.names[0])), abs); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(f.c.Dir(), "names", "capy", "Capy-ubuntu-25.04-x.tar.zst")
	if err := os.Symlink(filepath.Join("..", "..", "blobs", "sha256", f.digest(f.names[0]).Encoded()+".tar.zst"), bad); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.c.Dir(), "manifest.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, f.c, true)
	if got := listNames(t, f.c); !slices.Equal(got, f.names[:2]) {
		t.Errorf("rebuilt names = %v, want %v", got, f.names[:2])
	}
	if !rep.OK() {
		t.Logf("verify --repair reports failures (a link it could not recover): %s", toJSON(rep.Problems))
	}
	for _, p := range []string{abs, bad} {
		if exists(t, p) {
			t.Errorf("unusable link %s left behind", p)
		}
	}
}

// TestVerifyDoesNotRevertConcurrentPut: Verify hashes blobs from a snapshot
// of the manifest; a put that lands meanwhile must not see its fresh link
// reverted to the old blob, nor removed as a stray.
func TestVerifyDoesNotRevertConcurrentPut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, _ := openCache(t, dir)
	a, _ := image(t, "t/x:1", 1)
	b, imgB := image(t, "t/x:1", 2)
	put(t, c, "capy-ubuntu-25.04-gcc15", a)

	// The puts land after Verify took its snapshot, before it hashes.
	v, _ := openCache(t, dir)
	cache.SetVerifySnapshotHook(v, func() {
		put(t, c, "capy-ubuntu-25.04-gcc15", b)
		put(t, c, "capy-ubuntu-25.04-new", b)
	})
	rep, err := v.Verify(context.Background(), nil, false)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	t.Logf("concurrent verify: %s", toJSON(rep.Problems))

	assertLink(t, c, "capy-ubuntu-25.04-gcc15", imgB.Digest)
	assertLink(t, c, "capy-ubuntu-25.04-new", imgB.Digest)
	if p := append(problems(rep, cache.ProblemLink), problems(rep, cache.ProblemStrayLink)...); len(p) > 0 {
		t.Errorf("verify changed links a put had just set: %s", toJSON(p))
	}
}

// A manifest from a newer imgcache is not corrupt: verify and repair refuse
// to touch it and say to upgrade.
func TestVerifyRefusesNewerSchema(t *testing.T) {
	f := newVerifyFixture(t)
	mpath := filepath.Join(f.c.Dir(), "manifest.json")
	newer := bytes.Replace(readFile(t, mpath), []byte(`"version": 1`), []byte(`"version": 99`), 1)
	if err := os.WriteFile(mpath, newer, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, repair := range []bool{false, true} {
		_, err := f.c.Verify(t.Context(), nil, repair)
		if !errors.Is(err, manifest.ErrNewerSchema) || !strings.Contains(err.Error(), "upgrade imgcache") || strings.Contains(err.Error(), "--repair") {
			t.Fatalf("Verify(repair=%v) of a newer manifest: %v", repair, err)
		}
		if got := readFile(t, mpath); !bytes.Equal(got, newer) {
			t.Fatalf("Verify(repair=%v) changed a newer manifest", repair)
		}
	}
}
