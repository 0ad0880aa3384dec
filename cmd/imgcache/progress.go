package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressHook is the cache's progress hook: nil when no progress line
// would show (--quiet, or stderr not a terminal), so that the cache streams
// straight to its destination instead of through the hook's reader (for a
// reassembled export that is a pipe and 32 KiB writes).
func (e *env) progressHook() func(string, int64, io.Reader) io.Reader {
	if e.root.Quiet || !isTerminal(e.stderr) {
		return nil
	}
	return e.progress
}

// progress wraps a long stream with a progress line on stderr (bytes,
// total when known, throughput, time left).
func (e *env) progress(label string, total int64, r io.Reader) io.Reader {
	if total <= 0 {
		total = -1
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetDescription(label),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionClearOnFinish(),
	)
	rd := progressbar.NewReader(r, bar)
	return &rd
}
