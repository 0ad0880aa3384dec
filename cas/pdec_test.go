package cas

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// streamOf compresses data as the store writes blobs: independent
// frameSize frames, in parallel.
func streamOf(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	p, err := newParallelEncoder(&buf, 3, newGoCompressor)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.readFrom(context.Background(), bytes.NewReader(data), io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// noFCS is one streaming frame whose content size is not declared.
func noFCS(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

func skippable(payload []byte) []byte {
	b := []byte{0x50, 0x2a, 0x4d, 0x18, byte(len(payload)), byte(len(payload) >> 8), 0, 0}
	return append(b, payload...)
}

func sample(n int) []byte {
	b := make([]byte, n)
	for off := 0; off < n; off += len(samplePattern) {
		copy(b[off:], samplePattern)
		b[off] = byte(off >> 20) // no two MiB alike
	}
	return b
}

// samplePattern is a partly compressible MiB, made once: byte by byte
// under the race detector, 80 MiB of samples took 20 s.
var samplePattern = func() []byte {
	b := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		if i%7 == 0 {
			b[i] = byte(r.IntN(256))
		} else {
			b[i] = byte(i / 1000)
		}
	}
	return b
}()

func decodeAll(t testing.TB, parallel bool, stream []byte) ([]byte, error) {
	got, _, err := decodeCounting(t, parallel, stream)
	return got, err
}

// decodeCounting also says how many frames were decoded in parallel.
func decodeCounting(t testing.TB, parallel bool, stream []byte) ([]byte, int, error) {
	t.Helper()
	var d *blobDecoder
	var err error
	if parallel {
		d, err = newBlobDecoder(bytes.NewReader(stream))
	} else {
		d, err = newStreamDecoder(bytes.NewReader(stream))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b, err := io.ReadAll(d)
	return b, d.frames, err
}

// TestBlobDecoderReadsAnyStream: the parallel decoder gives what one
// streaming decoder gives, for the store's frames and for what it hands
// over (undeclared sizes, big frames, skippable frames), in any mix.
func TestBlobDecoderReadsAnyStream(t *testing.T) {
	big := sample(maxParallelFrame + 1000)
	enc, _ := zstd.NewWriter(nil)
	cases := map[string]struct {
		stream []byte
		want   []byte
	}{
		"empty stream":                         {nil, nil},
		"one empty frame":                      {streamOf(t, nil), nil},
		"one byte":                             {streamOf(t, []byte{7}), []byte{7}},
		"one frame exactly":                    {streamOf(t, sample(frameSize)), sample(frameSize)},
		"frames and a remainder":               {streamOf(t, sample(3*frameSize+5)), sample(3*frameSize + 5)},
		"undeclared size":                      {noFCS(t, sample(100000)), sample(100000)},
		"undeclared and too big to hold":       {append(streamOf(t, sample(10)), noFCS(t, big)...), append(sample(10), big...)},
		"frames then undeclared":               {append(streamOf(t, sample(2*frameSize)), noFCS(t, sample(999))...), append(sample(2*frameSize), sample(999)...)},
		"frame bigger than the parallel limit": {append(streamOf(t, sample(10)), enc.EncodeAll(big, nil)...), append(sample(10), big...)},
		"skippable frame between":              {append(append(streamOf(t, sample(frameSize+1)), skippable([]byte("hello"))...), streamOf(t, sample(5))...), append(sample(frameSize+1), sample(5)...)},
	}
	for name, tc := range cases {
		for _, parallel := range []bool{true, false} {
			got, err := decodeAll(t, parallel, tc.stream)
			if err != nil {
				t.Errorf("%s (parallel %v): %v", name, parallel, err)
				continue
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("%s (parallel %v): %d bytes, want %d", name, parallel, len(got), len(tc.want))
			}
		}
	}
}

// TestBlobDecoderCutsTheStoresFrames: the store's frames are decoded
// whole, in parallel, not handed to the streaming decoder.
func TestBlobDecoderCutsTheStoresFrames(t *testing.T) {
	data := sample(3*frameSize + 5)
	got, frames, err := decodeCounting(t, true, streamOf(t, data))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("decode: %v", err)
	}
	if frames != 4 {
		t.Errorf("%d frames decoded in parallel, want 4", frames)
	}
}

// TestBlobDecoderDamage: a cut or garbled stream is an error, never a
// short clean read.
func TestBlobDecoderDamage(t *testing.T) {
	full := streamOf(t, sample(3*frameSize))
	for _, cut := range []int{1, 5, 20, len(full) / 2, len(full) - 1} {
		if got, err := decodeAll(t, true, full[:cut]); err == nil {
			t.Errorf("cut at %d of %d: read %d bytes and no error", cut, len(full), len(got))
		}
	}
	garbled := append([]byte(nil), full...)
	garbled = append(garbled, []byte("trailing junk that is not a frame")...)
	if _, err := decodeAll(t, true, garbled); err == nil {
		t.Error("junk after the frames: no error")
	}
}

func FuzzBlobDecoder(f *testing.F) {
	f.Add(streamOf(f, sample(3000)))
	f.Add(noFCS(f, sample(3000)))
	f.Add(append(streamOf(f, sample(100)), skippable([]byte("x"))...))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, stream []byte) {
		want, werr := decodeAll(t, false, stream)
		got, gerr := decodeAll(t, true, stream)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("streaming decoder: %v; parallel: %v", werr, gerr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("parallel gave %d bytes, streaming %d", len(got), len(want))
		}
	})
}
