package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/internal/lockfile"
)

// RepairResult says what Repair did.
type RepairResult struct {
	Manifest *Manifest // the manifest as it is now
	Repaired bool      // false: the manifest read fine (or another process repaired it first)
	Kept     string    // where the damaged file was kept (Repaired only)
}

// repairAttempts bounds how often Repair starts over when the damaged file
// changes while it rebuilds (only another repairing process does that).
const repairAttempts = 3

// Repair replaces a manifest that cannot be read with the one rebuild
// derives, keeping the damaged file beside it as manifest.json.corrupt-<time>.
//
// rebuild runs without the lock (it may re-read every blob, for minutes);
// the replacement then happens under the exclusive lock, and only if
// manifest.json still holds the very bytes that were found damaged. If
// another process repaired or rewrote it meanwhile, nothing is replaced and
// Repair returns the manifest as it is now: an update that landed on a
// repaired manifest is never overwritten by a stale rebuild. A manifest that
// reads fine is left alone, and so is one written by a newer imgcache
// (ErrNewerSchema).
func (s *Store) Repair(ctx context.Context, rebuild func(context.Context) (*Manifest, error)) (RepairResult, error) {
	for range repairAttempts {
		seen, m, err := s.readRaw(ctx, false)
		if err == nil || !errors.Is(err, errdefs.ErrCorrupt) {
			return RepairResult{Manifest: m}, err
		}
		fresh, err := rebuild(ctx)
		if err != nil {
			return RepairResult{}, err
		}
		res, again, err := s.commitRepair(ctx, seen, fresh)
		if !again {
			return res, err
		}
	}
	return RepairResult{}, fmt.Errorf("manifest %s: changed %d times while it was being rebuilt: %w (is another imgcache repairing it? try again)", s.Path(), repairAttempts, errdefs.ErrLocked)
}

// commitRepair writes fresh in place of the damaged bytes seen, under the
// exclusive lock. again: the file changed since, and is still damaged.
func (s *Store) commitRepair(ctx context.Context, seen []byte, fresh *Manifest) (RepairResult, bool, error) {
	l, err := lockfile.Acquire(ctx, s.lockPath(), true)
	if err != nil {
		return RepairResult{}, false, fmt.Errorf("manifest: %w", err)
	}
	defer l.Release()
	now, cur, err := s.readLocked()
	if !bytes.Equal(now, seen) {
		if err == nil || !errors.Is(err, errdefs.ErrCorrupt) {
			return RepairResult{Manifest: cur}, false, err // repaired (or rewritten) by another process
		}
		return RepairResult{}, true, nil
	}
	kept := fmt.Sprintf("%s.corrupt-%s-%d", s.Path(), time.Now().UTC().Format("20060102T150405Z"), os.Getpid())
	if err := os.Rename(s.Path(), kept); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return RepairResult{}, false, fmt.Errorf("repair: keep the damaged manifest: %w", fsutil.Classify(err))
	}
	uses, err := s.readUses("")
	if err != nil {
		return RepairResult{}, false, err
	}
	fresh.Apply(uses)
	if err := s.write(fresh); err != nil {
		return RepairResult{}, false, err
	}
	if err := s.clearUses(); err != nil {
		return RepairResult{}, false, err
	}
	return RepairResult{Manifest: fresh, Repaired: true, Kept: kept}, false, nil
}

// readRaw reads manifest.json's bytes and decodes them, under the lock
// (shared unless exclusive).
func (s *Store) readRaw(ctx context.Context, exclusive bool) ([]byte, *Manifest, error) {
	l, err := lockfile.Acquire(ctx, s.lockPath(), exclusive)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	defer l.Release()
	return s.readLocked()
}

// readLocked is read, also returning the file's bytes (nil: no file). The
// caller holds the lock.
func (s *Store) readLocked() ([]byte, *Manifest, error) {
	f, err := os.Open(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		// No file: an empty cache of the schema an older imgcache left
		// (those write manifest.json with their first put); a cache this
		// one creates gets a schema-2 manifest at once (Create).
		return nil, &Manifest{Version: WholeTarSchema, Entries: map[string]*Entry{}}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("manifest %s: %w", s.Path(), err)
	}
	defer f.Close()
	data, err := readAll(f)
	if err != nil {
		return nil, nil, s.readError(err)
	}
	m, err := decode(data)
	if err != nil {
		return data, nil, s.readError(err)
	}
	uses, err := s.readUses("")
	if err != nil {
		return data, nil, err
	}
	m.Apply(uses)
	if m.holds, err = s.readHolds(); err != nil {
		return data, nil, err
	}
	if m.retired, err = readLog(s.RetiredPath()); err != nil {
		return data, nil, err
	}
	return data, m, nil
}
