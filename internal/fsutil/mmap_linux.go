//go:build linux

package fsutil

import (
	"os"

	"golang.org/x/sys/unix"
)

// MapReadOnly maps f's first size bytes read-only and populated: reading a
// large file this way costs no fresh anonymous memory (whose page faults
// dominate a short-lived process's cost on some VMs). Unmap with the
// returned function. A file truncated while mapped faults on access: read
// such memory with debug.SetPanicOnFault.
func MapReadOnly(f *os.File, size int) ([]byte, func() error, error) {
	data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return unix.Munmap(data) }, nil
}
