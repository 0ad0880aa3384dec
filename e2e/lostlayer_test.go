package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// loadProxy is a unix socket forwarding to the daemon's; once a request
// to /images/load has sent more than after bytes of body, it runs hook
// (once), holding the rest of that request until the hook returns.
func loadProxy(t *testing.T, after int, hook func()) string {
	t.Helper()
	target := daemonSocket()
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var once sync.Once
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				d, err := net.Dial("unix", target)
				if err != nil {
					return
				}
				defer d.Close()
				go io.Copy(c, d)
				buf := make([]byte, 32<<10)
				var tail []byte // the end of what came before, for a request line split between reads
				seen := -1      // body bytes since the load request line, -1: none yet
				for {
					n, err := c.Read(buf)
					if n > 0 {
						chunk := buf[:n]
						if seen < 0 {
							if bytes.Contains(append(tail, chunk...), []byte("/images/load")) {
								seen = 0
							}
							tail = append([]byte{}, chunk[max(0, n-32):]...)
						} else {
							seen += n
							if seen > after {
								once.Do(hook)
							}
						}
						if _, werr := d.Write(chunk); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return "unix://" + sock
}

// TestLayersLostLayerRetry: a partial load whose base layer the daemon
// loses in the middle (the only image holding it is removed while the
// partial tar streams, before its manifest.json, which goes last) is
// refused by the daemon for the missing layer file, and get retries with
// the whole tar, once: the image loads complete and runs. Before this test
// the retry was shown with the fake engine only.
func TestLayersLostLayerRetry(t *testing.T) {
	needDocker(t)
	needDockerEngine(t, "partial loads go to Docker's classic store only")
	dir := t.TempDir()
	base := runnableBase(t, 4<<20)
	tarA, idA := buildVariant(t, base, "a.dat", 1<<20)
	tarB, idB := buildVariant(t, base, "b.dat", 4<<20)
	must(t, dir, "put", "capy-busybox-1-a", tarA)
	must(t, dir, "put", "capy-busybox-1-b", tarB)
	removeImage(idA)
	removeImage(idB)
	removeImage(imageID(t, base))
	must(t, dir, "get", "capy-busybox-1-a") // now only a holds the base layer

	hooked := false
	host := loadProxy(t, 512<<10, func() {
		hooked = true
		removeImage(idA) // the daemon loses the base layer the plan skipped
	})
	r := imgcache(t, dir, []string{"DOCKER_HOST=" + host}, "get", "--json", "--log-level", "warn", "capy-busybox-1-b")
	if !hooked {
		t.Fatalf("the proxy never saw the partial load's body: %s", r)
	}
	var got getJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
		t.Fatalf("get after the daemon lost a layer: %v\n%s", err, r)
	}
	if !strings.Contains(r.stderr, "the daemon lost a layer") || got.Sent != got.Entry.Size {
		t.Fatalf("want a warning and the whole tar sent (%d bytes); sent %d\n%s", got.Entry.Size, got.Sent, r)
	}
	out, err := execIn(got.Ref, "sh", "-c", "sha256sum /base.dat /b.dat | wc -l")
	if err != nil || strings.TrimSpace(out) != "2" {
		t.Fatalf("the retried image does not run complete: %q %v", out, err)
	}
}
