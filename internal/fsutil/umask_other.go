//go:build !unix

package fsutil

import "errors"

// SetUmask is not supported here.
func SetUmask(int) (int, error) { return 0, errors.New("umask is not supported on this system") }
