package fsutil

import "os"

// Writeback wraps f so that, every `every` bytes written, the kernel is asked
// to start writing the range just written to disk without waiting for it.
// The fsync that makes the file durable then finds little left to do, instead
// of flushing the whole file at the end while nothing else runs. It changes
// no guarantee: only the fsync makes data durable. On systems without
// sync_file_range it is a plain writer.
func Writeback(f *os.File, every int64) *WritebackFile {
	return &WritebackFile{f: f, every: every}
}

// WritebackFile is the writer Writeback returns.
type WritebackFile struct {
	f       *os.File
	every   int64
	off     int64 // bytes written
	flushed int64 // bytes handed to writeback
}

func (w *WritebackFile) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.off += int64(n)
	if err == nil && w.off-w.flushed >= w.every {
		startWriteback(w.f, w.flushed, w.off-w.flushed) // advisory: an error changes nothing
		w.flushed = w.off
	}
	return n, err
}
