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
	"strings"
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
	return s.rewriteLog(s.HoldsPath(), holds, func(h Use) bool { return h.Time.After(now) })
}

// readHolds reads every line of the hold log (no file: no holds), each as
// a Use whose Time is the hold's end. The caller holds the lock.
func (s *Store) readHolds() ([]Use, error) { return readLog(s.HoldsPath()) }

// readLog reads a log of use-shaped lines (no file: none).
func readLog(path string) ([]Use, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	lines, err := parseUses(f, "")
	if err != nil {
		return nil, fmt.Errorf("manifest: %s: %w", path, err)
	}
	return lines, nil
}

// rewriteLog replaces path with the lines of keep, atomically. The caller
// holds the exclusive lock.
func (s *Store) rewriteLog(path string, lines []Use, keep func(Use) bool) error {
	var buf bytes.Buffer
	for _, u := range lines {
		if keep(u) {
			line, _ := useLine(u.Name, u.Digest, u.Time)
			buf.Write(line)
		}
	}
	err := fsutil.WriteAtomic(path, filepath.Join(s.dir, fmt.Sprintf(".%s.tmp-%d", filepath.Base(path), os.Getpid())), func(w io.Writer) error {
		_, err := w.Write(buf.Bytes())
		return err
	})
	if err != nil {
		return fmt.Errorf("manifest: rewrite %s: %w", path, fsutil.Classify(err))
	}
	return nil
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

// The retired log, <dir>/retired.log, keeps the last use of an entry a put
// superseded: "<last use> <old digest> <name>". Its daemon image,
// imgcache/<name>:<old 12 hex>, may be what a job got just before the
// name moved; gc --docker removes it only once that use is older than the
// min-age (and no hold on the old digest lasts). Lines are appended by the
// manifest write that moves the name, under its exclusive lock; lines older
// than RetiredKeep are dropped once the file passes HoldsCompactSize.

// RetiredKeep is how long the retired log remembers a superseded entry.
const RetiredKeep = 7 * 24 * time.Hour

// RetiredPath is the retired log's path.
func (s *Store) RetiredPath() string { return filepath.Join(s.dir, "retired.log") }

// Retire records, in the manifest write under way, that name held d, last
// used at t, until now.
func (m *Manifest) Retire(name string, d digest.Digest, t time.Time) {
	m.retiring = append(m.retiring, Use{Time: t, Digest: d, Name: name})
}

// LastUsedRetired is the last use of name while it held a digest whose
// hex starts with prefix, as the retired log remembers it (zero: none).
func (m *Manifest) LastUsedRetired(name, prefix string) time.Time {
	var t time.Time
	for _, u := range m.retired {
		if u.Name == name && strings.HasPrefix(u.Digest.Encoded(), prefix) && u.Time.After(t) {
			t = u.Time
		}
	}
	return t
}

// HeldUntilPrefix is HeldUntil for a digest known by a prefix of its hex
// (a daemon tag's 12).
func (m *Manifest) HeldUntilPrefix(name, prefix string) time.Time {
	var until time.Time
	for _, h := range m.holds {
		if h.Name == name && strings.HasPrefix(h.Digest.Encoded(), prefix) && h.Time.After(until) {
			until = h.Time
		}
	}
	return until
}

// writeRetired appends the lines the write under way retired. The caller
// holds the exclusive lock.
func (s *Store) writeRetired(m *Manifest) error {
	if len(m.retiring) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for _, u := range m.retiring {
		if line, err := useLine(u.Name, u.Digest, u.Time); err == nil {
			buf.Write(line)
		}
	}
	m.retiring = nil
	f, err := fsutil.OpenAppend(s.RetiredPath())
	if err != nil {
		return fmt.Errorf("manifest: retired log: %w", fsutil.Classify(err))
	}
	defer f.Close()
	if _, err := f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("manifest: retired log: %w", fsutil.Classify(err))
	}
	if fi, err := f.Stat(); err == nil && fi.Size() > HoldsCompactSize {
		lines, err := readLog(s.RetiredPath())
		if err != nil {
			return err
		}
		cut := time.Now().Add(-RetiredKeep)
		return s.rewriteLog(s.RetiredPath(), lines, func(u Use) bool { return u.Time.After(cut) })
	}
	return nil
}
