package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imgcache/imgcache/internal/testimage"
)

// A group of CI users and its members, by numeric IDs: no user or group
// is added to the machine.
const (
	ciGroup = 4242
	userA   = 4201
	userB   = 4202
	reader  = 4203 // not in the group: may read the cache, not write it
)

var (
	sharedBinOnce sync.Once
	sharedBin     string
)

// binForAll is the binary under test copied where every user may run it
// (go test builds it in a directory only root may enter).
func binForAll(t *testing.T) string {
	t.Helper()
	sharedBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imgcache-e2e-shared-bin-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o755)
		in, err := os.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		p := filepath.Join(dir, "imgcache")
		out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(out, in)
		out.Close()
		sharedBin = p
	})
	return sharedBin
}

// dockerGroup is the group owning the daemon's socket, which a non-root
// user needs to talk to it.
func dockerGroup(t *testing.T) uint32 {
	t.Helper()
	sock := daemonSocket()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("docker socket %s: %v", sock, err)
	}
	return fi.Sys().(*syscall.Stat_t).Gid
}

// as runs the binary as uid (its own gid, plus groups) on dir.
func as(t *testing.T, uid uint32, groups []uint32, home, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binForAll(t), append([]string{"--dir", dir}, args...)...)
	cmd.Env = append(append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home), env...)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: groups}}
	return runCmd(t, cmd)
}

// TestSharedCacheSeveralUsers: the shared setup the README documents (a
// setgid directory of a group, its members with umask 002 through
// IMGCACHE_UMASK) works for two users in turn and at once: each puts, gets
// the other's image, gc and verify; a user outside the group, who may only
// read, still gets (uses not recorded, said at info level), exports,
// lists, inspects and verifies, and cannot put. Before: user two's put
// failed on user one's lock files, and a reader's get exited 1 after
// loading.
func TestSharedCacheSeveralUsers(t *testing.T) {
	needDocker(t)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: this test must run as root to act as other users")
		}
		t.Skip("needs root to act as other users")
	}
	home, err := os.MkdirTemp("", "imgcache-e2e-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	os.Chmod(home, 0o755)
	dir := filepath.Join(home, "cache")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 0, ciGroup); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o2775|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	dg := dockerGroup(t)
	member := []uint32{ciGroup, dg}
	shared := []string{"IMGCACHE_UMASK=002"}
	images := map[string]string{}
	for _, n := range []string{"a", "b", "c", "d"} {
		p, _ := genImage(t, testimage.Options{Layers: 2, FilesPerLayer: 2, FileSize: 64 << 10})
		dst := filepath.Join(home, n+".tar")
		if err := os.Rename(p, dst); err != nil {
			data, _ := os.ReadFile(p)
			os.WriteFile(dst, data, 0o644)
		}
		os.Chmod(dst, 0o644)
		images[n] = dst
	}
	ok := func(r result, what string) string {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("%s: %s", what, r)
		}
		return strings.TrimSpace(r.stdout)
	}

	ok(as(t, userA, member, home, dir, shared, "put", "capy-debian-13-a", images["a"]), "user A put")
	ok(as(t, userB, member, home, dir, shared, "put", "capy-debian-13-b", images["b"]), "user B put")
	if ref := ok(as(t, userB, member, home, dir, shared, "get", "capy-debian-13-a"), "user B get of A's image"); !inDaemon(t, ref) {
		t.Fatalf("%s not in the daemon", ref)
	}
	ok(as(t, userA, member, home, dir, shared, "get", "capy-debian-13-b"), "user A get of B's image")

	// Both at once: puts, gets and verifies interleaved.
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i, u := range []uint32{userA, userB} {
		wg.Go(func() {
			n := []string{"c", "d"}[i]
			for _, args := range [][]string{
				{"put", "capy-debian-13-" + n, images[n]},
				{"get", "capy-debian-13-a"},
				{"verify"},
				{"get", "capy-debian-13-" + n},
				{"ls"},
			} {
				if r := as(t, u, member, home, dir, shared, args...); r.code != 0 {
					errs <- fmt.Sprintf("user %d %v: %s", u, args, r)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The reader: no write permission anywhere in the cache.
	r := as(t, reader, []uint32{dg}, home, dir, nil, "--log-level", "info", "get", "capy-debian-13-c")
	if r.code != 0 || !strings.Contains(r.stderr, "uses are not recorded") || strings.Contains(r.stderr, "level=ERROR") {
		t.Fatalf("the reader's get: %s", r)
	}
	out := filepath.Join(home, "reader-out")
	os.Mkdir(out, 0o777)
	os.Chmod(out, 0o777)
	ok(as(t, reader, []uint32{dg}, home, dir, nil, "export", "capy-debian-13-c", "-o", filepath.Join(out, "c.tar")), "the reader's export")
	if hashFile(t, filepath.Join(out, "c.tar")) != hashFile(t, images["c"]) {
		t.Fatal("the reader's export differs from the image put")
	}
	for _, args := range [][]string{{"ls"}, {"inspect", "capy-debian-13-b"}, {"verify"}} {
		ok(as(t, reader, []uint32{dg}, home, dir, nil, args...), fmt.Sprintf("the reader's %v", args))
	}
	if r := as(t, reader, []uint32{dg}, home, dir, nil, "put", "capy-debian-13-r", images["a"]); r.code == 0 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("the reader's put: %s", r)
	}

	// gc by user B deletes what user A stored; A's verify is clean after.
	ok(as(t, userB, member, home, dir, shared, "gc", "--min-age", "0", "--max-size", "1"), "user B gc")
	ok(as(t, userA, member, home, dir, shared, "verify"), "user A verify after B's gc")
	ok(as(t, userA, member, home, dir, shared, "put", "capy-debian-13-a", images["a"]), "user A put after B's gc")
	must(t, dir, "verify") // and root's: no finding
}
