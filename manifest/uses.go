package manifest

import (
	"bufio"
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
)

// The use log, <dir>/uses.log, records last-use times without rewriting the
// manifest: a warm get appends one line under the shared lock instead of
// decoding, re-encoding and fsyncing the whole manifest under the exclusive
// one. Every read applies the log on top of manifest.json (a use only ever
// moves LastUsed forward, and only for the digest the name had when it was
// used); every manifest write folds it in and empties it. The exclusive lock
// keeps appenders out while a writer folds, so no use is lost between the
// fold and the truncation.
//
// The log is a hint for LRU order, not integrity data: it is not fsynced,
// and a line that does not parse (a write torn by a crash, say) is skipped.

// UsesFoldSize is the use log's size past which Touch folds it into the
// manifest itself, so a cache that only ever sees gets keeps it small.
const UsesFoldSize = 1 << 20

// maxUseLine bounds one line; longer lines are skipped as garbage.
const maxUseLine = 512

// UsesPath is the use log's path.
func (s *Store) UsesPath() string { return filepath.Join(s.dir, "uses.log") }

// Touch records that name, holding d, was used at t. It is cheap (one short
// append) and safe alongside any other reader or writer of the manifest.
// A name that no longer holds d when the log is applied is left alone.
func (s *Store) Touch(ctx context.Context, name string, d digest.Digest, t time.Time) error {
	line, err := useLine(name, d, t)
	if err != nil {
		return err
	}
	size, err := s.appendLine(ctx, s.UsesPath(), line)
	if err != nil {
		return fmt.Errorf("manifest: record use: %w", err)
	}
	if size > UsesFoldSize {
		// Fold: an update that changes nothing still writes the manifest
		// with the uses applied, and empties the log.
		return s.Update(ctx, func(*Manifest) error { return nil })
	}
	return nil
}

func useLine(name string, d digest.Digest, t time.Time) ([]byte, error) {
	if name == "" || strings.ContainsAny(name, " \n") {
		return nil, fmt.Errorf("manifest: record use: bad name %q", name)
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("manifest: record use of %s: %w", name, err)
	}
	if !writable(t) {
		return nil, fmt.Errorf("manifest: record use of %s: time %v out of range", name, t)
	}
	line := fmt.Appendf(nil, "%s %s %s\n", t.UTC().Format(time.RFC3339Nano), d, name)
	if len(line) > maxUseLine {
		return nil, fmt.Errorf("manifest: record use: name %q too long", name)
	}
	return line, nil
}

// writable: t in UTC has a four-digit year, so RFC 3339 can carry it.
func writable(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 1 && y <= 9999
}

// Use is one parsed line of the use log.
type Use struct {
	Time   time.Time
	Digest digest.Digest
	Name   string
}

// ParseUses reads a use log, skipping lines that do not parse (and a last
// line without its newline: a write cut short).
func ParseUses(r io.Reader) ([]Use, error) { return parseUses(r, "") }

// parseUses is ParseUses of only name's lines, or of all when name is "":
// the hot path (Lookup) parses only its own entry's uses.
func parseUses(r io.Reader, name string) ([]Use, error) {
	suffix := []byte(" " + name + "\n")
	var uses []Use
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Far longer than any line we write: skip to the next newline.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == nil {
				continue
			}
		}
		if err == io.EOF {
			return uses, nil
		}
		if err != nil {
			return uses, err
		}
		if name != "" && !bytes.HasSuffix(line, suffix) {
			continue
		}
		if u, ok := parseUse(line); ok {
			uses = append(uses, u)
		}
	}
}

// parseUse parses "<RFC 3339 time> <digest> <name>\n".
func parseUse(line []byte) (Use, bool) {
	line, ok := bytes.CutSuffix(line, []byte{'\n'})
	if !ok || len(line) > maxUseLine {
		return Use{}, false
	}
	f := bytes.Split(line, []byte{' '})
	if len(f) != 3 || len(f[2]) == 0 {
		return Use{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(f[0]))
	if err != nil || !writable(t) {
		return Use{}, false
	}
	d, err := digest.Parse(string(f[1]))
	if err != nil || d.Algorithm() != digest.SHA256 {
		return Use{}, false
	}
	return Use{Time: t.UTC(), Digest: d, Name: string(f[2])}, true
}

// Apply moves each named entry's LastUsed forward to its uses, where the
// entry still holds the digest that was used.
func (m *Manifest) Apply(uses []Use) {
	for _, u := range uses {
		if e, ok := m.Entries[u.Name]; ok && e.Digest == u.Digest && u.Time.After(e.LastUsed) {
			e.LastUsed = u.Time
		}
	}
}

// readUses reads the use log's lines for name, or all of them for ""
// (no log is no uses). The caller holds the lock.
func (s *Store) readUses(name string) ([]Use, error) {
	f, err := os.Open(s.UsesPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: use log: %w", err)
	}
	defer f.Close()
	uses, err := parseUses(f, name)
	if err != nil {
		return nil, fmt.Errorf("manifest: use log %s: %w", f.Name(), err)
	}
	return uses, nil
}

// clearUses empties the use log once a written manifest holds its uses. The
// caller holds the exclusive lock. Should the removal not survive a crash,
// the log is applied again, which changes nothing.
func (s *Store) clearUses() error {
	if err := os.Remove(s.UsesPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("manifest: empty the use log: %w", err)
	}
	return nil
}
