package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/internal/lockfile"
)

// The hold log, <dir>/holds.log, records that a job needs name's image, as
// it held digest d, until a given time (get --hold): gc evicts neither the
// entry nor its daemon image before then. A line is
// "<until, RFC 3339> <digest> <name>", the use log's shape with the hold's
// end for its time, appended under the manifest's shared lock. A hold is
// a time, not a lock: one whose holder crashed simply expires.
//
// It is a file of its own, not a field of manifest.json, because older
// imgcache binaries share caches of the whole-tar schema and refuse a
// manifest with fields they do not know; they never read holds.log. Lines
// that do not parse are skipped; expired lines are dropped when the file
// grows past HoldsCompactSize.

// HoldsCompactSize is the hold log's size past which Hold rewrites it
// without its expired lines.
const HoldsCompactSize = 64 << 10

// HoldsPath is the hold log's path.
func (s *Store) HoldsPath() string { return filepath.Join(s.dir, "holds.log") }

// Hold records that name, holding d, must not be evicted before until.
func (s *Store) Hold(ctx context.Context, name string, d digest.Digest, until time.Time) error {
	line, err := useLine(name, d, until)
	if err != nil {
		return fmt.Errorf("manifest: hold: %w", err)
	}
	size, err := s.appendLine(ctx, s.HoldsPath(), line)
	if err != nil {
		return fmt.Errorf("manifest: hold %s: %w", name, err)
	}
	if size > HoldsCompactSize {
		return s.compactHolds(ctx, time.Now())
	}
	return nil
}

// appendLine appends line to path under the shared lock and returns the
// file's size: one write(2) on an O_APPEND file, so appenders never
// interleave.
func (s *Store) appendLine(ctx context.Context, path string, line []byte) (int64, error) {
	l, err := lockfile.Acquire(ctx, s.lockPath(), false)
	if err != nil {
		return 0, err
	}
	defer l.Release()
	f, err := fsutil.OpenAppend(path)
	if err != nil {
		return 0, fsutil.Classify(err)
	}
	defer f.Close()
	if _, err := f.Write(line); err != nil {
		return 0, fmt.Errorf("%s: %w", f.Name(), fsutil.Classify(err))
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, nil // written; compaction can wait
	}
	return fi.Size(), nil
}

// compactHolds rewrites the hold log without the holds that ended before
// now, under the exclusive lock.
func (s *Store) compactHolds(ctx context.Context, now time.Time) error {
	l, err := lockfile.Acquire(ctx, s.lockPath(), true)
	if err != nil {
		return fmt.Errorf("manifest: compact holds: %w", err)
	}
	defer l.Release()
	holds, err := s.readHolds()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, h := range holds {
		if h.Time.After(now) {
			line, _ := useLine(h.Name, h.Digest, h.Time)
			buf.Write(line)
		}
	}
	err = fsutil.WriteAtomic(s.HoldsPath(), filepath.Join(s.dir, fmt.Sprintf(".holds.log.tmp-%d", os.Getpid())), func(w io.Writer) error {
		_, err := w.Write(buf.Bytes())
		return err
	})
	if err != nil {
		return fmt.Errorf("manifest: compact holds: %w", fsutil.Classify(err))
	}
	return nil
}

// readHolds reads every line of the hold log (no file: no holds), each as
// a Use whose Time is the hold's end. The caller holds the lock.
func (s *Store) readHolds() ([]Use, error) {
	f, err := os.Open(s.HoldsPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: hold log: %w", err)
	}
	defer f.Close()
	holds, err := parseUses(f, "")
	if err != nil {
		return nil, fmt.Errorf("manifest: hold log %s: %w", f.Name(), err)
	}
	return holds, nil
}

// HeldUntil is the latest end of the holds on name while it holds d (zero:
// none). Expired holds are returned as they are; the caller compares.
func (m *Manifest) HeldUntil(name string, d digest.Digest) time.Time {
	var until time.Time
	for _, h := range m.holds {
		if h.Name == name && h.Digest == d && h.Time.After(until) {
			until = h.Time
		}
	}
	return until
}
