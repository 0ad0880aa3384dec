package cas

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/bufpipe"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/internal/lockfile"
)

const blobSuffix = ".tar.zst"

// Info describes one stored blob.
type Info struct {
	Digest  digest.Digest // sha256 of the uncompressed content
	Size    int64         // uncompressed bytes (known after ingest or a full read; 0 from Walk)
	Stored  int64         // bytes on disk
	ModTime time.Time
}

// Store is a blob store rooted at a cache directory.
type Store struct {
	root  string
	level int
	// newCompressor makes the frame encoder (libzstd or pure Go).
	newCompressor func(level, workers int) (frameCompressor, error)
}

// Option configures a Store.
type Option func(*Store)

// WithLevel sets the zstd level (1–22, as the zstd CLI counts) for new blobs.
func WithLevel(level int) Option {
	return func(s *Store) { s.level = level }
}

// Open returns the store rooted at root, creating its directories.
func Open(root string, opts ...Option) (*Store, error) {
	s := &Store{root: root, level: 1, newCompressor: newFrameCompressor}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{s.blobDir(), s.tmpDir(), s.lockDir(), s.quarantineDir()} {
		if err := fsutil.MkdirAll(d); err != nil {
			return nil, fmt.Errorf("create cache directory %s: %w (check --dir and its permissions)", d, fsutil.Classify(err))
		}
	}
	return s, nil
}

func (s *Store) blobDir() string       { return filepath.Join(s.root, "blobs", "sha256") }
func (s *Store) tmpDir() string        { return filepath.Join(s.root, "tmp") }
func (s *Store) lockDir() string       { return filepath.Join(s.root, "locks") }
func (s *Store) quarantineDir() string { return filepath.Join(s.root, "quarantine") }

// validate refuses anything but a well-formed sha256 digest.
func validate(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w: %w", d, errdefs.ErrInvalid, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %q: %w: only sha256 is stored", d, errdefs.ErrInvalid)
	}
	return nil
}

// BlobPath is the one place a digest becomes a blob path.
func (s *Store) BlobPath(d digest.Digest) (string, error) {
	if err := validate(d); err != nil {
		return "", err
	}
	return filepath.Join(s.blobDir(), d.Encoded()+blobSuffix), nil
}

// RelPath is d's blob path relative to the cache root
// ("blobs/sha256/<hex>.tar.zst"): what links under names/ are built from.
func RelPath(d digest.Digest) string {
	return filepath.Join("blobs", "sha256", d.Encoded()+blobSuffix)
}

// ParseRelPath is the inverse of RelPath on the path's last two elements
// and its suffix: it returns the digest a link target names, or false.
func ParseRelPath(p string) (digest.Digest, bool) {
	hexpart, ok := strings.CutSuffix(filepath.Base(p), blobSuffix)
	d := digest.NewDigestFromEncoded(digest.SHA256, hexpart)
	if !ok || validate(d) != nil || filepath.Base(filepath.Dir(p)) != "sha256" || filepath.Base(filepath.Dir(filepath.Dir(p))) != "blobs" {
		return "", false
	}
	return d, true
}

// Quarantined is the newest quarantined copy of d's blob, or "" if none.
func (s *Store) Quarantined(d digest.Digest) string {
	if validate(d) != nil {
		return ""
	}
	q, _ := filepath.Glob(filepath.Join(s.quarantineDir(), d.Encoded()+"-*"+blobSuffix))
	if len(q) == 0 {
		return ""
	}
	return q[len(q)-1] // the names sort by time
}

// KeyLockPath is the path of a lock under locks/ for something other than a
// blob (key: "build-<name>"); keys that could name a blob's lock or leave
// the directory are refused.
func (s *Store) KeyLockPath(key string) (string, error) {
	if key == "" || strings.ContainsAny(key, "/\\\x00") || key == "." || key == ".." || validate(digest.NewDigestFromEncoded(digest.SHA256, key)) == nil {
		return "", fmt.Errorf("lock key %q: %w", key, errdefs.ErrInvalid)
	}
	return filepath.Join(s.lockDir(), key+".lock"), nil
}

func (s *Store) lockPath(d digest.Digest) (string, error) {
	if err := validate(d); err != nil {
		return "", err
	}
	return filepath.Join(s.lockDir(), d.Encoded()+".lock"), nil
}

// Lock takes the blob's lock, waiting until ctx is done: shared while reading,
// exclusive while loading or deleting.
func (s *Store) Lock(ctx context.Context, d digest.Digest, exclusive bool) (*lockfile.Lock, error) {
	p, err := s.lockPath(d)
	if err != nil {
		return nil, err
	}
	return lockfile.Acquire(ctx, p, exclusive)
}

// TryLock takes the blob's lock without waiting; ok is false when it is busy.
func (s *Store) TryLock(d digest.Digest, exclusive bool) (l *lockfile.Lock, ok bool, err error) {
	p, err := s.lockPath(d)
	if err != nil {
		return nil, false, err
	}
	return lockfile.TryAcquire(p, exclusive)
}

// Stat reports the stored blob for d, or an error wrapping errdefs.ErrNotFound.
func (s *Store) Stat(d digest.Digest) (Info, error) {
	p, err := s.BlobPath(d)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Info{}, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
		}
		return Info{}, fmt.Errorf("blob %s: %w", d, err)
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("blob %s: %s is not a regular file: %w", d, p, errdefs.ErrIntegrity)
	}
	return Info{Digest: d, Stored: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Ingested is a blob just published. Its shared lock is held so that no gc can
// delete it before the caller has recorded it; call Release when done.
type Ingested struct {
	Info
	Deduplicated bool // the blob already existed; the new copy was dropped
	lock         *lockfile.Lock
}

// Release drops the lock that protects the fresh blob.
func (in *Ingested) Release() error { return in.lock.Release() }

// Ingest streams r into the store: it hashes and compresses every byte into a
// locked temp file, then publishes the blob atomically. check, when not nil,
// runs once all bytes are written and before anything is published; its error
// aborts the ingest. Cancelling ctx aborts the copy. Nothing is left behind
// on failure.
func (s *Store) Ingest(ctx context.Context, r io.Reader, check func(Info) error) (*Ingested, error) {
	tmp, err := s.newTemp(ctx)
	if err != nil {
		return nil, err
	}
	defer tmp.discard()

	h := digest.Canonical.Digester()
	enc, err := newParallelEncoder(fsutil.Writeback(tmp.f, writebackEvery), s.level, s.newCompressor)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	n, err := enc.readFrom(ctx, r, h.Hash())
	if err != nil {
		enc.Abort()
		return nil, fmt.Errorf("ingest after %d bytes: %w", n, fsutil.Classify(err))
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("ingest: compress: %w", fsutil.Classify(err))
	}
	fi, err := tmp.seal()
	if err != nil {
		return nil, err
	}
	info := Info{Digest: h.Digest(), Size: n, Stored: fi.Size(), ModTime: fi.ModTime()}
	if check != nil {
		if err := check(info); err != nil {
			return nil, err
		}
	}
	return s.publish(ctx, tmp, info)
}

// IngestStored stores a blob from its stored form: r is one zstd stream
// (another imgcache's stored blob, as a remote tier serves it), kept as it
// is, not compressed again. Its content is decompressed and hashed on the
// way and must be want, or nothing is published (ErrIntegrity); a stream
// that is not valid zstd is ErrIntegrity too. When content is not nil the
// decompressed content is also written to it as it is checked: it is
// unverified until IngestStored returns nil (a consumer that could commit
// early must wait for that); a failure of content ends the ingest with
// content's error.
func (s *Store) IngestStored(ctx context.Context, r io.Reader, want digest.Digest, content io.Writer) (*Ingested, error) {
	if err := validate(want); err != nil {
		return nil, err
	}
	tmp, err := s.newTemp(ctx)
	if err != nil {
		return nil, err
	}
	defer tmp.discard()
	// The stored bytes go to the file and, through a buffered pipe, to the
	// decoder on its own goroutine: receiving and writing run alongside
	// decompressing and hashing (an io.Pipe made them take turns, 32 KiB
	// at a time).
	pr, pw := bufpipe.New(1<<20, 8)
	type hashed struct {
		d   digest.Digest
		n   int64
		err error
	}
	done := make(chan hashed, 1)
	cw := &errWriter{w: content}
	go func() {
		dec, err := newStream(pr)
		if err != nil {
			pr.CloseWithError(err)
			done <- hashed{err: err}
			return
		}
		h := digest.Canonical.Digester()
		var dst io.Writer = h.Hash()
		if content != nil {
			dst = io.MultiWriter(dst, cw)
		}
		n, err := dec.WriteTo(dst)
		dec.Close()
		if err == nil {
			_, err = io.Copy(io.Discard, pr) // nothing may follow the stream
		}
		pr.CloseWithError(err)
		done <- hashed{h.Digest(), n, err}
	}()
	w := fsutil.Writeback(tmp.f, writebackEvery)
	src := &ctxReader{ctx: ctx, r: r}
	_, err = io.CopyBuffer(io.MultiWriter(w, pw), src, make([]byte, 1<<20))
	pw.CloseWithError(err)
	got := <-done
	switch {
	case src.err != nil:
		return nil, fmt.Errorf("ingest: %w", src.err) // the source failed
	case cw.err != nil:
		return nil, fmt.Errorf("ingest: pass the content on: %w", cw.err) // the content's consumer failed
	case got.err != nil:
		return nil, fmt.Errorf("%w: blob %s: not a valid zstd stream: %v", errdefs.ErrIntegrity, want, got.err)
	case err != nil:
		return nil, fmt.Errorf("ingest: %w", fsutil.Classify(err)) // the disk failed
	case got.d != want:
		return nil, fmt.Errorf("%w: blob %s holds content of sha256 %s", errdefs.ErrIntegrity, want, got.d)
	}
	fi, err := tmp.seal()
	if err != nil {
		return nil, err
	}
	return s.publish(ctx, tmp, Info{Digest: want, Size: got.n, Stored: fi.Size(), ModTime: fi.ModTime()})
}

// errWriter remembers its writer's failure.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// ctxReader stops a copy when ctx is done, and remembers its source's
// failure.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// writebackEvery is how much of a new blob is written before its writeback
// to disk is started, so that the final fsync waits for the last part only.
const writebackEvery = 32 << 20

// publish renames the completed temp file into blobs/ (or drops it when the
// blob exists already), holding the blob's shared lock, which it hands over.
func (s *Store) publish(ctx context.Context, tmp *tempFile, info Info) (*Ingested, error) {
	lock, err := s.Lock(ctx, info.Digest, false)
	if err != nil {
		return nil, err
	}
	dst, _ := s.BlobPath(info.Digest)
	dedup := func() (*Ingested, error) {
		existing, err := s.Stat(info.Digest)
		if err != nil {
			lock.Release()
			return nil, fmt.Errorf("ingest: %w", err)
		}
		info.Stored, info.ModTime = existing.Stored, existing.ModTime
		return &Ingested{Info: info, Deduplicated: true, lock: lock}, nil // tmp.discard drops our copy
	}
	if _, err := s.Stat(info.Digest); err == nil {
		return dedup()
	}
	if err := fsutil.ReadOnly(tmp.path); err != nil {
		lock.Release()
		return nil, fmt.Errorf("ingest: %w", err)
	}
	// The shared lock keeps gc away but lets other ingests of the same
	// content publish at the same moment: only one of them may, so the blob
	// appears through link(2), which refuses to replace it. The temp name is
	// removed by discard.
	switch err := os.Link(tmp.path, dst); {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return dedup()
	case errors.Is(err, errors.ErrUnsupported) || errors.Is(err, fs.ErrPermission):
		// No hard links here (some FUSE and network filesystems): rename,
		// accepting that a racing ingest of the same bytes may replace ours.
		if err := os.Rename(tmp.path, dst); err != nil {
			lock.Release()
			return nil, fmt.Errorf("ingest: publish %s: %w", dst, fsutil.Classify(err))
		}
		tmp.published = true
	default:
		lock.Release()
		return nil, fmt.Errorf("ingest: publish %s: %w", dst, fsutil.Classify(err))
	}
	if err := fsutil.SyncDir(s.blobDir()); err != nil {
		lock.Release()
		return nil, fmt.Errorf("ingest: fsync %s: %w", s.blobDir(), fsutil.Classify(err))
	}
	return &Ingested{Info: info, lock: lock}, nil
}

// tempFile is an ingest in progress: tmp/<id>.tar.zst, guarded by an
// exclusive lock on tmp/<id>.lock that is taken before the data file exists.
type tempFile struct {
	path      string
	f         *os.File
	lock      *lockfile.Lock
	published bool
}

func (s *Store) newTemp(ctx context.Context) (*tempFile, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	id := "ingest-" + hex.EncodeToString(b[:])
	lock, err := lockfile.Acquire(ctx, filepath.Join(s.tmpDir(), id+".lock"), true)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", fsutil.Classify(err))
	}
	p := filepath.Join(s.tmpDir(), id+blobSuffix)
	f, err := fsutil.CreateExcl(p)
	if err != nil {
		lock.Remove()
		return nil, fmt.Errorf("ingest: create temp file in %s: %w", s.tmpDir(), fsutil.Classify(err))
	}
	return &tempFile{path: p, f: f, lock: lock}, nil
}

// seal makes the written temp file durable and closes it.
func (t *tempFile) seal() (fs.FileInfo, error) {
	if err := t.f.Sync(); err != nil {
		return nil, fmt.Errorf("ingest: fsync %s: %w", t.f.Name(), fsutil.Classify(err))
	}
	fi, err := t.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if err := t.f.Close(); err != nil {
		return nil, fmt.Errorf("ingest: close %s: %w", t.f.Name(), fsutil.Classify(err))
	}
	t.f = nil
	return fi, nil
}

// discard removes the temp file unless it was published, then its lock.
func (t *tempFile) discard() {
	if t.f != nil {
		t.f.Close()
	}
	if !t.published {
		os.Remove(t.path)
	}
	t.lock.Remove()
}

// CleanTmp removes leftovers of ingests whose process is gone: data files in
// tmp/ whose lock nobody holds, and lock files without data. It returns the
// bytes reclaimed and the files removed.
func (s *Store) CleanTmp() (freed int64, removed []string, err error) {
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return 0, nil, fmt.Errorf("clean %s: %w", s.tmpDir(), err)
	}
	for _, e := range ents {
		name := e.Name()
		id, ok := strings.CutSuffix(name, ".lock")
		if !ok {
			id, ok = strings.CutSuffix(name, blobSuffix)
			if !ok || !e.Type().IsRegular() {
				continue
			}
			if _, err := os.Lstat(filepath.Join(s.tmpDir(), id+".lock")); err == nil {
				continue // handled through its lock file
			}
		}
		lock, ok, err := lockfile.TryAcquire(filepath.Join(s.tmpDir(), id+".lock"), true)
		if err != nil || !ok {
			continue // a live ingest
		}
		data := filepath.Join(s.tmpDir(), id+blobSuffix)
		if fi, err := os.Lstat(data); err == nil && fi.Mode().IsRegular() {
			if os.Remove(data) == nil {
				freed += fi.Size()
				removed = append(removed, data)
			}
		}
		lock.Remove()
	}
	return freed, removed, nil
}

// CleanLocks removes lock files of blobs that no longer exist, when nobody
// holds them.
func (s *Store) CleanLocks() (removed int, err error) {
	ents, err := os.ReadDir(s.lockDir())
	if err != nil {
		return 0, fmt.Errorf("clean %s: %w", s.lockDir(), err)
	}
	for _, e := range ents {
		hexpart, ok := strings.CutSuffix(e.Name(), ".lock")
		d := digest.NewDigestFromEncoded(digest.SHA256, hexpart)
		if !ok || validate(d) != nil {
			continue
		}
		if _, err := s.Stat(d); !errors.Is(err, errdefs.ErrNotFound) {
			continue
		}
		lock, ok, err := s.TryLock(d, true)
		if err != nil || !ok {
			continue
		}
		if _, err := s.Stat(d); errors.Is(err, errdefs.ErrNotFound) {
			if lock.Remove() == nil {
				removed++
			}
			continue
		}
		lock.Release()
	}
	return removed, nil
}

// Delete removes the blob and fsyncs the directory. The caller must hold its
// exclusive lock.
func (s *Store) Delete(d digest.Digest) error {
	if err := s.DeleteNoSync(d); err != nil {
		return err
	}
	return s.Sync()
}

// Sync fsyncs the blob directory, making earlier DeleteNoSync calls durable.
func (s *Store) Sync() error { return fsutil.SyncDir(s.blobDir()) }

// DeleteNoSync removes the blob without fsyncing the directory, for batches
// that call Sync once at the end. A crash may bring such a blob back; it is
// then unreferenced and the next gc deletes it again.
func (s *Store) DeleteNoSync(d digest.Digest) error {
	p, err := s.BlobPath(d)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete blob %s: %w", d, errdefs.ErrNotFound)
		}
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	return nil
}

// Quarantine moves a blob that failed verification to quarantine/, where it
// is kept for inspection. The caller must hold its exclusive lock. It returns
// the new path.
func (s *Store) Quarantine(d digest.Digest) (string, error) {
	p, err := s.BlobPath(d)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(s.quarantineDir(), fmt.Sprintf("%s-%s%s", d.Encoded(), time.Now().UTC().Format("20060102T150405.000000000Z"), blobSuffix))
	if err := os.Rename(p, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("quarantine blob %s: %w", d, errdefs.ErrNotFound)
		}
		return "", fmt.Errorf("quarantine blob %s: %w", d, err)
	}
	if err := fsutil.SyncDir(s.blobDir()); err != nil {
		return dst, err
	}
	return dst, fsutil.SyncDir(s.quarantineDir())
}

// Walk calls fn for every stored blob, in directory order. Files that are not
// well-named blobs are reported through stray (may be nil).
func (s *Store) Walk(fn func(Info) error, stray func(path string)) error {
	ents, err := os.ReadDir(s.blobDir())
	if err != nil {
		return fmt.Errorf("walk %s: %w", s.blobDir(), err)
	}
	for _, e := range ents {
		p := filepath.Join(s.blobDir(), e.Name())
		hexpart, ok := strings.CutSuffix(e.Name(), blobSuffix)
		d := digest.NewDigestFromEncoded(digest.SHA256, hexpart)
		if !ok || validate(d) != nil || !e.Type().IsRegular() {
			if stray != nil {
				stray(p)
			}
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // deleted meanwhile
		}
		if err := fn(Info{Digest: d, Stored: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}
