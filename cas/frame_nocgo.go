//go:build !cgo

package cas

const defaultEncoder = "klauspost/compress, pure Go (build with cgo for libzstd)"

func newFrameCompressor(level, workers int) (frameCompressor, error) {
	return newGoCompressor(level, workers)
}
