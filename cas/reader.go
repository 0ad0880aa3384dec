package cas

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/aside"
)

// Reader streams a blob's uncompressed content and verifies it as it goes:
// it returns io.EOF only after the sha256 of everything it produced matched
// the blob's digest, and an error wrapping errdefs.ErrIntegrity otherwise.
// The caller should hold the blob's lock (shared) while reading.
type Reader struct {
	want digest.Digest
	f    *os.File
	dec  *blobDecoder
	h    hash.Hash
	n    int64
	err  error
}

// ReadOption changes how Open reads a blob.
type ReadOption func(*readOptions)

type readOptions struct{ parallel, skipHash bool }

// Parallel decompresses the blob's frames on all cores: the fastest read
// when the cores are free (export, verify). Without it one core
// decompresses, the least CPU in all: right when another process needs the
// cores (a load, where the daemon unpacks what it is sent).
func Parallel() ReadOption { return func(o *readOptions) { o.parallel = true } }

// SkipHash leaves the content unhashed: the caller checks a digest that
// covers every byte (a whole tar's) and re-opens the blob without it to
// find the culprit on a mismatch. The size, and zstd's own frame
// checksums where present, are still checked; the reader never reports a
// content mismatch itself.
func SkipHash() ReadOption { return func(o *readOptions) { o.skipHash = true } }

// Open returns a verifying reader of the blob for d. The error wraps
// errdefs.ErrNotFound when there is no such blob.
func (s *Store) Open(d digest.Digest, opts ...ReadOption) (*Reader, error) {
	var o readOptions
	for _, f := range opts {
		f(&o)
	}
	p, err := s.BlobPath(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	var dec *blobDecoder
	if o.parallel {
		dec, err = newBlobDecoder(f)
	} else {
		dec, err = newStreamDecoder(f)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	r := &Reader{want: d, f: f, dec: dec}
	if !o.skipHash {
		r.h = digest.Canonical.Hash()
	}
	return r, nil
}

// OpenStored opens the blob's stored bytes as they are on disk: one zstd
// stream of its content (what a remote tier uploads as is). Nothing is
// verified; the stream's size is the file's. The error wraps
// errdefs.ErrNotFound when there is no such blob.
func (s *Store) OpenStored(d digest.Digest) (*os.File, error) {
	p, err := s.BlobPath(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	return f, nil
}

// CheckStored hashes blob d's stored bytes (what a registry keys the blob
// by) and checks on the way that they decompress to d's content, so that
// a damaged blob is never handed on as it is. It returns the stored
// bytes' digest and size; a blob that does not hold d wraps
// errdefs.ErrIntegrity.
func (s *Store) CheckStored(d digest.Digest) (digest.Digest, int64, error) {
	f, err := s.OpenStored(d)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	stored := aside.New() // hashed beside the decoding
	defer stored.Close()
	dec, err := newStream(io.TeeReader(f, stored))
	if err != nil {
		return "", 0, fmt.Errorf("blob %s: %w", d, err)
	}
	h := digest.Canonical.Digester()
	_, err = dec.WriteTo(h.Hash())
	dec.Close() // before stored takes the rest: the decoder reads no more
	if err != nil {
		return "", 0, fmt.Errorf("%w: blob %s: its stored bytes are not a valid zstd stream: %v", errdefs.ErrIntegrity, d, err)
	}
	if got := h.Digest(); got != d {
		return "", 0, fmt.Errorf("%w: blob %s holds content of sha256 %s", errdefs.ErrIntegrity, d, got)
	}
	n, err := stored.ReadFrom(f) // what the decoder left unread would be uploaded too: refused below
	if err != nil {
		return "", 0, fmt.Errorf("read blob %s: %w", d, err)
	}
	if n > 0 {
		return "", 0, fmt.Errorf("%w: blob %s: %d bytes follow its zstd stream", errdefs.ErrIntegrity, d, n)
	}
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	return stored.Sum(), fi.Size(), nil
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.dec.Read(p)
	return n, r.account(p[:n], err)
}

// account hashes what the decoder produced and turns its error into the
// reader's verdict: io.EOF only once the content matched the digest.
func (r *Reader) account(b []byte, err error) error {
	if r.h != nil {
		r.h.Write(b)
	}
	r.n += int64(len(b))
	switch {
	case err == io.EOF && r.h == nil: // SkipHash: the caller checks
		r.err = io.EOF
	case err == io.EOF:
		got := digest.NewDigest(digest.Canonical, r.h)
		if got != r.want {
			r.err = fmt.Errorf("blob %s: %w: content hashes to %s (%d bytes)", r.want, errdefs.ErrIntegrity, got, r.n)
			return r.err
		}
		r.err = io.EOF
	case err != nil:
		// A damaged zstd stream (bad frame, checksum, truncation) is an
		// integrity failure of the blob too.
		r.err = fmt.Errorf("blob %s: %w: cannot decompress after %d bytes: %v", r.want, errdefs.ErrIntegrity, r.n, err)
	}
	return r.err
}

// WriteTo streams the remaining content to w straight from the decoder's
// frames (no copy through a buffer of its own), verifying it as Read does.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if z := r.dec.whole(); z != nil && r.n == 0 && r.err == nil {
		// One streaming decoder, untouched: its own WriteTo writes from
		// its block buffers.
		hw := &hashingWriter{r: r, w: w}
		_, err := z.WriteTo(hw)
		switch {
		case hw.err != nil:
			r.err = hw.err
		case err != nil:
			r.account(nil, err)
		default:
			r.account(nil, io.EOF)
		}
		if r.err == io.EOF {
			return hw.n, nil
		}
		return hw.n, r.err
	}
	var total int64
	for r.err == nil {
		b, err := r.dec.next()
		if err := r.account(b, err); err != nil && err != io.EOF {
			return total, err
		}
		if len(b) > 0 {
			m, werr := w.Write(b)
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
	}
	if r.err == io.EOF {
		return total, nil
	}
	return total, r.err
}

// hashingWriter hashes and counts what it passes to w.
type hashingWriter struct {
	r   *Reader
	w   io.Writer
	n   int64
	err error // w's failure
}

func (h *hashingWriter) Write(p []byte) (int, error) {
	if h.r.h != nil {
		h.r.h.Write(p)
	}
	h.r.n += int64(len(p))
	n, err := h.w.Write(p)
	h.n += int64(n)
	if err != nil {
		h.err = err
	}
	return n, err
}

// Size is the number of uncompressed bytes produced so far.
func (r *Reader) Size() int64 { return r.n }

// Close releases the decoder and the file.
func (r *Reader) Close() error {
	r.dec.Close()
	return r.f.Close()
}
