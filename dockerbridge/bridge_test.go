package dockerbridge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeDaemon serves /_ping and /version on a unix socket and counts the
// version requests.
func fakeDaemon(t *testing.T) (host string, versions *atomic.Int64) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	versions = new(atomic.Int64)
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		fmt.Fprint(w, "OK")
	})
	mux.HandleFunc("/v1.41/version", func(w http.ResponseWriter, r *http.Request) {
		versions.Add(1)
		fmt.Fprint(w, `{"Os":"linux","Arch":"amd64","ApiVersion":"1.41"}`)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + sock, versions
}

// TestPlatformConcurrent: parallel builds share one Bridge; Platform is
// safe to call from many goroutines (go test -race) and asks the daemon once.
func TestPlatformConcurrent(t *testing.T) {
	host, versions := fakeDaemon(t)
	t.Setenv("DOCKER_HOST", host)
	t.Setenv("DOCKER_API_VERSION", "")
	b, err := Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			os, arch, err := b.Platform(context.Background())
			if err != nil || os != "linux" || arch != "amd64" {
				t.Errorf("Platform = %q, %q, %v", os, arch, err)
			}
		})
	}
	wg.Wait()
	if n := versions.Load(); n != 1 {
		t.Errorf("asked the daemon's version %d times, want once", n)
	}
}
