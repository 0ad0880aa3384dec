// Package aside computes a sha256 on a goroutine of its own, so that the
// goroutine producing the bytes does not pay for the hash: on two cores, a
// stream hashed twice (a whole tar as it is read, and a layer inside it)
// uses both. Bytes go to the hashing goroutine in 1 MiB buffers, four at
// most in flight, so memory stays flat whatever the stream's size.
package aside

import (
	"crypto/sha256"
	"io"

	"github.com/opencontainers/go-digest"
)

const (
	bufSize = 1 << 20
	bufs    = 4
)

// SHA256 is a sha256 computed aside. Write or ReadFrom feed it, Sum ends it;
// Close ends it without a sum (deferred, it is a no-op after Sum). Not safe
// for concurrent use.
type SHA256 struct {
	full chan []byte
	free chan []byte
	done chan digest.Digest
	buf  []byte // being filled, or nil
}

// New starts the hashing goroutine.
func New() *SHA256 {
	a := &SHA256{full: make(chan []byte, bufs), free: make(chan []byte, bufs), done: make(chan digest.Digest, 1)}
	for range bufs {
		a.free <- make([]byte, 0, bufSize)
	}
	full, free, done := a.full, a.free, a.done // Sum sets a.full to nil
	go func() {
		h := sha256.New()
		for b := range full {
			h.Write(b)
			free <- b[:0]
		}
		done <- digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	}()
	return a
}

// Write copies p into the hashing buffers; it never fails.
func (a *SHA256) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		b := a.fill()
		k := copy(b[len(b):cap(b)], p)
		a.filled(k)
		p = p[k:]
	}
	return n, nil
}

// ReadFrom reads r to its end straight into the hashing buffers (no copy)
// and returns how many bytes it read, and r's error other than io.EOF.
func (a *SHA256) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	for {
		b := a.fill()
		k, err := r.Read(b[len(b):cap(b)])
		a.filled(k)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// fill returns the buffer being filled, taking a free one if none is.
func (a *SHA256) fill() []byte {
	if a.buf == nil {
		a.buf = <-a.free
	}
	return a.buf
}

// filled records k more bytes in the buffer and hands it over once full.
func (a *SHA256) filled(k int) {
	a.buf = a.buf[:len(a.buf)+k]
	if len(a.buf) == cap(a.buf) {
		a.full <- a.buf
		a.buf = nil
	}
}

// Sum hands over what is left, waits for the hash and returns it; the
// SHA256 takes no more bytes.
func (a *SHA256) Sum() digest.Digest {
	if len(a.buf) > 0 {
		a.full <- a.buf
	}
	a.buf = nil
	close(a.full)
	a.full = nil
	return <-a.done
}

// Close ends the hashing goroutine if Sum was not called.
func (a *SHA256) Close() {
	if a.full != nil {
		a.Sum()
	}
}

// Reader is the sha256 of r and its size, hashed aside while this
// goroutine reads.
func Reader(r io.Reader) (digest.Digest, int64, error) {
	a := New()
	n, err := a.ReadFrom(r)
	return a.Sum(), n, err
}
