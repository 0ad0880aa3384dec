package cache

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/internal/lockfile"
)

// The blob store as the cache uses it, in containerd's content-store style:
// small interfaces by role, so that another backend (a layer store, a
// remote tier) can sit behind them. cas.Store implements them all
// (CASBlobs); every implementation runs the contract suite in
// cache/blobtest.

// BlobReader reads one blob's uncompressed content and verifies it: the
// read that reaches the end fails, wrapping errdefs.ErrIntegrity, if the
// content does not match its digest.
type BlobReader interface {
	io.Reader
	io.WriterTo
	io.Closer
	// Size is the number of uncompressed bytes read so far.
	Size() int64
}

// BlobProvider opens stored blobs.
type BlobProvider interface {
	// Open returns a verifying reader (unless cas.SkipHash), or an error
	// wrapping errdefs.ErrNotFound.
	Open(d digest.Digest, opts ...cas.ReadOption) (BlobReader, error)
	// Stat reports the stored blob, or an error wrapping errdefs.ErrNotFound.
	Stat(d digest.Digest) (cas.Info, error)
	// OpenStored opens the stored bytes, unverified: one zstd stream of
	// the content (what the remote tier uploads as is). ErrNotFound when
	// there is no such blob.
	OpenStored(d digest.Digest) (io.ReadCloser, error)
	// CheckStored hashes the stored bytes and checks that they hold d's
	// content (else ErrIntegrity); it returns their digest and size.
	CheckStored(d digest.Digest) (digest.Digest, int64, error)
}

// BlobIngester stores new blobs.
type BlobIngester interface {
	// Ingest stores r under the sha256 of its bytes; check runs before the
	// blob is published and can veto it. The result holds the blob's
	// shared lock until Release, so that no gc deletes it before it is named.
	Ingest(ctx context.Context, r io.Reader, check func(cas.Info) error) (*cas.Ingested, error)
	// IngestStored stores a blob from its stored form (one zstd stream, as
	// another store holds it), kept as is; its content must hash to want,
	// else nothing is published and the error wraps ErrIntegrity. Content,
	// if not nil, gets the content as it is checked (unverified until nil
	// is returned).
	IngestStored(ctx context.Context, r io.Reader, want digest.Digest, content io.Writer) (*cas.Ingested, error)
}

// BlobLocker guards blobs across processes: shared while reading, exclusive
// while loading or deleting.
type BlobLocker interface {
	Lock(ctx context.Context, d digest.Digest, exclusive bool) (*lockfile.Lock, error)
	TryLock(d digest.Digest, exclusive bool) (l *lockfile.Lock, ok bool, err error)
	// KeyLockPath is the path of a lock for something other than a blob.
	KeyLockPath(key string) (string, error)
}

// BlobManager walks, removes and quarantines blobs, and clears leftovers.
type BlobManager interface {
	// Walk calls fn for every blob; files that are no blobs go to stray.
	Walk(fn func(cas.Info) error, stray func(path string)) error
	// DeleteNoSync deletes a blob (the caller holds its exclusive lock);
	// Sync makes a batch of deletes durable.
	DeleteNoSync(d digest.Digest) error
	Sync() error
	// Quarantine moves a bad blob aside and returns where; Quarantined is
	// the newest quarantined copy of d, or "".
	Quarantine(d digest.Digest) (string, error)
	Quarantined(d digest.Digest) string
	// CleanTmp removes dead ingests; CleanLocks orphaned lock files.
	CleanTmp() (freed int64, removed []string, err error)
	CleanLocks() (removed int, err error)
}

// Blobs is everything the cache needs of its blob store.
type Blobs interface {
	BlobProvider
	BlobIngester
	BlobLocker
	BlobManager
}

// CASBlobs is the cas.Store behind the Blobs interfaces.
func CASBlobs(s *cas.Store) Blobs { return casBlobs{s} }

type casBlobs struct{ *cas.Store }

func (b casBlobs) OpenStored(d digest.Digest) (io.ReadCloser, error) {
	f, err := b.Store.OpenStored(d)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (b casBlobs) Open(d digest.Digest, opts ...cas.ReadOption) (BlobReader, error) {
	r, err := b.Store.Open(d, opts...)
	if err != nil {
		return nil, err
	}
	return r, nil
}
