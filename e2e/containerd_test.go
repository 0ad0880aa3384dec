package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/internal/fakedocker"
	"github.com/imgcache/imgcache/internal/testimage"
)

// TestContainerdStoreFake: Docker with the containerd image store (the
// default of new Docker 29 installs), which cannot be installed here, is
// replayed by internal/fakedocker on a unix socket: it names images by
// manifest digest, finds nothing by config digest, and needs every layer
// file. A cold get sends the whole archive and finds the image the daemon
// says it loaded; a warm get is a tag operation (no load request); an
// image sharing a layer the engine holds still gets the whole archive
// (no partial load there).
func TestContainerdStoreFake(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	fake, err := fakedocker.Start(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	env := []string{"DOCKER_HOST=unix://" + sock}
	dir := t.TempDir()
	base := seed.Add(1)
	var sizes []int64
	names := []string{"ctrd-deb-12-a", "ctrd-deb-12-b"}
	for _, n := range names {
		p := filepath.Join(t.TempDir(), "image.tar")
		res, err := testimage.WriteFile(p, testimage.Options{Seed: seed.Add(1), Layers: 3, SharedLayers: 2, BaseSeed: base, FileSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		must(t, dir, "put", n, p)
		sizes = append(sizes, res.Size)
	}
	get := func(name string) getJSON {
		t.Helper()
		r := imgcache(t, dir, env, "get", name, "--json")
		var g getJSON
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &g) != nil {
			t.Fatalf("get %s against the containerd-store fake: %s", name, r)
		}
		return g
	}
	g := get(names[0])
	if !g.Loaded || g.Sent != sizes[0] {
		t.Fatalf("cold get: loaded %v, sent %d of %d; want the whole archive", g.Loaded, g.Sent, sizes[0])
	}
	loads := fake.Loads()
	if len(loads) != 1 || loads[0].Err != "" || loads[0].Bytes != sizes[0] {
		t.Fatalf("the fake saw %+v; want one committed load of %d bytes", loads, sizes[0])
	}
	for i := 0; i < 2; i++ {
		if w := get(names[0]); w.Loaded || w.Ref != g.Ref {
			t.Fatalf("warm get %d: %+v; want the same ref, not loaded", i, w)
		}
	}
	if n := len(fake.Loads()); n != 1 {
		t.Fatalf("warm gets sent %d loads; a warm get is a tag operation", n-1)
	}
	// b shares two layers with a, which the engine holds: still the whole archive.
	if gb := get(names[1]); !gb.Loaded || gb.Sent != sizes[1] {
		t.Errorf("get of an image sharing held layers: sent %d of %d; the containerd store needs every file", gb.Sent, sizes[1])
	}
	for _, l := range fake.Loads() {
		if l.Err != "" {
			t.Errorf("the fake refused a load: %s", l.Err)
		}
	}
	for _, im := range fake.Images() {
		if im.ID == im.Config {
			t.Errorf("the fake names an image by its config digest: %+v", im)
		}
	}
	if u := fake.Unknown(); len(u) > 0 {
		t.Errorf("imgcache used endpoints the fake does not replay: %v", u)
	}
}

// TestCompressedLayers: an OCI archive whose layers are gzip- and
// zstd-compressed (as Docker's containerd store saves them) is put and
// exported byte-identical; the containerd-store fake loads it (checking
// each compressed layer against its diff ID). Docker 20.10 loads gzip
// layers for real; it cannot load zstd ones, so get refuses those with
// exit 8 naming the daemon version, before sending anything.
func TestCompressedLayers(t *testing.T) {
	write := func(compression string) (string, testimage.Result) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "image.tar")
		res, err := testimage.WriteFile(p, testimage.Options{Seed: seed.Add(1), Layers: 3, Format: archive.FormatOCI, Compression: compression, FileSize: 32 << 10})
		if err != nil {
			t.Fatal(err)
		}
		return p, res
	}
	dir := t.TempDir()
	mixed, mres := write("mixed")
	must(t, dir, "put", "zip-deb-12-mixed", mixed)
	var ins struct {
		Layers []struct {
			Digest    string `json:"digest"`
			DiffID    string `json:"diff_id"`
			MediaType string `json:"media_type"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(must(t, dir, "inspect", "zip-deb-12-mixed", "--json")), &ins); err != nil || len(ins.Layers) != 3 {
		t.Fatalf("inspect: %+v %v", ins, err)
	}
	for i, l := range ins.Layers {
		if l.Digest == l.DiffID || l.DiffID != mres.DiffIDs[i].String() || !strings.Contains(l.MediaType, "tar+") {
			t.Errorf("layer %d recorded as %+v; want its blob digest, its diff ID %s and a compressed media type", i, l, mres.DiffIDs[i])
		}
	}
	if hashFile(t, exportTo(t, dir, "zip-deb-12-mixed")) != hashFile(t, mixed) {
		t.Fatal("export of the compressed-layer archive differs")
	}
	sock := filepath.Join(t.TempDir(), "d.sock")
	fake, err := fakedocker.Start(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	if r := imgcache(t, dir, []string{"DOCKER_HOST=unix://" + sock}, "get", "zip-deb-12-mixed"); r.code != 0 {
		t.Fatalf("get into the containerd-store fake: %s", r)
	}
	if l := fake.Loads(); len(l) != 1 || l[0].Err != "" || len(l[0].Committed) != 1 {
		t.Fatalf("the fake saw %+v", l)
	}

	// The real daemon, Docker 20.10.
	needDockerEngine(t, "a real Docker 20.10 loads gzip layers and cannot load zstd ones")
	gz, gres := write("gzip")
	must(t, dir, "put", "zip-deb-12-gzip", gz)
	t.Cleanup(func() { removeImage(gres.ImageID.String()) })
	if r := imgcache(t, dir, nil, "get", "zip-deb-12-gzip"); r.code != 0 || !inDaemon(t, gres.ImageID.String()) {
		t.Fatalf("get of gzip layers into Docker 20.10: %s", r)
	}
	zs, zres := write("zstd")
	must(t, dir, "put", "zip-deb-12-zstd", zs)
	since := eventWindowStart()
	r := imgcache(t, dir, nil, "get", "zip-deb-12-zstd")
	if r.code != 8 || !strings.Contains(r.stderr, "zstd") || !strings.Contains(r.stderr, "20.10") {
		t.Fatalf("get of zstd layers into Docker 20.10: want exit 8 naming zstd and the daemon version; got %s", r)
	}
	if n := loadsBetween(t, zres.ImageID.String(), since, time.Now()); n != 0 || inDaemon(t, zres.ImageID.String()) {
		t.Errorf("the refused get sent a load (%d events)", n)
	}
}
