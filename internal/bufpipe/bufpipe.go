// Package bufpipe is an in-memory pipe with a bounded buffer: unlike
// io.Pipe, whose Write waits until a reader took every byte, its writer
// runs ahead of the reader by up to a fixed number of chunks. A producer
// that costs CPU (decompressing, hashing) then works while the consumer
// waits on a socket, instead of taking turns with it.
package bufpipe

import (
	"errors"
	"io"
	"sync"
)

// ErrClosedPipe is what a write gets after the reader closed without an
// error of its own.
var ErrClosedPipe = errors.New("bufpipe: read side closed")

type pipe struct {
	full  chan []byte // filled chunks, in order; closed by the writer
	free  chan []byte // chunks the reader is done with
	made  int         // chunks allocated (writer only)
	n     int
	size  int
	done  chan struct{} // closed when the reader closes
	once  sync.Once
	rerr  error // the reader's close error, set before done is closed
	werr  error // the writer's close error, set before full is closed
	wcur  []byte
	rcur  []byte
	rbuf  []byte
	wdone bool
}

// New returns the two ends of a pipe that buffers up to n chunks of size
// bytes (allocated as needed). Each end is for one goroutine.
func New(size, n int) (*Reader, *Writer) {
	p := &pipe{
		full: make(chan []byte, n),
		free: make(chan []byte, n),
		n:    max(n, 1),
		size: max(size, 1),
		done: make(chan struct{}),
	}
	return &Reader{p}, &Writer{p}
}

// Writer is the writing end.
type Writer struct{ p *pipe }

// Write copies p into the pipe's chunks, waiting only when all of them
// are full. After the reader closed it fails with the reader's error.
func (w *Writer) Write(b []byte) (int, error) {
	p := w.p
	if p.wdone {
		return 0, io.ErrClosedPipe
	}
	select {
	case <-p.done:
		return 0, p.readerErr()
	default:
	}
	written := 0
	for len(b) > 0 {
		if p.wcur == nil {
			if err := p.chunk(); err != nil {
				return written, err
			}
		}
		k := copy(p.wcur[len(p.wcur):cap(p.wcur)], b)
		p.wcur = p.wcur[:len(p.wcur)+k]
		b, written = b[k:], written+k
		if len(p.wcur) == cap(p.wcur) {
			if err := p.send(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// chunk gets an empty chunk: a free one, a new one while fewer than n
// exist, or the next one the reader frees.
func (p *pipe) chunk() error {
	select {
	case c := <-p.free:
		p.wcur = c[:0]
		return nil
	default:
	}
	if p.made < p.n {
		p.made++
		p.wcur = make([]byte, 0, p.size)
		return nil
	}
	select {
	case c := <-p.free:
		p.wcur = c[:0]
		return nil
	case <-p.done:
		return p.readerErr()
	}
}

func (p *pipe) send() error {
	select {
	case p.full <- p.wcur:
		p.wcur = nil
		return nil
	case <-p.done:
		return p.readerErr()
	}
}

func (p *pipe) readerErr() error {
	if p.rerr != nil {
		return p.rerr
	}
	return ErrClosedPipe
}

// Close closes the writing end: the reader gets what was written, then
// io.EOF.
func (w *Writer) Close() error { return w.CloseWithError(nil) }

// CloseWithError closes the writing end: the reader gets what was
// written, then err (io.EOF when nil). Only the first close counts.
func (w *Writer) CloseWithError(err error) error {
	p := w.p
	if p.wdone {
		return nil
	}
	p.wdone = true
	if err == nil && len(p.wcur) > 0 {
		if serr := p.send(); serr != nil {
			err = serr
		}
	}
	if err == nil {
		err = io.EOF
	}
	p.werr = err
	close(p.full)
	return nil
}

// Reader is the reading end.
type Reader struct{ p *pipe }

// next makes the next chunk current; it returns the writer's close error
// (io.EOF for a clean close) when there is none.
func (r *Reader) next() error {
	p := r.p
	if p.rbuf != nil {
		select {
		case p.free <- p.rbuf[:0]:
		default:
		}
		p.rbuf = nil
	}
	select {
	case c, ok := <-p.full:
		if !ok {
			return p.werr
		}
		p.rbuf, p.rcur = c, c
		return nil
	case <-p.done:
		return io.ErrClosedPipe
	}
}

// Read implements io.Reader.
func (r *Reader) Read(b []byte) (int, error) {
	p := r.p
	for len(p.rcur) == 0 {
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(b, p.rcur)
	p.rcur = p.rcur[n:]
	return n, nil
}

// Close closes the reading end: a writer waiting for room gets
// ErrClosedPipe.
func (r *Reader) Close() error { return r.CloseWithError(nil) }

// CloseWithError closes the reading end: a writer waiting for room, and
// any later write, gets err (ErrClosedPipe when nil).
func (r *Reader) CloseWithError(err error) error {
	r.p.once.Do(func() {
		r.p.rerr = err
		close(r.p.done)
	})
	return nil
}
