package cas

import (
	"github.com/klauspost/compress/zstd"
)

// frameCompressor compresses whole, independent zstd frames. compress is
// safe for concurrent use by up to the number of workers it was made for.
type frameCompressor interface {
	// compress appends the frame for src to dst[:0] and returns it.
	compress(dst, src []byte) ([]byte, error)
	close()
}

// Encoder names the zstd encoder new blobs are written with: libzstd through
// cgo when the binary was built with cgo (the default where a C compiler is
// present), else the pure-Go klauspost/compress encoder. Both write standard
// frames; every blob is read with klauspost/compress.
var Encoder = defaultEncoder

// goCompressor is the pure-Go encoder (klauspost/compress). Its levels are
// coarser than libzstd's: 1–22 map onto four speeds.
type goCompressor struct{ enc *zstd.Encoder }

func newGoCompressor(level, workers int) (frameCompressor, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderCRC(true), zstd.WithEncoderConcurrency(workers),
		zstd.WithZeroFrames(true), zstd.WithLowerEncoderMem(false))
	if err != nil {
		return nil, err
	}
	return goCompressor{enc}, nil
}

func (g goCompressor) compress(dst, src []byte) ([]byte, error) {
	return g.enc.EncodeAll(src, dst[:0]), nil
}

func (g goCompressor) close() { g.enc.Close() }
