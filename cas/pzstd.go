package cas

import (
	"context"
	"fmt"
	"io"
	"runtime"
)

// frameSize is the uncompressed size of each independent zstd frame. Frames
// are compressed in parallel and written in order; their concatenation is one
// valid zstd stream that any decoder (and the zstd CLI) reads.
const frameSize = 4 << 20

// parallelEncoder reads its input (readFrom) into frames, compresses them on
// all cores and writes them to w in order (Close finishes). Memory is
// bounded: at most 2×workers frames are in flight.
type parallelEncoder struct {
	w       io.Writer
	enc     frameCompressor
	buf     []byte
	pending chan chan result // in write order
	done    chan struct{}
	werr    error    // first write or compression error, set by the writer goroutine
	ins     freeList // frameSize buffers of input
	outs    freeList // buffers a whole compressed frame fits in
	closed  bool
	sent    bool // a frame was handed on; until then Close writes one, even empty
}

type result struct {
	out []byte
	in  []byte
	err error
}

func newParallelEncoder(w io.Writer, level int, newCompressor func(level, workers int) (frameCompressor, error)) (*parallelEncoder, error) {
	workers := runtime.GOMAXPROCS(0)
	enc, err := newCompressor(level, workers)
	if err != nil {
		return nil, err
	}
	p := &parallelEncoder{
		w:       w,
		enc:     enc,
		pending: make(chan chan result, 2*workers),
		done:    make(chan struct{}),
	}
	// Every buffer is kept for reuse (a sync.Pool drops them at each GC, and
	// the garbage let a put's heap grow past 100 MB).
	p.ins = freeList{size: frameSize, free: make(chan []byte, 2*workers+2)}
	// zstd's bound for incompressible input: size + size/256 + a little.
	p.outs = freeList{size: frameSize + frameSize>>7 + 4096, free: make(chan []byte, 2*workers+2)}
	p.buf = p.ins.get()
	go p.writer()
	return p, nil
}

// writer writes finished frames in order.
func (p *parallelEncoder) writer() {
	defer close(p.done)
	for ch := range p.pending {
		r := <-ch
		if p.werr == nil {
			if r.err != nil {
				p.werr = fmt.Errorf("zstd: %w", r.err)
			} else if _, err := p.w.Write(r.out); err != nil {
				p.werr = err
			}
		}
		p.ins.put(r.in)
		if r.out != nil {
			p.outs.put(r.out)
		}
	}
}

// readChunk is the most readFrom asks of its reader at once: the context is
// checked between reads, and a tee'd reader (the archive parser) gets steady
// chunks.
const readChunk = 1 << 20

// readFrom reads r to its end straight into frame buffers, passing each read to tap (the hash) before its frame is handed
// to a compressor. It returns the bytes read.
func (p *parallelEncoder) readFrom(ctx context.Context, r io.Reader, tap io.Writer) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if len(p.buf) == frameSize {
			if err := p.flush(); err != nil {
				return n, err
			}
		}
		start := len(p.buf)
		m, rerr := r.Read(p.buf[start:min(frameSize, start+readChunk)])
		if m > 0 {
			p.buf = p.buf[:start+m]
			tap.Write(p.buf[start:]) // a hash never fails
			n += int64(m)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// flush hands the current frame to a compressor goroutine.
func (p *parallelEncoder) flush() error {
	if len(p.buf) == 0 && p.sent {
		return p.err()
	}
	p.sent = true
	in := p.buf
	p.buf = p.ins.get()
	ch := make(chan result, 1)
	p.pending <- ch // blocks when 2×workers frames are in flight
	go func() {
		out, err := p.enc.compress(p.outs.get(), in)
		ch <- result{out: out, in: in, err: err}
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
	p.enc.close()
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
		p.enc.close()
	}
}

// freeList keeps up to cap(free) buffers of capacity size for reuse.
type freeList struct {
	size int
	free chan []byte
}

func (f *freeList) get() []byte {
	select {
	case b := <-f.free:
		return b
	default:
		return make([]byte, 0, f.size)
	}
}

func (f *freeList) put(b []byte) {
	if cap(b) < f.size {
		return // a compressor that grew its own
	}
	select {
	case f.free <- b[:0]:
	default:
	}
}
