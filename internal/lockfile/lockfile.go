package lockfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/fsutil"
)

// A blocked Acquire retries after firstPoll, doubling the pause up to
// maxPoll: quick for the manifest lock, held for milliseconds, and cheap for a
// blob lock held through a 30-second load (7 processes polling every 5 ms
// took CPU from the load they were waiting for).
const (
	firstPoll = 2 * time.Millisecond
	maxPoll   = 100 * time.Millisecond
)

// Lock is a held lock. Release it exactly once.
type Lock struct {
	f         *flock.Flock
	exclusive bool
	unguarded bool // no lock file, and this user may not create one
}

// Unguarded reports that no lock is held: the lock file does not exist and
// this process may not create it (a user who can read the cache but not
// write it, or a read-only mount). The caller goes on without the
// exclusion: a reader may then see a blob deleted under it (its read fails
// as not found, never yields wrong bytes), two such readers may load one
// image twice.
func (l *Lock) Unguarded() bool { return l != nil && l.unguarded }

// Acquire takes the lock on path, shared or exclusive, waiting until ctx is
// done. The file (and its directory) are created if missing. On timeout or
// cancellation the error wraps errdefs.ErrLocked and ctx.Err().
func Acquire(ctx context.Context, path string, exclusive bool) (*Lock, error) {
	for {
		l, ok, err := try(ctx, path, exclusive, true)
		if err != nil || ok {
			return l, err
		}
	}
}

// TryAcquire takes the lock without waiting. ok is false when another
// process holds a conflicting lock.
func TryAcquire(path string, exclusive bool) (l *Lock, ok bool, err error) {
	for {
		l, ok, err := try(context.Background(), path, exclusive, false)
		if err != nil || ok || l == nil {
			return l, ok, err
		}
	}
}

// try makes one attempt. It returns (nil, false, nil) when the lock was busy
// and wait is false, or when the file was replaced and the caller must retry
// (then l is non-nil only as a signal; it is released).
func try(ctx context.Context, path string, exclusive, wait bool) (*Lock, bool, error) {
	if err := fsutil.MkdirAll(filepath.Dir(path)); err != nil {
		if fsutil.NotWritable(err) {
			return &Lock{exclusive: exclusive, unguarded: true}, true, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	f := flock.New(path, flock.SetPermissions(fsutil.FileMode))
	var ok bool
	var err error
	switch {
	case wait:
		ok, err = waitLock(ctx, f, exclusive)
	case exclusive:
		ok, err = f.TryLock()
	default:
		ok, err = f.TryRLock()
	}
	if err != nil {
		_ = f.Close()
		if _, serr := os.Lstat(path); fsutil.NotWritable(err) && errors.Is(serr, fs.ErrNotExist) {
			return &Lock{exclusive: exclusive, unguarded: true}, true, nil
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, false, fmt.Errorf("waiting for lock %s: %w (%w)", path, errdefs.ErrLocked, err)
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	if !ok {
		_ = f.Close()
		return nil, false, nil
	}
	// The lock is ours; make sure the path still names the file we locked.
	held, err1 := f.Stat()
	now, err2 := os.Stat(path)
	if err1 == nil && err2 == nil && os.SameFile(held, now) {
		return &Lock{f: f, exclusive: exclusive}, true, nil
	}
	_ = f.Unlock()
	_ = f.Close()
	if err1 != nil {
		return nil, false, fmt.Errorf("lock %s: %w", path, err1)
	}
	// Replaced or removed under us: retry (signalled by a non-nil lock, not ok).
	return &Lock{}, false, nil
}

// waitLock retries a non-blocking flock with a growing pause until it
// succeeds or ctx is done.
func waitLock(ctx context.Context, f *flock.Flock, exclusive bool) (bool, error) {
	pause := firstPoll
	var timer *time.Timer
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		var ok bool
		var err error
		if exclusive {
			ok, err = f.TryLock()
		} else {
			ok, err = f.TryRLock()
		}
		if err != nil || ok {
			return ok, err
		}
		if timer == nil {
			timer = time.NewTimer(pause)
			defer timer.Stop()
		} else {
			timer.Reset(pause)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-timer.C:
		}
		pause = min(2*pause, maxPoll)
	}
}

// Exclusive reports whether the lock is held exclusively.
func (l *Lock) Exclusive() bool { return l.exclusive }

// Release drops the lock and closes the file.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Unlock()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// Remove unlinks the lock file and releases the lock. The lock must be held
// exclusively: nobody else can be holding it, and anyone who opened the old
// file will notice the replacement and retry.
func (l *Lock) Remove() error {
	if l == nil || l.f == nil {
		return nil
	}
	if !l.exclusive {
		return fmt.Errorf("lockfile: remove %s needs an exclusive lock", l.f.Path())
	}
	err := os.Remove(l.f.Path())
	if rerr := l.Release(); err == nil {
		err = rerr
	}
	return err
}
