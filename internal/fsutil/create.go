package fsutil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/imgcache/imgcache/errdefs"
)

// The modes everything imgcache creates asks for: the umask decides the
// rest, so that a cache shared by a group (setgid directory, umask 002)
// stays writable by the group. Blobs are then made read-only (ReadOnly).
const (
	FileMode fs.FileMode = 0o666
	DirMode  fs.FileMode = 0o777
)

// MkdirAll creates dir and its parents with DirMode (before the umask).
func MkdirAll(dir string) error { return os.MkdirAll(dir, DirMode) }

// CreateExcl creates path for writing with FileMode (before the umask),
// failing if it exists.
func CreateExcl(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, FileMode)
}

// OpenAppend opens path for appending, creating it with FileMode (before
// the umask).
func OpenAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, FileMode)
}

// CreateTemp creates a new file in dir named prefix + random hex + suffix,
// with FileMode before the umask (os.CreateTemp forces 0600, which a
// shared cache cannot use).
func CreateTemp(dir, prefix, suffix string) (*os.File, error) {
	for range 10 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		f, err := CreateExcl(filepath.Join(dir, prefix+hex.EncodeToString(b[:])+suffix))
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("create a temp file in %s: %w", dir, fs.ErrExist)
}

// ReadOnly drops the write bits of path's mode, keeping what the umask
// gave the rest.
func ReadOnly(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.Chmod(path, fi.Mode().Perm()&^0o222)
}

// WriteAtomic replaces path with what write writes, atomically and durably:
// into a temp file beside it (tmp if given, for files written only under a
// lock; else a unique hidden name), fsync, rename over path, fsync of the
// directory. Readers see the old content or the new, never a mix; a crash
// leaves at most the temp file. The new file's mode is FileMode before the
// umask. Errors of the file wrap ErrNoSpace when the filesystem is full;
// write's own errors (not its writer's) are returned as they are.
func WriteAtomic(path, tmp string, write func(io.Writer) error) error {
	return writeRenamed(path, tmp, true, Classify, write)
}

// WriteOutput writes a file the user named (export -o, the Prometheus
// file) as WriteAtomic does, but durable only if asked: without, it is
// written as docker save -o and cp write theirs, with no fsync: path
// appears only once write succeeded, and a killed process leaves at most
// the temp file, but after a power cut path may be shorter than what was
// written. Its errors say nothing of the cache (a full filesystem is
// ErrNoSpace all the same).
func WriteOutput(path string, durable bool, write func(io.Writer) error) error {
	return writeRenamed(path, "", durable, classifyOutput, write)
}

// classifyOutput wraps ENOSPC and EDQUOT as errdefs.ErrNoSpace, with
// nothing about the cache: the file is the user's.
func classifyOutput(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", errdefs.ErrNoSpace, err)
	}
	return err
}

// writeRenamed writes path through a temp file (tmp, or a unique name)
// renamed over it, fsyncing file and directory if durable; classify words
// the file's errors.
func writeRenamed(path, tmp string, durable bool, classify func(error) error, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	var f *os.File
	if tmp != "" {
		f, err = os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, FileMode)
	} else {
		f, err = CreateTemp(dir, "."+filepath.Base(path)+".tmp-", "")
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, classify(err))
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	// Large outputs (export -o --sync) start their writeback as they go,
	// so that the fsync below waits for the tail only.
	fw := &fileWriter{w: Writeback(f, 0)}
	if durable {
		fw.w = Writeback(f, 32<<20)
	}
	if err = write(fw); err != nil && fw.err == nil {
		// The producer's own failure (not the file's): its words.
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil && durable {
		err = SyncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, classify(err))
	}
	return nil
}

// fileWriter remembers the first error of the file it writes to, telling
// it apart from an error of the code that writes.
type fileWriter struct {
	w   io.Writer
	err error
}

func (f *fileWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil && f.err == nil {
		f.err = err
	}
	return n, err
}
