package skeleton

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
)

// countingStore records which payloads were opened.
type countingStore struct {
	memStore
	opened map[digest.Digest]int
}

func (c *countingStore) open(d digest.Digest) (io.ReadCloser, error) {
	c.opened[d]++
	return c.memStore.open(d)
}

// TestViewSkipsWithoutOpening: a tar reader over a View reads every entry's
// header, and the content of the entries it reads, byte for byte; the
// payloads of the entries it skips are never opened.
func TestViewSkipsWithoutOpening(t *testing.T) {
	data, _, err := testimage.Bytes(testimage.Options{Tag: "t/v:1", Seed: 7, Layers: 3, FileSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	res, skel, store := roundTrip(t, data, 0)
	if len(res.Refs) != 3 {
		t.Fatalf("%d payloads split out, want 3", len(res.Refs))
	}
	cs := &countingStore{memStore: store, opened: map[digest.Digest]int{}}
	v, err := NewView(skel, cs.open)
	if err != nil {
		t.Fatal(err)
	}
	if v.Tar().Digest != res.Digest || len(v.Refs()) != 3 {
		t.Fatalf("view: tar %v, %d refs", v.Tar(), len(v.Refs()))
	}
	skip := res.Refs[1].Name
	orig := tar.NewReader(bytes.NewReader(data))
	tr := tar.NewReader(v)
	for {
		want, err := orig.Next()
		got, gerr := tr.Next()
		if err == io.EOF {
			if gerr != io.EOF {
				t.Fatalf("view has more entries: %v %v", got, gerr)
			}
			break
		}
		if err != nil || gerr != nil || got.Name != want.Name || got.Size != want.Size {
			t.Fatalf("entry %v (%v), want %v (%v)", got, gerr, want, err)
		}
		if got.Name == skip {
			continue
		}
		wb, _ := io.ReadAll(orig)
		gb, err := io.ReadAll(tr)
		if err != nil || !bytes.Equal(gb, wb) {
			t.Fatalf("%s: %d bytes (%v), want %d", got.Name, len(gb), err, len(wb))
		}
	}
	for i, r := range res.Refs {
		if want := map[bool]int{true: 0, false: 1}[i == 1]; cs.opened[r.Digest] != want {
			t.Errorf("payload %s (%s) opened %d times, want %d", r.Name, r.Digest, cs.opened[r.Digest], want)
		}
	}
}

// TestViewTamper: a payload whose bytes differ fails the read that
// completes it, with ErrMismatch; so does a short one.
func TestViewTamper(t *testing.T) {
	data, _, err := testimage.Bytes(testimage.Options{Tag: "t/v:1", Seed: 8, Layers: 1, FileSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	res, skel, store := roundTrip(t, data, 0)
	d := res.Refs[0].Digest
	for name, mutate := range map[string]func([]byte) []byte{
		"flipped": func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/2] ^= 1; return c },
		"short":   func(b []byte) []byte { return b[:len(b)-1] },
		"long":    func(b []byte) []byte { return append(bytes.Clone(b), 0) },
	} {
		t.Run(name, func(t *testing.T) {
			bad := memStore{d: mutate(store[d])}
			v, err := NewView(skel, bad.open)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(io.Discard, v)
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("reading the view = %v, want ErrMismatch", err)
			}
		})
	}
	if _, err := NewView(skel[:len(skel)-1], store.open); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("NewView of a truncated skeleton = %v", err)
	}
}

// TestNamed: the payloads come back with their entry names, as Split saw
// them, without any payload opened.
func TestNamed(t *testing.T) {
	data, _, err := testimage.Bytes(testimage.Options{Tag: "t/n:1", Seed: 9, Layers: 3, FileSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	res, skel, _ := roundTrip(t, data, 0)
	got, err := Named(skel)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(res.Refs) {
		t.Fatalf("Named = %v, want %v", got, res.Refs)
	}
	for i := range got {
		if got[i] != res.Refs[i] {
			t.Errorf("ref %d = %+v, want %+v", i, got[i], res.Refs[i])
		}
	}
}

// FuzzView: any skeleton bytes either fail NewView with ErrCorrupt or give
// a view whose in-order read is the bytes Join writes (or fails the same
// documented ways), and whose naming pass fails only with ErrCorrupt.
func FuzzView(f *testing.F) {
	store := memStore{}
	var skel bytes.Buffer
	Split(bytes.NewReader(handMadeFor(nil)), &skel, 1, store.put)
	f.Add(skel.Bytes())
	f.Add([]byte(magic + "E\x00" + string(make([]byte, 32))))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := NewView(data, store.open)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("NewView error %v is not ErrCorrupt", err)
			}
			return
		}
		var viewed, joined bytes.Buffer
		verr := copyView(&viewed, v)
		_, jerr := Join(&joined, bytes.NewReader(data), store.open)
		// The view checks pieces, not the whole tar (its literals come
		// from a skeleton the caller verified): whatever Join accepts, the
		// view reads the same; whatever the view refuses, Join refuses.
		if jerr == nil && (verr != nil || !bytes.Equal(viewed.Bytes(), joined.Bytes())) {
			t.Fatalf("Join accepted; the view read %d bytes (%v), Join wrote %d", viewed.Len(), verr, joined.Len())
		}
		if verr != nil && jerr == nil {
			t.Fatalf("the view refused (%v) what Join accepted", verr)
		}
		if verr != nil && !errors.Is(verr, ErrMismatch) && !errors.Is(verr, errdefs.ErrNotFound) {
			t.Fatalf("view read error %v is none of the documented ones", verr)
		}
		if _, err := Named(data); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Named error %v is not ErrCorrupt", err)
		}
	})
}

// copyView reads v in order to w, reporting the first error (io.Copy would
// hide none either, but stops at the first).
func copyView(w io.Writer, v *View) error {
	_, err := io.Copy(w, v)
	return err
}
