package dockerbridge

import (
	"bytes"
	"errors"
	"io"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// chunkedSource hands out data in chunks whose sizes cycle through sizes,
// fails with errSource once failAt bytes are out (failAt < 0: never), and
// otherwise ends with io.EOF, together with the last bytes when eofWithData.
type chunkedSource struct {
	data        []byte
	sizes       []byte
	failAt      int
	eofWithData bool
	off, i      int
}

func (c *chunkedSource) Read(p []byte) (int, error) {
	end := len(c.data)
	if c.failAt >= 0 {
		end = c.failAt
	}
	if c.off >= end {
		if c.failAt >= 0 {
			return 0, errSource
		}
		return 0, io.EOF
	}
	n := len(p)
	if len(c.sizes) > 0 {
		n = min(n, int(c.sizes[c.i%len(c.sizes)]))
		c.i++
	}
	n = copy(p[:n], c.data[c.off:end])
	c.off += n
	if c.off == end && c.failAt < 0 && c.eofWithData {
		return n, io.EOF
	}
	return n, nil
}

// FuzzHoldBack checks HoldBack's one promise: bytes at or beyond from reach
// the consumer only when the source ended with io.EOF, and then the output
// is exactly the input.
func FuzzHoldBack(f *testing.F) {
	f.Add([]byte("hello, world"), int64(5), int64(100), int16(-1), []byte{1, 2, 3}, []byte{1}, false)
	f.Add([]byte("hello, world"), int64(5), int64(100), int16(12), []byte{}, []byte{4}, true)
	f.Add([]byte("hello, world"), int64(0), int64(3), int16(-1), []byte{7}, []byte{0, 1}, true)
	f.Add([]byte("hello, world"), int64(12), int64(0), int16(-1), []byte{}, []byte{}, false)
	f.Add([]byte("hello, world"), int64(30), int64(0), int16(6), []byte{2}, []byte{3}, false)
	f.Add(bytes.Repeat([]byte{0xaa}, 300), int64(100), int64(200), int16(-1), []byte{0, 255}, []byte{100}, true)
	f.Add(bytes.Repeat([]byte{0xaa}, 300), int64(100), int64(199), int16(299), []byte{13}, []byte{200}, false)
	f.Add([]byte{}, int64(0), int64(0), int16(0), []byte{}, []byte{}, false)

	f.Fuzz(func(t *testing.T, data []byte, from, limit int64, failAt int16, srcSizes, readSizes []byte, eofWithData bool) {
		fail := int(failAt)
		if fail >= 0 {
			fail %= len(data) + 1
		} else {
			fail = -1
		}
		// Keep each run cheap, so that minimizing stays quick too.
		if len(readSizes) > 16 {
			readSizes = readSizes[:16]
		}
		if len(srcSizes) > 16 {
			srcSizes = srcSizes[:16]
		}
		// Some reads may be empty, not all: a source that never makes
		// progress is outside any io.Reader's contract.
		if bytes.Count(readSizes, []byte{0}) == len(readSizes) {
			readSizes = nil
		}
		if bytes.Count(srcSizes, []byte{0}) == len(srcSizes) {
			srcSizes = nil
		}
		src := &chunkedSource{data: data, sizes: srcSizes, failAt: fail, eofWithData: eofWithData}
		h := NewHoldBack(src, from, limit)
		var out []byte
		var err error
		buf := make([]byte, 4096)
		for i := 0; err == nil; i++ {
			if i > 300*(len(data)+10) {
				t.Fatal("Read never ends")
			}
			p := buf
			if len(readSizes) > 0 {
				p = buf[:readSizes[i%len(readSizes)]]
			}
			var n int
			n, err = h.Read(p)
			if n < 0 || n > len(p) {
				t.Fatalf("Read returned %d for a %d-byte buffer", n, len(p))
			}
			if len(p) == 0 && (n != 0 || err != nil) {
				t.Fatalf("zero-length Read = %d, %v; want 0, nil", n, err)
			}
			out = append(out, p[:n]...)
		}
		if !bytes.Equal(out, data[:len(out)]) {
			t.Fatal("output is not a prefix of the input")
		}
		hold := max(from, 0)
		srcEnd := int64(len(data)) // where the source stops, cleanly or not
		if fail >= 0 {
			srcEnd = int64(fail)
		}
		beyond := max(srcEnd-hold, 0) // bytes the source has at or past the hold point
		switch {
		case err == io.EOF:
			if fail >= 0 {
				t.Fatal("io.EOF from a source that failed")
			}
			if !bytes.Equal(out, data) {
				t.Fatalf("clean end with %d of %d bytes", len(out), len(data))
			}
			if limit >= 0 && beyond > limit {
				t.Fatalf("clean end holding %d bytes, limit %d", beyond, limit)
			}
		case errors.Is(err, errSource), errors.Is(err, ErrHoldBackOverflow):
			// The safety property: a stream that did not end cleanly never
			// delivers a byte at or past the hold point.
			if int64(len(out)) > hold {
				t.Fatalf("failed stream (%v) delivered %d bytes, past the hold point %d", err, len(out), hold)
			}
			if errors.Is(err, ErrHoldBackOverflow) {
				if limit >= 0 && beyond <= limit {
					t.Fatalf("overflow holding at most %d bytes, limit %d", beyond, limit)
				}
				break
			}
			if fail < 0 {
				t.Fatal("source error from a source that did not fail")
			}
			if int64(len(out)) != min(int64(fail), hold) {
				t.Fatalf("source failed after %d bytes, hold point %d: consumer saw %d", fail, hold, len(out))
			}
			if limit >= 0 && beyond > limit {
				t.Fatalf("source error instead of overflow: %d bytes beyond the hold point, limit %d", beyond, limit)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		// The end is sticky.
		if n, err2 := h.Read(make([]byte, 8)); n != 0 || err2 != err && !errors.Is(err2, err) {
			t.Fatalf("Read after the end = %d, %v; want 0, %v", n, err2, err)
		}
	})
}

// FuzzDockerignore: our walk-order use of the matcher (each path matched
// once, with its parents' results) agrees with patternmatcher's own
// whole-path MatchesOrParentMatches, which is what the docker CLI's older
// context walk used, for any .dockerignore and any path.
func FuzzDockerignore(f *testing.F) {
	f.Add("*.log\n!keep.log\n", "a/b/keep.log")
	f.Add("**.txt\n", "a.txt")
	f.Add("[!a].dat\n[^a].raw\n", "b.raw")
	f.Add("build\n!build/keep\n", "build/keep/x")
	f.Add("# c\n/docs/**/*.md\n", "docs/x/y.md")
	f.Fuzz(func(t *testing.T, ignore, rel string) {
		if len(ignore) > 512 || len(rel) > 256 {
			return // long inputs only slow the search down
		}
		ign, err := parseDockerignore(strings.NewReader(ignore), ".dockerignore")
		if err != nil {
			return
		}
		rel = path.Clean("/" + rel)[1:]
		if rel == "" || strings.ContainsRune(rel, 0) {
			return
		}
		got := ign.excludes(rel, false)
		want := false
		if ign.pm != nil {
			//lint:ignore SA1019 the reference this fuzz target compares with
			want, err = ign.pm.MatchesOrParentMatches(filepath.FromSlash(rel))
			if err != nil {
				return
			}
		}
		if got != want {
			t.Fatalf(".dockerignore %q, path %q: excludes %v, patternmatcher %v", ignore, rel, got, want)
		}
	})
}
