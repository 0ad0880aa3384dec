package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
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

type lsEntry struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
}

func listEntries(t *testing.T, dir string) map[string]string {
	t.Helper()
	var es []lsEntry
	if err := json.Unmarshal([]byte(must(t, dir, "ls", "--json")), &es); err != nil {
		t.Fatalf("ls --json: %v", err)
	}
	m := map[string]string{}
	for _, e := range es {
		m[e.Name] = e.Digest
	}
	return m
}

// checkHealthy: verify is clean and every entry exports to its digest.
func checkHealthy(t *testing.T, dir string) map[string]string {
	t.Helper()
	if r := imgcache(t, dir, nil, "verify"); r.code != 0 {
		t.Fatalf("verify after the run: %s", r)
	}
	entries := listEntries(t, dir)
	for name, digest := range entries {
		out := filepath.Join(t.TempDir(), name+".tar")
		must(t, dir, "export", name, "-o", out)
		if got := "sha256:" + sha256File(t, out); got != digest {
			t.Fatalf("%s exports to %s, manifest says %s", name, got, digest)
		}
	}
	return entries
}

// TestManyProcesses runs N processes of random operations on one directory,
// whole-cache verify and verify --repair among them. Fails when verify acts
// on its snapshot (a finding about an entry a concurrent put, rm or gc
// changed: verify exits 9, or repair drops an acknowledged put).
func TestManyProcesses(t *testing.T) {
	withoutRace(t)
	const procs, ops = 8, 24
	withDocker := dockerErr == nil
	dir := t.TempDir()
	images := make([]string, 4)
	digests := map[string]string{}
	for i := range images {
		// All four share their base layer (a piece of its own in the layer
		// store): concurrent puts, gcs and repairs must neither lose it nor
		// store it twice.
		p, _ := genImage(t, testimage.Options{FileSize: 32 << 10, Layers: 2, SharedLayers: 1, BaseSeed: 5})
		images[i] = p
		digests["sha256:"+sha256File(t, p)] = p
	}
	names := []string{"capy-ubuntu-25.04-a", "capy-ubuntu-25.04-b", "capy-ubuntu-25.04-c", "ovis-debian-12-a", "ovis-debian-12-b.x", "capy-ubuntu-25.04-c-asan"}

	type event struct {
		op, name, digest string
		start, end       time.Time
		ok               bool
	}
	var mu sync.Mutex
	var log []event
	var wg sync.WaitGroup
	for p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 42))
			for range ops {
				name := names[rng.IntN(len(names))]
				img := images[rng.IntN(len(images))]
				var args []string
				ops := []string{"put", "put", "put", "get", "rm", "gc", "verify", "verify-all", "repair", "ls"}
				op := ops[rng.IntN(len(ops))]
				switch op {
				case "put":
					args = []string{"put", name, img}
				case "get":
					if !withDocker {
						op, args = "ls", []string{"ls"}
					} else {
						args = []string{"get", name}
					}
				case "rm":
					args = []string{"rm", name}
				case "gc":
					args = []string{"gc", "--min-age", "0", "--max-size", "500K"}
				case "verify":
					args = []string{"verify", name}
				case "verify-all":
					// Findings about entries that a concurrent put, rm or gc
					// changed are no findings: this must exit 0.
					args = []string{"verify"}
				case "repair":
					// And repair must never drop an acknowledged put (checked below).
					args = []string{"verify", "--repair"}
				case "ls":
					args = []string{"ls"}
				}
				ev := event{op: op, name: name, start: time.Now()}
				r := imgcache(t, dir, nil, args...)
				ev.end, ev.ok = time.Now(), r.code == 0
				if op == "put" {
					ev.digest = strings.TrimSpace(r.stdout)
				}
				// Allowed failures: names that vanished under us.
				if r.code != 0 && !(r.code == 3 && (op == "rm" || op == "get" || op == "verify")) {
					t.Errorf("%s: %s", strings.Join(args, " "), r)
				}
				mu.Lock()
				log = append(log, ev)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	final := checkHealthy(t, dir)
	// Every acknowledged put is still readable with its digest, or something
	// that may have dropped or moved the name (rm, gc, another put) ran after it.
	for _, ev := range log {
		if ev.op != "put" || !ev.ok {
			continue
		}
		if _, ok := digests[ev.digest]; !ok {
			t.Errorf("put %s printed %q, not the sha256 of any input", ev.name, ev.digest)
		}
		if final[ev.name] == ev.digest {
			continue
		}
		explained := false
		for _, later := range log {
			if later.ok && later.end.After(ev.start) && (later.op == "gc" || (later.name == ev.name && (later.op == "rm" || later.op == "put"))) {
				explained = true
				break
			}
		}
		if !explained {
			t.Errorf("acknowledged put of %s (%s) lost: the cache says %q", ev.name, ev.digest, final[ev.name])
		}
	}
	t.Logf("%d processes x %d operations; %d entries at the end", procs, ops, len(final))
}

// startKilled starts the binary and SIGKILLs it after delay.
func startKilled(t *testing.T, dir string, delay time.Duration, args ...string) (exited bool) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--dir", dir}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return true
	case <-time.After(delay):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return false
	}
}

// afterCrash: the cache opens, verify is clean, gc reclaims tmp/.
func afterCrash(t *testing.T, dir string) {
	t.Helper()
	if r := imgcache(t, dir, nil, "verify"); r.code != 0 {
		t.Fatalf("verify after SIGKILL: %s", r)
	}
	must(t, dir, "gc")
	left, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	layerLeft, _ := os.ReadDir(filepath.Join(dir, "layers", "tmp"))
	if len(left)+len(layerLeft) != 0 {
		t.Fatalf("gc left %d files in tmp/ and %d in layers/tmp/ after a crash", len(left), len(layerLeft))
	}
}

func TestCrashDuringPut(t *testing.T) {
	withoutRace(t)
	dir := t.TempDir()
	// ~32 MiB, incompressible; its base layer is also the kept entry's.
	big, _ := genImage(t, testimage.Options{Layers: 4, FilesPerLayer: 8, FileSize: 1 << 20, SharedLayers: 1, BaseSeed: 11})
	small, _ := genImage(t, testimage.Options{Layers: 2, FilesPerLayer: 8, FileSize: 1 << 20, SharedLayers: 1, BaseSeed: 11})
	must(t, dir, "put", "capy-ubuntu-25.04-keep", small)
	rng := rand.New(rand.NewPCG(7, 7))
	trials, killed := 24, 0
	for i := range trials {
		delay := time.Duration(rng.IntN(400)) * time.Millisecond
		if !startKilled(t, dir, delay, "put", fmt.Sprintf("capy-ubuntu-25.04-big%d", i%3), big) {
			killed++
		}
		afterCrash(t, dir)
	}
	entries := checkHealthy(t, dir)
	if _, ok := entries["capy-ubuntu-25.04-keep"]; !ok {
		t.Fatal("an earlier entry was lost")
	}
	if killed == 0 {
		t.Fatal("no put was killed mid-way; the test proves nothing")
	}
	t.Logf("%d put trials, %d killed mid-operation", trials, killed)
}

// TestCrashDuringGC: every trial starts with work for gc (the cache as it
// was before any gc, copied back), and kills it at a random point within
// how long that gc takes uninterrupted. The cache must stay healthy, and at
// least one gc must have been killed before it finished, or the test proved
// nothing. Fails if gc deletes blobs before the manifest no longer names
// them (verify then finds missing blobs after a kill).
func TestCrashDuringGC(t *testing.T) {
	withoutRace(t)
	pristine := t.TempDir()
	for i := range 12 {
		p, _ := genImage(t, testimage.Options{FileSize: 64 << 10, Layers: 2, SharedLayers: 1, BaseSeed: 3})
		must(t, pristine, "put", fmt.Sprintf("capy-ubuntu-25.04-v%d", i), p)
	}
	dir := filepath.Join(t.TempDir(), "cache")
	refill := func() { // the cache as it was before any gc, copied back
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", pristine, dir).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
	}
	refill()
	start := time.Now()
	must(t, dir, "gc", "--min-age", "0", "--max-size", "300K")
	took := time.Since(start)
	rng := rand.New(rand.NewPCG(3, 3))
	trials, killed := 12, 0
	for range trials {
		refill()
		// Past the process start (a third of the whole), before the end.
		delay := took/3 + time.Duration(rng.Int64N(int64(took*2/3)))
		if !startKilled(t, dir, delay, "gc", "--min-age", "0", "--max-size", "300K") {
			killed++
		}
		afterCrash(t, dir)
	}
	checkHealthy(t, dir)
	if killed == 0 {
		t.Fatalf("no gc was killed mid-way (an uninterrupted gc takes %v); the test proves nothing", took)
	}
	t.Logf("%d gc trials, %d killed mid-operation (an uninterrupted gc takes %v)", trials, killed, took)
}

// TestCrashDuringGet: each trial removes the image from the daemon, so the
// get has a cold load to do, and kills it within how long a cold get takes.
// At least one get must have been killed before its load was committed.
// Fails if a killed load can leave the image half-committed or the cache
// unhealthy (afterCrash's verify and gc).
func TestCrashDuringGet(t *testing.T) {
	withoutRace(t)
	needDocker(t)
	dir := t.TempDir()
	p, img := genImage(t, testimage.Options{Layers: 3, FilesPerLayer: 8, FileSize: 1 << 20})
	must(t, dir, "put", "capy-ubuntu-25.04-crashget", p)
	removeImage(img.ImageID.String())
	start := time.Now()
	must(t, dir, "get", "capy-ubuntu-25.04-crashget")
	took := time.Since(start)
	rng := rand.New(rand.NewPCG(5, 5))
	trials, interrupted := 10, 0
	for range trials {
		removeImage(img.ImageID.String())
		exited := startKilled(t, dir, time.Duration(rng.Int64N(int64(took))), "get", "capy-ubuntu-25.04-crashget")
		if !exited && !inDaemon(t, img.ImageID.String()) {
			interrupted++ // killed, and the load it was doing never committed
		}
		afterCrash(t, dir)
	}
	must(t, dir, "get", "capy-ubuntu-25.04-crashget")
	if !inDaemon(t, img.ImageID.String()) {
		t.Fatal("get after crashes did not load")
	}
	if interrupted == 0 {
		t.Fatalf("no get was killed before its load committed (a cold get takes %v); the test proves nothing", took)
	}
	t.Logf("%d get trials, %d killed before the load committed (a cold get takes %v)", trials, interrupted, took)
}

func TestLockTimeoutAndDeadHolder(t *testing.T) {
	dir := t.TempDir()
	must(t, dir, "ls")
	// A process holding the manifest lock: flock(1) is not assumed; use a
	// child imgcache that waits on... simplest: hold it from a helper shell
	// with python-free tooling — the test binary itself.
	holder := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	holder.Env = append(os.Environ(), "IMGCACHE_HOLD_LOCK="+filepath.Join(dir, "lock"))
	stdout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	stdout.Read(buf) // "held"
	start := time.Now()
	r := imgcache(t, dir, nil, "--lock-timeout", "300ms", "ls")
	if r.code != 6 || time.Since(start) > 10*time.Second {
		t.Fatalf("ls against a held lock: want exit 6 within the timeout; got %s after %v", r, time.Since(start))
	}
	holder.Process.Signal(syscall.SIGKILL)
	holder.Wait()
	start = time.Now()
	must(t, dir, "--lock-timeout", "5s", "ls")
	if time.Since(start) > 3*time.Second {
		t.Fatalf("a lock held by a dead process delayed ls by %v", time.Since(start))
	}
}

// TestHelperHoldLock is not a test: re-executed by TestLockTimeoutAndDeadHolder
// to hold a lock in another process until killed.
func TestHelperHoldLock(t *testing.T) {
	path := os.Getenv("IMGCACHE_HOLD_LOCK")
	if path == "" {
		t.Skip("helper process only")
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	how := syscall.LOCK_EX
	if os.Getenv("IMGCACHE_HOLD_SHARED") != "" {
		how = syscall.LOCK_SH
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("held")
	time.Sleep(time.Hour)
}

func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: the disk-full test needs root to mount a tmpfs")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	dir := wholeTarAt(t, filepath.Join(mnt, "cache"))
	small, _ := genImage(t, testimage.Options{FileSize: 64 << 10})
	must(t, dir, "put", "capy-ubuntu-25.04-small", small)
	big, _ := genImage(t, testimage.Options{Layers: 2, FilesPerLayer: 5, FileSize: 1 << 20}) // 10 MiB incompressible
	// With a limit set, the automatic gc runs after the failure, respects
	// the min-age (the small entry was just put) and says what it kept.
	r := imgcache(t, dir, []string{"IMGCACHE_MAX_SIZE=1"}, "put", "capy-ubuntu-25.04-big", big)
	if r.code != 7 || !strings.Contains(r.stderr, "no space") {
		t.Fatalf("put onto a full filesystem: want exit 7 \"no space\"; got %s", r)
	}
	if !strings.Contains(r.stderr, "automatic gc could not reach the max-size limit") || !strings.Contains(r.stderr, "recently used or held") {
		t.Fatalf("the automatic gc after the failed put did not say what min-age kept: %s", r)
	}
	entries := checkHealthy(t, dir)
	if len(entries) != 1 {
		t.Fatalf("entries after a failed put: %v", entries)
	}
	blobs, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	tmp, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(blobs) != 1 || len(tmp) != 0 {
		t.Fatalf("half-written leftovers: %d blobs, %d tmp files", len(blobs), len(tmp))
	}
}

// TestInterruptDuringLockWait: Ctrl-C ends a lock wait at once with exit 130
// and leaves nothing behind.
func TestInterruptDuringLockWait(t *testing.T) {
	dir := wholeTarDir(t)
	img, _ := genImage(t, testimage.Options{})
	must(t, dir, "ls")
	holder := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	holder.Env = append(os.Environ(), "IMGCACHE_HOLD_LOCK="+filepath.Join(dir, "lock"))
	stdout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	stdout.Read(make([]byte, 4))
	cmd := exec.Command(bin, "--dir", dir, "put", "capy-ubuntu-25.04-int", img)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The blob is published before the manifest is taken: once it is in
	// blobs/, the put is at (or right before) its wait for the lock.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if ents, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256")); len(ents) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the put never published its blob")
		}
	}
	start := time.Now()
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 || time.Since(start) > 5*time.Second {
		t.Fatalf("put interrupted during a lock wait: %v after %v, want exit 130 at once", err, time.Since(start))
	}
	holder.Process.Kill()
	holder.Wait()
	afterCrash(t, dir)
	if len(listEntries(t, dir)) != 0 {
		t.Fatal("an interrupted put left an entry")
	}
}

// TestCrashDuringMigrate: migrate of a whole-tar cache, killed at random
// points, then run again: after every kill the cache verifies and every
// entry exports its tar; the runs together convert every entry, and the
// base the images share ends up stored once.
func TestCrashDuringMigrate(t *testing.T) {
	withoutRace(t)
	pristine := wholeTarDir(t)
	want := map[string]string{}
	for i := range 4 {
		p, res := genImage(t, testimage.Options{Layers: 2, FilesPerLayer: 4, FileSize: 512 << 10, SharedLayers: 1, BaseSeed: 21})
		name := fmt.Sprintf("capy-ubuntu-25.04-m%d", i)
		must(t, pristine, "put", name, p)
		want[name] = res.Digest.String()
	}
	dir := filepath.Join(t.TempDir(), "cache")
	if out, err := exec.Command("cp", "-a", pristine, dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	start := time.Now()
	must(t, dir, "migrate")
	took := time.Since(start)
	rng := rand.New(rand.NewPCG(5, 5))
	trials, killed := 6, 0
	for range trials {
		os.RemoveAll(dir)
		if out, err := exec.Command("cp", "-a", pristine, dir).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
		delay := took/4 + time.Duration(rng.Int64N(int64(took*3/4)))
		if !startKilled(t, dir, delay, "migrate") {
			killed++
		}
		afterCrash(t, dir)
		if got := checkHealthy(t, dir); len(got) != len(want) {
			t.Fatalf("entries after a killed migrate: %v, want %v", got, want)
		}
		must(t, dir, "migrate") // carries on
		for name, d := range checkHealthy(t, dir) {
			if want[name] != d {
				t.Fatalf("%s holds %s after migrate, want %s", name, d, want[name])
			}
		}
		var m struct {
			Version int `json:"version"`
			Entries map[string]struct {
				Skeleton *struct{} `json:"skeleton"`
			} `json:"entries"`
		}
		b, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
		if err := json.Unmarshal(b, &m); err != nil || m.Version != 2 {
			t.Fatalf("manifest after migrate: version %d, %v", m.Version, err)
		}
		for name, e := range m.Entries {
			if e.Skeleton == nil {
				t.Fatalf("%s still whole after the second migrate", name)
			}
		}
		if whole, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256")); len(whole) != 0 {
			t.Fatalf("%d whole blobs left after migrate and gc", len(whole))
		}
		if layers, _ := os.ReadDir(filepath.Join(dir, "layers", "blobs", "sha256")); len(layers) != 1+2*len(want) {
			t.Fatalf("layer store holds %d blobs, want %d (the base once, each image's layer and skeleton)", len(layers), 1+2*len(want))
		}
	}
	if killed == 0 {
		t.Fatalf("no migrate was killed mid-way (an uninterrupted one takes %v); the test proves nothing", took)
	}
	t.Logf("%d migrate trials, %d killed mid-operation (an uninterrupted one takes %v)", trials, killed, took)
}
