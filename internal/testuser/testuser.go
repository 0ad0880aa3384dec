//go:build unix

// Package testuser runs part of a test as another Unix user, by numeric IDs
// (SysProcAttr.Credential), without adding users to the machine: the test
// binary re-executes itself as that user, in a helper mode the test names.
//
// A test that needs it starts with
//
//	if testuser.IsHelper("unreadable") {
//		// … the work, as the other user; report through the exit code
//	}
//
// and runs that part with Command(t, uid, gid, "^TestName$", "unreadable").
// Switching users needs root (CanSwitch); everything the helper touches must
// be reachable by that user (SharedDir).
package testuser

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Nobody's IDs on Debian (nobody:nogroup): a user that owns nothing.
const (
	NobodyUID = 65534
	NobodyGID = 65534
)

const envHelper = "IMGCACHE_TESTUSER_HELPER"

// CanSwitch reports whether this process may run commands as another user.
func CanSwitch() bool { return os.Geteuid() == 0 }

// IsHelper reports whether this process is the helper called name.
func IsHelper(name string) bool { return os.Getenv(envHelper) == name }

// SharedDir returns a new directory that every user may enter and read
// (0755, in the system temp directory), removed when the test ends.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "imgcache-testuser-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Command returns a command that runs this test binary as uid:gid, running
// only the tests matching run, in helper mode name (IsHelper(name) is true
// there). The binary is copied to a SharedDir first, since the go tool
// builds it in a directory only its owner may enter. env is added to the
// environment.
func Command(t testing.TB, uid, gid uint32, run, name string, env ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(SharedDir(t), filepath.Base(self))
	if err := copyFile(self, bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run="+run, "-test.count=1")
	cmd.Dir = filepath.Dir(bin)
	cmd.Env = append(append(os.Environ(), envHelper+"="+name, "HOME="+filepath.Dir(bin)), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	return cmd
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
