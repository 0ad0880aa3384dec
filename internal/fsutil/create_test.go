//go:build unix

package fsutil

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imgcache/imgcache/errdefs"
)

// TestModesFollowTheUmask: with a group's umask (002) what imgcache creates
// is group-writable, blobs made read-only keep group read; with 077 nobody
// else may read. Fails if a creation site fixes its mode (0644, 0600).
func TestModesFollowTheUmask(t *testing.T) {
	for _, tc := range []struct {
		umask              int
		file, dir, readOnl os.FileMode
	}{
		{0o002, 0o664, 0o775, 0o444},
		{0o022, 0o644, 0o755, 0o444},
		{0o077, 0o600, 0o700, 0o400},
	} {
		old := syscall.Umask(tc.umask)
		dir := filepath.Join(t.TempDir(), "a", "b")
		if err := MkdirAll(dir); err != nil {
			t.Fatal(err)
		}
		f, err := CreateTemp(dir, "x-", ".tmp")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		atomic := filepath.Join(dir, "atomic")
		if err := WriteAtomic(atomic, "", func(w io.Writer) error { _, err := io.WriteString(w, "x"); return err }); err != nil {
			t.Fatal(err)
		}
		syscall.Umask(old)
		for path, want := range map[string]os.FileMode{dir: tc.dir, f.Name(): tc.file, atomic: tc.file} {
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != want {
				t.Errorf("umask %03o: %s has mode %v, want %v (%v)", tc.umask, path, fi.Mode().Perm(), want, err)
			}
		}
		if err := ReadOnly(f.Name()); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(f.Name()); fi.Mode().Perm() != tc.readOnl {
			t.Errorf("umask %03o: read-only mode %v, want %v", tc.umask, fi.Mode().Perm(), tc.readOnl)
		}
	}
}

// TestWriteAtomic: durable or not, the old content stays when write fails
// (its error returned as it is), no temp file is left, a failing file's
// error names the file, and the new content replaces the old whole.
func TestWriteAtomic(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(path, tmp string, write func(io.Writer) error) error
	}{
		{"durable", WriteAtomic},
		{"output", func(path, _ string, write func(io.Writer) error) error { return WriteOutput(path, false, write) }},
		{"durable output", func(path, _ string, write func(io.Writer) error) error { return WriteOutput(path, true, write) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			boom := errors.New("boom")
			if err := tc.write(p, "", func(w io.Writer) error { io.WriteString(w, "half"); return boom }); err != boom {
				t.Fatalf("write failing = %v, want its own error unwrapped", err)
			}
			if b, _ := os.ReadFile(p); string(b) != "old" {
				t.Errorf("after a failed write: %q", b)
			}
			// The file failing: its error names the file.
			err := tc.write(p, "", func(w io.Writer) error {
				w.(*fileWriter).w = failingWriter{}
				_, err := io.WriteString(w, "x")
				return fmt.Errorf("copying: %w", err)
			})
			if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "write "+p) {
				t.Errorf("file failing = %v, want EIO naming %s", err, p)
			}
			if err := tc.write(p, filepath.Join(dir, "f.tmp"), func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(p); string(b) != "new" {
				t.Errorf("after a write: %q", b)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, syscall.EIO }

// TestOutputErrorsSayNothingOfTheCache: a full filesystem is ErrNoSpace for
// the cache's files and the user's alike, but only the cache's point at gc.
func TestOutputErrorsSayNothingOfTheCache(t *testing.T) {
	for _, err := range []error{syscall.ENOSPC, syscall.EDQUOT} {
		cache, out := Classify(err), classifyOutput(err)
		if !errors.Is(cache, errdefs.ErrNoSpace) || !errors.Is(out, errdefs.ErrNoSpace) || !errors.Is(out, err) {
			t.Errorf("%v: cache's %v, output's %v: want both ErrNoSpace", err, cache, out)
		}
		if !strings.Contains(cache.Error(), "imgcache gc") || strings.Contains(out.Error(), "gc") {
			t.Errorf("%v: cache's %q, output's %q: only the cache's should suggest gc", err, cache, out)
		}
	}
	if err := classifyOutput(fs.ErrPermission); err != fs.ErrPermission {
		t.Errorf("permission denied on an output: %v, want it as is", err)
	}
}
