package cache_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"github.com/ulikunitz/xz"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/decompress"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
)

func TestPutRecordsEntry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opt  testimage.Options
	}{
		{"docker archive", testimage.Options{Tag: "t/x:1", Seed: 1}},
		{"oci archive", testimage.Options{Tag: "t/x:oci", Seed: 2, Format: archive.FormatOCI}},
		{"metadata first", testimage.Options{Tag: "t/x:first", Seed: 3, MetadataFirst: true}},
		{"untagged", testimage.Options{Seed: 4}},
		{"other platform", testimage.Options{Tag: "t/arm:1", Seed: 5, Architecture: "arm64", OS: "linux"}},
		{"compressible", testimage.Options{Tag: "t/x:z", Seed: 6, Compressible: true, FileSize: 64 << 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, clk := newCache(t)
			data, img := imageOpts(t, tt.opt)
			want, err := archive.Read(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("archive.Read of the generated image: %v", err)
			}
			clk.Set(t0.Add(time.Hour))
			const name = "capy-ubuntu-25.04-gcc15"
			res := put(t, c, name, data)

			if res.Deduplicated || res.Replaced != "" {
				t.Errorf("first put: Deduplicated=%v Replaced=%q, want false, \"\"", res.Deduplicated, res.Replaced)
			}
			e := res.Entry
			if got := inspect(t, c, name); toJSON(got) != toJSON(e) {
				t.Errorf("Inspect = %s\nPutResult.Entry = %s", toJSON(got), toJSON(e))
			}
			if e.Digest != sha(data) || e.Digest != img.Digest {
				t.Errorf("Digest = %s, want sha256 of the tar %s", e.Digest, sha(data))
			}
			if e.Name != name {
				t.Errorf("Name = %q", e.Name)
			}
			if e.ImageID != img.ImageID.String() {
				t.Errorf("ImageID = %q, want %q", e.ImageID, img.ImageID)
			}
			var wantTags []string
			if tt.opt.Tag != "" {
				wantTags = []string{tt.opt.Tag}
			}
			if !slices.Equal(e.RepoTags, wantTags) {
				t.Errorf("RepoTags = %q, want %q", e.RepoTags, wantTags)
			}
			wantArch := tt.opt.Architecture
			if wantArch == "" {
				wantArch = runtime.GOARCH
			}
			if e.OS != "linux" || e.Arch != wantArch {
				t.Errorf("OS/Arch = %s/%s, want linux/%s", e.OS, e.Arch, wantArch)
			}
			if e.Size != int64(len(data)) || e.Size != img.Size {
				t.Errorf("Size = %d, want %d", e.Size, len(data))
			}
			fi, err := os.Stat(blobPath(c, e.Digest))
			if err != nil {
				t.Fatal(err)
			}
			if e.StoredSize != fi.Size() || e.StoredSize <= 0 {
				t.Errorf("StoredSize = %d, blob file holds %d", e.StoredSize, fi.Size())
			}
			if tt.opt.Compressible && e.StoredSize >= e.Size/4 {
				t.Errorf("compressible image stored in %d bytes of %d: not compressed?", e.StoredSize, e.Size)
			}
			if e.MetadataOffset != want.MetadataOffset {
				t.Errorf("MetadataOffset = %d, archive says %d", e.MetadataOffset, want.MetadataOffset)
			}
			if !tt.opt.MetadataFirst && e.MetadataOffset <= 0 {
				t.Errorf("MetadataOffset = %d, want > 0 (metadata is written last)", e.MetadataOffset)
			}
			if e.Format != string(want.Format) || e.Format == "" {
				t.Errorf("Format = %q, want %q", e.Format, want.Format)
			}
			if !e.Created.Equal(want.Images[0].Created) || e.Created.IsZero() {
				t.Errorf("Created = %v, want %v", e.Created, want.Images[0].Created)
			}
			if !e.Added.Equal(t0.Add(time.Hour)) || !e.LastUsed.Equal(t0.Add(time.Hour)) {
				t.Errorf("Added/LastUsed = %v/%v, want the clock's %v", e.Added, e.LastUsed, t0.Add(time.Hour))
			}
			if e.Pinned {
				t.Error("a new entry is pinned")
			}
			assertLink(t, c, name, e.Digest)
			if got := blobDigests(t, c); !slices.Equal(got, []digest.Digest{e.Digest}) {
				t.Errorf("blobs = %v, want only %s", got, e.Digest)
			}
			if tmp := dirNames(t, filepath.Join(c.Dir(), "tmp")); len(tmp) > 0 {
				t.Errorf("tmp/ holds %v after a successful put", tmp)
			}
			if got := export(t, c, name); !bytes.Equal(got, data) {
				t.Errorf("export differs from the put tar (%d vs %d bytes)", len(got), len(data))
			}
		})
	}
}

func TestPutSameContentTwoNamesIsOneBlob(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t)
	data, img := image(t, "t/x:1", 1)
	first := put(t, c, "capy-ubuntu-25.04-gcc15", data)
	second := put(t, c, "other-debian-13-base", data)
	if first.Deduplicated {
		t.Error("first put reported Deduplicated")
	}
	if !second.Deduplicated {
		t.Error("second put of the same content did not report Deduplicated")
	}
	if second.Replaced != "" {
		t.Errorf("second put Replaced = %q for a new name", second.Replaced)
	}
	if got := blobDigests(t, c); !slices.Equal(got, []digest.Digest{img.Digest}) {
		t.Errorf("blobs = %v, want one: %s", got, img.Digest)
	}
	if second.Entry.StoredSize != first.Entry.StoredSize {
		t.Errorf("StoredSize %d vs %d for one blob", second.Entry.StoredSize, first.Entry.StoredSize)
	}
	assertLink(t, c, "capy-ubuntu-25.04-gcc15", img.Digest)
	assertLink(t, c, "other-debian-13-base", img.Digest)
	if tmp := dirNames(t, filepath.Join(c.Dir(), "tmp")); len(tmp) > 0 {
		t.Errorf("tmp/ holds %v after a deduplicated put", tmp)
	}
}

func TestPutReplaceMovesNameAndGCReclaimsOldBlob(t *testing.T) {
	t.Parallel()
	c, clk := newCache(t)
	const name = "capy-ubuntu-25.04-gcc15"
	old, oldImg := image(t, "t/x:1", 1)
	nw, newImg := image(t, "t/x:1", 2)
	first := put(t, c, name, old)
	clk.Advance(time.Hour)

	res := put(t, c, name, nw)
	if res.Replaced != oldImg.Digest.String() {
		t.Errorf("Replaced = %q, want %q", res.Replaced, oldImg.Digest)
	}
	if res.Deduplicated {
		t.Error("new content reported Deduplicated")
	}
	e := inspect(t, c, name)
	if e.Digest != newImg.Digest || e.ImageID != newImg.ImageID.String() {
		t.Errorf("entry = %s / %s, want the new content %s / %s", e.Digest, e.ImageID, newImg.Digest, newImg.ImageID)
	}
	if !e.Added.Equal(t0.Add(time.Hour)) {
		t.Errorf("Added = %v, want the time of the replacing put", e.Added)
	}
	assertLink(t, c, name, newImg.Digest)
	if !hasBlob(t, c, oldImg.Digest) {
		t.Fatal("old blob deleted by the re-put; it must stay until gc")
	}

	// Re-putting the same content is no replacement and keeps Added.
	clk.Advance(time.Hour)
	again := put(t, c, name, nw)
	if again.Replaced != "" || !again.Deduplicated {
		t.Errorf("same content again: Replaced=%q Deduplicated=%v", again.Replaced, again.Deduplicated)
	}
	if !again.Entry.Added.Equal(e.Added) || !again.Entry.LastUsed.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("same content again: Added %v LastUsed %v, want Added kept (%v) and LastUsed now", again.Entry.Added, again.Entry.LastUsed, e.Added)
	}

	rep := gc(t, c, cache.GCOptions{})
	if len(rep.Victims) != 1 || rep.Victims[0].Blob != oldImg.Digest.String() || rep.Victims[0].Reason != "unreferenced" || len(rep.Victims[0].Names) != 0 {
		t.Errorf("gc victims = %s, want only the old blob as unreferenced", toJSON(rep.Victims))
	}
	if rep.Freed != first.Entry.StoredSize {
		t.Errorf("gc freed %d, want the old blob's %d", rep.Freed, first.Entry.StoredSize)
	}
	if hasBlob(t, c, oldImg.Digest) {
		t.Error("gc left the unreferenced old blob")
	}
	if !hasBlob(t, c, newImg.Digest) {
		t.Error("gc deleted the named blob")
	}
	if exists(t, lockPath(c, oldImg.Digest)) {
		t.Error("gc left the deleted blob's lock file")
	}
}

func TestPutKeepsPin(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t)
	const name = "capy-ubuntu-25.04-gcc15"
	a, _ := image(t, "t/x:1", 1)
	b, _ := image(t, "t/x:1", 2)
	put(t, c, name, a)
	if err := c.SetPinned(context.Background(), mustName(t, name), true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{{"new content", b}, {"same content", b}, {"old content back", a}} {
		res := put(t, c, name, tc.data)
		if !res.Entry.Pinned || !inspect(t, c, name).Pinned {
			t.Errorf("%s: pin lost by the re-put", tc.name)
		}
	}
	if err := c.SetPinned(context.Background(), mustName(t, "nope-a-b-c"), true); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("SetPinned of an unknown name: %v, want ErrNotFound", err)
	}
}

// errReader yields data, then fails with err instead of io.EOF.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

var errBoom = errors.New("boom: the disk under the input went away")

func TestPutBadInputLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	good, _ := image(t, "t/x:1", 7)
	rnd := make([]byte, 64<<10)
	rand.NewChaCha8([32]byte{1}).Read(rnd)

	gzipped := func(b []byte) []byte {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(b)
		zw.Close()
		return gz.Bytes()
	}
	gz := gzipped(good)
	zst := compressed(t, decompress.Zstd, good)
	zst[len(zst)/2] ^= 0x55

	var plain bytes.Buffer
	tw := tar.NewWriter(&plain)
	for _, f := range []struct{ name, body string }{{"README", "hello\n"}, {"etc/passwd", "root:x:0:0::/root:/bin/sh\n"}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(f.body))
	}
	tw.Close()

	trailer := 1024 // tar end-of-archive marker
	tests := []struct {
		name string
		r    func() io.Reader
		ctx  func() context.Context
		want error
	}{
		{"empty input", func() io.Reader { return bytes.NewReader(nil) }, nil, errdefs.ErrInvalid},
		{"random bytes", func() io.Reader { return bytes.NewReader(rnd) }, nil, errdefs.ErrInvalid},
		{"short random", func() io.Reader { return bytes.NewReader(rnd[:100]) }, nil, errdefs.ErrInvalid},
		{"text file", func() io.Reader {
			return strings.NewReader(strings.Repeat("FROM debian:13\nRUN apt-get update\n", 100))
		}, nil, errdefs.ErrInvalid},
		{"gzip-compressed image cut short", func() io.Reader { return bytes.NewReader(gz[:len(gz)/2]) }, nil, errdefs.ErrInvalid},
		{"gzip-compressed image without its trailer", func() io.Reader { return bytes.NewReader(gz[:len(gz)-4]) }, nil, errdefs.ErrInvalid},
		{"zstd-compressed image, a byte flipped", func() io.Reader { return io.MultiReader(bytes.NewReader(zst)) }, nil, errdefs.ErrInvalid},
		{"gzip of random bytes", func() io.Reader { return bytes.NewReader(gzipped(rnd)) }, nil, errdefs.ErrInvalid},
		{"plain tar of files", func() io.Reader { return bytes.NewReader(plain.Bytes()) }, nil, errdefs.ErrInvalid},
		{"image cut inside first header", func() io.Reader { return bytes.NewReader(good[:100]) }, nil, errdefs.ErrInvalid},
		{"image cut after first header", func() io.Reader { return bytes.NewReader(good[:512]) }, nil, errdefs.ErrInvalid},
		{"image cut in the middle", func() io.Reader { return bytes.NewReader(good[:len(good)/2]) }, nil, errdefs.ErrInvalid},
		{"image cut in a layer", func() io.Reader { return bytes.NewReader(good[:3000]) }, nil, errdefs.ErrInvalid},
		{"image cut inside its last entry", func() io.Reader { return bytes.NewReader(good[:len(good)-trailer-10]) }, nil, errdefs.ErrInvalid},
		{"image cut one byte short of its last entry", func() io.Reader { return bytes.NewReader(good[:len(good)-trailer-1]) }, nil, errdefs.ErrInvalid},
		{"reader fails at once", func() io.Reader { return &errReader{err: errBoom} }, nil, errBoom},
		{"reader fails mid-archive", func() io.Reader { return &errReader{data: good[:len(good)/2], err: errBoom} }, nil, errBoom},
		{"reader fails after the whole archive", func() io.Reader { return &errReader{data: good, err: errBoom} }, nil, errBoom},
		{"context cancelled", func() io.Reader { return bytes.NewReader(good) }, func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newCache(t)
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			const name = "capy-ubuntu-25.04-gcc15"
			res, err := c.Put(ctx, mustName(t, name), tt.r(), -1)
			if err == nil {
				t.Fatalf("Put succeeded: %s", toJSON(res))
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, tt.want) {
				t.Errorf("error does not wrap %v", tt.want)
			}
			if tt.want != errdefs.ErrInvalid && errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("a %v is reported as bad input (ErrInvalid)", tt.want)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error does not name %s", name)
			}
			assertNothingStored(t, c, name)

			// The cache still works.
			put(t, c, name, good)
		})
	}
}

// assertNothingStored checks that a cache shows no trace of a put.
func assertNothingStored(t *testing.T, c *cache.Cache, name string) {
	t.Helper()
	if b := dirNames(t, filepath.Join(c.Dir(), "blobs", "sha256")); len(b) > 0 {
		t.Errorf("blobs/sha256 holds %v", b)
	}
	if b := dirNames(t, filepath.Join(c.Dir(), "layers", "blobs", "sha256")); len(b) > 0 {
		t.Errorf("layers/blobs/sha256 holds %v", b)
	}
	if tmp := dirNames(t, filepath.Join(c.Dir(), "layers", "tmp")); len(tmp) > 0 {
		t.Errorf("layers/tmp/ holds %v", tmp)
	}
	if tmp := dirNames(t, filepath.Join(c.Dir(), "tmp")); len(tmp) > 0 {
		t.Errorf("tmp/ holds %v", tmp)
	}
	if q := dirNames(t, filepath.Join(c.Dir(), "quarantine")); len(q) > 0 {
		t.Errorf("quarantine/ holds %v", q)
	}
	if names := listNames(t, c); len(names) > 0 {
		t.Errorf("manifest lists %v", names)
	}
	if _, err := c.Inspect(context.Background(), mustName(t, name)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Inspect(%s) = %v, want ErrNotFound", name, err)
	}
	if exists(t, linkPath(c, name)) {
		t.Errorf("link %s exists", linkPath(c, name))
	}
	if n := dirNames(t, filepath.Join(c.Dir(), "names")); len(n) > 0 {
		t.Errorf("names/ holds %v", n)
	}
}

func TestPutBadInputKeepsExistingEntry(t *testing.T) {
	t.Parallel()
	c, clk := newCache(t)
	const name = "capy-ubuntu-25.04-gcc15"
	good, img := image(t, "t/x:1", 1)
	before := put(t, c, name, good).Entry
	clk.Advance(time.Hour)
	manBefore := readFile(t, filepath.Join(c.Dir(), "manifest.json"))

	for _, bad := range [][]byte{nil, []byte("not a tar"), good[:len(good)/2]} {
		if _, err := c.Put(context.Background(), mustName(t, name), bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Put(%d bad bytes) = %v, want ErrInvalid", len(bad), err)
		}
	}
	if got := inspect(t, c, name); toJSON(got) != toJSON(before) {
		t.Errorf("entry changed by failed puts:\n%s\n%s", toJSON(got), toJSON(before))
	}
	if got := readFile(t, filepath.Join(c.Dir(), "manifest.json")); !bytes.Equal(got, manBefore) {
		t.Error("manifest.json rewritten by failed puts")
	}
	assertLink(t, c, name, img.Digest)
	if got := blobDigests(t, c); !slices.Equal(got, []digest.Digest{img.Digest}) {
		t.Errorf("blobs = %v", got)
	}
	if tmp := dirNames(t, filepath.Join(c.Dir(), "tmp")); len(tmp) > 0 {
		t.Errorf("tmp/ holds %v", tmp)
	}
}

// compressed is data compressed as format f (gzip, xz or zstd: the formats
// with a Go writer; bzip2 is tested with the real CLI in e2e).
func compressed(t *testing.T, f decompress.Format, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch f {
	case decompress.Gzip:
		w = gzip.NewWriter(&buf)
	case decompress.Xz:
		w, err = xz.NewWriter(&buf)
	case decompress.Zstd:
		w, err = zstd.NewWriter(&buf)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPutCompressed: an archive compressed as docker load accepts it is
// stored as the tar inside, from a file or a stream: the digest is that
// tar's sha256 and export writes it back uncompressed.
func TestPutCompressed(t *testing.T) {
	t.Parallel()
	good, _ := image(t, "t/x:1", 9)
	for _, f := range []decompress.Format{decompress.Gzip, decompress.Xz, decompress.Zstd} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", f, stream), func(t *testing.T) {
				t.Parallel()
				c, _ := newCache(t)
				var r io.Reader = bytes.NewReader(compressed(t, f, good))
				if stream {
					r = io.MultiReader(r)
				}
				res, err := c.Put(context.Background(), mustName(t, "capy-ubuntu-25.04-gcc15"), r, 12345)
				if err != nil {
					t.Fatal(err)
				}
				if res.Entry.Digest != sha(good) || res.Entry.Size != int64(len(good)) {
					t.Fatalf("entry %s (%d bytes), want the inner tar's %s (%d bytes)", res.Entry.Digest, res.Entry.Size, sha(good), len(good))
				}
				if got := export(t, c, "capy-ubuntu-25.04-gcc15"); !bytes.Equal(got, good) {
					t.Fatalf("export is not the uncompressed tar (%d bytes)", len(got))
				}
			})
		}
	}
}

// TestPutStoreFailureIsNotBlamedOnTheArchive: when the layer store cannot
// write (here its tmp/ is a file: ENOTDIR, even for root; for another user
// it is EACCES), put fails with that error, not as bad input: the archive
// was fine. Before, the parser's view of the broken pipe won and put said
// "invalid input: truncated archive", exit 2.
func TestPutStoreFailureIsNotBlamedOnTheArchive(t *testing.T) {
	t.Parallel()
	c, _ := openAny(t, t.TempDir())
	tmp := filepath.Join(c.Dir(), "layers", "tmp")
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	good, _ := image(t, "t/x:1", 3)
	_, err := c.Put(context.Background(), mustName(t, "capy-ubuntu-25.04-gcc15"), bytes.NewReader(good), -1)
	if err == nil || errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("put into a broken layer store: %v; want the store's error, not ErrInvalid", err)
	}
}
