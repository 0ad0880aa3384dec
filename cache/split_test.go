package cache_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/manifest"
)

// sharedPair is two images on one base layer (of three files of 70 KiB,
// so that every layer is a piece of its own), each with a layer of its
// own, and a third image that is the base alone.
type sharedPair struct {
	a, b, base       []byte
	resA, resB, resC testimage.Result
}

func newSharedPair(t *testing.T, format archive.Format) sharedPair {
	t.Helper()
	o := testimage.Options{Layers: 2, SharedLayers: 1, BaseSeed: 77, FileSize: 70 << 10, Format: format}
	var p sharedPair
	o.Tag, o.Seed = "t/a:1", 1
	p.a, p.resA = imageOpts(t, o)
	o.Tag, o.Seed = "t/b:1", 2
	p.b, p.resB = imageOpts(t, o)
	o.Tag, o.Seed, o.Layers = "t/base:1", 3, 1
	p.base, p.resC = imageOpts(t, o)
	if p.resA.DiffIDs[0] != p.resB.DiffIDs[0] || p.resA.DiffIDs[1] == p.resB.DiffIDs[1] || p.resC.DiffIDs[0] != p.resA.DiffIDs[0] {
		t.Fatal("testimage: the images do not share exactly their base layer")
	}
	return p
}

// layeredCache is a new cache (schema 2, with a layer store) and a fake
// engine that is Docker's classic store when classic is set.
func layeredCache(t *testing.T, classic bool) (*cache.Cache, *fakeEngine, *fakeClock) {
	t.Helper()
	c, eng, clk := engineAny(t, t.TempDir())
	eng.classic = classic
	return c, eng, clk
}

// TestSplitStoresSharedLayersOnce: the base layer is stored once; a put
// whose layers are stored hashes them (Reused) instead of storing them
// again; export gives back each tar byte for byte; stats and ls say what
// is shared.
func TestSplitStoresSharedLayersOnce(t *testing.T) {
	for _, format := range []archive.Format{archive.FormatDocker, archive.FormatOCI} {
		t.Run(string(format), func(t *testing.T) {
			p := newSharedPair(t, format)
			c, _, _ := layeredCache(t, true)
			ra := put(t, c, "capy-ubuntu-25.04-a", p.a)
			rb := put(t, c, "capy-ubuntu-25.04-b", p.b)
			ea, eb := ra.Entry, rb.Entry
			if !ea.Split() || !eb.Split() || len(ea.Layers) != 2 || len(eb.Layers) != 2 {
				t.Fatalf("entries not split with their layers: %+v / %+v", ea, eb)
			}
			if ea.Digest != p.resA.Digest || eb.Digest != p.resB.Digest || ea.Size != p.resA.Size {
				t.Fatalf("entry digests %s %s, want the tars' %s %s", ea.Digest, eb.Digest, p.resA.Digest, p.resB.Digest)
			}
			for i, l := range eb.Layers {
				if l.DiffID != p.resB.DiffIDs[i] {
					t.Errorf("layer %d diff_id %s, want %s", i, l.DiffID, p.resB.DiffIDs[i])
				}
			}
			if rb.Reused != 1 || rb.New != 2 {
				t.Errorf("second put: %d pieces reused, %d blobs new; want 1 (the base) and 2 (its layer, its skeleton)", rb.Reused, rb.New)
			}
			// On disk: base, a, b, two skeletons; nothing in blobs/.
			if got := layerDigests(t, c); len(got) != 5 {
				t.Errorf("layer store holds %d blobs, want 5: %v", len(got), got)
			}
			if got := blobDigests(t, c); len(got) != 0 {
				t.Errorf("blobs/ holds %v", got)
			}
			if hashExport(t, c, "capy-ubuntu-25.04-a") != p.resA.Digest || hashExport(t, c, "capy-ubuntu-25.04-b") != p.resB.Digest {
				t.Error("export is not the original tar")
			}
			if !bytes.Equal(export(t, c, "capy-ubuntu-25.04-b"), p.b) {
				t.Error("export of b differs from the put tar")
			}
			st, err := c.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			base := ea.Pieces[0].StoredSize
			if st.LayerBlobs != 5 || st.SharedBytes != base {
				t.Errorf("stats: %d layer blobs, %d shared bytes; want 5, %d", st.LayerBlobs, st.SharedBytes, base)
			}
			u := cache.Usages(list(t, c))
			if u["capy-ubuntu-25.04-a"].Shared != base || u["capy-ubuntu-25.04-b"].Own != eb.StoredSize-base {
				t.Errorf("usages %+v; base stores %d", u, base)
			}
			assertLink(t, c, "capy-ubuntu-25.04-b", eb.Digest)
		})
	}
}

// TestSplitPartialLoad: with a classic store holding the base, a cold get
// of the other image sends its own layer, config and manifest only, and
// the engine ends up with the complete image.
func TestSplitPartialLoad(t *testing.T) {
	p := newSharedPair(t, archive.FormatDocker)
	c, eng, _ := layeredCache(t, true)
	put(t, c, "capy-ubuntu-25.04-a", p.a)
	eb := put(t, c, "capy-ubuntu-25.04-b", p.b).Entry
	get(t, c, "capy-ubuntu-25.04-a")
	res := get(t, c, "capy-ubuntu-25.04-b")
	loads := eng.allLoads()
	if len(loads) != 2 || loads[1].Err != nil || loads[1].ImageID != p.resB.ImageID.String() {
		t.Fatalf("loads: %+v", loads)
	}
	own := eb.Layers[1].Size
	if res.Sent != loads[1].Size || res.Sent >= eb.Size-eb.Layers[0].Size+4096 || res.Sent < own {
		t.Errorf("sent %d bytes (engine read %d); the tar is %d, its own layer %d, the base %d", res.Sent, loads[1].Size, eb.Size, own, eb.Layers[0].Size)
	}
	if !res.Loaded || res.Ref == "" {
		t.Errorf("get: %+v", res)
	}
	if loads[0].Size != p.resA.Size {
		t.Errorf("the first get sent %d bytes, want the whole tar (%d): the engine held nothing", loads[0].Size, p.resA.Size)
	}
}

// TestSplitOCIArchiveWithoutManifestJSON: an OCI archive as skopeo,
// Podman and buildah write it (gzip layers, no manifest.json) loads into
// Docker's classic store, which needs a manifest.json: imgcache adds one
// made from the entry, last; with the base held, only the other image's
// own layer goes; export still gives back the original bytes.
func TestSplitOCIArchiveWithoutManifestJSON(t *testing.T) {
	o := testimage.Options{Layers: 2, SharedLayers: 1, BaseSeed: 77, FileSize: 70 << 10, Format: archive.FormatOCI, OCIOnly: true, Compression: "gzip"}
	o.Tag, o.Seed = "t/a:1", 1
	a, resA := imageOpts(t, o)
	o.Tag, o.Seed = "t/b:1", 2
	b, resB := imageOpts(t, o)
	if bytes.Contains(a, []byte("manifest.json")) {
		t.Fatal("testimage: OCIOnly wrote a manifest.json")
	}
	c, eng, _ := layeredCache(t, true)
	ea := put(t, c, "capy-ubuntu-25.04-a", a).Entry
	eb := put(t, c, "capy-ubuntu-25.04-b", b).Entry
	if ea.Format != string(archive.FormatOCI) || len(ea.Layers) != 2 || len(eb.Layers) != 2 {
		t.Fatalf("entries: %+v, %+v", ea, eb)
	}
	ga := get(t, c, "capy-ubuntu-25.04-a")
	gb := get(t, c, "capy-ubuntu-25.04-b")
	loads := eng.allLoads()
	if len(loads) != 2 || loads[0].ImageID != resA.ImageID.String() || loads[1].ImageID != resB.ImageID.String() {
		t.Fatalf("loads: %+v", loads)
	}
	if !ga.Loaded || ga.Sent < ea.Size-4096 {
		t.Errorf("first get sent %d bytes of a %d-byte tar: want every layer (the engine held none)", ga.Sent, ea.Size)
	}
	if own := eb.Layers[1].Size; !gb.Loaded || gb.Sent < own || gb.Sent >= eb.Size-eb.Layers[0].Size+4096 {
		t.Errorf("second get sent %d bytes; the tar is %d, its own layer %d, the base %d", gb.Sent, eb.Size, own, eb.Layers[0].Size)
	}
	last := lastEntry(t, eng.images[resB.ImageID.String()].tar)
	if last != "manifest.json" {
		t.Errorf("the loaded archive ends with %q, want the manifest.json made for it", last)
	}
	if hashExport(t, c, "capy-ubuntu-25.04-a") != resA.Digest {
		t.Error("export does not give back the original archive")
	}
}

// TestSplitOCIPartialRetriedWhole: the engine lost a layer between the
// plan and the load of an OCI archive without manifest.json: the partial
// archive is refused, and the retry sends every layer, again with the
// manifest.json made for it (the original tar has none).
func TestSplitOCIPartialRetriedWhole(t *testing.T) {
	b, resB := imageOpts(t, testimage.Options{Tag: "t/b:1", Seed: 2, Layers: 2, FileSize: 70 << 10, Format: archive.FormatOCI, OCIOnly: true, Compression: "gzip"})
	c, eng, _ := layeredCache(t, true)
	eb := put(t, c, "capy-ubuntu-25.04-b", b).Entry
	eng.mu.Lock()
	eng.phantom[resB.DiffIDs[0]] = true // reported held, not there
	eng.mu.Unlock()
	res := get(t, c, "capy-ubuntu-25.04-b")
	loads := eng.allLoads()
	if len(loads) != 2 || loads[0].Err == nil || loads[1].Err != nil || loads[1].ImageID != resB.ImageID.String() {
		t.Fatalf("want a refused partial load, then every layer: %+v", loads)
	}
	if res.Sent < eb.Size-4096 {
		t.Errorf("the retry sent %d bytes of a %d-byte tar", res.Sent, eb.Size)
	}
}

// TestOCIArchiveStoredWholeRefusedByClassic: an OCI archive without
// manifest.json whose layers are not known (stored whole: here by a
// whole-tar cache) is refused for Docker's classic store before anything
// is sent, saying why and what to do.
func TestOCIArchiveStoredWholeRefusedByClassic(t *testing.T) {
	dir := t.TempDir()
	wholeTar(t, dir)
	c, eng, _ := engineAny(t, dir)
	eng.classic = true
	a, _ := imageOpts(t, testimage.Options{Tag: "t/a:1", Seed: 1, Format: archive.FormatOCI, OCIOnly: true})
	put(t, c, "capy-ubuntu-25.04-a", a)
	_, err := c.Get(context.Background(), mustName(t, "capy-ubuntu-25.04-a"))
	if !errors.Is(err, errdefs.ErrRejected) || !strings.Contains(err.Error(), "without manifest.json") || !strings.Contains(err.Error(), "skopeo copy") {
		t.Fatalf("Get = %v, want a refusal naming the missing manifest.json and the conversion", err)
	}
	if loads := eng.allLoads(); len(loads) != 0 {
		t.Errorf("the engine was sent %d archives", len(loads))
	}
}

// lastEntry is the name of a tar's last entry.
func lastEntry(t *testing.T, data []byte) string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var name string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return name
		}
		if err != nil {
			t.Fatal(err)
		}
		name = h.Name
	}
}

// TestSplitWholeLoadForOtherEngines: an engine that needs every layer file
// (Podman, the containerd store) always gets the original tar, byte for
// byte, even when it holds the base.
func TestSplitWholeLoadForOtherEngines(t *testing.T) {
	p := newSharedPair(t, archive.FormatDocker)
	c, eng, _ := layeredCache(t, false)
	put(t, c, "capy-ubuntu-25.04-a", p.a)
	put(t, c, "capy-ubuntu-25.04-b", p.b)
	get(t, c, "capy-ubuntu-25.04-a")
	res := get(t, c, "capy-ubuntu-25.04-b")
	loads := eng.allLoads()
	if len(loads) != 2 || loads[1].Digest != p.resB.Digest || loads[1].Size != p.resB.Size || res.Sent != p.resB.Size {
		t.Fatalf("the second load was not the whole tar: %+v (sent %d)", loads, res.Sent)
	}
}

// TestSplitPartialRetriedWhole: when the engine lost a layer between the
// plan and the load, the partial archive is refused and the whole one
// loads.
func TestSplitPartialRetriedWhole(t *testing.T) {
	p := newSharedPair(t, archive.FormatDocker)
	c, eng, _ := layeredCache(t, true)
	eb := put(t, c, "capy-ubuntu-25.04-b", p.b).Entry
	eng.mu.Lock()
	eng.phantom[digest.Digest(p.resB.DiffIDs[0])] = true // reported held, not there
	eng.mu.Unlock()
	res := get(t, c, "capy-ubuntu-25.04-b")
	loads := eng.allLoads()
	if len(loads) != 2 || loads[0].Err == nil || loads[1].Err != nil || loads[1].Digest != eb.Digest {
		t.Fatalf("want a refused partial load, then the whole tar: %+v", loads)
	}
	if res.Sent != eb.Size {
		t.Errorf("sent %d, want the whole %d", res.Sent, eb.Size)
	}
}

// TestSplitTampered: a flipped byte in a piece or in the skeleton, or a
// piece replaced by valid zstd of other bytes: get and export fail with
// ErrIntegrity, nothing is committed, the blob is quarantined.
func TestSplitTampered(t *testing.T) {
	p := newSharedPair(t, archive.FormatDocker)
	cases := []struct {
		name   string
		target func(e manifest.Entry) digest.Digest
		tamper func(t *testing.T, path string)
	}{
		{"own layer flipped", func(e manifest.Entry) digest.Digest { return e.Layers[1].Digest }, flipByte},
		{"skeleton flipped", func(e manifest.Entry) digest.Digest { return e.Skeleton.Digest }, flipByte},
		{"own layer replaced", func(e manifest.Entry) digest.Digest { return e.Layers[1].Digest }, replaceBlob},
		{"skeleton replaced", func(e manifest.Entry) digest.Digest { return e.Skeleton.Digest }, replaceBlob},
		// Valid zstd of same-sized content with one byte changed: only a
		// hash finds it (export hashes the whole tar, then each piece).
		{"own layer rewritten", func(e manifest.Entry) digest.Digest { return e.Layers[1].Digest }, rewriteContent},
	}
	for _, tc := range cases {
		for _, op := range []string{"get", "get-partial", "export"} {
			t.Run(tc.name+"/"+op, func(t *testing.T) {
				c, eng, _ := layeredCache(t, true)
				put(t, c, "capy-ubuntu-25.04-a", p.a)
				e := put(t, c, "capy-ubuntu-25.04-b", p.b).Entry
				if op == "get-partial" {
					get(t, c, "capy-ubuntu-25.04-a")
				}
				d := tc.target(e)
				tc.tamper(t, layerPath(c, d))
				n := mustName(t, "capy-ubuntu-25.04-b")
				var err error
				if op == "export" {
					out := filepath.Join(t.TempDir(), "out.tar")
					_, err = c.ExportFile(context.Background(), n, out, false)
					if exists(t, out) {
						t.Error("export left a file of unverified bytes")
					}
				} else {
					_, err = c.Get(context.Background(), n)
				}
				if !errors.Is(err, errdefs.ErrIntegrity) {
					t.Fatalf("%s = %v, want ErrIntegrity", op, err)
				}
				for _, l := range eng.allLoads() {
					if l.ImageID == p.resB.ImageID.String() {
						t.Fatal("the tampered image was committed")
					}
				}
				if exists(t, layerPath(c, d)) || dirNames(t, filepath.Join(c.Dir(), "layers", "quarantine")) == nil {
					t.Error("the bad blob was not quarantined")
				}
				if op != "export" {
					if _, err := c.Get(context.Background(), n); !errors.Is(err, errdefs.ErrIntegrity) {
						t.Errorf("second get = %v, want ErrIntegrity (quarantined)", err)
					}
				}
				// The other image, sharing the base, is unharmed.
				if hashExport(t, c, "capy-ubuntu-25.04-a") != p.resA.Digest {
					t.Error("the other image no longer exports")
				}
			})
		}
	}
}

// rewriteContent replaces a blob by a valid zstd stream of its content
// with one byte changed (same size).
func rewriteContent(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	content, err := dec.DecodeAll(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	content[len(content)/2] ^= 0x20
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, enc.EncodeAll(content, nil), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceBlob swaps a blob for a valid zstd frame of other bytes.
func replaceBlob(t *testing.T, path string) {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	data := enc.EncodeAll(bytes.Repeat([]byte("not the content "), 1000), nil)
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSplitGC: eviction is by entry, least recently used first, and frees
// the blobs no remaining entry needs: the shared base stays while one
// user is left; an entry whose eviction frees none of its layers is kept
// and reported.
func TestSplitGC(t *testing.T) {
	p := newSharedPair(t, archive.FormatDocker)
	c, _, clk := layeredCache(t, true)
	ea := put(t, c, "capy-ubuntu-25.04-a", p.a).Entry
	clk.Advance(time.Minute)
	eb := put(t, c, "capy-ubuntu-25.04-b", p.b).Entry
	baseKey := "layers/" + ea.Layers[0].Digest.String()

	// Over max-size by a little: a goes (its layer and skeleton), the base stays.
	st, _ := c.Stats(context.Background())
	rep := gc(t, c, cache.GCOptions{Limits: lru.Limits{MaxSize: st.StoredBytes - 100}})
	if len(rep.Victims) != 1 || !slices.Equal(rep.Victims[0].Names, []string{"capy-ubuntu-25.04-a"}) {
		t.Fatalf("victims %s, want a alone", toJSON(rep.Victims))
	}
	want := ea.Skeleton.StoredSize + ea.Pieces[1].StoredSize
	if rep.Freed != want || slices.Contains(rep.Victims[0].Layers, baseKey) {
		t.Errorf("freed %d (%v), want %d: a's skeleton and own layer, not the base", rep.Freed, rep.Victims[0].Layers, want)
	}
	if !slices.Contains(allBlobKeys(t, c), baseKey) || hashExport(t, c, "capy-ubuntu-25.04-b") != eb.Digest {
		t.Fatal("the base went with a, or b no longer exports")
	}

	// The base image alone, older than b: its eviction would free none of
	// its layers while b needs the base, so b goes first, then it.
	clk.Advance(time.Minute)
	put(t, c, "capy-ubuntu-25.04-base", p.base)
	touchAt(t, c, "capy-ubuntu-25.04-base", t0)
	rep = gc(t, c, cache.GCOptions{Limits: lru.Limits{MaxSize: 1}})
	var order []string
	for _, v := range rep.Victims {
		order = append(order, v.Names...)
	}
	if !slices.Equal(order, []string{"capy-ubuntu-25.04-b", "capy-ubuntu-25.04-base"}) {
		t.Errorf("eviction order %v, want b (frees its layer) before base (frees nothing until b is gone)", order)
	}
	if keys := allBlobKeys(t, c); len(keys) != 0 {
		t.Errorf("left after evicting everything: %v", keys)
	}

	// b pinned: the base image frees none of its layers while b needs the
	// base, so it stays, and is reported as shared.
	put(t, c, "capy-ubuntu-25.04-b", p.b)
	put(t, c, "capy-ubuntu-25.04-base", p.base)
	if err := c.SetPinned(context.Background(), mustName(t, "capy-ubuntu-25.04-b"), true); err != nil {
		t.Fatal(err)
	}
	rep = gc(t, c, cache.GCOptions{Limits: lru.Limits{MaxSize: 1}})
	if len(rep.Victims) != 0 || !slices.Equal(rep.Shared, []string{"capy-ubuntu-25.04-base"}) || len(rep.Shortfalls) != 1 || rep.Shortfalls[0].Shared.Blobs != 1 {
		t.Errorf("gc evicted %s, shared %v, shortfalls %s; want nothing evicted, base reported shared", toJSON(rep.Victims), rep.Shared, toJSON(rep.Shortfalls))
	}
}

// touchAt sets name's last use to when (through the manifest).
func touchAt(t *testing.T, c *cache.Cache, name string, when time.Time) {
	t.Helper()
	m := readManifest(t, c)
	m.Entries[name].LastUsed = when
	writeManifest(t, c, m)
}

// TestSplitVerify: verify hashes each blob once, finds a missing piece for
// every entry that needs it, and repair drops exactly those; a corrupt
// manifest is rebuilt from the skeletons the links lead to, layers and all.
func TestSplitVerify(t *testing.T) {
	p := newSharedPair(t, archive.FormatDocker)
	c, _, _ := layeredCache(t, true)
	ea := put(t, c, "capy-ubuntu-25.04-a", p.a).Entry
	eb := put(t, c, "capy-ubuntu-25.04-b", p.b).Entry
	rep := verify(t, c, false)
	if !rep.OK() || rep.Blobs != 5 {
		t.Fatalf("clean cache: %d blobs hashed, problems %s", rep.Blobs, toJSON(rep.Problems))
	}

	// A corrupt manifest: rebuilt with the same entries.
	if err := os.WriteFile(filepath.Join(c.Dir(), "manifest.json"), []byte("{\"version\":2,"), 0o644); err != nil {
		t.Fatal(err)
	}
	verify(t, c, true)
	m := readManifest(t, c)
	for _, want := range []manifest.Entry{ea, eb} {
		got := m.Entries[want.Name]
		if got == nil || got.Digest != want.Digest || got.Size != want.Size || got.ImageID != want.ImageID ||
			*got.Skeleton != *want.Skeleton || !slices.Equal(got.Pieces, want.Pieces) || !slices.Equal(got.Layers, want.Layers) {
			t.Errorf("rebuilt %s = %+v, want %+v", want.Name, got, want)
		}
	}

	// The shared base goes missing: both entries are findings; repair
	// drops both, and nothing else is reported.
	if err := os.Remove(layerPath(c, ea.Layers[0].Digest)); err != nil {
		t.Fatal(err)
	}
	rep = verify(t, c, false)
	if miss := problems(rep, cache.ProblemMissingBlob); len(miss) != 2 || rep.OK() {
		t.Fatalf("problems %s, want 2 missing-blob", toJSON(rep.Problems))
	}
	verify(t, c, true)
	if names := listNames(t, c); len(names) != 0 {
		t.Errorf("left after repair: %v", names)
	}
}

// TestMigrate: a whole-tar cache converts in place: manifest schema 2,
// every entry split with its pins, uses, base and second names kept, the
// shared base stored once, the whole blobs gone, exports unchanged; a
// second run has nothing to do.
func TestMigrate(t *testing.T) {
	p := newSharedPair(t, archive.FormatDocker)
	c, clk := newCache(t) // schema 1
	put(t, c, "capy-ubuntu-25.04-a", p.a)
	clk.Advance(time.Minute)
	put(t, c, "capy-ubuntu-25.04-b", p.b)
	put(t, c, "other-debian-13-b", p.b)
	if err := c.SetPinned(context.Background(), mustName(t, "capy-ubuntu-25.04-a"), true); err != nil {
		t.Fatal(err)
	}
	before := readManifest(t, c)
	if before.Version != manifest.WholeTarSchema || len(blobDigests(t, c)) != 2 {
		t.Fatalf("not a whole-tar cache: version %d, blobs %v", before.Version, blobDigests(t, c))
	}
	rep, err := c.Migrate(context.Background())
	if err != nil || len(rep.Converted) != 3 || len(rep.Errors) != 0 || !rep.Upgraded {
		t.Fatalf("Migrate = %+v, %v", rep, err)
	}
	c2, _ := openAny(t, c.Dir()) // as the next process sees it
	after := readManifest(t, c2)
	if after.Version != manifest.SchemaVersion {
		t.Errorf("manifest version %d after migrate", after.Version)
	}
	for name, was := range before.Entries {
		e := after.Entries[name]
		if e == nil || !e.Split() || len(e.Layers) != 2 || e.Digest != was.Digest || e.Pinned != was.Pinned || !e.LastUsed.Equal(was.LastUsed) || !e.Added.Equal(was.Added) {
			t.Errorf("%s after migrate: %+v (was %+v)", name, e, was)
		}
		assertLink(t, c2, name, was.Digest)
		if hashExport(t, c2, name) != was.Digest {
			t.Errorf("%s no longer exports its tar", name)
		}
	}
	if got := blobDigests(t, c2); len(got) != 0 {
		t.Errorf("whole blobs left: %v", got)
	}
	if got := layerDigests(t, c2); len(got) != 5 { // base, a, b, two skeletons
		t.Errorf("layer store holds %d blobs, want 5", len(got))
	}
	if rep.StoredAfter >= rep.StoredBefore {
		t.Errorf("stored %d after, %d before: the shared base should be stored once", rep.StoredAfter, rep.StoredBefore)
	}
	if !verify(t, c2, false).OK() {
		t.Error("verify after migrate found problems")
	}
	again, err := c2.Migrate(context.Background())
	if err != nil || len(again.Converted) != 0 || again.Upgraded {
		t.Errorf("second Migrate = %+v, %v", again, err)
	}
	// New puts split from now on.
	if e := put(t, c2, "zeta-alpine-3.22-x", p.base).Entry; !e.Split() {
		t.Error("a put after migrate stored a whole tar")
	}
}

// TestSplitMetadataFirst: an archive whose manifest.json comes first, far
// from its end: with a small hold-back limit, a whole load of a split
// entry proves every piece first; tampered, nothing reaches the engine.
// Save streams a daemon's image into the layer store and back out intact.
func TestSplitMetadataFirst(t *testing.T) {
	data, res := imageOpts(t, testimage.Options{Tag: "t/m:1", Seed: 5, Layers: 2, FileSize: 70 << 10, MetadataFirst: true})
	small := func(o *cache.Options) { o.HoldBackLimit = 4096 }
	for _, tampered := range []bool{false, true} {
		c, eng, _ := engineAny(t, t.TempDir(), small)
		e := put(t, c, "capy-ubuntu-25.04-m", data).Entry
		if e.MetadataOffset > 4096 || !e.Split() {
			t.Fatalf("entry %+v: want metadata first, split", e)
		}
		if tampered {
			flipByte(t, layerPath(c, e.Pieces[len(e.Pieces)-1].Digest))
		}
		_, err := c.Get(context.Background(), mustName(t, "capy-ubuntu-25.04-m"))
		loads := eng.allLoads()
		switch {
		case tampered && (!errors.Is(err, errdefs.ErrIntegrity) || len(loads) != 0):
			t.Errorf("tampered: Get = %v, %d loads; want ErrIntegrity before any byte was sent", err, len(loads))
		case !tampered && (err != nil || len(loads) != 1 || loads[0].Digest != res.Digest):
			t.Errorf("Get = %v, loads %+v", err, loads)
		}
		if tampered {
			continue
		}
		// Save: from the engine into a new name, split again, same tar.
		saved, err := c.Save(context.Background(), res.ImageID.String(), mustName(t, "other-debian-13-saved"))
		if err != nil || saved.Entry.Digest != res.Digest || !saved.Entry.Split() || saved.Reused != 2 {
			t.Fatalf("Save = %+v, %v; want the same tar, its 2 layers reused", saved, err)
		}
	}
}
