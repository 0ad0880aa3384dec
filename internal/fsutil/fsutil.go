package fsutil

import (
	"errors"
	"fmt"
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

// Classify wraps ENOSPC and EDQUOT as errdefs.ErrNoSpace, with the fix.
func Classify(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w (free some space, e.g. imgcache gc --min-free 20G)", errdefs.ErrNoSpace, err)
	}
	return err
}
