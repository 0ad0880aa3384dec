package dockerbridge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// errSource is what a failing source (a cas.Reader whose digest did not
// match, a broken connection) returns instead of io.EOF.
var errSource = errors.New("source failed")

// failAfter yields data[:k], then err (with no data).
type failAfter struct {
	data []byte
	k    int
	err  error
	off  int
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.off >= f.k {
		return 0, f.err
	}
	n := copy(p, f.data[f.off:f.k])
	f.off += n
	return n, nil
}

// source wrappers: how the source hands out its bytes.
var wrappers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"plain", func(r io.Reader) io.Reader { return r }},
	{"OneByteReader", iotest.OneByteReader},
	{"HalfReader", iotest.HalfReader},
	{"DataErrReader", iotest.DataErrReader}, // the final error comes with the last bytes
	{"OneByte+DataErr", func(r io.Reader) io.Reader { return iotest.DataErrReader(iotest.OneByteReader(r)) }},
}

// drain reads r to its end with buffers of bufSize bytes. It returns what it
// read and the error that ended it (io.EOF for a clean end).
func drain(t *testing.T, r io.Reader, bufSize int) ([]byte, error) {
	t.Helper()
	var out []byte
	buf := make([]byte, bufSize)
	for i := 0; ; i++ {
		n, err := r.Read(buf)
		if n < 0 || n > len(buf) {
			t.Fatalf("Read returned n=%d for a %d-byte buffer", n, len(buf))
		}
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
		if i > 10_000_000 {
			t.Fatal("Read never ends")
		}
	}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// froms are the hold points tried for a stream of n bytes.
func froms(n int) []int64 {
	return []int64{0, 1, int64(n) - 1, int64(n), int64(n) + 5, int64(n) / 2}
}

var bufSizes = []int{1, 2, 3, 7, 4096, 200 << 10}

const bigLimit = 1 << 30

// TestHoldBackExact: with a source that ends in io.EOF, the output is the
// input, whatever the hold point, the source's chunking and the reader's
// buffer size.
func TestHoldBackExact(t *testing.T) {
	for _, size := range []int{0, 1, 2, 100, 70_000} {
		data := randomBytes(size, uint64(size))
		for _, w := range wrappers {
			for _, from := range froms(size) {
				for _, bs := range bufSizes {
					if size > 1000 && bs < 4096 && (bs != 3 || w.name != "plain") {
						continue // slow and adds nothing
					}
					t.Run(fmt.Sprintf("size=%d/%s/from=%d/buf=%d", size, w.name, from, bs), func(t *testing.T) {
						h := NewHoldBack(w.wrap(bytes.NewReader(data)), from, bigLimit)
						got, err := drain(t, h, bs)
						if err != io.EOF {
							t.Fatalf("ended with %v, want io.EOF", err)
						}
						if !bytes.Equal(got, data) {
							t.Fatalf("output (%d bytes) differs from input (%d bytes)", len(got), len(data))
						}
						if h.Held() != 0 {
							t.Errorf("Held() = %d after the end", h.Held())
						}
						// Reads after the end keep returning io.EOF.
						if n, err := h.Read(make([]byte, 10)); n != 0 || err != io.EOF {
							t.Errorf("Read after the end = %d, %v", n, err)
						}
					})
				}
			}
		}
	}
}

// TestHoldBackFailure: when the source fails (after all its bytes, as a
// corrupt blob does, or midway, as a truncated one does), the consumer gets
// that error and never a byte at or beyond from.
func TestHoldBackFailure(t *testing.T) {
	const size = 70_000
	data := randomBytes(size, 42)
	tests := []struct {
		name string
		k    int // bytes the source yields before failing
	}{
		{"corrupt (fails after every byte)", size},
		{"truncated midway", size / 3},
		{"fails at once", 0},
		{"fails after one byte", 1},
		{"fails one byte short", size - 1},
	}
	for _, tt := range tests {
		for _, w := range wrappers {
			for _, from := range froms(size) {
				for _, bs := range []int{1, 3, 4096, 200 << 10} {
					if bs < 4 && (w.name != "plain" || from > 100 && from < size-1) ||
						strings.Contains(w.name, "OneByte") && tt.k > 1000 && from < size-1 {
						continue // slow and adds nothing
					}
					t.Run(fmt.Sprintf("%s/%s/from=%d/buf=%d", tt.name, w.name, from, bs), func(t *testing.T) {
						src := w.wrap(&failAfter{data: data, k: tt.k, err: errSource})
						h := NewHoldBack(src, from, bigLimit)
						got, err := drain(t, h, bs)
						if !errors.Is(err, errSource) {
							t.Fatalf("ended with %v, want the source's error", err)
						}
						want := min(int64(tt.k), from)
						if int64(len(got)) != want {
							t.Fatalf("consumer saw %d bytes, want exactly %d (k=%d, from=%d)", len(got), want, tt.k, from)
						}
						if !bytes.Equal(got, data[:len(got)]) {
							t.Fatal("consumer saw bytes that are not the input's prefix")
						}
						// The error sticks; the held tail is never released.
						for range 3 {
							if n, err := h.Read(make([]byte, size)); n != 0 || !errors.Is(err, errSource) {
								t.Fatalf("Read after the failure = %d, %v", n, err)
							}
						}
					})
				}
			}
		}
	}
}

// TestHoldBackLimit: holding more than limit bytes fails with
// ErrHoldBackOverflow before any held byte is released; holding up to limit
// bytes is fine.
func TestHoldBackLimit(t *testing.T) {
	const size = 200_000
	data := randomBytes(size, 7)
	tests := []struct {
		name         string
		from, limit  int64
		wantOverflow bool
	}{
		{"tail far beyond limit", 0, 1000, true},
		{"tail one byte over limit", size - 1001, 1000, true},
		{"tail exactly limit", size - 1000, 1000, false},
		{"tail under limit", size - 999, 1000, false},
		{"big tail exactly limit", 0, size, false},
		{"big tail one over limit", 0, size - 1, true},
		{"limit zero, nothing held", size, 0, false},
		{"limit zero, from beyond the end", size + 5, 0, false},
		{"limit zero, one byte held", size - 1, 0, true},
	}
	for _, tt := range tests {
		for _, w := range wrappers {
			if strings.Contains(w.name, "OneByte") && tt.from < size-2000 {
				continue // slow and adds nothing
			}
			t.Run(fmt.Sprintf("%s/%s", tt.name, w.name), func(t *testing.T) {
				h := NewHoldBack(w.wrap(bytes.NewReader(data)), tt.from, tt.limit)
				got, err := drain(t, h, 64<<10)
				if tt.wantOverflow {
					if !errors.Is(err, ErrHoldBackOverflow) {
						t.Fatalf("ended with %v, want ErrHoldBackOverflow", err)
					}
					if int64(len(got)) != min(tt.from, size) {
						t.Fatalf("consumer saw %d bytes, want %d", len(got), tt.from)
					}
					if h.Held() > int(tt.limit)+1 {
						t.Errorf("held %d bytes, limit %d", h.Held(), tt.limit)
					}
					return
				}
				if err != io.EOF {
					t.Fatalf("ended with %v, want io.EOF", err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("output (%d bytes) differs from input", len(got))
				}
			})
		}
	}
}

func TestHoldBackZeroLengthRead(t *testing.T) {
	data := randomBytes(100, 1)
	src := &countingReader{r: bytes.NewReader(data)}
	h := NewHoldBack(src, 50, bigLimit)
	for _, p := range [][]byte{nil, {}, make([]byte, 10)[:0]} {
		if n, err := h.Read(p); n != 0 || err != nil {
			t.Fatalf("Read(len 0) = %d, %v; want 0, nil", n, err)
		}
	}
	if src.calls != 0 {
		t.Fatalf("a zero-length Read read the source %d times", src.calls)
	}
	got, err := drain(t, h, 9)
	if err != io.EOF || !bytes.Equal(got, data) {
		t.Fatalf("after zero-length reads: %d bytes, %v", len(got), err)
	}
}

func TestHoldBackHeld(t *testing.T) {
	data := randomBytes(1000, 3)
	h := NewHoldBack(iotest.HalfReader(bytes.NewReader(data)), 600, bigLimit)
	buf := make([]byte, 1000)
	n, err := io.ReadFull(h, buf[:600])
	if n != 600 || err != nil {
		t.Fatalf("ReadFull before the hold point = %d, %v", n, err)
	}
	if h.Held() != 0 {
		t.Fatalf("Held() = %d before the hold point", h.Held())
	}
	n, err = h.Read(buf[:10])
	if n != 10 || err != nil {
		t.Fatalf("first Read of the tail = %d, %v", n, err)
	}
	if h.Held() != 390 {
		t.Fatalf("Held() = %d after releasing 10 of 400, want 390", h.Held())
	}
}

func TestNewHoldBackNegativeFrom(t *testing.T) {
	data := randomBytes(10, 9)
	h := NewHoldBack(&failAfter{data: data, k: 10, err: errSource}, -5, bigLimit)
	got, err := drain(t, h, 4)
	if len(got) != 0 || !errors.Is(err, errSource) {
		t.Fatalf("negative from: saw %d bytes, %v; want 0 bytes and the source's error", len(got), err)
	}
}

type countingReader struct {
	r     io.Reader
	calls int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.calls++
	return c.r.Read(p)
}
