package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/imgcache/imgcache/internal/testimage"
)

var (
	bin       string         // the imgcache binary under test
	docker    *client.Client // nil when no daemon answers
	dockerErr error
	seed      atomic.Int64 // unique image content per test
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// e2eSwitch must be set for the suite to run: it drives the real binary
// against whatever Docker daemon the environment names, which a plain
// `go test ./...` on a laptop should not do unasked.
const e2eSwitch = "IMGCACHE_E2E"

func run(m *testing.M) int {
	if os.Getenv(e2eSwitch) == "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "e2e: CI=%s but %s is not set: the end-to-end suite would be skipped (scripts/test.sh sets it)\n", os.Getenv("CI"), e2eSwitch)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: skipped: set %s=1 to run the end-to-end suite against the real binary and Docker daemon\n", e2eSwitch)
		return 0
	}
	dir, err := os.MkdirTemp("", "imgcache-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "imgcache")
	build := exec.Command("go", "build", "-race", "-o", bin, "../cmd/imgcache")
	raceBinary = os.Getenv("E2E_NORACE") == ""
	if !raceBinary {
		build = exec.Command("go", "build", "-o", bin, "../cmd/imgcache")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build imgcache:", err)
		return 1
	}
	docker, dockerErr = client.New(client.FromEnv)
	if dockerErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, dockerErr = docker.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		cancel()
	}
	seed.Store(time.Now().UnixNano())
	if dockerErr == nil {
		if engine, err = detectEngine(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	if want := os.Getenv(engineSwitch); want != "" && want != engine {
		fmt.Fprintf(os.Stderr, "e2e: %s=%s but the engine at DOCKER_HOST=%s is %q\n", engineSwitch, want, os.Getenv("DOCKER_HOST"), engine)
		return 1
	}
	return m.Run()
}

// engineSwitch names the engine the suite must find (docker, podman):
// scripts/test.sh sets it for its Podman pass, so that pass cannot quietly
// run against Docker.
const engineSwitch = "IMGCACHE_E2E_ENGINE"

// engine is the engine at DOCKER_HOST: "docker" or "podman".
var engine string

func detectEngine() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := docker.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return "", err
	}
	for _, c := range v.Components {
		if strings.Contains(strings.ToLower(c.Name), "podman") {
			return "podman", nil
		}
	}
	return "docker", nil
}

// daemonSocket is the path of the engine's unix socket (DOCKER_HOST, or
// Docker's default): what the proxies and the socket's group are read from.
func daemonSocket() string {
	if sock, ok := strings.CutPrefix(os.Getenv("DOCKER_HOST"), "unix://"); ok {
		return sock
	}
	return "/var/run/docker.sock"
}

// onPodman reports whether the suite runs against Podman.
func onPodman() bool { return engine == "podman" }

// needDockerEngine skips a test that is about Docker itself (its classic
// store's layer skipping, its events), saying why, when the suite runs
// against Podman; CI runs it in the Docker pass.
func needDockerEngine(t *testing.T, why string) {
	t.Helper()
	if onPodman() {
		t.Skipf("Docker only (%s); the Docker pass of scripts/test.sh runs it", why)
	}
}

// raceBinary says the binary under test carries the race detector (the
// default; E2E_NORACE=1 builds it without).
var raceBinary bool

// withoutRace skips a test while the binary carries the race detector:
// the SIGKILL and many-process tests drive it through hundreds of
// operations (minutes each under -race), and their kill points would fall
// in the detector's bookkeeping rather than in the I/O they test.
// scripts/test.sh runs them in a pass of their own without it, and checks
// that every one ran, as it does the unit tests too slow under -race.
func withoutRace(t *testing.T) {
	t.Helper()
	if raceBinary {
		t.Skip("runs against a binary without the race detector: E2E_NORACE=1 (scripts/test.sh's no-race e2e pass)")
	}
}

// needDocker skips (or, in CI, fails) a test that needs the daemon.
func needDocker(t *testing.T) {
	t.Helper()
	if dockerErr == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI=%s but no Docker daemon answers: %v (scripts/dockerd.sh starts one)", os.Getenv("CI"), dockerErr)
	}
	t.Skipf("no Docker daemon: %v (scripts/dockerd.sh starts one)", dockerErr)
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// imgcache runs the binary against dir.
func imgcache(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--dir", dir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return runCmd(t, cmd)
}

// runCmd runs cmd and returns its output and exit code; a command that
// could not run at all fails the test.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return result{out.String(), errb.String(), code}
}

// must runs the binary and fails the test unless it exits 0.
func must(t *testing.T, dir string, args ...string) string {
	t.Helper()
	r := imgcache(t, dir, nil, args...)
	if r.code != 0 {
		t.Fatalf("imgcache %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.stdout)
}

// genImage writes a unique small image tarball and removes its image from the
// daemon when the test ends.
func genImage(t *testing.T, o testimage.Options) (string, testimage.Result) {
	t.Helper()
	o.Seed = seed.Add(1)
	if o.Tag == "" {
		repo := strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				return r
			}
			return '-'
		}, strings.ToLower(t.Name()))
		o.Tag = fmt.Sprintf("imgcache-e2e/%s:%d", strings.Trim(repo, "-"), o.Seed)
	}
	p := filepath.Join(t.TempDir(), "image.tar")
	res, err := testimage.WriteFile(p, o)
	if err != nil {
		t.Fatal(err)
	}
	generated.Lock()
	if _, ok := generated.ids[t]; !ok {
		// Registered first, so run last: every cleanup before it can still
		// ask what the test generated.
		t.Cleanup(func() {
			generated.Lock()
			delete(generated.ids, t)
			generated.Unlock()
		})
	}
	generated.ids[t] = append(generated.ids[t], res)
	generated.Unlock()
	t.Cleanup(func() { removeImage(res.ImageID.String()) })
	return p, res
}

// generated records the images genImage made for each running test.
var generated = struct {
	sync.Mutex
	ids map[*testing.T][]testimage.Result
}{ids: map[*testing.T][]testimage.Result{}}

// generatedBy lists the images genImage made for t so far.
func generatedBy(t *testing.T) []testimage.Result {
	generated.Lock()
	defer generated.Unlock()
	return slices.Clone(generated.ids[t])
}

func removeImage(id string) {
	if docker == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	docker.ImageRemove(ctx, id, client.ImageRemoveOptions{Force: true, PruneChildren: true})
}

// inDaemon reports whether the daemon holds the image id or reference.
func inDaemon(t *testing.T, ref string) bool {
	t.Helper()
	_, err := docker.ImageInspect(context.Background(), ref)
	if err == nil {
		return true
	}
	if cerrdefs.IsNotFound(err) {
		return false
	}
	t.Fatalf("inspect %s: %v", ref, err)
	return false
}

// loadsBetween counts the daemon's load events of image id in [since,
// until]: only that image's, so that other users of the daemon (the cache
// package's examples run alongside this suite) do not count.
func loadsBetween(t *testing.T, id string, since, until time.Time) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	from, to := fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()), fmt.Sprintf("%d.%09d", until.Unix(), until.Nanosecond())
	if onPodman() { // Podman 4.3 answers a fractional since/until with no events: whole seconds
		from, to = fmt.Sprint(since.Unix()), fmt.Sprint(until.Unix()+1)
	}
	res := docker.Events(ctx, client.EventsListOptions{
		Since:   from,
		Until:   to,
		Filters: loadFilter(id),
	})
	msgs, errs := res.Messages, res.Err
	n := 0
	for {
		select {
		case _, ok := <-msgs:
			if !ok {
				return n
			}
			n++
		case err := <-errs:
			if err != nil && !errors.Is(err, context.Canceled) && err.Error() != "EOF" {
				t.Fatalf("events: %v", err)
			}
			return n
		}
	}
}

var imageRemoveOpts = client.ImageRemoveOptions{}

// eventWindowStart is the start of a window of load events: now, but on
// Podman (whole-second windows, no image IDs) at the next full second, so
// that a load before it cannot fall into the window.
func eventWindowStart() time.Time {
	if onPodman() {
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	}
	return time.Now()
}

// loadFilter selects the load events of image id. Podman's compatible
// events name a load "loadfromarchive" and carry no image ID (its actor is
// the temporary archive), so there every load in the window counts: the
// Podman pass runs alone on its engine.
func loadFilter(id string) client.Filters {
	if onPodman() {
		return make(client.Filters).Add("type", "image").Add("event", "loadfromarchive")
	}
	return make(client.Filters).Add("type", "image").Add("event", "load").Add("image", id)
}

// wholeTarDir is a new cache directory of the whole-tar schema (manifest
// version 1), as imgcache releases before the layer store leave one: the
// tests that reach into blobs/ run there (layers_test.go covers the layer
// store the same ways).
func wholeTarDir(t *testing.T) string {
	t.Helper()
	return wholeTarAt(t, t.TempDir())
}

func wholeTarAt(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"version":1,"entries":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
