package cas

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// maxParallelFrame is the most a frame the parallel decoder decodes whole
// may decompress to (declared, or bounded by its blocks): the encoder
// writes frameSize frames; anything bigger is read by one streaming
// decoder.
const maxParallelFrame = 16 << 20

// frameDecoder is the shared decoder for whole frames: DecodeAll is safe
// for as many concurrent calls as its concurrency, and reusing one decoder
// avoids reallocating its tables per blob.
var frameDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(decodeWorkers()),
		zstd.WithDecoderMaxMemory(maxParallelFrame),
		zstd.WithDecoderMaxWindow(1<<30))
})

func decodeWorkers() int { return max(2, runtime.GOMAXPROCS(0)) }

// Buffers for whole frames, shared by every decoder: a blob's pieces are
// read one after another, and each reuses what the last one left.
var (
	frameOuts = sync.Pool{New: func() any { return make([]byte, 0, frameSize) }}
	frameIns  = sync.Pool{New: func() any { return make([]byte, 0, frameSize+frameSize>>7+4096) }}
)

// blobDecoder decompresses a zstd stream made of independent frames
// (what the parallel encoder writes) on several cores, in order: a
// splitter goroutine cuts the stream into frames by their block headers,
// each frame is decoded whole by its own goroutine, and the reader takes
// the results in stream order. At most workers+2 frames are in flight (one
// being read, workers decoded or decoding, one being cut), so memory stays
// bounded (frames are at most maxParallelFrame, frameSize as written).
//
// From the first frame that is not of that kind (a bigger one, a
// skippable frame, or bytes that are not a frame header),
// the rest of the stream goes through one streaming decoder, which reads
// any valid zstd stream and reports damage as the plain decoder does.
type blobDecoder struct {
	pending chan chan decoded // frames in stream order; closed at the end
	quit    chan struct{}
	once    sync.Once

	cur     []byte // the current frame's output not yet read
	buf     []byte // its buffer, returned to frameOuts when consumed
	tail    *zstd.Decoder
	tailBuf []byte
	src     *bufio.Reader // the splitter's reader, the tail's input once handed over
	err     error
	frames  int // frames decoded whole, in parallel
}

// decoded is one frame's output, or the end of the parallel part.
type decoded struct {
	out    []byte
	err    error
	tail   bool   // the splitter stopped here; the rest is for a streaming decoder
	prefix []byte // what the splitter consumed of the rest
}

func newBlobDecoder(r io.Reader) (*blobDecoder, error) {
	dec, err := frameDecoder()
	if err != nil {
		return nil, err
	}
	workers := decodeWorkers()
	d := &blobDecoder{
		pending: make(chan chan decoded, workers),
		quit:    make(chan struct{}),
		src:     bufio.NewReaderSize(r, 1<<20),
	}
	go d.split(dec)
	return d, nil
}

// split cuts the stream into frames and starts a decode for each.
func (d *blobDecoder) split(dec *zstd.Decoder) {
	defer close(d.pending)
	for {
		frame, err := d.nextFrame()
		if err == io.EOF {
			return
		}
		ch := make(chan decoded, 1)
		select {
		case d.pending <- ch:
		case <-d.quit:
			return
		}
		switch {
		case errors.Is(err, errHandOver):
			ch <- decoded{tail: true, prefix: frame}
			return
		case err != nil:
			ch <- decoded{err: err}
			return
		}
		go func() {
			out, err := dec.DecodeAll(frame, frameOuts.Get().([]byte)[:0])
			frameIns.Put(frame[:0])
			ch <- decoded{out: out, err: err}
		}()
	}
}

// errHandOver stops the splitter: the rest of the stream is not frames it
// cuts.
var errHandOver = errors.New("hand over to a streaming decoder")

// maxBlock is the most a zstd block decompresses to.
const maxBlock = 128 << 10

// nextFrame reads one whole frame that decompresses to at most
// maxParallelFrame (declared, or bounded by its number of blocks), io.EOF
// at the end of the stream, or errHandOver with the bytes it consumed
// (perhaps none) when what follows is not such a frame.
func (d *blobDecoder) nextFrame() ([]byte, error) {
	head, err := d.src.Peek(zstd.HeaderMaxSize)
	if len(head) == 0 {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, err
	}
	var h zstd.Header
	// The frame decoder's window is capped at its memory limit
	// (maxParallelFrame): a frame declaring a bigger one, however little
	// it holds (another encoder's long mode), is the streaming decoder's.
	if h.Decode(head) != nil || h.Skippable || h.DictionaryID != 0 || (h.HasFCS && h.FrameContentSize > maxParallelFrame) || h.WindowSize > maxParallelFrame {
		return nil, errHandOver
	}
	frame := frameIns.Get().([]byte)[:h.HeaderSize]
	if _, err := io.ReadFull(d.src, frame); err != nil {
		return nil, truncated(err)
	}
	// Blocks: a 3-byte header (last flag, type, size), then size bytes
	// (one for an RLE block).
	for blocks := 1; ; blocks++ {
		n := len(frame)
		frame = append(frame, 0, 0, 0)
		if _, err := io.ReadFull(d.src, frame[n:]); err != nil {
			return nil, truncated(err)
		}
		bh := uint32(frame[n]) | uint32(frame[n+1])<<8 | uint32(frame[n+2])<<16
		size := int(bh >> 3)
		switch (bh >> 1) & 3 {
		case 1: // RLE
			size = 1
		case 3:
			return nil, fmt.Errorf("zstd: reserved block type")
		}
		if (!h.HasFCS && blocks*maxBlock > maxParallelFrame) || len(frame)+size > 2*maxParallelFrame {
			return frame, errHandOver // too big to hold: stream it
		}
		frame = slices.Grow(frame, size)[:len(frame)+size] // no zeroing: read over
		if _, err := io.ReadFull(d.src, frame[len(frame)-size:]); err != nil {
			return nil, truncated(err)
		}
		if bh&1 != 0 {
			break
		}
	}
	if h.HasCheckSum {
		var sum [4]byte
		if _, err := io.ReadFull(d.src, sum[:]); err != nil {
			return nil, truncated(err)
		}
		frame = binary.LittleEndian.AppendUint32(frame, binary.LittleEndian.Uint32(sum[:]))
	}
	return frame, nil
}

func truncated(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("zstd: truncated frame: %w", err)
}

// next returns the next decoded bytes (valid until the following call),
// or io.EOF at the end of the stream.
func (d *blobDecoder) next() ([]byte, error) {
	if d.err != nil {
		return nil, d.err
	}
	if len(d.cur) > 0 {
		b := d.cur
		d.cur = nil
		return b, nil
	}
	if d.buf != nil {
		frameOuts.Put(d.buf[:0])
		d.buf = nil
	}
	if d.tail != nil {
		return d.fromTail()
	}
	ch, ok := <-d.pending
	if !ok {
		d.err = io.EOF
		return nil, io.EOF
	}
	r := <-ch
	switch {
	case r.err != nil:
		d.err = r.err
		return nil, r.err
	case r.tail:
		tail, err := newStream(io.MultiReader(bytes.NewReader(r.prefix), d.src))
		if err != nil {
			d.err = err
			return nil, err
		}
		d.tail, d.tailBuf = tail, make([]byte, 1<<20)
		return d.fromTail()
	}
	d.buf = r.out
	d.frames++
	if len(r.out) == 0 {
		return d.next() // an empty frame
	}
	return r.out, nil
}

// whole is the streaming decoder of a decoder that is nothing else and
// has not been read from; nil otherwise.
func (d *blobDecoder) whole() *zstd.Decoder {
	if d.pending == nil && d.tail != nil && len(d.cur) == 0 && d.err == nil {
		return d.tail
	}
	return nil
}

func (d *blobDecoder) fromTail() ([]byte, error) {
	n, err := d.tail.Read(d.tailBuf)
	if err != nil && (n == 0 || err != io.EOF) {
		d.err = err
		return nil, err
	}
	return d.tailBuf[:n], nil
}

// Read implements io.Reader.
func (d *blobDecoder) Read(p []byte) (int, error) {
	if len(d.cur) == 0 {
		b, err := d.next()
		if err != nil {
			return 0, err
		}
		d.cur = b
	}
	n := copy(p, d.cur)
	d.cur = d.cur[n:]
	return n, nil
}

// Close stops the splitter; frames in flight finish on their own.
func (d *blobDecoder) Close() {
	d.once.Do(func() {
		close(d.quit)
		if d.tail != nil {
			d.tail.Close()
		}
	})
}

// newStreamDecoder reads the stream on one core, through the same
// interface: the whole stream is the "tail".
func newStreamDecoder(r io.Reader) (*blobDecoder, error) {
	z, err := newStream(r)
	if err != nil {
		return nil, err
	}
	return &blobDecoder{tail: z, tailBuf: make([]byte, 1<<20), quit: make(chan struct{})}, nil
}

// newStream is the streaming decoder every read of a stored stream uses:
// one goroutine (the least CPU), windows up to 1 GiB.
func newStream(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
}
