//go:build !linux

package fsutil

import (
	"errors"
	"os"
)

// MapReadOnly is Linux only; elsewhere callers read the file.
func MapReadOnly(*os.File, int) ([]byte, func() error, error) {
	return nil, nil, errors.ErrUnsupported
}
