package dockerbridge

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
)

// storeDaemon is a daemon that answers /version and /info as the given
// engine does, and lists images of two layers each (diffA, diffOf(i)),
// and one more that is gone when inspected.
func storeDaemon(t *testing.T, version, info string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		fmt.Fprint(w, "OK")
	})
	mux.HandleFunc("/v1.41/version", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, version) })
	mux.HandleFunc("/v1.41/info", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, info) })
	mux.HandleFunc("/v1.41/images/json", func(w http.ResponseWriter, r *http.Request) {
		var list []string
		for i := 1; i <= images; i++ {
			list = append(list, fmt.Sprintf(`{"Id":"sha256:%064x"}`, i))
		}
		list = append(list, fmt.Sprintf(`{"Id":"sha256:%064x"}`, gone))
		fmt.Fprint(w, "["+strings.Join(list, ",")+"]")
	})
	mux.HandleFunc("/v1.41/images/", func(w http.ResponseWriter, r *http.Request) {
		var i int
		fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/v1.41/images/sha256:"), "%x", &i)
		if i < 1 || i > images {
			http.Error(w, `{"message":"No such image"}`, http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, `{"Id":"sha256:%064x","RootFS":{"Type":"layers","Layers":["%s","%s"]}}`, i, diffA, diffOf(i))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + sock
}

var diffA = digest.FromString("layer a")

const images, gone = 20, 99

func diffOf(i int) digest.Digest { return digest.FromString(fmt.Sprintf("layer %d", i)) }

// TestLayersDetectsTheStore: the store is read from the engine, never
// assumed: Docker's classic store lists its chain IDs and takes partial
// archives; the containerd store (driver-type io.containerd.snapshotter.v1)
// and Podman (a "Podman Engine" component) do not.
func TestLayersDetectsTheStore(t *testing.T) {
	classic := `{"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]]}`
	for _, tc := range []struct {
		name, version, info string
		store               string
		partial             bool
	}{
		{"docker classic", `{"Os":"linux","Arch":"amd64","Components":[{"Name":"Engine","Version":"20.10.24"}]}`, classic, StoreClassic, true},
		{"docker containerd", `{"Os":"linux","Arch":"amd64","Components":[{"Name":"Engine","Version":"29.0.0"}]}`,
			`{"Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}`, StoreContainerd, false},
		{"podman", `{"Os":"linux","Arch":"amd64","Components":[{"Name":"Podman Engine","Version":"4.3.1"}]}`, classic, StorePodman, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", storeDaemon(t, tc.version, tc.info))
			t.Setenv("DOCKER_API_VERSION", "")
			b, err := Connect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			l, err := b.Layers(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if l.Store != tc.store || l.Partial != tc.partial {
				t.Fatalf("Layers = %+v, want store %q, partial %v", l, tc.store, tc.partial)
			}
			if !tc.partial {
				return
			}
			// Every image's chains (the base's once), the gone one none.
			want := map[digest.Digest]bool{}
			for i := 1; i <= images; i++ {
				for _, c := range identity.ChainIDs([]digest.Digest{diffA, diffOf(i)}) {
					want[c] = true
				}
			}
			if !maps.Equal(l.Chains, want) {
				t.Errorf("%d chains, want the %d of %d images", len(l.Chains), len(want), images)
			}
		})
	}
}
