package decompress

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzOpen: whatever the input, Detect and Open do not panic; an input
// Detect calls uncompressed reads back unchanged; a compressed one either
// decompresses or fails with an *Error (never another error: the source
// here cannot fail).
func FuzzOpen(f *testing.F) {
	f.Add([]byte("manifest.json\x00"))
	f.Add([]byte{})
	f.Add([]byte("BZh9\x17\x72\x45\x38\x50\x90"))
	f.Add([]byte("BZh9\x31\x41\x59\x26\x53\x59garbage"))
	f.Add([]byte{0x5e, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4})
	for _, fm := range []Format{Gzip, Xz, Zstd} {
		c := compress(f, fm, []byte("a small tar-ish payload\x00\x00"))
		f.Add(c)
		f.Add(c[:len(c)/2])
	}
	bz, _ := bzip2Fixture(f)
	f.Add(bz[:200])
	f.Fuzz(func(t *testing.T, in []byte) {
		fm := Detect(in)
		r, err := Open(bytes.NewReader(in))
		if err != nil {
			var de *Error
			if fm == None || !errors.As(err, &de) {
				t.Fatalf("Open(%q-detected input) = %v", fm, err)
			}
			return
		}
		defer r.Close()
		if r.Format != fm {
			t.Fatalf("Open says %q, Detect %q", r.Format, fm)
		}
		got, err := io.ReadAll(io.LimitReader(r, 64<<20))
		if fm == None {
			if err != nil || !bytes.Equal(got, in) {
				t.Fatalf("uncompressed input changed: %v", err)
			}
			return
		}
		var de *Error
		if err != nil && !errors.As(err, &de) {
			t.Fatalf("%s input: %v (%T), want nil or *Error", fm, err, err)
		}
	})
}
