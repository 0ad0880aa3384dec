//go:build !unix

package fsutil

import (
	"errors"
	"fmt"
)

// FreeBytes is Unix only (imgcache supports Unix systems: see the README).
func FreeBytes(path string) (int64, error) {
	return 0, fmt.Errorf("free space of %s: %w", path, errors.ErrUnsupported)
}
