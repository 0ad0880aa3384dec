package lockfile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/internal/testuser"
)

// TestReadOnlyUser: a user who may read a directory but not write it still
// takes real locks, shared and exclusive, on the lock files that exist
// (flock works on read-only descriptors); where the lock file does not
// exist and cannot be made, Acquire goes on unguarded instead of failing;
// an existing lock file it may not read is an error. Runs as nobody (needs
// root to switch, as in CI).
func TestReadOnlyUser(t *testing.T) {
	if testuser.IsHelper("lockfile-read-only") {
		readOnlyHelper(t)
		return
	}
	if !testuser.CanSwitch() {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: this test must run as root to switch to nobody")
		}
		t.Skip("needs root to run part of the test as nobody")
	}
	dir := testuser.SharedDir(t) // root's, 0755: nobody reads, cannot write
	for name, mode := range map[string]os.FileMode{"exists.lock": 0o644, "secret.lock": 0o600} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	// Root holds exists.lock exclusively for a while: nobody's TryAcquire
	// must see it busy, so its lock is real.
	held, err := Acquire(context.Background(), filepath.Join(dir, "exists.lock"), true)
	if err != nil {
		t.Fatal(err)
	}
	out, err := testuser.Command(t, testuser.NobodyUID, testuser.NobodyGID, "^TestReadOnlyUser$", "lockfile-read-only", "LOCK_DIR="+dir, "PHASE=busy").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok busy") {
		t.Fatalf("as nobody, while root holds the lock: %v\n%s", err, out)
	}
	held.Release()
	out, err = testuser.Command(t, testuser.NobodyUID, testuser.NobodyGID, "^TestReadOnlyUser$", "lockfile-read-only", "LOCK_DIR="+dir, "PHASE=free").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok free") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	if _, err := os.Lstat(filepath.Join(dir, "missing.lock")); err == nil {
		t.Fatal("nobody created a lock file in root's directory")
	}
}

func readOnlyHelper(t *testing.T) {
	dir := os.Getenv("LOCK_DIR")
	exists := filepath.Join(dir, "exists.lock")
	if os.Getenv("PHASE") == "busy" {
		if _, ok, err := TryAcquire(exists, false); err != nil || ok {
			t.Fatalf("shared TryAcquire of a lock root holds: ok=%v, %v", ok, err)
		}
		fmt.Println("ok busy")
		return
	}
	for _, exclusive := range []bool{false, true} {
		l, err := Acquire(context.Background(), exists, exclusive)
		if err != nil || l.Unguarded() {
			t.Fatalf("Acquire(exists, exclusive=%v) = unguarded %v, %v; want a real lock", exclusive, l.Unguarded(), err)
		}
		l.Release()
	}
	l, err := Acquire(context.Background(), filepath.Join(dir, "missing.lock"), false)
	if err != nil || !l.Unguarded() {
		t.Fatalf("Acquire(missing) = %v; want an unguarded lock", err)
	}
	l.Release()
	if _, err := Acquire(context.Background(), filepath.Join(dir, "sub", "missing.lock"), true); err != nil {
		t.Fatalf("Acquire in a directory nobody may create: %v; want unguarded", err)
	}
	if _, err := Acquire(context.Background(), filepath.Join(dir, "secret.lock"), false); err == nil {
		t.Fatal("Acquire of a lock file nobody may read succeeded")
	}
	fmt.Println("ok free")
}
