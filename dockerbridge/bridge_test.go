package dockerbridge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
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

// chunkDaemon answers /_ping and /images/load on a unix socket, reading the
// load's chunked body itself to record the size of each chunk the client
// sent.
func chunkDaemon(t *testing.T) (host string, chunks func() []int) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var sizes []int
	serve := func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if !strings.HasSuffix(req.URL.Path, "/images/load") {
				io.Copy(io.Discard, req.Body)
				body := "OK"
				if req.Method == http.MethodHead {
					body = ""
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\n%s", body)
				continue
			}
			// The raw chunked encoding: "SIZE\r\n", SIZE bytes, "\r\n".
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				n, err := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
				if err != nil {
					t.Errorf("chunk header %q: %v", line, err)
					return
				}
				if _, err := io.CopyN(io.Discard, br, n+2); err != nil {
					return
				}
				if n == 0 {
					break
				}
				mu.Lock()
				sizes = append(sizes, int(n))
				mu.Unlock()
			}
			reply := `{"stream":"Loaded image ID: sha256:` + strings.Repeat("a", 64) + `\n"}`
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(reply), reply)
		}
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return "unix://" + sock, func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(sizes)
	}
}

// connectChunkDaemon connects a Bridge to a new chunkDaemon.
func connectChunkDaemon(t *testing.T) (*Bridge, func() []int) {
	t.Helper()
	host, chunks := chunkDaemon(t)
	t.Setenv("DOCKER_HOST", host)
	b, err := Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, chunks
}

// smallReads returns at most 4 KiB per Read, as a pipe or a decompressor
// may.
type smallReads struct{ r io.Reader }

func (s smallReads) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 4<<10)]) }

// TestLoadSendsLargeChunks: a load's body goes to the daemon in writes of up
// to 1 MiB, however small the body's reads (net/http alone copies it in
// 32 KiB chunks, and the client's tracing wrapper hid WriteTo: 75,000
// chunks, three system calls each, for a 2.4 GB image).
func TestLoadSendsLargeChunks(t *testing.T) {
	b, chunks := connectChunkDaemon(t)
	const size = 4<<20 + 123
	loaded, err := b.Load(t.Context(), smallReads{io.LimitReader(zeros{}, size)})
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 1 {
		t.Errorf("loaded %q, want one image", loaded)
	}
	got := chunks()
	total := 0
	for _, n := range got {
		total += n
	}
	if total != size {
		t.Fatalf("the daemon received %d bytes, want %d", total, size)
	}
	if len(got) > 6 {
		t.Errorf("the body went out in %d chunks (largest %d bytes), want at most 6 for %d bytes", len(got), slices.Max(got), size)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestLoadReportsTheBodysError: a body that fails midway (an integrity
// failure) aborts the request, and Load returns the body's own error, not
// the transport's view of it.
func TestLoadReportsTheBodysError(t *testing.T) {
	b, _ := connectChunkDaemon(t)
	bad := errors.New("layer sha256:1234: checksum mismatch")
	body := io.MultiReader(smallReads{io.LimitReader(zeros{}, 3<<20)}, iotest.ErrReader(bad))
	if _, err := b.Load(t.Context(), body); !errors.Is(err, bad) {
		t.Fatalf("Load = %v, want the body's error", err)
	}
}
