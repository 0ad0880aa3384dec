// Package blobtest is the contract every blob store behind cache.Blobs
// must keep, as one suite (containerd's content testsuite is the model):
// an implementation's tests call Run with a constructor, and every
// implementation is held to the same promises.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
)

// Store is an implementation under test, and a way to damage a blob's
// stored bytes (as a disk or a hostile user would) for the integrity
// checks.
type Store struct {
	cache.Blobs
	// Corrupt changes d's stored bytes so that they no longer match d.
	Corrupt func(t *testing.T, d digest.Digest)
	// Fresh makes another empty store of the same kind (IngestStored
	// takes one store's stored bytes into another); nil skips that check.
	Fresh func(t *testing.T) Store
}

// Run runs the suite; newStore makes an empty store for one subtest.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"IngestRoundTrip", testIngestRoundTrip},
		{"IngestDeduplicates", testIngestDeduplicates},
		{"CheckVetoes", testCheckVetoes},
		{"FailingSource", testFailingSource},
		{"Missing", testMissing},
		{"Corrupt", testCorrupt},
		{"WalkDelete", testWalkDelete},
		{"Quarantine", testQuarantine},
		{"Locks", testLocks},
		{"ConcurrentIngest", testConcurrentIngest},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func content(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b[:n/2]); err != nil { // half random, half compressible
		t.Fatal(err)
	}
	return b
}

func ingest(t *testing.T, s Store, data []byte) *cas.Ingested {
	t.Helper()
	in, err := s.Ingest(t.Context(), bytes.NewReader(data), nil)
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	t.Cleanup(func() { in.Release() })
	return in
}

func readAll(t *testing.T, s Store, d digest.Digest) ([]byte, error) {
	t.Helper()
	r, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var b bytes.Buffer
	_, err = r.WriteTo(&b)
	if err == nil && r.Size() != int64(b.Len()) {
		t.Errorf("Size() = %d after reading %d bytes", r.Size(), b.Len())
	}
	return b.Bytes(), err
}

func testIngestRoundTrip(t *testing.T, s Store) {
	for _, n := range []int{0, 1, 4<<20 + 7} { // empty, tiny, more than one frame
		data := content(t, n)
		in := ingest(t, s, data)
		if in.Digest != digest.FromBytes(data) || in.Deduplicated {
			t.Fatalf("%d bytes: ingested as %s (dedup %v), want %s", n, in.Digest, in.Deduplicated, digest.FromBytes(data))
		}
		st, err := s.Stat(in.Digest)
		if err != nil || st.Digest != in.Digest || st.Stored <= 0 {
			t.Fatalf("Stat = %+v, %v", st, err)
		}
		got, err := readAll(t, s, in.Digest)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read back %d bytes, %v", n, len(got), err)
		}
		// Read, not only WriteTo, gives the same bytes.
		r, err := s.Open(in.Digest)
		if err != nil {
			t.Fatal(err)
		}
		got, err = io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: Read gave %d bytes, %v", n, len(got), err)
		}
		// Another store keeps those stored bytes as they are.
		if s.Fresh != nil && n > 0 {
			other := s.Fresh(t)
			raw, err := s.OpenStored(in.Digest)
			if err != nil {
				t.Fatal(err)
			}
			kept, err := other.IngestStored(context.Background(), raw, in.Digest, nil)
			raw.Close()
			if err != nil || kept.Stored != st.Stored || kept.Size != int64(n) {
				t.Fatalf("IngestStored of the stored bytes: %+v, %v", kept, err)
			}
			kept.Release()
			if got, err := readAll(t, other, in.Digest); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("IngestStored blob reads back %d bytes, %v", len(got), err)
			}
			raw, _ = s.OpenStored(in.Digest)
			_, err = other.IngestStored(context.Background(), raw, digest.FromString("not this"), nil)
			raw.Close()
			if !errors.Is(err, errdefs.ErrIntegrity) {
				t.Fatalf("IngestStored under another digest: %v, want ErrIntegrity", err)
			}
		}
		// The stored bytes are one zstd stream of the content, of the
		// stored size.
		raw, err := s.OpenStored(in.Digest)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := io.ReadAll(raw)
		raw.Close()
		if err != nil || int64(len(stored)) != st.Stored {
			t.Fatalf("%d bytes: OpenStored gave %d bytes (%v), Stat says %d", n, len(stored), err, st.Stored)
		}
		dec, err := zstd.NewReader(bytes.NewReader(stored))
		if err != nil {
			t.Fatal(err)
		}
		got, err = io.ReadAll(dec)
		dec.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: the stored zstd stream holds %d bytes, %v", n, len(got), err)
		}
		// CheckStored names those very bytes.
		if d, size, err := s.CheckStored(in.Digest); err != nil || d != digest.FromBytes(stored) || size != int64(len(stored)) {
			t.Fatalf("%d bytes: CheckStored = %s, %d, %v; want %s, %d", n, d, size, err, digest.FromBytes(stored), len(stored))
		}
	}
}

func testIngestDeduplicates(t *testing.T, s Store) {
	data := content(t, 1<<16)
	first := ingest(t, s, data)
	second := ingest(t, s, data)
	if !second.Deduplicated || second.Digest != first.Digest {
		t.Errorf("second ingest of the same bytes: %+v", second)
	}
	if n := countBlobs(t, s); n != 1 {
		t.Errorf("%d blobs for one content", n)
	}
}

func testCheckVetoes(t *testing.T, s Store) {
	veto := errors.New("not an image")
	data := content(t, 1<<12)
	var seen cas.Info
	_, err := s.Ingest(t.Context(), bytes.NewReader(data), func(i cas.Info) error { seen = i; return veto })
	if !errors.Is(err, veto) {
		t.Fatalf("Ingest with a vetoing check = %v", err)
	}
	if seen.Digest != digest.FromBytes(data) {
		t.Errorf("check saw %s, want the content's digest", seen.Digest)
	}
	if _, err := s.Stat(seen.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a vetoed blob was stored: %v", err)
	}
	if _, removed, err := s.CleanTmp(); err != nil || len(removed) != 0 {
		t.Errorf("a vetoed ingest left %v (%v)", removed, err)
	}
}

type failing struct{ n int }

func (f *failing) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := min(len(p), f.n)
	clear(p[:n])
	f.n -= n
	return n, nil
}

func testFailingSource(t *testing.T, s Store) {
	if _, err := s.Ingest(t.Context(), &failing{n: 1 << 20}, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Ingest of a failing reader = %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Ingest(ctx, bytes.NewReader(content(t, 1<<20)), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ingest with a cancelled context = %v", err)
	}
	if n := countBlobs(t, s); n != 0 {
		t.Errorf("%d blobs after failed ingests", n)
	}
	if _, removed, _ := s.CleanTmp(); len(removed) != 0 {
		t.Errorf("failed ingests left %v", removed)
	}
}

func testMissing(t *testing.T, s Store) {
	d := digest.FromString("never stored")
	if _, err := s.Open(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Open of a missing blob = %v", err)
	}
	if _, err := s.Stat(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Stat of a missing blob = %v", err)
	}
	if _, err := s.Open("sha256:nothex"); err == nil {
		t.Error("Open of a malformed digest succeeded")
	}
	if _, err := s.OpenStored(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("OpenStored of a missing blob = %v", err)
	}
	if err := s.DeleteNoSync(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Delete of a missing blob = %v", err)
	}
}

func testCorrupt(t *testing.T, s Store) {
	data := content(t, 1<<18)
	in := ingest(t, s, data)
	s.Corrupt(t, in.Digest)
	if _, err := readAll(t, s, in.Digest); !errors.Is(err, errdefs.ErrIntegrity) {
		t.Fatalf("reading a corrupted blob = %v, want ErrIntegrity", err)
	}
	if _, _, err := s.CheckStored(in.Digest); !errors.Is(err, errdefs.ErrIntegrity) {
		t.Fatalf("CheckStored of a corrupted blob = %v, want ErrIntegrity", err)
	}
}

func countBlobs(t *testing.T, s Store) int {
	t.Helper()
	n := 0
	if err := s.Walk(func(cas.Info) error { n++; return nil }, nil); err != nil {
		t.Fatal(err)
	}
	return n
}

func testWalkDelete(t *testing.T, s Store) {
	want := map[digest.Digest]bool{}
	for range 3 {
		want[ingest(t, s, content(t, 1<<10)).Digest] = true
	}
	got := map[digest.Digest]bool{}
	if err := s.Walk(func(i cas.Info) error { got[i.Digest] = true; return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Walk saw %v, want %v", got, want)
	}
	for d := range want {
		if !got[d] {
			t.Errorf("Walk missed %s", d)
		}
		if err := s.DeleteNoSync(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := countBlobs(t, s); n != 0 {
		t.Errorf("%d blobs after deleting all", n)
	}
}

func testQuarantine(t *testing.T, s Store) {
	in := ingest(t, s, content(t, 1<<10))
	if q := s.Quarantined(in.Digest); q != "" {
		t.Errorf("Quarantined before = %q", q)
	}
	dst, err := s.Quarantine(in.Digest)
	if err != nil || dst == "" {
		t.Fatalf("Quarantine = %q, %v", dst, err)
	}
	if _, err := s.Stat(in.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a quarantined blob is still served: %v", err)
	}
	if q := s.Quarantined(in.Digest); q != dst {
		t.Errorf("Quarantined = %q, want %q", q, dst)
	}
}

func testLocks(t *testing.T, s Store) {
	d := ingest(t, s, content(t, 1<<10)).Digest // holds its shared lock until cleanup
	if _, ok, err := s.TryLock(d, true); err != nil || ok {
		t.Fatalf("exclusive TryLock of a blob just ingested (shared lock held) = %v, %v", ok, err)
	}
	sh, ok, err := s.TryLock(d, false)
	if err != nil || !ok {
		t.Fatalf("a second shared lock = %v, %v", ok, err)
	}
	sh.Release()
	other := digest.FromString("other")
	x, err := s.Lock(t.Context(), other, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.TryLock(other, false); ok {
		t.Error("a shared lock while an exclusive one is held")
	}
	x.Release()
	if _, err := s.KeyLockPath("../x"); err == nil {
		t.Error("KeyLockPath accepted a path out of its directory")
	}
	if _, err := s.KeyLockPath(d.Encoded()); err == nil {
		t.Error("KeyLockPath accepted a blob's lock name")
	}
}

func testConcurrentIngest(t *testing.T, s Store) {
	data := content(t, 1<<20)
	var wg sync.WaitGroup
	dedup := make([]bool, 4)
	for i := range dedup {
		wg.Go(func() {
			in, err := s.Ingest(context.Background(), bytes.NewReader(data), nil)
			if err != nil {
				t.Errorf("Ingest: %v", err)
				return
			}
			dedup[i] = in.Deduplicated
			in.Release()
		})
	}
	wg.Wait()
	fresh := 0
	for _, d := range dedup {
		if !d {
			fresh++
		}
	}
	if fresh != 1 || countBlobs(t, s) != 1 {
		t.Errorf("%d ingests stored fresh copies, %d blobs; want 1 and 1", fresh, countBlobs(t, s))
	}
	if got, err := readAll(t, s, digest.FromBytes(data)); err != nil || !bytes.Equal(got, data) {
		t.Errorf("read back: %v", err)
	}
}
