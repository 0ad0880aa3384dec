package cas

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/errdefs"
)

// Reader streams a blob's uncompressed content and verifies it as it goes:
// it returns io.EOF only after the sha256 of everything it produced matched
// the blob's digest, and an error wrapping errdefs.ErrIntegrity otherwise.
// The caller should hold the blob's lock (shared) while reading.
type Reader struct {
	want digest.Digest
	f    *os.File
	dec  *zstd.Decoder
	h    hash.Hash
	n    int64
	err  error
}

// Open returns a verifying reader of the blob for d. The error wraps
// errdefs.ErrNotFound when there is no such blob.
func (s *Store) Open(d digest.Digest) (*Reader, error) {
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
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(1<<30))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	return &Reader{want: d, f: f, dec: dec, h: digest.Canonical.Hash()}, nil
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

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.dec.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	switch {
	case err == io.EOF:
		got := digest.NewDigest(digest.Canonical, r.h)
		if got != r.want {
			r.err = fmt.Errorf("blob %s: %w: content hashes to %s (%d bytes)", r.want, errdefs.ErrIntegrity, got, r.n)
			return n, r.err
		}
		r.err = io.EOF
	case err != nil:
		// A damaged zstd stream (bad frame, checksum, truncation) is an
		// integrity failure of the blob too.
		r.err = fmt.Errorf("blob %s: %w: cannot decompress after %d bytes: %v", r.want, errdefs.ErrIntegrity, r.n, err)
		return n, r.err
	}
	return n, err
}

// WriteTo streams the remaining content to w through one 1 MiB buffer of
// its own (io.Copy's 32 KiB would cost a call per 32 KiB on a 10 GB image),
// verifying it as Read does.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Size is the number of uncompressed bytes produced so far.
func (r *Reader) Size() int64 { return r.n }

// Close releases the decoder and the file.
func (r *Reader) Close() error {
	r.dec.Close()
	return r.f.Close()
}
