package cas

import (
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// frameSize is the uncompressed size of each independent zstd frame. Frames
// are compressed in parallel and written in order; their concatenation is one
// valid zstd stream that any decoder (and the zstd CLI) reads.
const frameSize = 4 << 20

// parallelEncoder is an io.WriteCloser that cuts its input into frames,
// compresses them on all cores and writes them to w in order. Memory is
// bounded: at most 2×workers frames are in flight.
type parallelEncoder struct {
	w       io.Writer
	enc     *zstd.Encoder // EncodeAll is safe for concurrent use
	buf     []byte
	pending chan chan result // in write order
	done    chan struct{}
	werr    error // first write error, set by the writer goroutine
	pool    sync.Pool
	closed  bool
	sent    bool // a frame was handed on; until then Close writes one, even empty
}

type result struct {
	out []byte
	in  []byte
}

func newParallelEncoder(w io.Writer, level zstd.EncoderLevel) (*parallelEncoder, error) {
	workers := runtime.GOMAXPROCS(0)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(true),
		zstd.WithEncoderConcurrency(workers), zstd.WithZeroFrames(true), zstd.WithLowerEncoderMem(false))
	if err != nil {
		return nil, err
	}
	p := &parallelEncoder{
		w:       w,
		enc:     enc,
		pending: make(chan chan result, 2*workers),
		done:    make(chan struct{}),
	}
	p.pool.New = func() any { return make([]byte, 0, frameSize) }
	p.buf = p.pool.Get().([]byte)
	go p.writer()
	return p, nil
}

// writer writes finished frames in order.
func (p *parallelEncoder) writer() {
	defer close(p.done)
	for ch := range p.pending {
		r := <-ch
		if p.werr == nil {
			if _, err := p.w.Write(r.out); err != nil {
				p.werr = err
			}
		}
		p.pool.Put(r.in[:0])
		p.pool.Put(r.out[:0])
	}
}

func (p *parallelEncoder) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		room := frameSize - len(p.buf)
		k := min(room, len(b))
		p.buf = append(p.buf, b[:k]...)
		b, n = b[k:], n+k
		if len(p.buf) == frameSize {
			if err := p.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flush hands the current frame to a compressor goroutine.
func (p *parallelEncoder) flush() error {
	if len(p.buf) == 0 && p.sent {
		return p.err()
	}
	p.sent = true
	in := p.buf
	p.buf = p.pool.Get().([]byte)
	ch := make(chan result, 1)
	p.pending <- ch // blocks when 2×workers frames are in flight
	go func() {
		out := p.pool.Get().([]byte)
		ch <- result{out: p.enc.EncodeAll(in, out[:0]), in: in}
	}()
	return p.err()
}

func (p *parallelEncoder) err() error {
	select {
	case <-p.done:
		return p.werr
	default:
		return nil
	}
}

// Close compresses what is left, waits for every frame to be written and
// reports the first write error.
func (p *parallelEncoder) Close() error {
	if p.closed {
		return p.werr
	}
	p.closed = true
	err := p.flush()
	close(p.pending)
	<-p.done
	p.enc.Close()
	if err != nil {
		return err
	}
	return p.werr
}

// Abort stops the encoder without caring about what is left.
func (p *parallelEncoder) Abort() {
	if !p.closed {
		p.closed = true
		close(p.pending)
		<-p.done
		p.enc.Close()
	}
}
