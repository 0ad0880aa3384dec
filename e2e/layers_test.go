package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"

	"github.com/imgcache/imgcache/internal/testimage"
)

// runnableBase imports a runnable base image into the daemon (Debian's
// static busybox and a file of random bytes, base.dat) and returns its
// reference; it is removed when the test ends.
func runnableBase(t *testing.T, dataSize int) string {
	t.Helper()
	return importBusybox(t, "imgcache-e2e/layers-base", []string{"sh", "cat", "ls", "sha256sum"},
		map[string][]byte{"base.dat": randomBytes(seed.Add(1), dataSize)})
}

// importBusybox imports an image of Debian's static busybox with the given
// applets linked in /bin and files at the root, tagged repo:<seed>, and
// returns that reference; the image is removed when the test ends.
func importBusybox(t *testing.T, repo string, applets []string, files map[string][]byte) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("this test needs Debian's busybox-static (/bin/busybox; scripts/test.sh installs it): %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, data []byte) {
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755}, nil)
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}, nil)
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755}, bb)
	for _, l := range applets {
		if l != "busybox" {
			add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + l, Linkname: "busybox", Mode: 0o777}, nil)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, files[name])
	}
	tw.Close()
	ref := fmt.Sprintf("%s:%d", repo, seed.Add(1))
	rc, err := docker.ImageImport(context.Background(), client.ImageImportSource{Source: &buf, SourceName: "-"}, ref, client.ImageImportOptions{})
	if err != nil {
		t.Fatalf("docker import: %v", err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	id := imageID(t, ref)
	t.Cleanup(func() { removeImage(id) })
	return ref
}

func randomBytes(s int64, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(s), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// buildVariant builds FROM base adding file (random bytes of size n) and
// saves it to a tar; it returns the tar's path and the image ID.
func buildVariant(t *testing.T, base, file string, n int) (string, string) {
	t.Helper()
	s := seed.Add(1)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	df := fmt.Sprintf("FROM %s\nCOPY %s /%s\n", base, file, file)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "Dockerfile", Mode: 0o644, Size: int64(len(df))})
	tw.Write([]byte(df))
	data := randomBytes(s, n)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: file, Mode: 0o644, Size: int64(len(data))})
	tw.Write(data)
	tw.Close()
	ref := fmt.Sprintf("imgcache-e2e/layers-variant:%d", s)
	resp, err := docker.ImageBuild(context.Background(), &buf, client.ImageBuildOptions{Tags: []string{ref}, Remove: true, ForceRemove: true})
	if err != nil {
		t.Fatalf("docker build: %v", err)
	}
	var out bytes.Buffer
	err = jsonmessage.DisplayJSONMessagesStream(resp.Body, &out, 0, false, nil)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, out.String())
	}
	id := imageID(t, ref)
	t.Cleanup(func() { removeImage(id) }) // by ID: every tag (imgcache's too) goes
	return saveImage(t, ref), id
}

func imageID(t *testing.T, ref string) string {
	t.Helper()
	r, err := docker.ImageInspect(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// saveImage writes `docker save` of refs to a file.
func saveImage(t *testing.T, refs ...string) string {
	t.Helper()
	rc, err := docker.ImageSave(context.Background(), refs)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	p := filepath.Join(t.TempDir(), "saved.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

type getJSON struct {
	Ref    string `json:"ref"`
	Loaded bool   `json:"loaded"`
	Sent   int64  `json:"sent"`
	Entry  struct {
		Digest string `json:"digest"`
		Size   int64  `json:"size"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
		Pieces []struct {
			Digest string `json:"digest"`
		} `json:"pieces"`
		Skeleton struct {
			Digest string `json:"digest"`
		} `json:"skeleton"`
	} `json:"entry"`
}

func getJ(t *testing.T, dir, name string) getJSON {
	t.Helper()
	var g getJSON
	if err := json.Unmarshal([]byte(must(t, dir, "get", name, "--json")), &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestLayersSharedBase (on Podman: the whole tar every time), against the real daemon: two images built on one
// base store the base once; with the first in the daemon, the second's
// cold get sends its own layer, config and manifest only, and the image
// runs, reading a file of the base and one of its own; a flipped byte in
// its layer stops the load and quarantines the blob.
func TestLayersSharedBase(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	base := runnableBase(t, 8<<20)
	tarA, idA := buildVariant(t, base, "a.dat", 1<<20)
	tarB, idB := buildVariant(t, base, "b.dat", 2<<20)
	must(t, dir, "put", "capy-busybox-1-a", tarA)
	var put struct {
		Reused int `json:"reused_layers"`
	}
	if err := json.Unmarshal([]byte(must(t, dir, "put", "capy-busybox-1-b", tarB, "--json")), &put); err != nil {
		t.Fatal(err)
	}
	if put.Reused != 1 {
		t.Errorf("the second put reused %d stored layers, want 1 (the base: hashed, not compressed)", put.Reused)
	}
	blobs, _ := os.ReadDir(filepath.Join(dir, "layers", "blobs", "sha256"))
	if len(blobs) != 5 { // base, a, b, two skeletons
		t.Errorf("layer store holds %d blobs, want 5 (the base once)", len(blobs))
	}
	whole, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if len(whole) != 0 {
		t.Errorf("blobs/ holds %d whole tars", len(whole))
	}
	removeImage(idA)
	removeImage(idB)
	removeImage(base)

	ga := getJ(t, dir, "capy-busybox-1-a")
	if !ga.Loaded || ga.Sent != ga.Entry.Size {
		t.Errorf("get into a daemon without the base: loaded %v, sent %d of %d; want the whole tar", ga.Loaded, ga.Sent, ga.Entry.Size)
	}
	gb := getJ(t, dir, "capy-busybox-1-b")
	checkSecondGet(t, gb)

	// A flipped byte in b's own layer: nothing loaded, exit 4, quarantined.
	removeImage(idB)
	own0 := gb.Entry.Layers[len(gb.Entry.Layers)-1].Digest
	blob := filepath.Join(dir, "layers", "blobs", "sha256", strings.TrimPrefix(own0, "sha256:")+".tar.zst")
	flipMiddle(t, blob)
	r := imgcache(t, dir, nil, "get", "capy-busybox-1-b")
	if r.code != 4 || !strings.Contains(r.stderr, "integrity") {
		t.Fatalf("get of a tampered layer: want exit 4 naming integrity; got %s", r)
	}
	if inDaemon(t, idB) {
		t.Fatal("a tampered layer was loaded")
	}
	if _, err := os.Stat(blob); !os.IsNotExist(err) {
		t.Errorf("the tampered layer is still in the store: %v", err)
	}
	// a still exports and loads.
	if d := hashFile(t, exportTo(t, dir, "capy-busybox-1-a")); d != hashFile(t, tarA) {
		t.Error("export of a differs from its tar")
	}
}

// TestSkopeoOCIArchive (on Podman too): OCI archives as skopeo writes
// them (gzip layers, index.json, no manifest.json) of two images on one
// base are stored with the base once; into an empty daemon the first
// loads (Docker's classic store, which reads nothing without a
// manifest.json, is sent one made from the entry); the second's cold get
// then sends its own layer only (Docker) and the image runs, reading a
// file of the base and one of its own; export gives back skopeo's bytes.
func TestSkopeoOCIArchive(t *testing.T) {
	needDocker(t)
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatalf("this test needs skopeo (scripts/test.sh installs it): %v", err)
	}
	dir := t.TempDir()
	base := runnableBase(t, 4<<20)
	tarA, idA := buildVariant(t, base, "a.dat", 1<<20)
	tarB, idB := buildVariant(t, base, "b.dat", 2<<20)
	ociA, ociB := skopeoOCI(t, tarA), skopeoOCI(t, tarB)
	must(t, dir, "put", "capy-skopeo-1-a", ociA)
	must(t, dir, "put", "capy-skopeo-1-b", ociB)
	removeImage(idA)
	removeImage(idB)
	removeImage(base)

	ga := getJ(t, dir, "capy-skopeo-1-a")
	// skopeo rewrote the configs: these are other images than the ones
	// built, with other IDs.
	idOCIA := imageID(t, ga.Ref)
	t.Cleanup(func() { removeImage(idOCIA) })
	if !ga.Loaded || ga.Sent < ga.Entry.Size-64<<10 {
		t.Errorf("get into a daemon without the base: loaded %v, sent %d of %d", ga.Loaded, ga.Sent, ga.Entry.Size)
	}
	gb := getJ(t, dir, "capy-skopeo-1-b")
	idOCIB := imageID(t, gb.Ref)
	t.Cleanup(func() { removeImage(idOCIB) })
	if len(gb.Entry.Layers) != 2 {
		t.Fatalf("b's entry records %d layers, want 2 (the base, its own)", len(gb.Entry.Layers))
	}
	checkSecondGet(t, gb)
	if d := hashFile(t, exportTo(t, dir, "capy-skopeo-1-a")); d != hashFile(t, ociA) {
		t.Error("export of a differs from skopeo's archive")
	}
}

// checkSecondGet checks the cold get of an image whose base the engine
// holds: Docker's classic store was sent its own layer, config and
// manifest only, Podman the whole tar (its archive reader needs every
// layer file, whatever it holds); and the image runs, reading /base.dat of
// the base and its own /b.dat.
func checkSecondGet(t *testing.T, g getJSON) {
	t.Helper()
	own := g.Entry.Layers[len(g.Entry.Layers)-1].Size
	switch {
	case onPodman():
		if !g.Loaded || g.Sent != g.Entry.Size {
			t.Errorf("Podman was sent %d bytes of a %d-byte tar: it must get the whole tar", g.Sent, g.Entry.Size)
		}
	case !g.Loaded || g.Sent < own || g.Sent > own+64<<10:
		t.Errorf("second cold get sent %d bytes; its own layer is %d, the tar %d: want its layer, config and manifest only", g.Sent, own, g.Entry.Size)
	}
	out, err := execIn(g.Ref, "sh", "-c", "sha256sum /base.dat /b.dat | wc -l")
	if err != nil || strings.TrimSpace(out) != "2" {
		t.Fatalf("docker run of the loaded image: %q %v", out, err)
	}
}

// skopeoOCI converts a docker-archive to an oci-archive with skopeo.
func skopeoOCI(t *testing.T, dockerArchive string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "oci.tar")
	if r := runCmd(t, exec.Command("skopeo", "copy", "-q", "docker-archive:"+dockerArchive, "oci-archive:"+out)); r.code != 0 {
		t.Fatalf("skopeo copy: %s", r)
	}
	return out
}

// execIn runs a command in a fresh container of ref (removed after) and
// returns its output.
func execIn(ref string, args ...string) (string, error) { return runPlatform(ref, nil, args...) }

func hashFile(t *testing.T, p string) string { return "sha256:" + sha256File(t, p) }

func flipMiddle(t *testing.T, p string) {
	t.Helper()
	os.Chmod(p, 0o644)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x55
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func exportTo(t *testing.T, dir, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+".tar")
	must(t, dir, "export", name, "-o", out)
	return out
}

// TestLayersExportByteIdentical: export gives back, byte for byte, a
// docker-archive Docker 20.10 wrote, a multi-image `docker save a b`, an
// OCI layout as Docker 25+ writes (generated), and one with an empty
// layer; `sha256sum` of the tar and inspect's digest agree.
func TestLayersExportByteIdentical(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	base := runnableBase(t, 1<<20)
	tarA, _ := buildVariant(t, base, "a.dat", 256<<10)
	_, _ = buildVariant(t, base, "b.dat", 256<<10)
	refs := []string{}
	imgs, _ := docker.ImageList(context.Background(), client.ImageListOptions{})
	for _, im := range imgs.Items {
		for _, tag := range im.RepoTags {
			if strings.HasPrefix(tag, "imgcache-e2e/layers-variant:") {
				refs = append(refs, tag)
			}
		}
	}
	multi := saveImage(t, refs...)
	oci, _ := genImage(t, testimage.Options{Format: "oci-archive", FileSize: 100 << 10})
	empty, _ := genImage(t, testimage.Options{Layers: 2, FilesPerLayer: 0})
	for name, p := range map[string]string{"capy-x-1-docker": tarA, "capy-x-1-multi": multi, "capy-x-1-oci": oci, "capy-x-1-empty": empty} {
		digest := must(t, dir, "put", name, p)
		if want := hashFile(t, p); digest != want {
			t.Errorf("%s: put printed %s, sha256 of the tar is %s", name, digest, want)
		}
		if got := hashFile(t, exportTo(t, dir, name)); got != digest {
			t.Errorf("%s: export hashes to %s, want %s", name, got, digest)
		}
	}
	if r := imgcache(t, dir, nil, "verify"); r.code != 0 {
		t.Errorf("verify: %s", r)
	}
}
