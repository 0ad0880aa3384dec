//go:build unix

package fsutil

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FreeBytes is the space available to unprivileged users on the
// filesystem holding path (what df shows as Avail).
func FreeBytes(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
