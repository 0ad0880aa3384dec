package skeleton

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"

	"github.com/opencontainers/go-digest"
)

// MaxViewLiterals bounds the literal bytes a View keeps in memory.
const MaxViewLiterals = 256 << 20

// View is the tar a skeleton describes as an io.ReadSeeker that opens a
// payload only when it is read, so that a tar reader seeking over an
// entry never touches its blob (archive/tar's Reader seeks when it can).
//
// A payload read from its first byte to its last is checked against its
// size and sha256: the read that completes it fails, wrapping ErrMismatch,
// if the bytes differ. Bytes of a payload read any other way (after a
// seek into it) are not its content: they read as zeros and are for
// skipping only (archive/tar reads the last byte of an entry it skips).
// Literals come from the skeleton, which the caller has verified.
type View struct {
	segs    []segment
	size    int64
	end     Ref
	open    Open
	trusted bool // TrustOpen: the readers verify themselves

	pos int64
	cur *piece // the payload being read in order, if any
}

type segment struct {
	off int64
	lit []byte
	ref *Ref
}

func (s segment) len() int64 {
	if s.ref != nil {
		return s.ref.Size
	}
	return int64(len(s.lit))
}

// piece is a payload open for an in-order read.
type piece struct {
	seg  int
	rc   io.ReadCloser
	h    hash.Hash
	read int64
}

// NewView decodes the whole skeleton (its literals are kept, at most
// MaxViewLiterals bytes); open is called for the payloads read.
func NewView(skel []byte, open Open, opts ...Option) (*View, error) {
	dec, err := NewDecoder(bytes.NewReader(skel))
	if err != nil {
		return nil, err
	}
	v := &View{open: open, trusted: optionsOf(opts).trusted}
	var lits int64
	for {
		rec, err := dec.Next()
		if err == io.EOF {
			return v, nil
		}
		if err != nil {
			return nil, err
		}
		switch {
		case rec.Literal != nil:
			lits += int64(len(rec.Literal))
			if lits > MaxViewLiterals {
				return nil, fmt.Errorf("%w: more than %d bytes of literals", ErrCorrupt, MaxViewLiterals)
			}
			v.segs = append(v.segs, segment{off: v.size, lit: rec.Literal})
			v.size += int64(len(rec.Literal))
		case rec.Ref != nil:
			v.segs = append(v.segs, segment{off: v.size, ref: rec.Ref})
			v.size += rec.Ref.Size
		default:
			v.end = *rec.End
		}
	}
}

// Tar is the digest and size of the tar the view shows.
func (v *View) Tar() Ref { return v.end }

// Refs are the payloads the skeleton references, in tar order.
func (v *View) Refs() []Ref {
	var refs []Ref
	for _, s := range v.segs {
		if s.ref != nil {
			refs = append(refs, *s.ref)
		}
	}
	return refs
}

// Offset is the current position in the tar. After a tar reader's Next,
// it is where the entry's content starts (archive/tar reads no further).
func (v *View) Offset() int64 { return v.pos }

// RefAt returns the payload whose content starts at off, if one does.
func (v *View) RefAt(off int64) (Ref, bool) {
	i := sort.Search(len(v.segs), func(i int) bool { return v.segs[i].off >= off })
	if i < len(v.segs) && v.segs[i].off == off && v.segs[i].ref != nil {
		return *v.segs[i].ref, true
	}
	return Ref{}, false
}

// Read implements io.Reader.
func (v *View) Read(p []byte) (int, error) {
	if v.pos >= v.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	i := sort.Search(len(v.segs), func(i int) bool { return v.segs[i].off+v.segs[i].len() > v.pos })
	s := v.segs[i]
	in := v.pos - s.off
	if s.ref == nil {
		n := copy(p, s.lit[in:])
		v.pos += int64(n)
		return n, nil
	}
	want := min(int64(len(p)), s.ref.Size-in)
	if v.cur == nil || v.cur.seg != i || v.cur.read != in {
		if in != 0 { // out of order: skipping, not content
			v.closePiece()
			clear(p[:want])
			v.pos += want
			return int(want), nil
		}
		if err := v.openPiece(i); err != nil {
			return 0, err
		}
	}
	n, err := io.ReadFull(v.cur.rc, p[:want])
	if v.cur.h != nil {
		v.cur.h.Write(p[:n])
	}
	v.cur.read += int64(n)
	v.pos += int64(n)
	if err != nil {
		v.closePiece()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return n, fmt.Errorf("%w: payload %s ends after %d of %d bytes", ErrMismatch, s.ref.Digest, in+int64(n), s.ref.Size)
		}
		return n, fmt.Errorf("payload %s: %w", s.ref.Digest, err)
	}
	if v.cur.read == s.ref.Size {
		err := v.finishPiece(*s.ref)
		return n, err
	}
	return n, nil
}

func (v *View) openPiece(i int) error {
	v.closePiece()
	rc, err := v.open(v.segs[i].ref.Digest)
	if err != nil {
		return fmt.Errorf("payload %s: %w", v.segs[i].ref.Digest, err)
	}
	v.cur = &piece{seg: i, rc: rc}
	if !v.trusted {
		v.cur.h = sha256.New()
	}
	return nil
}

// finishPiece checks a payload read in full.
func (v *View) finishPiece(ref Ref) error {
	p := v.cur
	v.cur = nil
	defer p.rc.Close()
	if p.h == nil {
		if err := atEnd(p.rc); err != nil {
			return fmt.Errorf("payload %s: %w", ref.Digest, err)
		}
		return nil
	}
	if err := extra(p.rc); err != nil {
		return fmt.Errorf("%w: payload %s is longer than the skeleton's %d bytes", ErrMismatch, ref.Digest, ref.Size)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, p.h.Sum(nil)); got != ref.Digest {
		return fmt.Errorf("%w: payload has sha256 %s, the skeleton says %s", ErrMismatch, got, ref.Digest)
	}
	return nil
}

func (v *View) closePiece() {
	if v.cur != nil {
		v.cur.rc.Close()
		v.cur = nil
	}
}

// Seek implements io.Seeker.
func (v *View) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += v.pos
	case io.SeekEnd:
		off += v.size
	default:
		return v.pos, errors.New("skeleton: bad whence")
	}
	if off < 0 {
		return v.pos, errors.New("skeleton: seek before the start")
	}
	v.pos = off
	return off, nil
}

// Close releases the payload being read, if any.
func (v *View) Close() error {
	v.closePiece()
	return nil
}

// Named returns the skeleton's payloads with the names of the tar entries
// that hold them, in tar order, reading only headers (no payload is
// opened).
func Named(skel []byte) ([]Ref, error) {
	v, err := NewView(skel, func(d digest.Digest) (io.ReadCloser, error) {
		return nil, fmt.Errorf("payload %s: not read when naming", d)
	})
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(v)
	var refs []Ref
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return refs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if r, ok := v.RefAt(v.Offset()); ok && r.Size == hdr.Size && hdr.Size > 0 {
			r.Name = hdr.Name
			refs = append(refs, r)
		}
	}
}
