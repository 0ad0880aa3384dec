package dockerbridge

import (
	"errors"
	"fmt"
	"io"
	"math"
)

// ErrHoldBackOverflow is returned when the tail to hold back outgrows the
// limit given to NewHoldBack.
var ErrHoldBackOverflow = errors.New("held-back tail larger than its limit")

// HoldBack passes the bytes of src before offset from straight through, keeps
// every byte from that offset on in memory, and releases them only once src
// has returned io.EOF. src must return io.EOF only when its content has been
// verified (cas.Reader does); any other error from src is returned as is and
// the held bytes are never released, so a consumer never sees the tail of a
// stream that failed verification.
type HoldBack struct {
	src   io.Reader
	from  int64 // offset where holding starts
	limit int64 // most bytes held
	off   int64 // bytes read from src so far
	held  []byte
	out   int // bytes of held released so far
	done  bool
	err   error
}

// NewHoldBack returns a HoldBack over src. limit bounds the memory it may use.
func NewHoldBack(src io.Reader, from, limit int64) *HoldBack {
	if from < 0 {
		from = 0
	}
	return &HoldBack{src: src, from: from, limit: limit}
}

// Read implements io.Reader.
func (h *HoldBack) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if h.err != nil {
			return 0, h.err
		}
		if h.done { // verified: release the tail
			if h.out == len(h.held) {
				return 0, io.EOF
			}
			n := copy(p, h.held[h.out:])
			h.out += n
			return n, nil
		}
		if h.off < h.from { // pass through, but never past the hold point
			want := int64(len(p))
			if rest := h.from - h.off; want > rest {
				want = rest
			}
			n, err := h.src.Read(p[:want])
			h.off += int64(n)
			h.note(err)
			if n > 0 {
				return n, nil
			}
			continue
		}
		// Hold: read into the buffer until src ends. The buffer grows to
		// limit+1 bytes: a tail of exactly limit bytes is fine, and the
		// extra byte shows whether src has more than that.
		if int64(len(h.held)) > h.limit {
			h.err = fmt.Errorf("%w (%d bytes)", ErrHoldBackOverflow, h.limit)
			continue
		}
		room := h.limit
		if room < math.MaxInt64 {
			room++
		}
		if cap(h.held)-len(h.held) < 32<<10 && int64(cap(h.held)) < room {
			grown := make([]byte, len(h.held), min(int64(2*cap(h.held)+64<<10), room))
			copy(grown, h.held)
			h.held = grown
		}
		n, err := h.src.Read(h.held[len(h.held):cap(h.held)])
		h.held = h.held[:len(h.held)+n]
		h.off += int64(n)
		if int64(len(h.held)) > h.limit {
			continue // overflow, even if src ended with these bytes
		}
		h.note(err)
	}
}

func (h *HoldBack) note(err error) {
	switch {
	case err == io.EOF:
		h.done = true
	case err != nil:
		h.err = err
	}
}

// Held reports how many bytes are being held back.
func (h *HoldBack) Held() int { return len(h.held) - h.out }
