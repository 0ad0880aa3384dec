package aside

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
)

func sample(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

// TestSumsWhatWasWritten: any mix of write sizes, across buffer boundaries,
// sums to the sha256 of the bytes.
func TestSumsWhatWasWritten(t *testing.T) {
	for _, n := range []int{0, 1, bufSize - 1, bufSize, bufSize + 1, 5*bufSize + 12345} {
		data := sample(n)
		for _, chunk := range []int{1 << 10, 333_333, bufSize, 3 * bufSize} {
			a := New()
			for p := data; len(p) > 0; {
				k := min(chunk, len(p))
				if m, err := a.Write(p[:k]); m != k || err != nil {
					t.Fatalf("Write = %d, %v", m, err)
				}
				p = p[k:]
			}
			if got, want := a.Sum(), digest.FromBytes(data); got != want {
				t.Fatalf("%d bytes in writes of %d: %s, want %s", n, chunk, got, want)
			}
			a.Close() // after Sum: a no-op
		}
	}
}

// TestReader: read straight into the buffers, short reads included, after
// bytes already written; and a reader's error is returned with the count.
func TestReader(t *testing.T) {
	data := sample(3*bufSize + 77)
	for _, tc := range []struct {
		r    io.Reader
		want []byte
	}{
		{bytes.NewReader(data), data},
		{iotest.HalfReader(bytes.NewReader(data)), data},
		{iotest.OneByteReader(bytes.NewReader(data[:5000])), data[:5000]},
	} {
		d, n, err := Reader(tc.r)
		if err != nil || n != int64(len(tc.want)) || d != digest.FromBytes(tc.want) {
			t.Fatalf("Reader = %s, %d, %v; want %s, %d", d, n, err, digest.FromBytes(tc.want), len(tc.want))
		}
	}

	a := New()
	a.Write(data[:100])
	if n, err := a.ReadFrom(bytes.NewReader(data[100:])); n != int64(len(data)-100) || err != nil {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	if got := a.Sum(); got != digest.FromBytes(data) {
		t.Fatalf("Write then ReadFrom: %s", got)
	}

	boom := errors.New("boom")
	_, n, err := Reader(io.MultiReader(bytes.NewReader(data[:10]), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || n != 10 {
		t.Fatalf("failing reader: %d, %v", n, err)
	}
}

// TestCloseWithoutSum ends the goroutine (the race detector and the test's
// leak would show a hang otherwise) and is safe twice.
func TestCloseWithoutSum(t *testing.T) {
	a := New()
	a.Write(sample(2*bufSize + 5))
	a.Close()
	a.Close()
}
