package decompress

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/imgcache/imgcache/errdefs"
)

// payload is tar-like input: a header block that starts with a name, then
// incompressible bytes.
func payload() []byte {
	b := make([]byte, 300<<10)
	copy(b, "manifest.json\x00")
	r := rand.New(rand.NewPCG(1, 2))
	for i := 512; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func compress(t testing.TB, f Format, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch f {
	case Gzip:
		w = gzip.NewWriter(&buf)
	case Xz:
		w, err = xz.NewWriter(&buf)
	case Zstd:
		w, err = zstd.NewWriter(&buf)
	default:
		t.Fatalf("no writer for %q", f)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bzip2Fixture is testdata/fixture.txt.bz2 (made with bzip2 -9: the
// standard library has no bzip2 writer) and the sha256 of its content.
func bzip2Fixture(t testing.TB) ([]byte, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fixture.txt.bz2"))
	if err != nil {
		t.Fatal(err)
	}
	return b, "5e1a5a0ec568437a57701cf87279153a4b5fca870097d5ea6867de976c6d70cb"
}

func TestDetect(t *testing.T) {
	bz, _ := bzip2Fixture(t)
	cases := []struct {
		name string
		head []byte
		want Format
	}{
		{"tar", []byte("manifest.json\x00\x00\x00"), None},
		{"empty", nil, None},
		{"gzip", compress(t, Gzip, []byte("x"))[:MagicLen], Gzip},
		{"gzip, other method", []byte{0x1f, 0x8b, 0x07, 0, 0, 0, 0, 0, 0, 0}, None},
		{"xz", compress(t, Xz, []byte("x"))[:MagicLen], Xz},
		{"zstd", compress(t, Zstd, []byte("x"))[:MagicLen], Zstd},
		{"zstd skippable frame", []byte{0x5e, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 0, 0}, Zstd},
		{"bzip2", bz[:MagicLen], Bzip2},
		{"bzip2 of nothing", []byte("BZh9\x17\x72\x45\x38\x50\x90"), Bzip2},
		{"BZh without a block", []byte("BZh9-not-a-block"), None},
		{"BZh0", []byte("BZh0\x31\x41\x59\x26\x53\x59"), None},
		{"bzip2 cut short", []byte("BZh9\x31\x41"), None},
		{"zstd magic cut short", []byte{0x28, 0xb5, 0x2f}, None},
	}
	for _, tc := range cases {
		if got := Detect(tc.head); got != tc.want {
			t.Errorf("%s: Detect(% x) = %q, want %q", tc.name, tc.head, got, tc.want)
		}
	}
}

func TestOpenRoundTrip(t *testing.T) {
	data := payload()
	for _, f := range []Format{Gzip, Xz, Zstd} {
		t.Run(string(f), func(t *testing.T) {
			r, err := Open(bytes.NewReader(compress(t, f, data)))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, data) || r.Format != f {
				t.Fatalf("read %d bytes, %v, format %q; want %d bytes of %q", len(got), err, r.Format, len(data), f)
			}
		})
	}
	t.Run("bzip2", func(t *testing.T) {
		bz, want := bzip2Fixture(t)
		r, err := Open(io.MultiReader(bytes.NewReader(bz))) // not a seeker
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		sum := sha256.Sum256(got)
		if err != nil || hex.EncodeToString(sum[:]) != want || r.Format != Bzip2 {
			t.Fatalf("bzip2 fixture: %v, format %q, sha256 %x", err, r.Format, sum)
		}
	})
}

// TestUncompressedPassesThrough: a plain file comes back as itself, at its
// offset (still seekable: put's prescan of known layers needs that); a
// plain stream comes back byte for byte.
func TestUncompressedPassesThrough(t *testing.T) {
	data := payload()
	p := filepath.Join(t.TempDir(), "image.tar")
	os.WriteFile(p, data, 0o644)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := Open(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.Reader != io.Reader(f) || r.Format != None {
		t.Fatalf("a plain file came back as %T (%q)", r.Reader, r.Format)
	}
	if off, _ := f.Seek(0, io.SeekCurrent); off != 0 {
		t.Fatalf("Open left the file at offset %d", off)
	}
	r, err = Open(io.MultiReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a plain stream: %d bytes, %v", len(got), err)
	}
	if r, err := Open(bytes.NewReader(nil)); err != nil || r.Format != None {
		t.Fatalf("empty input: %v", err)
	}
}

// TestTruncatedAndCorrupt: a compressed stream cut short or damaged is an
// *Error wrapping errdefs.ErrInvalid that names the format; never a clean
// end with fewer bytes.
func TestTruncatedAndCorrupt(t *testing.T) {
	data := payload()
	bz, _ := bzip2Fixture(t)
	inputs := map[Format][]byte{Gzip: compress(t, Gzip, data), Xz: compress(t, Xz, data), Zstd: compress(t, Zstd, data), Bzip2: bz}
	for f, c := range inputs {
		for _, cut := range []struct {
			name string
			in   []byte
			word string
		}{
			{"truncated", c[:len(c)/2], string(f) + "-compressed input"},
			{"tail cut", c[:len(c)-3], string(f) + "-compressed input"},
			{"flipped", flip(c, len(c)/2), string(f) + "-compressed input"},
		} {
			t.Run(string(f)+"/"+cut.name, func(t *testing.T) {
				r, err := Open(bytes.NewReader(cut.in))
				if err == nil {
					_, err = io.ReadAll(r)
				}
				var de *Error
				if !errors.As(err, &de) || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), cut.word) {
					t.Fatalf("got %v, want an *Error wrapping ErrInvalid saying %q", err, cut.word)
				}
			})
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x55
	return c
}

// TestSourceErrorIsNotBlamedOnTheCompression: the input's own read error
// (a failing disk, a cancelled pipe) comes back as it is.
func TestSourceErrorIsNotBlamedOnTheCompression(t *testing.T) {
	boom := errors.New("disk on fire")
	c := compress(t, Gzip, payload())
	r, err := Open(io.MultiReader(bytes.NewReader(c[:len(c)/2]), iotestErr{boom}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(r)
	var de *Error
	if !errors.Is(err, boom) || errors.As(err, &de) || errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("got %v (%T), want the source's own error", err, err)
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }
