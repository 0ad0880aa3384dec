package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/imgcache/imgcache/errdefs"
)

// SyncDir fsyncs a directory, making renames and unlinks in it durable.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Classify wraps ENOSPC and EDQUOT as errdefs.ErrNoSpace, with the fix,
// and says what to do about a write this user may not make.
func Classify(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w (free some space, e.g. imgcache gc --min-free 20G)", errdefs.ErrNoSpace, err)
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w (this user may not write there: a cache several users share needs their common group on a setgid directory and --umask 002; see the README)", err)
	}
	return err
}

// NotWritable reports whether err means this process may not write there:
// permission denied, or a read-only filesystem. A user who can read a
// shared cache but not write it meets these on the few writes a read
// makes (recording a use).
func NotWritable(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}
