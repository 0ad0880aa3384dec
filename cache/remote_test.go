package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/remote"
)

// fakeRemote is a registry in memory behind cache.Remote: blobs by their
// stored digest, blob tags by content, entries by tag. It checks what it
// is sent (a blob's bytes against its descriptor, a manifest's blobs
// present) and can be told to misbehave.
type fakeRemote struct {
	mu       sync.Mutex
	blobs    map[digest.Digest][]byte
	byUncomp map[digest.Digest]ocispec.Descriptor
	tags     map[string]*remote.Entry
	uploads  int
	fetches  int
	// loseOnce: the next PushEntry fails with remote.ErrBlobUnknown and
	// the registry loses those blobs (its gc ran).
	loseOnce bool
}

func newFakeRemote() *fakeRemote {
	return &fakeRemote{blobs: map[digest.Digest][]byte{}, byUncomp: map[digest.Digest]ocispec.Descriptor{}, tags: map[string]*remote.Entry{}}
}

func (f *fakeRemote) String() string { return "fake.example/ci/imgcache" }

func (f *fakeRemote) FindBlob(_ context.Context, u digest.Digest) (ocispec.Descriptor, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.byUncomp[u]
	return d, ok, nil // a stale blob tag is what loseOnce tests
}

func (f *fakeRemote) PushBlob(_ context.Context, desc ocispec.Descriptor, open func() (io.ReadCloser, error), force bool) (bool, error) {
	f.mu.Lock()
	_, have := f.blobs[desc.Digest]
	f.mu.Unlock()
	sent := false
	if !have || force {
		rc, err := open()
		if err != nil {
			return false, err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return false, err
		}
		if digest.FromBytes(b) != desc.Digest || int64(len(b)) != desc.Size {
			return false, fmt.Errorf("fake: blob %s: sent %d bytes of %s", desc.Digest, len(b), digest.FromBytes(b))
		}
		f.mu.Lock()
		f.blobs[desc.Digest] = b
		f.uploads++
		f.mu.Unlock()
		sent = true
	}
	f.mu.Lock()
	f.byUncomp[remote.ContentOf(desc)] = desc
	f.mu.Unlock()
	return sent, nil
}

func (f *fakeRemote) OpenBlob(_ context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	f.mu.Lock()
	b, ok := f.blobs[desc.Digest]
	f.fetches++
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("fake: blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	dec, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(dec)
	dec.Close()
	if err != nil {
		return nil, err
	}
	if got := digest.FromBytes(out); got != remote.ContentOf(desc) {
		return nil, fmt.Errorf("%w: fake: blob %s holds %s", errdefs.ErrIntegrity, desc.Digest, got)
	}
	return io.NopCloser(bytes.NewReader(out)), nil
}

func (f *fakeRemote) FetchStored(_ context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	f.mu.Lock()
	b, ok := f.blobs[desc.Digest]
	f.fetches++
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("fake: blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *fakeRemote) Resolve(_ context.Context, tag string) (*remote.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.tags[tag]
	if !ok {
		return nil, fmt.Errorf("fake: %s: %w", tag, errdefs.ErrNotFound)
	}
	c := *e
	return &c, nil
}

func (f *fakeRemote) put(tag string, e manifest.Entry, blobs []ocispec.Descriptor) (ocispec.Descriptor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loseOnce {
		f.loseOnce = false
		for _, b := range blobs {
			delete(f.blobs, b.Digest)
		}
		return ocispec.Descriptor{}, fmt.Errorf("%w: fake", remote.ErrBlobUnknown)
	}
	for _, b := range blobs {
		if _, ok := f.blobs[b.Digest]; !ok {
			return ocispec.Descriptor{}, fmt.Errorf("%w: fake: %s", remote.ErrBlobUnknown, b.Digest)
		}
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(tag + e.Digest.String()), Size: 1}
	f.tags[tag] = &remote.Entry{Tag: tag, Manifest: desc, Record: e, Blobs: blobs}
	return desc, nil
}

func (f *fakeRemote) PushEntry(_ context.Context, e manifest.Entry, blobs []ocispec.Descriptor) error {
	_, err := f.put(remote.EntryTag(e.Digest), e, blobs)
	return err
}

func (f *fakeRemote) TagName(_ context.Context, name string, e manifest.Entry, blobs []ocispec.Descriptor) (ocispec.Descriptor, error) {
	return f.put(name, e, blobs)
}

func (f *fakeRemote) Delete(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tags[name]; !ok {
		return errdefs.ErrNotFound
	}
	delete(f.tags, name)
	return nil
}

func (f *fakeRemote) List(context.Context) ([]remote.Listed, error) { return nil, nil }

// withRemote opens dir (layered when new, or of the whole-tar schema) with r.
func withRemote(t *testing.T, dir string, layered bool, r cache.Remote) *cache.Cache {
	t.Helper()
	if !layered {
		wholeTar(t, dir)
	}
	opt := baseOptions(t)
	opt.Remote = func(context.Context) (cache.Remote, error) { return r, nil }
	c, err := cache.Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A layered host and a whole-tar host exchange entries both ways: each
// stores what it pulls its own way, byte-identical, verified.
func TestRemoteAcrossSchemas(t *testing.T) {
	r := newFakeRemote()
	layered := withRemote(t, t.TempDir(), true, r)
	whole := withRemote(t, t.TempDir(), false, r)
	ctx := context.Background()
	a, _ := image(t, "imgcache-test/a:1", 1)
	b, _ := image(t, "imgcache-test/b:1", 2)
	put(t, layered, "capy-ubuntu-25.04-a", a)
	put(t, whole, "capy-ubuntu-25.04-b", b)
	for _, p := range []struct {
		from, to *cache.Cache
		name     string
		data     []byte
		split    bool
	}{
		{layered, whole, "capy-ubuntu-25.04-a", a, false},
		{whole, layered, "capy-ubuntu-25.04-b", b, true},
		{layered, withRemote(t, t.TempDir(), true, r), "capy-ubuntu-25.04-a", a, true}, // stored blobs kept as they are
	} {
		n := mustName(t, p.name)
		if _, err := p.from.Push(ctx, n, cache.PushOptions{}); err != nil {
			t.Fatal(err)
		}
		res, err := p.to.Pull(ctx, n)
		if err != nil {
			t.Fatalf("pull %s: %v", p.name, err)
		}
		if res.Entry.Split() != p.split || res.Entry.Digest != sha(p.data) {
			t.Errorf("pulled %s: split %v (want %v), digest %s", p.name, res.Entry.Split(), p.split, res.Entry.Digest)
		}
		if !bytes.Equal(export(t, p.to, p.name), p.data) {
			t.Errorf("%s exports other bytes after the pull", p.name)
		}
		if rep := verify(t, p.to, false); len(rep.Problems) != 0 {
			t.Errorf("verify after the pull: %+v", rep.Problems)
		}
	}
}

// A remote record whose digest is not the tar its blobs make: nothing is
// published, and the blobs the pull stored are dropped again.
func TestPullRefusesAWrongRecord(t *testing.T) {
	r := newFakeRemote()
	src := withRemote(t, t.TempDir(), true, r)
	ctx := context.Background()
	a, _ := image(t, "imgcache-test/a:1", 3)
	put(t, src, "capy-ubuntu-25.04-a", a)
	n := mustName(t, "capy-ubuntu-25.04-a")
	if _, err := src.Push(ctx, n, cache.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		alter func(e *remote.Entry)
	}{
		{"record digest", func(e *remote.Entry) { e.Record.Digest = digest.FromString("another tar") }},
		{"record size", func(e *remote.Entry) { e.Record.Size++ }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.mu.Lock()
			orig := *r.tags[n.String()]
			bad := orig
			tc.alter(&bad)
			r.tags[n.String()] = &bad
			r.mu.Unlock()
			defer func() { r.mu.Lock(); r.tags[n.String()] = &orig; r.mu.Unlock() }()
			dst := withRemote(t, t.TempDir(), true, r)
			_, err := dst.Pull(ctx, n)
			if !errors.Is(err, errdefs.ErrIntegrity) {
				t.Fatalf("pull of a wrong record: %v, want ErrIntegrity", err)
			}
			if names := listNames(t, dst); len(names) != 0 {
				t.Errorf("published %v", names)
			}
			if st, _ := dst.Stats(ctx); st.Blobs != 0 {
				t.Errorf("%d blobs left after the refused pull", st.Blobs)
			}
		})
	}
}

// The registry lost blobs it said it had: the manifest push fails with
// BLOB_UNKNOWN, every blob is uploaded again, the push succeeds.
func TestPushReuploadsAfterBlobUnknown(t *testing.T) {
	r := newFakeRemote()
	c := withRemote(t, t.TempDir(), true, r)
	ctx := context.Background()
	a, _ := image(t, "imgcache-test/a:1", 4)
	put(t, c, "capy-ubuntu-25.04-a", a)
	n := mustName(t, "capy-ubuntu-25.04-a")
	first, err := c.Push(ctx, n, cache.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveRemote(ctx, n); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.loseOnce = true
	delete(r.tags, remote.EntryTag(first.Digest))
	r.mu.Unlock()
	res, err := c.Push(ctx, n, cache.PushOptions{})
	if err != nil {
		t.Fatalf("push after the registry lost its blobs: %v", err)
	}
	if res.Uploaded != res.Blobs {
		t.Errorf("uploaded %d of %d blobs again", res.Uploaded, res.Blobs)
	}
	if _, err := withRemote(t, t.TempDir(), true, r).Pull(ctx, n); err != nil {
		t.Fatalf("pull after the re-upload: %v", err)
	}
}

// A damaged local blob is never uploaded.
func TestPushRefusesADamagedBlob(t *testing.T) {
	r := newFakeRemote()
	dir := t.TempDir()
	c := withRemote(t, dir, false, r)
	a, _ := image(t, "imgcache-test/a:1", 5)
	put(t, c, "capy-ubuntu-25.04-a", a)
	flipByte(t, blobPath(c, sha(a)))
	_, err := c.Push(context.Background(), mustName(t, "capy-ubuntu-25.04-a"), cache.PushOptions{})
	if !errors.Is(err, errdefs.ErrIntegrity) {
		t.Fatalf("push of a damaged blob: %v, want ErrIntegrity", err)
	}
	if r.uploads != 0 {
		t.Errorf("%d blobs uploaded", r.uploads)
	}
}

// TestGetStreamsThePull: a get that misses locally loads the entry as it
// pulls it: the engine's load starts before the image's layers are in the
// local store (they reach it through the same pass), and the entry is
// recorded, complete, once both ended. Fails if the get pulls first and
// loads afterwards.
func TestGetStreamsThePull(t *testing.T) {
	r := newFakeRemote()
	src := withRemote(t, t.TempDir(), true, r)
	ctx := context.Background()
	// Layers larger than the load pipe's room (16 MiB), so that a fetch
	// cannot finish before the engine reads.
	a, img := imageOpts(t, testimage.Options{Tag: "imgcache-test/a:1", Seed: 7, Layers: 2, FilesPerLayer: 3, FileSize: 8 << 20})
	put(t, src, "capy-ubuntu-25.04-a", a)
	n := mustName(t, "capy-ubuntu-25.04-a")
	if _, err := src.Push(ctx, n, cache.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dst, eng, _ := engineAny(t, dir, func(o *cache.Options) {
		o.Remote = func(context.Context) (cache.Remote, error) { return r, nil }
	})
	started, release := make(chan struct{}), make(chan struct{})
	eng.loadStarted, eng.releaseLoads = started, release
	var storedAtStart []digest.Digest
	go func() {
		<-started
		for _, d := range img.DiffIDs {
			if _, err := os.Stat(filepath.Join(dir, "layers", "blobs", "sha256", d.Encoded()+".tar.zst")); err == nil {
				storedAtStart = append(storedAtStart, d)
			}
		}
		close(release)
	}()
	res, err := dst.Get(ctx, n)
	if err != nil {
		t.Fatalf("get on an empty host: %v", err)
	}
	if !res.Loaded || len(storedAtStart) != 0 {
		t.Errorf("loaded %v; layers stored before the load began: %v (want none: the pull streams into the load)", res.Loaded, storedAtStart)
	}
	if got := eng.committedLoads(); len(got) != 1 || got[0].ImageID != img.ImageID.String() || got[0].Digest != img.Digest {
		t.Fatalf("engine loads: %+v; want one, of the original tar %s", got, img.Digest)
	}
	var buf bytes.Buffer
	if _, err := dst.Export(ctx, n, &buf); err != nil || digest.FromBytes(buf.Bytes()) != img.Digest {
		t.Fatalf("export after the streamed get: %v", err)
	}
	if rep, err := dst.Verify(ctx, nil, false); err != nil || !rep.OK() {
		t.Errorf("verify after the streamed get: %+v %v", rep, err)
	}
	// Warm now: no second load, nothing fetched.
	before := r.fetches
	if res, err := dst.Get(ctx, n); err != nil || res.Loaded || r.fetches != before {
		t.Errorf("second get: %+v %v, %d fetches", res, err, r.fetches-before)
	}
}

// TestGetStreamingRefusesADamagedBlob: a blob the registry damaged fails
// the streamed get with an integrity error naming it; the engine commits
// nothing and the cache records nothing and keeps no blob of the pull.
func TestGetStreamingRefusesADamagedBlob(t *testing.T) {
	r := newFakeRemote()
	src := withRemote(t, t.TempDir(), true, r)
	ctx := context.Background()
	a, _ := imageOpts(t, testimage.Options{Tag: "imgcache-test/a:1", Seed: 8, Layers: 2, FileSize: 1 << 20})
	put(t, src, "capy-ubuntu-25.04-a", a)
	n := mustName(t, "capy-ubuntu-25.04-a")
	if _, err := src.Push(ctx, n, cache.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	var victim digest.Digest // the largest blob
	r.mu.Lock()
	for d, b := range r.blobs {
		if victim == "" || len(b) > len(r.blobs[victim]) {
			victim = d
		}
	}
	b := bytes.Clone(r.blobs[victim])
	b[len(b)/2] ^= 0x40
	r.blobs[victim] = b
	r.mu.Unlock()
	dst, eng, _ := engineAny(t, t.TempDir(), func(o *cache.Options) {
		o.Remote = func(context.Context) (cache.Remote, error) { return r, nil }
	})
	_, err := dst.Get(ctx, n)
	if !errors.Is(err, errdefs.ErrIntegrity) || !strings.Contains(err.Error(), victim.Encoded()) {
		t.Fatalf("get of a damaged remote blob: %v; want ErrIntegrity naming %s", err, victim)
	}
	if got := eng.committedLoads(); len(got) != 0 {
		t.Errorf("the engine committed %+v", got)
	}
	if names := listNames(t, dst); len(names) != 0 {
		t.Errorf("recorded %v", names)
	}
	if st, _ := dst.Stats(ctx); st.Blobs != 0 {
		t.Errorf("%d blobs left after the refused get", st.Blobs)
	}
}
