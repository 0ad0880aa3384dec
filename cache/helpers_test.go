package cache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// t0 is the fake clock's starting point.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// baseOptions log to the test and make any attempt to reach the daemon fail
// the test: these tests run without Docker.
func baseOptions(t *testing.T) cache.Options {
	t.Helper()
	return cache.Options{
		Log: testLogger(t),
		Engine: func(context.Context) (cache.Engine, error) {
			t.Errorf("the cache tried to reach the Docker daemon")
			return nil, errdefs.ErrDaemon
		},
	}
}

// testLogger sends the cache's warnings to the test log.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log("cache log: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

// newCache opens a cache in a fresh directory with a fake clock set to t0.
func newCache(t *testing.T) (*cache.Cache, *fakeClock) {
	t.Helper()
	return openCache(t, t.TempDir())
}

// wholeTar makes a new directory dir a cache of the whole-tar schema, as
// an earlier imgcache leaves it (most tests here are about behaviour that
// does not depend on how tars are stored, and were written for that
// layout; split_test.go covers the layer store).
func wholeTar(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(dir, "manifest.json")); err == nil {
		return
	}
	if _, err := os.Lstat(filepath.Join(dir, "blobs")); err == nil {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"version":1,"entries":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// openCache opens the cache directory dir, of the whole-tar schema when it
// is new, with a fake clock set to t0.
func openCache(t *testing.T, dir string) (*cache.Cache, *fakeClock) {
	t.Helper()
	wholeTar(t, dir)
	return openAny(t, dir)
}

// openAny opens dir as it is (a new directory becomes a layered cache).
func openAny(t *testing.T, dir string) (*cache.Cache, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: t0}
	opt := baseOptions(t)
	opt.Now = clk.Now
	c, err := cache.Open(dir, opt)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, clk
}

// image generates a small docker-archive tarball.
func image(t *testing.T, tag string, seed int64) ([]byte, testimage.Result) {
	t.Helper()
	return imageOpts(t, testimage.Options{Tag: tag, Seed: seed})
}

func imageOpts(t *testing.T, o testimage.Options) ([]byte, testimage.Result) {
	t.Helper()
	data, res, err := testimage.Bytes(o)
	if err != nil {
		t.Fatalf("testimage.Bytes(%+v): %v", o, err)
	}
	return data, res
}

func mustName(t *testing.T, s string) naming.Name {
	t.Helper()
	n, err := naming.Parse(s)
	if err != nil {
		t.Fatalf("naming.Parse(%q): %v", s, err)
	}
	return n
}

func put(t *testing.T, c *cache.Cache, name string, data []byte) *cache.PutResult {
	t.Helper()
	res, err := c.Put(context.Background(), mustName(t, name), bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("Put(%s): %v", name, err)
	}
	return res
}

func inspect(t *testing.T, c *cache.Cache, name string) manifest.Entry {
	t.Helper()
	e, err := c.Inspect(context.Background(), mustName(t, name))
	if err != nil {
		t.Fatalf("Inspect(%s): %v", name, err)
	}
	return e
}

func list(t *testing.T, c *cache.Cache) []manifest.Entry {
	t.Helper()
	es, err := c.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return es
}

func listNames(t *testing.T, c *cache.Cache) []string {
	t.Helper()
	var names []string
	for _, e := range list(t, c) {
		names = append(names, e.Name)
	}
	return names
}

func verify(t *testing.T, c *cache.Cache, repair bool, names ...string) *cache.VerifyReport {
	t.Helper()
	var ns []naming.Name
	for _, n := range names {
		ns = append(ns, mustName(t, n))
	}
	rep, err := c.Verify(context.Background(), ns, repair)
	if err != nil {
		t.Fatalf("Verify(%v, repair=%v): %v", names, repair, err)
	}
	for _, p := range rep.Problems {
		t.Logf("verify(repair=%v): %+v", repair, p)
	}
	return rep
}

func gc(t *testing.T, c *cache.Cache, opt cache.GCOptions) *cache.GCReport {
	t.Helper()
	if opt.Docker {
		t.Fatal("unit tests must not talk to Docker")
	}
	rep, err := c.GC(context.Background(), opt)
	if err != nil {
		t.Fatalf("GC(%+v): %v", opt, err)
	}
	return rep
}

// export returns n's exported bytes.
func export(t *testing.T, c *cache.Cache, name string) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := c.Export(context.Background(), mustName(t, name), &b); err != nil {
		t.Fatalf("Export(%s): %v", name, err)
	}
	return b.Bytes()
}

func sha(data []byte) digest.Digest {
	sum := sha256.Sum256(data)
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
}

func blobPath(c *cache.Cache, d digest.Digest) string {
	return filepath.Join(c.Dir(), "blobs", "sha256", d.Encoded()+".tar.zst")
}

func linkPath(c *cache.Cache, name string) string {
	project, _, _ := strings.Cut(name, "-")
	return filepath.Join(c.Dir(), "names", project, name+".tar.zst")
}

func lockPath(c *cache.Cache, d digest.Digest) string {
	return filepath.Join(c.Dir(), "locks", d.Encoded()+".lock")
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return err == nil
}

// dirNames lists the names in dir (none when it does not exist), sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// blobDigests lists the digests in blobs/sha256/.
func blobDigests(t *testing.T, c *cache.Cache) []digest.Digest {
	t.Helper()
	var ds []digest.Digest
	for _, n := range dirNames(t, filepath.Join(c.Dir(), "blobs", "sha256")) {
		hexpart, ok := strings.CutSuffix(n, ".tar.zst")
		if !ok {
			t.Fatalf("stray file in blobs/sha256: %s", n)
		}
		ds = append(ds, digest.NewDigestFromEncoded(digest.SHA256, hexpart))
	}
	return ds
}

func hasBlob(t *testing.T, c *cache.Cache, d digest.Digest) bool {
	t.Helper()
	return exists(t, blobPath(c, d))
}

// assertLink checks that name's link is a relative symlink resolving to d's blob.
func assertLink(t *testing.T, c *cache.Cache, name string, d digest.Digest) {
	t.Helper()
	p := linkPath(c, name)
	target, err := os.Readlink(p)
	if err != nil {
		t.Errorf("link of %s: %v", name, err)
		return
	}
	if filepath.IsAbs(target) {
		t.Errorf("link of %s is absolute: %s", name, target)
	}
	want := filepath.Join("..", "..", "blobs", "sha256", d.Encoded()+".tar.zst")
	head := blobPath(c, d)
	if e, ok := readManifest(t, c).Entries[name]; ok && e.Split() {
		// A split entry's link leads to its skeleton in the layer store.
		want = filepath.Join("..", "..", "layers", "blobs", "sha256", e.Skeleton.Digest.Encoded()+".tar.zst")
		head = filepath.Join(c.Dir(), "layers", "blobs", "sha256", e.Skeleton.Digest.Encoded()+".tar.zst")
	}
	if target != want {
		t.Errorf("link of %s → %s, want %s", name, target, want)
	}
	got, err := os.Stat(p)
	if err != nil {
		t.Errorf("link of %s does not resolve: %v", name, err)
		return
	}
	blob, err := os.Stat(head)
	if err != nil {
		t.Errorf("blob of %s: %v", name, err)
		return
	}
	if !os.SameFile(got, blob) {
		t.Errorf("link of %s resolves to another file than blob %s", name, d)
	}
}

// flipByte corrupts the file at p by inverting one byte in its middle.
func flipByte(t *testing.T, p string) {
	t.Helper()
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readManifest and writeManifest edit manifest.json behind the cache's back.
func readManifest(t *testing.T, c *cache.Cache) *manifest.Manifest {
	t.Helper()
	f, err := os.Open(filepath.Join(c.Dir(), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := manifest.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func writeManifest(t *testing.T, c *cache.Cache, m *manifest.Manifest) {
	t.Helper()
	var b bytes.Buffer
	if err := manifest.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir(), "manifest.json"), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// problems returns the report's problems of the given kind.
func problems(rep *cache.VerifyReport, kind cache.ProblemKind) []cache.Problem {
	var out []cache.Problem
	for _, p := range rep.Problems {
		if p.Kind == kind {
			out = append(out, p)
		}
	}
	return out
}

func kinds(rep *cache.VerifyReport) []cache.ProblemKind {
	var ks []cache.ProblemKind
	for _, p := range rep.Problems {
		ks = append(ks, p.Kind)
	}
	return ks
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// hashExport returns the digest of n's export.
func hashExport(t *testing.T, c *cache.Cache, name string) digest.Digest {
	t.Helper()
	h := digest.Canonical.Digester()
	if _, err := c.Export(context.Background(), mustName(t, name), h.Hash()); err != nil {
		t.Errorf("Export(%s): %v", name, err)
	}
	return h.Digest()
}

// entryBlobKeys are the blobs an entry uses: "sha256:…" for its whole tar,
// "layers/sha256:…" for a split entry's skeleton and pieces.
func entryBlobKeys(e *manifest.Entry) []string {
	if !e.Split() {
		return []string{e.Digest.String()}
	}
	keys := []string{"layers/" + e.Skeleton.Digest.String()}
	for _, p := range e.Pieces {
		keys = append(keys, "layers/"+p.Digest.String())
	}
	return keys
}

// allBlobKeys lists the blobs of both stores, keyed as entryBlobKeys does.
func allBlobKeys(t *testing.T, c *cache.Cache) []string {
	t.Helper()
	var keys []string
	for _, d := range blobDigests(t, c) {
		keys = append(keys, d.String())
	}
	for _, d := range layerDigests(t, c) {
		keys = append(keys, "layers/"+d.String())
	}
	return keys
}

// layerDigests lists the digests in layers/blobs/sha256/.
func layerDigests(t *testing.T, c *cache.Cache) []digest.Digest {
	t.Helper()
	var ds []digest.Digest
	for _, n := range dirNames(t, filepath.Join(c.Dir(), "layers", "blobs", "sha256")) {
		hexpart, ok := strings.CutSuffix(n, ".tar.zst")
		if !ok {
			t.Fatalf("stray file in layers/blobs/sha256: %s", n)
		}
		ds = append(ds, digest.NewDigestFromEncoded(digest.SHA256, hexpart))
	}
	return ds
}

// layerPath is the file of blob d of the layer store.
func layerPath(c *cache.Cache, d digest.Digest) string {
	return filepath.Join(c.Dir(), "layers", "blobs", "sha256", d.Encoded()+".tar.zst")
}
