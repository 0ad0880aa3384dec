//go:build unix

package fsutil

import "syscall"

// SetUmask sets the process's umask, which decides the modes of everything
// created afterwards (files 0666 and directories 0777 before it), and
// returns the previous one.
func SetUmask(mask int) (old int, err error) { return syscall.Umask(mask), nil }
