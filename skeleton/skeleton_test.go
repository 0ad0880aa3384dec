package skeleton

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
)

// memStore is a payload store in memory.
type memStore map[digest.Digest][]byte

func (m memStore) put(_ string, _ int64, r io.Reader) (digest.Digest, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	d := digest.FromBytes(b)
	m[d] = b
	return d, nil
}

func (m memStore) open(d digest.Digest) (io.ReadCloser, error) {
	b, ok := m[d]
	if !ok {
		return nil, fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// roundTrip splits data and joins it back; it must come back byte for byte.
func roundTrip(t *testing.T, data []byte, minBlob int64) (*Result, []byte, memStore) {
	t.Helper()
	store := memStore{}
	var skel bytes.Buffer
	res, err := Split(bytes.NewReader(data), &skel, minBlob, store.put)
	if err != nil {
		t.Fatalf("Split: %v", err)
	}
	if res.Digest != digest.FromBytes(data) || res.Size != int64(len(data)) {
		t.Fatalf("Split result %s %d, want %s %d", res.Digest, res.Size, digest.FromBytes(data), len(data))
	}
	var out bytes.Buffer
	end, err := Join(&out, bytes.NewReader(skel.Bytes()), store.open)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if !bytes.Equal(out.Bytes(), data) || end.Digest != res.Digest {
		t.Fatalf("Join gave %d bytes (%s), want the original %d bytes", out.Len(), digest.FromBytes(out.Bytes()), len(data))
	}
	return res, skel.Bytes(), store
}

func TestRoundTripImages(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    testimage.Options
	}{
		{"docker-archive", testimage.Options{Tag: "t/a:1", Seed: 1, FileSize: 64 << 10}},
		{"oci layout", testimage.Options{Tag: "t/a:1", Seed: 2, Format: archive.FormatOCI, FileSize: 64 << 10}},
		{"metadata first", testimage.Options{Tag: "t/a:1", Seed: 3, MetadataFirst: true, FileSize: 64 << 10}},
		{"an empty layer", testimage.Options{Seed: 4, Layers: 2, FilesPerLayer: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, img, err := testimage.Bytes(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			res, skel, _ := roundTrip(t, data, 0)
			// The layers went out as blobs, keyed by their diffIDs (for a
			// docker-archive the layer tar's sha256 is its diffID).
			out := map[digest.Digest]bool{}
			for _, r := range res.Refs {
				out[r.Digest] = true
			}
			for _, d := range img.DiffIDs {
				if !out[d] && tc.o.FilesPerLayer != 0 {
					t.Errorf("layer %s was not split out (refs %v)", d, res.Refs)
				}
			}
			if tc.o.FilesPerLayer != 0 && len(skel) > 16<<10 {
				t.Errorf("skeleton of %d bytes: the payloads were not split out", len(skel))
			}
		})
	}
}

// handMade is a tar with what real layers hold: hard links, symlinks, long
// names (PAX and GNU), PAX records, directories, empty files, and a size
// right at the blob threshold; then extra zero blocks and trailing bytes.
func handMade(t *testing.T, format tar.Format) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mt := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	long := strings.Repeat("very-long-directory-name/", 12) + "file.txt"
	big := bytes.Repeat([]byte("0123456789abcdef"), DefaultMinBlob/16)
	for _, h := range []struct {
		hdr  tar.Header
		body []byte
	}{
		{tar.Header{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}, nil},
		{tar.Header{Name: "dir/empty", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt}, nil},
		{tar.Header{Name: "dir/big", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt}, big},
		{tar.Header{Name: "dir/hard", Typeflag: tar.TypeLink, Linkname: "dir/big", ModTime: mt}, nil},
		{tar.Header{Name: "dir/sym", Typeflag: tar.TypeSymlink, Linkname: "../" + long, ModTime: mt}, nil},
		{tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o600, ModTime: mt, PAXRecords: map[string]string{"SCHILY.xattr.user.x": "y"}}, append(big, 'x')},
		{tar.Header{Name: "dir/small", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt, Uname: "ünïcode"}, []byte("small\n")},
		{tar.Header{Name: "dir/again", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt}, big}, // the same payload twice
	} {
		hdr := h.hdr
		hdr.Size = int64(len(h.body))
		hdr.Format = format
		if format == tar.FormatUSTAR && (len(hdr.Name) > 100 || len(hdr.Linkname) > 100 || len(hdr.PAXRecords) > 0 || hdr.Uname != "") {
			continue
		}
		if format == tar.FormatGNU {
			hdr.PAXRecords = nil
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatalf("%s: %v", hdr.Name, err)
		}
		tw.Write(h.body)
	}
	tw.Close()
	b.Write(make([]byte, 2048))       // more zero blocks than the end needs
	b.WriteString("trailing garbage") // and bytes after them
	return b.Bytes()
}

func TestRoundTripHandMade(t *testing.T) {
	for _, f := range []tar.Format{tar.FormatPAX, tar.FormatGNU, tar.FormatUSTAR} {
		t.Run(f.String(), func(t *testing.T) {
			data := handMade(t, f)
			res, _, store := roundTrip(t, data, 0)
			if len(res.Refs) < 2 {
				t.Errorf("refs %v: the big payloads were not split out", res.Refs)
			}
			if f != tar.FormatUSTAR && len(store) != 2 {
				t.Errorf("%d distinct payloads stored, want 2 (one of them twice)", len(store))
			}
			for _, minBlob := range []int64{1, 1 << 30} { // everything out, nothing out
				roundTrip(t, data, minBlob)
			}
		})
	}
	roundTrip(t, nil, 0)                // empty input
	roundTrip(t, make([]byte, 1024), 0) // only the end-of-archive blocks
}

func TestSplitRefuses(t *testing.T) {
	if _, err := Split(bytes.NewReader(oldGNUSparse(t)), io.Discard, 0, memStore{}.put); !errors.Is(err, ErrNotSplittable) {
		t.Errorf("Split of a sparse file = %v, want ErrNotSplittable", err)
	}
	if _, err := Split(strings.NewReader(strings.Repeat("not a tar ", 100)), io.Discard, 0, memStore{}.put); err == nil {
		t.Error("Split of text succeeded")
	}
	putErr := errors.New("disk full")
	data := handMade(t, tar.FormatPAX)
	if _, err := Split(bytes.NewReader(data), io.Discard, 0, func(string, int64, io.Reader) (digest.Digest, error) { return "", putErr }); !errors.Is(err, putErr) {
		t.Errorf("Split with a failing put = %v", err)
	}
	// A put that stops reading early is refused: the skeleton would lie.
	if _, err := Split(bytes.NewReader(data), io.Discard, 0, func(_ string, _ int64, r io.Reader) (digest.Digest, error) {
		_, err := io.CopyN(io.Discard, r, 10)
		return digest.FromString("x"), err
	}); err == nil {
		t.Error("Split accepted a put that read 10 bytes of a payload")
	}
	// The digest put returns names the payload in the skeleton: garbage is refused.
	if _, err := Split(bytes.NewReader(data), io.Discard, 0, func(_ string, _ int64, r io.Reader) (digest.Digest, error) {
		_, err := io.Copy(io.Discard, r)
		return "md5:0", err
	}); err == nil {
		t.Error("Split accepted a put that returned no sha256")
	}
}

// TestJoinDetects: every way the pieces can be wrong is an error, and
// none of them passes as the original tar. Fails if Join stops checking a
// piece's size or digest, or the whole tar's digest.
func TestJoinDetects(t *testing.T) {
	data := handMade(t, tar.FormatPAX)
	res, skel, store := roundTrip(t, data, 0)
	blob := res.Refs[0].Digest
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	for _, tc := range []struct {
		name  string
		skel  []byte
		store memStore
		want  error
	}{
		{"flipped payload byte", skel, memStore{blob: flip(store[blob], 100), res.Refs[1].Digest: store[res.Refs[1].Digest]}, ErrMismatch},
		{"short payload", skel, memStore{blob: store[blob][:10], res.Refs[1].Digest: store[res.Refs[1].Digest]}, ErrMismatch},
		{"long payload", skel, memStore{blob: append(bytes.Clone(store[blob]), 'x'), res.Refs[1].Digest: store[res.Refs[1].Digest]}, ErrMismatch},
		{"missing payload", skel, memStore{}, errdefs.ErrNotFound},
		{"flipped header byte", flip(skel, len(magic)+10), store, ErrMismatch},
		{"truncated skeleton", skel[:len(skel)-5], store, ErrCorrupt},
		{"not a skeleton", []byte("hello"), store, ErrCorrupt},
		{"data after the end", append(bytes.Clone(skel), 'L'), store, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Join(&out, bytes.NewReader(tc.skel), tc.store.open)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Join = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzSplitJoin: whatever Split accepts, Join gives back byte for byte.
func FuzzSplitJoin(f *testing.F) {
	small, _, _ := testimage.Bytes(testimage.Options{Tag: "t/f:1", FileSize: 100, FilesPerLayer: 2})
	f.Add(small, int64(64))
	f.Add(handMadeFor(f), int64(1))
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, data []byte, minBlob int64) {
		store := memStore{}
		var skel bytes.Buffer
		res, err := Split(bytes.NewReader(data), &skel, minBlob, store.put)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if _, err := Join(&out, bytes.NewReader(skel.Bytes()), store.open); err != nil {
			t.Fatalf("Join of what Split wrote: %v", err)
		}
		if !bytes.Equal(out.Bytes(), data) || res.Digest != digest.FromBytes(data) {
			t.Fatalf("round trip changed %d bytes into %d", len(data), out.Len())
		}
	})
}

// FuzzDecode: any bytes as a skeleton: Join never panics, and succeeds only
// when what it wrote has the sha256 the skeleton names.
func FuzzDecode(f *testing.F) {
	store := memStore{}
	var skel bytes.Buffer
	Split(bytes.NewReader(handMadeFor(f)), &skel, 1, store.put)
	f.Add(skel.Bytes())
	f.Add([]byte(magic + "E\x00" + string(make([]byte, 32))))
	f.Fuzz(func(t *testing.T, data []byte) {
		h := sha256.New()
		end, err := Join(h, bytes.NewReader(data), store.open)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrMismatch) && !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("Join error %v is none of the documented ones", err)
			}
			return
		}
		if got := digest.NewDigest(digest.SHA256, h); got != end.Digest {
			t.Fatalf("Join succeeded with %s, skeleton names %s", got, end.Digest)
		}
	})
}

// handMadeFor is a small tar with a PAX long name, for fuzz seeds.
func handMadeFor(*testing.F) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Size: 5, Mode: 0o644})
	tw.Write([]byte("hello"))
	tw.WriteHeader(&tar.Header{Name: strings.Repeat("x", 150), Typeflag: tar.TypeSymlink, Linkname: "a", Format: tar.FormatPAX})
	tw.Close()
	return b.Bytes()
}

// oldGNUSparse is a tar holding one old-style GNU sparse file ('S'): 10
// bytes of data standing for a 20-byte file. archive/tar cannot write one.
func oldGNUSparse(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: "s", Typeflag: tar.TypeReg, Size: 10, Mode: 0o644, Format: tar.FormatGNU}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("0123456789"))
	tw.Close()
	h := b.Bytes()[:512]
	h[156] = 'S'
	copy(h[386:], fmt.Sprintf("%011o\x00%011o\x00", 10, 10)) // one entry: offset 10, 10 bytes
	copy(h[483:], fmt.Sprintf("%011o\x00", 20))              // real size
	for i := 148; i < 156; i++ {
		h[i] = ' '
	}
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b.Bytes()
}
