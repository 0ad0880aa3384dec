package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/internal/testimage"
)

// previousRelease is the last commit before the layer store: the imgcache
// that other users of a shared host may still run.
const previousRelease = "71ba4d230cf9cc933f3f79c315d84384461902d9"

// buildPrevious builds previousRelease's imgcache from this repository's
// history (git archive; no checkout is touched).
func buildPrevious(t *testing.T) string {
	t.Helper()
	root, _ := filepath.Abs("..")
	src := t.TempDir()
	archive := exec.Command("sh", "-c", "git -C \"$0\" archive --format=tar \"$1\" | tar -x -C \"$2\"", root, previousRelease, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s (the test needs the repository's history, not a shallow copy): %v\n%s", previousRelease, err, out)
	}
	old := filepath.Join(t.TempDir(), "imgcache-old")
	build := exec.Command("go", "build", "-o", old, "./cmd/imgcache")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the previous release: %v\n%s", err, out)
	}
	return old
}

// snapshotFiles maps every file under dir but lock files to a hash of its
// content (symlinks: their target).
func snapshotFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".lock") || filepath.Base(p) == "lock" {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			out[rel] = "-> " + target
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			out[rel] = "unreadable: " + err.Error()
			return nil
		}
		sum := sha256.Sum256(b)
		out[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	return out
}

// TestOldBinaryCannotHurtLayeredCache builds the previous release and runs
// its gc, verify, verify --repair, rm and put against a layered cache (one
// created so and one migrated from a whole-tar cache): every one refuses
// with exit 10, and not a file changes. The cache then still verifies and
// exports with this binary.
func TestOldBinaryCannotHurtLayeredCache(t *testing.T) {
	old := buildPrevious(t)
	imgA, resA := genImage(t, testimage.Options{Layers: 2, SharedLayers: 1, BaseSeed: 99, FileSize: 100 << 10})
	imgB, _ := genImage(t, testimage.Options{Layers: 2, SharedLayers: 1, BaseSeed: 99, FileSize: 100 << 10})

	created := t.TempDir()
	must(t, created, "put", "capy-ubuntu-25.04-a", imgA)
	must(t, created, "put", "capy-ubuntu-25.04-b", imgB)

	migrated := wholeTarDir(t)
	must(t, migrated, "put", "capy-ubuntu-25.04-a", imgA)
	must(t, migrated, "put", "capy-ubuntu-25.04-b", imgB)
	// Before migrate, the old binary works on the whole-tar cache as always.
	if out, err := exec.Command(old, "--dir", migrated, "verify").CombinedOutput(); err != nil {
		t.Fatalf("the previous release cannot verify a whole-tar cache this one wrote: %v\n%s", err, out)
	}
	must(t, migrated, "migrate")

	for name, dir := range map[string]string{"created": created, "migrated": migrated} {
		t.Run(name, func(t *testing.T) {
			before := snapshotFiles(t, dir)
			if len(before) < 5 {
				t.Fatalf("the cache holds only %v", before)
			}
			for _, args := range [][]string{
				{"gc"}, {"gc", "--max-size", "1"}, {"gc", "--max-age", "1s"},
				{"verify"}, {"verify", "--repair"}, {"rm", "capy-ubuntu-25.04-a"},
				{"put", "capy-ubuntu-25.04-c", imgA}, {"ls"},
			} {
				cmd := exec.Command(old, append([]string{"--dir", dir}, args...)...)
				out, err := cmd.CombinedOutput()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				}
				if code != 10 || !strings.Contains(string(out), "upgrade imgcache") {
					t.Errorf("previous release `%s`: exit %d, want 10 (upgrade imgcache): %s", strings.Join(args, " "), code, out)
				}
			}
			after := snapshotFiles(t, dir)
			var changed, added []string
			for p, h := range before {
				if after[p] != h {
					changed = append(changed, p)
				}
			}
			for p := range after {
				if _, ok := before[p]; !ok {
					added = append(added, p)
				}
			}
			sort.Strings(changed)
			if len(changed) > 0 {
				t.Errorf("the previous release changed or deleted files: %v", changed)
			}
			// Its put compresses the tar into blobs/ before it reads the
			// manifest and refuses: that blob names nothing, and this gc
			// reclaims it.
			if len(added) > 1 || len(added) == 1 && !strings.HasPrefix(added[0], "blobs/sha256/") {
				t.Errorf("the previous release added files: %v", added)
			}
			must(t, dir, "gc")
			for _, p := range added {
				if _, err := os.Lstat(filepath.Join(dir, p)); !os.IsNotExist(err) {
					t.Errorf("gc left the old binary's stray blob %s: %v", p, err)
				}
			}
			if r := imgcache(t, dir, nil, "verify"); r.code != 0 {
				t.Errorf("verify after the old binary ran: %s", r)
			}
			if d := hashFile(t, exportTo(t, dir, "capy-ubuntu-25.04-a")); d != resA.Digest.String() {
				t.Errorf("export after the old binary ran: %s, want %s", d, resA.Digest)
			}
		})
	}
}
