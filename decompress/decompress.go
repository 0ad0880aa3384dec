// Package decompress recognises a compressed image archive by its magic
// bytes and reads it uncompressed: `docker save | gzip` files and the other
// compressions `docker load` accepts (gzip, bzip2, xz, zstd). It knows
// nothing of tar or images; a stream that is none of these is passed
// through untouched (and a seekable one stays seekable).
//
// Errors of the compressed stream itself, truncated or corrupt, are
// returned as *Error, which wraps errdefs.ErrInvalid: the input is bad, and
// the message says which compression failed after how many bytes.
package decompress

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/imgcache/imgcache/errdefs"
)

// Format is a compression, or None.
type Format string

// The formats Detect knows.
const (
	None  Format = ""
	Gzip  Format = "gzip"
	Bzip2 Format = "bzip2"
	Xz    Format = "xz"
	Zstd  Format = "zstd"
)

// MagicLen is how many leading bytes Detect needs to tell every format.
const MagicLen = 10

var (
	gzipMagic  = []byte{0x1f, 0x8b, 0x08} // with the deflate method, the only one defined
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	zstdMagic  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	bzipBlock  = []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59} // pi: a block header
	bzipEnd    = []byte{0x17, 0x72, 0x45, 0x38, 0x50, 0x90} // sqrt(pi): the end of an empty stream
	zstdSkipLo = byte(0x50)                                 // skippable frames: 0x184D2A50..5F, little-endian
)

// Detect names the compression whose magic head starts with (None when it
// is not one of them, or head is too short to tell). A tar never starts
// with these bytes: its first header starts with a file name.
func Detect(head []byte) Format {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return Gzip
	case bytes.HasPrefix(head, xzMagic):
		return Xz
	case bytes.HasPrefix(head, zstdMagic):
		return Zstd
	case len(head) >= 4 && head[0]&0xf0 == zstdSkipLo && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18:
		return Zstd
	case len(head) >= 10 && head[0] == 'B' && head[1] == 'Z' && head[2] == 'h' && head[3] >= '1' && head[3] <= '9' &&
		(bytes.Equal(head[4:10], bzipBlock) || bytes.Equal(head[4:10], bzipEnd)):
		return Bzip2
	}
	return None
}

// maxZstdWindow bounds the memory a zstd stream may ask for: 128 MiB, what
// `zstd --long` writes by default (plain levels use at most 8 MiB). A
// stream that declares more is refused as corrupt.
const maxZstdWindow = 1 << 27

// Error is a failure of the compressed stream: truncated or corrupt.
type Error struct {
	Format Format
	Offset int64 // uncompressed bytes read before the failure
	Err    error
}

func (e *Error) Error() string {
	what := "is corrupt"
	if errors.Is(e.Err, io.ErrUnexpectedEOF) {
		what = "is truncated (the compressed stream ends early)"
	}
	return fmt.Sprintf("the %s-compressed input %s after %d uncompressed bytes: %v", e.Format, what, e.Offset, e.Err)
}

func (e *Error) Unwrap() []error { return []error{errdefs.ErrInvalid, e.Err} }

// Reader is the uncompressed view of an input.
type Reader struct {
	io.Reader        // the uncompressed bytes
	Format    Format // None: the input was not compressed
	close     func() // releases the decompressor
	n         int64  // uncompressed bytes read
}

// Close releases the decompressor (not the input).
func (r *Reader) Close() error {
	if r.close != nil {
		r.close()
	}
	return nil
}

// Open detects r's compression and returns its uncompressed view. When r
// is not compressed, the view reads r itself: an io.ReadSeeker is left at
// its offset and returned as it is (still seekable); another reader is
// buffered to look at its head.
func Open(r io.Reader) (*Reader, error) {
	head, src, err := peek(r)
	if err != nil {
		return nil, err
	}
	f := Detect(head)
	if f == None {
		return &Reader{Reader: src}, nil
	}
	src = &sourceReader{r: src}
	out := &Reader{Format: f}
	switch f {
	case Gzip:
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, &Error{Format: f, Err: err}
		}
		out.close = func() { zr.Close() }
		out.Reader = zr
	case Bzip2:
		out.Reader = bzip2.NewReader(src)
	case Xz:
		xr, err := xz.NewReader(src)
		if err != nil {
			return nil, &Error{Format: f, Err: err}
		}
		out.Reader = xr
	case Zstd:
		zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, &Error{Format: f, Err: err}
		}
		out.close = zr.Close
		out.Reader = zr
	}
	out.Reader = &counted{r: out.Reader, owner: out}
	return out, nil
}

// counted counts the uncompressed bytes and wraps the decompressor's
// errors (but not the source's own: a failing disk is not bad input).
type counted struct {
	r     io.Reader
	owner *Reader
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.owner.n += int64(n)
	if err != nil && err != io.EOF {
		var se *sourceError
		if errors.As(err, &se) {
			return n, se.err
		}
		return n, &Error{Format: c.owner.Format, Offset: c.owner.n, Err: err}
	}
	return n, err
}

// peek reads r's first MagicLen bytes and returns them with a reader that
// still yields every byte of r. A seeker is read and seeked back.
func peek(r io.Reader) ([]byte, io.Reader, error) {
	if rs, ok := r.(io.ReadSeeker); ok {
		if start, err := rs.Seek(0, io.SeekCurrent); err == nil {
			head := make([]byte, MagicLen)
			n, err := io.ReadFull(rs, head)
			if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
				return nil, nil, err
			}
			if _, err := rs.Seek(start, io.SeekStart); err != nil {
				return nil, nil, err
			}
			return head[:n], r, nil
		}
	}
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(MagicLen)
	if err != nil && err != io.EOF {
		return nil, nil, err
	}
	return head, br, nil
}

// sourceReader marks the input's own errors, so that counted passes them on
// as they are instead of blaming the compression.
type sourceReader struct{ r io.Reader }

type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		return n, &sourceError{err}
	}
	return n, err
}
