package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

type gcDockerReport struct {
	Docker          []string `json:"docker_removed"`
	DockerProtected []string `json:"docker_protected"`
	DockerFree      int64    `json:"docker_free"`
	DockerMissing   int64    `json:"docker_missing"`
}

// TestGCDockerSupersededImages: put, get, put new content under the same
// name, get: the first version's image stays in the daemon while its last
// use is within the min-age (a job may be running it), and the next gc
// --docker after that removes it; the current version stays. Before, the
// superseded image stayed for ever.
func TestGCDockerSupersededImages(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	cachedRunnable(t, dir, "capy-busybox-1-moving", "v1")
	old := must(t, dir, "get", "capy-busybox-1-moving")
	cachedRunnable(t, dir, "capy-busybox-1-moving", "v2")
	cur := must(t, dir, "get", "capy-busybox-1-moving")
	if old == cur {
		t.Fatalf("both versions have the ref %s", old)
	}
	var rep gcDockerReport
	json.Unmarshal([]byte(must(t, dir, "gc", "--docker", "--json", "--min-age", "1m")), &rep)
	if !slices.Contains(rep.DockerProtected, old) || !inDaemon(t, old) {
		t.Fatalf("within the min-age: protected %v, %s in the daemon: %v", rep.DockerProtected, old, inDaemon(t, old))
	}
	time.Sleep(1500 * time.Millisecond)
	json.Unmarshal([]byte(must(t, dir, "gc", "--docker", "--json", "--min-age", "1s")), &rep)
	if !slices.Equal(rep.Docker, []string{old}) || inDaemon(t, old) || !inDaemon(t, cur) {
		t.Fatalf("past the min-age: removed %v; old in the daemon %v, current %v", rep.Docker, inDaemon(t, old), inDaemon(t, cur))
	}
	// stats says what imgcache's images hold in the daemon.
	var st struct {
		Daemon struct {
			Reachable bool  `json:"reachable"`
			Images    int   `json:"images"`
			Bytes     int64 `json:"bytes"`
		} `json:"daemon"`
	}
	if err := json.Unmarshal([]byte(must(t, dir, "stats", "--json")), &st); err != nil || !st.Daemon.Reachable || st.Daemon.Images < 1 || st.Daemon.Bytes <= 0 {
		t.Fatalf("stats: %v, %+v", err, st.Daemon)
	}
}

// TestGCDockerMinFree: with the daemon's data root short of
// --docker-min-free, gc removes this cache's images from the daemon least
// recently used first (the blobs stay: a later get loads them again), keeps
// the pinned one, and reports the shortfall (exit 9 with --strict: these
// test images cannot free a terabyte). A daemon reached over TCP is refused
// with a clear error: its disk is not this host's to measure.
func TestGCDockerMinFree(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	for _, n := range []string{"old", "pinned", "new"} {
		cachedRunnable(t, dir, "capy-busybox-1-"+n, n)
		must(t, dir, "get", "capy-busybox-1-"+n)
	}
	must(t, dir, "pin", "capy-busybox-1-pinned")
	r := imgcache(t, dir, nil, "gc", "--strict", "--json", "--min-age", "0", "--docker-min-free", "1000T")
	var rep gcDockerReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 9 || rep.DockerMissing <= 0 || rep.DockerFree <= 0 {
		t.Fatalf("gc --docker-min-free 1000T: %v: %s", err, r)
	}
	for _, n := range []string{"old", "new"} {
		if inDaemon(t, "imgcache/capy-busybox-1-"+n+":latest") {
			t.Errorf("%s's image is still in the daemon: removed %v", n, rep.Docker)
		}
	}
	if !inDaemon(t, "imgcache/capy-busybox-1-pinned:latest") {
		t.Error("the pinned entry's image was removed")
	}
	if i, j := slices.Index(rep.Docker, "imgcache/capy-busybox-1-old:latest"), slices.Index(rep.Docker, "imgcache/capy-busybox-1-new:latest"); i < 0 || j < 0 || i > j {
		t.Errorf("not least recently used first: %v", rep.Docker)
	}
	// The blobs stayed: a get loads the image again.
	if ref := must(t, dir, "get", "capy-busybox-1-old"); !inDaemon(t, ref) {
		t.Fatalf("get after the daemon-side eviction: %s not loaded", ref)
	}

	// The same daemon over TCP (a proxy on 127.0.0.1 to its socket).
	addr := socketProxy(t)
	r = imgcache(t, dir, []string{"DOCKER_HOST=tcp://" + addr}, "gc", "--docker-min-free", "1T")
	if r.code != 2 || !strings.Contains(r.stderr, "not on a local socket") {
		t.Fatalf("gc --docker-min-free against a daemon over TCP: %s", r)
	}
}

// socketProxy forwards TCP connections on 127.0.0.1 to the daemon's unix
// socket, until the test ends.
func socketProxy(t *testing.T) string {
	t.Helper()
	sock := daemonSocket()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("unix", sock)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	return fmt.Sprint(l.Addr())
}
