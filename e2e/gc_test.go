package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/imgcache/imgcache/internal/testimage"
)

type gcReport struct {
	Victims []struct {
		Names  []string `json:"names"`
		Blob   string   `json:"blob"`
		Reason string   `json:"reason"`
	} `json:"victims"`
	Skipped      []string `json:"skipped"`
	Docker       []string `json:"docker_removed"`
	DockerErrors []string `json:"docker_errors"`
}

func evictedNames(r gcReport) []string {
	var out []string
	for _, v := range r.Victims {
		out = append(out, v.Names...)
	}
	slices.Sort(out)
	return out
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// TestMinFreeEvictsExactlyTheLRUEntriesNeeded runs on a small tmpfs: with
// --min-free set to what is free now plus 1.5 blobs, gc must evict the two
// least-recently-used entries and nothing else.
func TestMinFreeEvictsExactlyTheLRUEntriesNeeded(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: this test needs root to mount a tmpfs")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	dir := filepath.Join(mnt, "cache")
	names := []string{"capy-ubuntu-25.04-a", "capy-ubuntu-25.04-b", "capy-ubuntu-25.04-c", "capy-ubuntu-25.04-d", "capy-ubuntu-25.04-e"}
	for _, n := range names {
		img, _ := genImage(t, testimage.Options{Layers: 2, FilesPerLayer: 2, FileSize: 1 << 20}) // ~4 MiB incompressible
		must(t, dir, "put", n, img)
	}
	// Use a and b again: c and d are now the least recently used.
	for _, n := range []string{"capy-ubuntu-25.04-a", "capy-ubuntu-25.04-b"} {
		must(t, dir, "export", n, "-o", filepath.Join(t.TempDir(), "x.tar"))
	}
	var entries []struct {
		Name       string    `json:"name"`
		StoredSize int64     `json:"stored_size"`
		LastUsed   time.Time `json:"last_used"`
	}
	json.Unmarshal([]byte(must(t, dir, "ls", "--json")), &entries)
	// The premise, observed rather than slept for: each operation ran after
	// the one before, so the last uses are c < d < e < a < b.
	used := map[string]time.Time{}
	for _, e := range entries {
		used[e.Name] = e.LastUsed
	}
	order := []string{"capy-ubuntu-25.04-c", "capy-ubuntu-25.04-d", "capy-ubuntu-25.04-e", "capy-ubuntu-25.04-a", "capy-ubuntu-25.04-b"}
	for i := 1; i < len(order); i++ {
		if !used[order[i-1]].Before(used[order[i]]) {
			t.Fatalf("last uses not in the order of the operations: %v", used)
		}
	}
	blob := entries[0].StoredSize
	need := freeBytes(t, dir) + blob*3/2
	out := must(t, dir, "gc", "--json", "--min-age", "0", "--min-free", fmt.Sprint(need))
	var rep gcReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if got, want := evictedNames(rep), []string{"capy-ubuntu-25.04-c", "capy-ubuntu-25.04-d"}; !slices.Equal(got, want) {
		t.Fatalf("--min-free evicted %v, want exactly %v (the two least recently used)", got, want)
	}
	if free := freeBytes(t, dir); free < need {
		t.Fatalf("free after gc %d < --min-free %d", free, need)
	}
	left := listEntries(t, dir)
	if len(left) != 3 {
		t.Fatalf("entries left: %v", left)
	}
	// Hysteresis: already above --min-free, a second gc evicts nothing.
	if out := must(t, dir, "gc", "--json", "--min-age", "0", "--min-free", fmt.Sprint(need)); strings.Contains(out, `"names": [`) {
		t.Fatalf("second gc evicted more: %s", out)
	}
}

// TestGCSkipsABlobAnotherProcessHolds: a reader in another process keeps its
// blob; gc evicts the rest and reports the skip.
func TestGCSkipsABlobAnotherProcessHolds(t *testing.T) {
	dir := wholeTarDir(t)
	digests := map[string]string{}
	for _, n := range []string{"capy-ubuntu-25.04-held", "capy-ubuntu-25.04-free1", "capy-ubuntu-25.04-free2"} {
		img, _ := genImage(t, testimage.Options{})
		digests[n] = must(t, dir, "put", n, img)
	}
	held := strings.TrimPrefix(digests["capy-ubuntu-25.04-held"], "sha256:")
	holder := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	holder.Env = append(os.Environ(), "IMGCACHE_HOLD_LOCK="+filepath.Join(dir, "locks", held+".lock"), "IMGCACHE_HOLD_SHARED=1")
	stdout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	stdout.Read(make([]byte, 4))

	var rep gcReport
	json.Unmarshal([]byte(must(t, dir, "gc", "--json", "--min-age", "0", "--max-size", "1")), &rep)
	if got, want := evictedNames(rep), []string{"capy-ubuntu-25.04-free1", "capy-ubuntu-25.04-free2"}; !slices.Equal(got, want) {
		t.Fatalf("gc evicted %v, want %v", got, want)
	}
	if !slices.Contains(rep.Skipped, "sha256:"+held) {
		t.Fatalf("held blob not reported as skipped: %v", rep.Skipped)
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", held+".tar.zst")); err != nil {
		t.Fatalf("gc deleted a blob another process holds: %v", err)
	}
	// Strict mode says the target was missed.
	if r := imgcache(t, dir, nil, "gc", "--strict", "--min-age", "0", "--max-size", "1"); r.code != 9 {
		t.Fatalf("gc --strict with an unreachable target: %s", r)
	}
	// Once the holder is gone the blob goes.
	holder.Process.Kill()
	holder.Wait()
	json.Unmarshal([]byte(must(t, dir, "gc", "--json", "--min-age", "0", "--max-size", "1")), &rep)
	if got := evictedNames(rep); !slices.Equal(got, []string{"capy-ubuntu-25.04-held"}) {
		t.Fatalf("after the holder died gc evicted %v", got)
	}
}

// TestGCDockerUntagsButNeverForces: --docker removes evicted names' tags; an
// image a container uses is reported and kept.
func TestGCDockerUntagsButNeverForces(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	imgA, a := genImage(t, testimage.Options{})
	imgB, b := genImage(t, testimage.Options{})
	must(t, dir, "put", "capy-ubuntu-25.04-free", imgA)
	must(t, dir, "put", "capy-ubuntu-25.04-used", imgB)
	refA := must(t, dir, "get", "capy-ubuntu-25.04-free")
	refB := must(t, dir, "get", "capy-ubuntu-25.04-used")
	// A container (created, never started: the image has no binaries) uses B.
	ctx := context.Background()
	c, err := docker.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: refB, Cmd: []string{"/nothing"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}) })
	// Drop the archives' own tags so imgcache's are the last ones.
	for _, id := range []string{a.ImageID.String(), b.ImageID.String()} {
		info, _ := docker.ImageInspect(ctx, id)
		for _, tag := range info.RepoTags {
			if !strings.HasPrefix(tag, "imgcache/") {
				docker.ImageRemove(ctx, tag, imageRemoveOpts)
			}
		}
	}
	var rep gcReport
	r := imgcache(t, dir, nil, "gc", "--json", "--docker", "--min-age", "0", "--max-size", "1")
	if r.code != 0 {
		t.Fatalf("gc --docker: %s", r)
	}
	json.Unmarshal([]byte(r.stdout), &rep)
	if inDaemon(t, refA) || inDaemon(t, a.ImageID.String()) {
		t.Fatalf("gc --docker left %s in the daemon (removed: %v)", refA, rep.Docker)
	}
	if !inDaemon(t, b.ImageID.String()) {
		t.Fatal("gc --docker removed an image a container uses")
	}
	if len(rep.DockerErrors) == 0 {
		t.Fatalf("the conflict was not reported: %+v", rep)
	}
}

// TestAutomaticGCAfterPut: with IMGCACHE_MAX_SIZE set, put runs a gc.
func TestAutomaticGCAfterPut(t *testing.T) {
	dir := t.TempDir()
	a, _ := genImage(t, testimage.Options{FileSize: 256 << 10})
	b, _ := genImage(t, testimage.Options{FileSize: 256 << 10})
	env := []string{"IMGCACHE_MAX_SIZE=2M", "IMGCACHE_MIN_AGE=0"} // one blob (~1.5 MiB) fits, two do not
	if r := imgcache(t, dir, env, "put", "capy-ubuntu-25.04-old", a); r.code != 0 {
		t.Fatal(r)
	}
	if r := imgcache(t, dir, env, "put", "capy-ubuntu-25.04-new", b); r.code != 0 {
		t.Fatal(r)
	}
	got := listEntries(t, dir)
	if _, ok := got["capy-ubuntu-25.04-new"]; !ok || len(got) != 1 {
		t.Fatalf("after an automatic gc with IMGCACHE_MAX_SIZE=2M: %v, want only the new entry", got)
	}
}

// TestGetThenGCKeepsTheJobsImage: a job's `ref=$(imgcache get A)` followed
// at once by another shell's `gc --docker` with a tight limit: the entry and
// its daemon image stay (the default min-age), and the shortfall says why
// (exit 9 with --strict). Once a (short) min-age has passed, the same gc
// evicts both. A hold (get --hold) outlives the min-age, then expires.
// Before min-age, the first gc evicted the entry and removed the image.
func TestGetThenGCKeepsTheJobsImage(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	img, _ := genImage(t, testimage.Options{})
	must(t, dir, "put", "capy-ubuntu-25.04-job", img)
	ref := must(t, dir, "get", "capy-ubuntu-25.04-job")
	r := imgcache(t, dir, nil, "gc", "--docker", "--strict", "--max-size", "1")
	if r.code != 9 || !strings.Contains(r.stderr, "recently used or held") {
		t.Fatalf("gc --docker --strict --max-size 1 right after get: %s", r)
	}
	if !inDaemon(t, ref) {
		t.Fatalf("gc removed %s from the daemon between the job's get and its run", ref)
	}
	time.Sleep(1500 * time.Millisecond)
	var rep gcReport
	json.Unmarshal([]byte(must(t, dir, "gc", "--json", "--docker", "--min-age", "1s", "--max-size", "1")), &rep)
	if got := evictedNames(rep); !slices.Equal(got, []string{"capy-ubuntu-25.04-job"}) || inDaemon(t, ref) {
		t.Fatalf("once the 1s min-age passed: evicted %v, image still in the daemon: %v", got, inDaemon(t, ref))
	}

	img2, _ := genImage(t, testimage.Options{})
	must(t, dir, "put", "capy-ubuntu-25.04-long", img2)
	ref2 := must(t, dir, "get", "--hold", "5s", "capy-ubuntu-25.04-long")
	got := time.Now() // the hold ends 5s after the get recorded it: before got+5s
	time.Sleep(1500 * time.Millisecond)
	r = imgcache(t, dir, nil, "gc", "--json", "--docker", "--min-age", "1s", "--max-size", "1")
	json.Unmarshal([]byte(r.stdout), &rep)
	if r.code != 0 || len(evictedNames(rep)) != 0 || !inDaemon(t, ref2) {
		t.Fatalf("gc past the min-age but within the hold: %s", r)
	}
	time.Sleep(time.Until(got.Add(5500 * time.Millisecond)))
	json.Unmarshal([]byte(must(t, dir, "gc", "--json", "--docker", "--min-age", "1s", "--max-size", "1")), &rep)
	if got := evictedNames(rep); !slices.Equal(got, []string{"capy-ubuntu-25.04-long"}) || inDaemon(t, ref2) {
		t.Fatalf("after the hold expired: evicted %v, image in the daemon: %v", got, inDaemon(t, ref2))
	}
}
