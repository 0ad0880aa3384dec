// Package skeleton splits a tar into its large file payloads and a small
// skeleton from which the original tar is reassembled byte for byte, and
// reassembles it, verifying every piece.
//
// The skeleton holds, in order, the tar's raw bytes that are not large
// payloads (headers, PAX and GNU long-name records, padding, the
// end-of-archive blocks and anything after them, and small files such as
// manifest.json and configs) as literals, and a reference (sha256 and size)
// for every payload of at least MinBlob bytes, which the caller stores as a
// blob of its own. The raw header bytes come from tar-split's fork of
// archive/tar (RawAccounting), what moby's layer store and containers/storage
// use for the same purpose; the encoding is imgcache's own, keyed by sha256.
//
// Layout: the magic "imgcache-skeleton 1\n", then records, each a type
// byte: 'L' uvarint length, bytes (a literal); 'B' uvarint size, 32-byte
// sha256 (a payload); 'E' uvarint total size, 32-byte sha256 of the whole
// tar (the end; nothing may follow).
//
// skeleton knows nothing of images, names or where blobs live.
package skeleton

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/imgcache/imgcache/internal/aside"
	"github.com/opencontainers/go-digest"
	"github.com/vbatts/tar-split/archive/tar"
)

const magic = "imgcache-skeleton 1\n"

// MaxLiteral bounds one literal record (a PAX header can be large, a small
// file is small); a larger one is refused as corrupt.
const MaxLiteral = 64 << 20

// DefaultMinBlob is the payload size from which a file goes out as a blob.
const DefaultMinBlob = 64 << 10

// Errors. Every error of Join and Decode about the skeleton's own bytes
// wraps ErrCorrupt; a piece whose bytes do not match wraps ErrMismatch.
var (
	ErrCorrupt  = errors.New("skeleton corrupt")
	ErrMismatch = errors.New("content does not match the skeleton")
	// ErrTarDigest: the reassembled tar does not hash to the skeleton's
	// digest (it wraps ErrMismatch). With payloads that were not hashed one
	// by one, any of them, or the skeleton, can be the cause.
	ErrTarDigest = fmt.Errorf("%w: the reassembled tar", ErrMismatch)
	// ErrNotSplittable: the tar has entries whose payload as read is not
	// its bytes in the archive (sparse files); store it whole.
	ErrNotSplittable = errors.New("tar cannot be split")
)

// Ref is a payload split out of the tar.
type Ref struct {
	Name   string // the entry's name in the tar (for the caller; not in the skeleton)
	Digest digest.Digest
	Size   int64
}

// Result is what Split found.
type Result struct {
	Digest digest.Digest // sha256 of the whole tar
	Size   int64
	Refs   []Ref // in tar order; a payload present twice is listed twice
}

// Put stores one payload: it must read r to its end (size bytes), keep the
// bytes, and return their sha256, which Split records as the payload's
// digest. Split does not hash payloads itself: a store addresses what it
// keeps by its hash anyway, and a third pass over every layer (besides the
// whole tar's) would cost a core's worth of sha256 on the put's critical
// path. Join checks every payload against the recorded digest.
type Put func(name string, size int64, r io.Reader) (digest.Digest, error)

// Split reads the tar from r, writes its skeleton to w, and hands every
// payload of at least minBlob bytes (DefaultMinBlob when 0; at most
// MaxLiteral) to put. A tar
// that archive/tar cannot read is an error; so is a sparse entry
// (ErrNotSplittable). Memory stays bounded by MaxLiteral.
func Split(r io.Reader, w io.Writer, minBlob int64, put Put) (*Result, error) {
	if minBlob <= 0 {
		minBlob = DefaultMinBlob
	}
	minBlob = min(minBlob, MaxLiteral) // a literal never exceeds MaxLiteral
	// The whole tar is hashed on a goroutine of its own: put hashes each
	// payload too (and compresses the new ones), and two cores beat one.
	whole := aside.New()
	defer whole.Close()
	cr := &countingReader{r: io.TeeReader(r, whole)}
	enc := &encoder{w: bufio.NewWriterSize(w, 1<<16)}
	enc.raw([]byte(magic))
	tr := tar.NewReader(cr)
	tr.RawAccounting = true
	res := &Result{}
	for {
		hdr, err := tr.Next()
		if raw := tr.RawBytes(); len(raw) > 0 {
			enc.literal(raw)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("split: %w", err)
		}
		if hdr.Typeflag == tar.TypeGNUSparse || len(hdr.PAXRecords) > 0 && hasSparse(hdr.PAXRecords) {
			return nil, fmt.Errorf("split: %s is a sparse file: %w", hdr.Name, ErrNotSplittable)
		}
		if hdr.Size < minBlob {
			if err := enc.literalFrom(tr, hdr.Size); err != nil {
				return nil, fmt.Errorf("split: %s: %w", hdr.Name, err)
			}
			continue
		}
		ref, err := splitOut(tr, hdr, put)
		if err != nil {
			return nil, err
		}
		res.Refs = append(res.Refs, ref)
		enc.blob(ref)
	}
	// Anything after the end-of-archive blocks, in bounded literals.
	buf := make([]byte, 64<<10)
	for {
		n, err := cr.Read(buf)
		if n > 0 {
			enc.literal(buf[:n])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("split: %w", err)
		}
	}
	res.Size = cr.n
	res.Digest = whole.Sum()
	enc.end(res.Size, res.Digest)
	if enc.err == nil {
		enc.err = enc.w.Flush()
	}
	if enc.err != nil {
		return nil, fmt.Errorf("split: write skeleton: %w", enc.err)
	}
	return res, nil
}

func hasSparse(recs map[string]string) bool {
	for k := range recs {
		if len(k) > 11 && k[:11] == "GNU.sparse." {
			return true
		}
	}
	return false
}

// splitOut hands one payload to put, counting what put reads.
func splitOut(tr *tar.Reader, hdr *tar.Header, put Put) (Ref, error) {
	pr := &countingReader{r: io.LimitReader(tr, hdr.Size)}
	d, err := put(hdr.Name, hdr.Size, pr)
	if err != nil {
		return Ref{}, fmt.Errorf("split: store %s: %w", hdr.Name, err)
	}
	if pr.n != hdr.Size {
		if _, err := io.Copy(io.Discard, pr); err != nil {
			return Ref{}, fmt.Errorf("split: %s: %w", hdr.Name, err)
		}
		if pr.n != hdr.Size {
			return Ref{}, fmt.Errorf("split: %s: %w", hdr.Name, io.ErrUnexpectedEOF)
		}
		return Ref{}, fmt.Errorf("split: store %s: read %d of %d bytes", hdr.Name, pr.n, hdr.Size)
	}
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return Ref{}, fmt.Errorf("split: store %s: returned digest %q, not a sha256", hdr.Name, d)
	}
	return Ref{Name: hdr.Name, Digest: d, Size: hdr.Size}, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// encoder writes records; the first error sticks.
type encoder struct {
	w   *bufio.Writer
	err error
}

func (e *encoder) raw(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *encoder) uvarint(v uint64) {
	var b [binary.MaxVarintLen64]byte
	e.raw(b[:binary.PutUvarint(b[:], v)])
}

func (e *encoder) literal(b []byte) {
	for len(b) > 0 {
		n := min(len(b), MaxLiteral)
		e.raw([]byte{'L'})
		e.uvarint(uint64(n))
		e.raw(b[:n])
		b = b[n:]
	}
}

// literalFrom copies a small payload of size bytes from r as one literal.
func (e *encoder) literalFrom(r io.Reader, size int64) error {
	if size == 0 {
		return nil
	}
	e.raw([]byte{'L'})
	e.uvarint(uint64(size))
	if e.err != nil {
		return e.err
	}
	n, err := io.CopyN(e.w, r, size)
	if err == io.EOF && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		e.err = err
	}
	return err
}

func (e *encoder) blob(r Ref) {
	e.raw([]byte{'B'})
	e.uvarint(uint64(r.Size))
	b, err := hexBytes(r.Digest)
	if err != nil && e.err == nil {
		e.err = err
	}
	e.raw(b)
}

func (e *encoder) end(size int64, d digest.Digest) {
	e.raw([]byte{'E'})
	e.uvarint(uint64(size))
	b, err := hexBytes(d)
	if err != nil && e.err == nil {
		e.err = err
	}
	e.raw(b)
}

func hexBytes(d digest.Digest) ([]byte, error) {
	if d.Algorithm() != digest.SHA256 || d.Validate() != nil {
		return nil, fmt.Errorf("%w: digest %q", ErrCorrupt, d)
	}
	return hex.DecodeString(d.Encoded())
}

// Record is one decoded skeleton record: a literal, a payload reference,
// or (End) the whole tar's size and digest.
type Record struct {
	Literal []byte
	Ref     *Ref
	End     *Ref // Digest and Size of the whole tar
}

// Decoder reads a skeleton's records.
type Decoder struct {
	r    *bufio.Reader
	done bool
	off  int64 // position in the reassembled tar
}

// NewDecoder checks the magic and returns a decoder of the records.
func NewDecoder(r io.Reader) (*Decoder, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(br, m); err != nil || string(m) != magic {
		return nil, fmt.Errorf("%w: not an imgcache skeleton", ErrCorrupt)
	}
	return &Decoder{r: br}, nil
}

// Next returns the next record; after End it returns io.EOF, and it checks
// that nothing follows End and that End's size adds up.
func (d *Decoder) Next() (Record, error) {
	if d.done {
		return Record{}, io.EOF
	}
	t, err := d.r.ReadByte()
	if err != nil {
		return Record{}, fmt.Errorf("%w: ends without an end record", ErrCorrupt)
	}
	n, err := binary.ReadUvarint(d.r)
	if err != nil || n > 1<<62 {
		return Record{}, fmt.Errorf("%w: bad length", ErrCorrupt)
	}
	switch t {
	case 'L':
		if n == 0 || n > MaxLiteral {
			return Record{}, fmt.Errorf("%w: literal of %d bytes", ErrCorrupt, n)
		}
		// Grown as the bytes come (a corrupt length must not allocate
		// 64 MiB for a skeleton of a few bytes).
		b, err := io.ReadAll(io.LimitReader(d.r, int64(n)))
		if err != nil || uint64(len(b)) != n {
			return Record{}, fmt.Errorf("%w: truncated literal", ErrCorrupt)
		}
		d.off += int64(n)
		return Record{Literal: b}, nil
	case 'B', 'E':
		var sum [sha256.Size]byte
		if _, err := io.ReadFull(d.r, sum[:]); err != nil {
			return Record{}, fmt.Errorf("%w: truncated digest", ErrCorrupt)
		}
		ref := &Ref{Digest: digest.NewDigestFromBytes(digest.SHA256, sum[:]), Size: int64(n)}
		if t == 'B' {
			d.off += ref.Size
			return Record{Ref: ref}, nil
		}
		if ref.Size != d.off {
			return Record{}, fmt.Errorf("%w: end record says %d bytes, the records add up to %d", ErrCorrupt, ref.Size, d.off)
		}
		if _, err := d.r.ReadByte(); err != io.EOF {
			return Record{}, fmt.Errorf("%w: data after the end record", ErrCorrupt)
		}
		d.done = true
		return Record{End: ref}, nil
	}
	return Record{}, fmt.Errorf("%w: unknown record type %#02x", ErrCorrupt, t)
}

// Open returns a payload's stored bytes.
type Open func(d digest.Digest) (io.ReadCloser, error)

// Option changes how Join and NewView read payloads.
type Option func(*options)

type options struct{ trusted, noWhole bool }

// TrustOpen says that the readers open returns verify their own content:
// the read that reaches a payload's end fails if its bytes are not the
// digest's (imgcache's blob store does). The payloads are then not hashed
// a second time; their sizes, and the whole tar's digest (Join), still
// are checked, and a reader's failure wraps ErrMismatch.
func TrustOpen() Option { return func(o *options) { o.trusted = true } }

// SkipWholeDigest says that Join need not hash the whole tar: the caller
// verified the skeleton's own bytes (its literals and the payloads'
// digests), and every payload is checked, so the tar they make is the one
// the skeleton was cut from. It saves a second pass over every byte where
// the per-piece guarantee is the one promised (a load into an engine);
// export keeps the whole-tar check.
func SkipWholeDigest() Option { return func(o *options) { o.noWhole = true } }

func optionsOf(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Join writes the tar the skeleton describes to w: literals as they are,
// each payload from open, checked against its size and sha256, and the
// whole tar against its digest (hashed on a goroutine of its own). A
// mismatch is an error wrapping ErrMismatch; the caller must treat what
// was written as unverified until Join returns nil (the last bytes written
// are the tar's tail: hold them back from a consumer that could commit
// early). It returns the tar's digest and size.
func Join(w io.Writer, skel io.Reader, open Open, opts ...Option) (Ref, error) {
	o := optionsOf(opts)
	dec, err := NewDecoder(skel)
	if err != nil {
		return Ref{}, err
	}
	var whole *aside.SHA256
	out := w
	if !o.noWhole {
		whole = aside.New()
		defer whole.Close()
		out = io.MultiWriter(w, whole)
	}
	for {
		rec, err := dec.Next()
		if err == io.EOF {
			return Ref{}, fmt.Errorf("%w: no end record", ErrCorrupt)
		}
		if err != nil {
			return Ref{}, err
		}
		switch {
		case rec.Literal != nil:
			if _, err := out.Write(rec.Literal); err != nil {
				return Ref{}, err
			}
		case rec.Ref != nil:
			if err := copyPiece(out, *rec.Ref, open, o.trusted); err != nil {
				return Ref{}, err
			}
		default:
			if whole == nil {
				return *rec.End, nil
			}
			if got := whole.Sum(); got != rec.End.Digest {
				return Ref{}, fmt.Errorf("%w: its sha256 is %s, the skeleton says %s", ErrTarDigest, got, rec.End.Digest)
			}
			return *rec.End, nil
		}
	}
}

// copyPiece copies one payload, verifying its size and digest (or, when
// trusted, its size, and the reader's own verdict at its end).
func copyPiece(w io.Writer, ref Ref, open Open, trusted bool) error {
	rc, err := open(ref.Digest)
	if err != nil {
		return fmt.Errorf("payload %s: %w", ref.Digest, err)
	}
	defer rc.Close()
	if wt, ok := rc.(io.WriterTo); ok && trusted {
		// Straight from the reader's buffers; it reads to its end, where
		// it gives its verdict.
		lw := &limitWriter{w: w, left: ref.Size}
		n, err := wt.WriteTo(lw)
		switch {
		case lw.over:
			return fmt.Errorf("%w: payload %s is longer than the skeleton's %d bytes", ErrMismatch, ref.Digest, ref.Size)
		case err != nil:
			return fmt.Errorf("payload %s: %w", ref.Digest, err)
		case n != ref.Size:
			return fmt.Errorf("%w: payload %s holds %d bytes, the skeleton says %d", ErrMismatch, ref.Digest, n, ref.Size)
		}
		return nil
	}
	var h hash.Hash
	dst := w
	if !trusted {
		h = sha256.New()
		dst = io.MultiWriter(w, h)
	}
	// A trusted reader's errors pass as they are: its mismatch carries its
	// own category (errdefs.ErrIntegrity for the blob store), and an I/O
	// error is not a mismatch.
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, io.LimitReader(rc, ref.Size), make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("payload %s: %w", ref.Digest, err)
	}
	if n != ref.Size {
		return fmt.Errorf("%w: payload %s holds %d bytes, the skeleton says %d", ErrMismatch, ref.Digest, n, ref.Size)
	}
	if trusted {
		if err := atEnd(rc); err != nil {
			return fmt.Errorf("payload %s: %w", ref.Digest, err)
		}
		return nil
	}
	if err := extra(rc); err != nil {
		return fmt.Errorf("%w: payload %s is longer than the skeleton's %d bytes", ErrMismatch, ref.Digest, ref.Size)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != ref.Digest {
		return fmt.Errorf("%w: payload has sha256 %s, the skeleton says %s", ErrMismatch, got, ref.Digest)
	}
	return nil
}

// limitWriter passes at most left bytes on, and fails a write beyond.
type limitWriter struct {
	w    io.Writer
	left int64
	over bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.over = true
		return 0, ErrMismatch
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

// atEnd reads past a trusted payload's last byte: a reader that verifies
// its content reports a mismatch there; more bytes are one too.
func atEnd(r io.Reader) error {
	var b [1]byte
	for range 2 { // a reader may report EOF on the next call
		n, err := r.Read(b[:])
		if n > 0 {
			return fmt.Errorf("%w: longer than the skeleton says", ErrMismatch)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// extra reports an error if r has more bytes.
func extra(r io.Reader) error {
	var b [1]byte
	n, _ := r.Read(b[:])
	if n > 0 {
		return errors.New("extra bytes")
	}
	return nil
}
