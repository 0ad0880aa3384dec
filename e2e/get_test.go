package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/imgcache/imgcache/internal/testimage"
)

func TestColdThenWarmGet(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	tarPath, img := genImage(t, testimage.Options{})
	digest := must(t, dir, "put", "capy-ubuntu-25.04-gcc15", tarPath)
	if want := "sha256:" + sha256File(t, tarPath); digest != want {
		t.Fatalf("put printed %s, sha256sum says %s", digest, want)
	}
	if inDaemon(t, img.ImageID.String()) {
		t.Fatalf("image %s in the daemon before get", img.ImageID)
	}

	start := eventWindowStart()
	ref := must(t, dir, "get", "capy-ubuntu-25.04-gcc15")
	if want := "imgcache/capy-ubuntu-25.04-gcc15:" + strings.TrimPrefix(digest, "sha256:")[:12]; ref != want {
		t.Fatalf("get printed %q, want %q", ref, want)
	}
	for _, r := range []string{ref, "imgcache/capy-ubuntu-25.04-gcc15:latest", img.ImageID.String()} {
		if !inDaemon(t, r) {
			t.Fatalf("%s not in the daemon after get", r)
		}
	}
	mid := time.Now()
	if got := must(t, dir, "get", "capy-ubuntu-25.04-gcc15"); got != ref {
		t.Fatalf("warm get printed %q, want %q", got, ref)
	}
	end := time.Now().Add(time.Second)
	if onPodman() {
		// Podman's events have whole-second windows and no image ID: the
		// two gets together caused one load.
		if n := loadsBetween(t, img.ImageID.String(), start, end); n != 1 {
			t.Errorf("cold then warm get: %d load events, want 1", n)
		}
	} else {
		if n := loadsBetween(t, img.ImageID.String(), start, mid); n != 1 {
			t.Errorf("cold get: %d load events, want 1", n)
		}
		if n := loadsBetween(t, img.ImageID.String(), mid, end); n != 0 {
			t.Errorf("warm get: %d load events, want 0", n)
		}
	}
	// A use was recorded.
	var e struct {
		LastUsed time.Time `json:"last_used"`
	}
	if err := json.Unmarshal([]byte(must(t, dir, "inspect", "--json", "capy-ubuntu-25.04-gcc15")), &e); err != nil {
		t.Fatal(err)
	}
	if e.LastUsed.Before(mid.Add(-time.Second)) {
		t.Errorf("last_used %v not updated by get at %v", e.LastUsed, mid)
	}
}

func TestOCIArchiveGet(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	tarPath, img := genImage(t, testimage.Options{Format: "oci-archive"})
	must(t, dir, "put", "capy-debian-12-oci", tarPath)
	must(t, dir, "get", "capy-debian-12-oci")
	if !inDaemon(t, img.ImageID.String()) {
		t.Fatalf("image %s not loaded", img.ImageID)
	}
}

// TestConcurrentColdGet: N processes asking for one cold image cause one load.
func TestConcurrentColdGet(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	tarPath, img := genImage(t, testimage.Options{Layers: 3, FileSize: 256 << 10})
	must(t, dir, "put", "capy-ubuntu-25.04-clang20-asan", tarPath)
	const n = 6
	start := eventWindowStart()
	var wg sync.WaitGroup
	results := make([]result, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = imgcache(t, dir, nil, "get", "capy-ubuntu-25.04-clang20-asan")
		}()
	}
	wg.Wait()
	end := time.Now().Add(time.Second)
	for i, r := range results {
		if r.code != 0 || strings.TrimSpace(r.stdout) != strings.TrimSpace(results[0].stdout) {
			t.Fatalf("process %d: %s", i, r)
		}
	}
	if got := loadsBetween(t, img.ImageID.String(), start, end); got != 1 {
		t.Fatalf("%d processes: %d load events, want exactly 1", n, got)
	}
	if !inDaemon(t, img.ImageID.String()) {
		t.Fatal("image not in the daemon")
	}
}

// tamperCase rewrites the tar inside a stored blob. Docker itself would load
// each of these archives; imgcache must refuse them.
var tamperCases = []struct {
	name   string
	tamper func(t *testing.T, hdr *tar.Header, data []byte) []byte
}{
	{"retag manifest.json", func(t *testing.T, hdr *tar.Header, data []byte) []byte {
		if hdr.Name != "manifest.json" {
			return data
		}
		var m []map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		m[0]["RepoTags"] = []string{"evil/retagged:latest"}
		out, _ := json.Marshal(m)
		return out
	}},
	{"flip a byte in the last layer", func(t *testing.T, hdr *tar.Header, data []byte) []byte {
		// The last layer.tar before the config: its file content, near the end of the archive.
		if !strings.HasSuffix(hdr.Name, "/layer.tar") || !isLastLayer(hdr.Name) {
			return data
		}
		out := bytes.Clone(data)
		out[len(out)-2048] ^= 0x01 // inside the last file's content
		return out
	}},
	{"edit repositories (last entry)", func(t *testing.T, hdr *tar.Header, data []byte) []byte {
		if hdr.Name != "repositories" {
			return data
		}
		return bytes.Replace(data, []byte(`"`), []byte(`"x`), 1)
	}},
}

var lastLayer string

func isLastLayer(name string) bool { return name == lastLayer }

func TestTamperedBlobIsNeverLoaded(t *testing.T) {
	needDocker(t)
	for _, tc := range tamperCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := wholeTarDir(t)
			tarPath, img := genImage(t, testimage.Options{})
			name := "capy-ubuntu-25.04-tamper"
			digest := strings.TrimPrefix(must(t, dir, "put", name, tarPath), "sha256:")
			lastLayer = findLastLayer(t, tarPath)
			swapBlob(t, dir, digest, tarPath, tc.tamper)
			t.Cleanup(func() { removeImage("evil/retagged:latest") })

			r := imgcache(t, dir, nil, "get", name)
			if r.code != 4 || !strings.Contains(r.stderr, "integrity") || !strings.Contains(r.stderr, digest) {
				t.Fatalf("get of a tampered blob: want exit 4 naming integrity and %s; got %s", digest, r)
			}
			if r.stdout != "" {
				t.Errorf("stdout must stay empty on failure, got %q", r.stdout)
			}
			for _, ref := range []string{img.ImageID.String(), "evil/retagged:latest", "imgcache/" + name + ":latest", "imgcache/" + name + ":" + digest[:12]} {
				if inDaemon(t, ref) {
					t.Errorf("%s is in the daemon after a failed verified load", ref)
				}
			}
			if q, _ := filepath.Glob(filepath.Join(dir, "quarantine", digest+"-*")); len(q) != 1 {
				t.Errorf("blob not quarantined: %v", q)
			}
			if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", digest+".tar.zst")); !os.IsNotExist(err) {
				t.Errorf("tampered blob still in blobs/: %v", err)
			}
			// A second get explains the quarantine, with the same exit code.
			if r := imgcache(t, dir, nil, "get", name); r.code != 4 || !strings.Contains(r.stderr, "quarantine") {
				t.Errorf("second get: %s", r)
			}
			// And the plain tampered tar is accepted by Docker itself, which is why the check matters.
		})
	}
}

func TestTruncatedBlobIsNeverLoaded(t *testing.T) {
	needDocker(t)
	dir := wholeTarDir(t)
	tarPath, img := genImage(t, testimage.Options{})
	name := "capy-ubuntu-25.04-trunc"
	digest := strings.TrimPrefix(must(t, dir, "put", name, tarPath), "sha256:")
	blob := filepath.Join(dir, "blobs", "sha256", digest+".tar.zst")
	fi, _ := os.Stat(blob)
	os.Chmod(blob, 0o644)
	if err := os.Truncate(blob, fi.Size()*2/3); err != nil {
		t.Fatal(err)
	}
	r := imgcache(t, dir, nil, "get", name)
	if r.code != 4 || !strings.Contains(r.stderr, "integrity") {
		t.Fatalf("get of a truncated blob: %s", r)
	}
	if inDaemon(t, img.ImageID.String()) {
		t.Fatal("image loaded from a truncated blob")
	}
}

func TestNoDaemon(t *testing.T) {
	dir := t.TempDir()
	tarPath, _ := genImage(t, testimage.Options{})
	must(t, dir, "put", "capy-ubuntu-25.04-nodaemon", tarPath)
	r := imgcache(t, dir, []string{"DOCKER_HOST=unix:///nonexistent/docker.sock"}, "get", "capy-ubuntu-25.04-nodaemon")
	if r.code != 5 || !strings.Contains(r.stderr, "daemon") || !strings.Contains(r.stderr, "DOCKER_HOST") {
		t.Fatalf("get without a daemon: want exit 5 naming the daemon and the fix; got %s", r)
	}
}

func TestOtherArchitectureRefused(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	tarPath, img := genImage(t, testimage.Options{Architecture: "riscv64"})
	must(t, dir, "put", "capy-ubuntu-25.04-riscv", tarPath)
	r := imgcache(t, dir, nil, "get", "capy-ubuntu-25.04-riscv")
	if r.code != 8 || !strings.Contains(r.stderr, "riscv64") {
		t.Fatalf("get of a riscv64 image: %s", r)
	}
	if inDaemon(t, img.ImageID.String()) {
		t.Fatal("foreign-architecture image loaded")
	}
}

func TestGetUnknownName(t *testing.T) {
	dir := t.TempDir()
	if r := imgcache(t, dir, nil, "get", "capy-ubuntu-25.04-nothere"); r.code != 3 || !strings.Contains(r.stderr, "capy-ubuntu-25.04-nothere") {
		t.Fatalf("get of an unknown name: %s", r)
	}
	if r := imgcache(t, dir, nil, "get", "Capy-ubuntu-25.04-x"); r.code != 2 || !strings.Contains(r.stderr, "lowercase") {
		t.Fatalf("get of a bad name: %s", r)
	}
	// A near miss names what the cache holds.
	img, _ := genImage(t, testimage.Options{})
	must(t, dir, "put", "capy-debian-12-a", img)
	if r := imgcache(t, dir, nil, "get", "capy-debian-12-b"); r.code != 3 || !strings.Contains(r.stderr, "did you mean capy-debian-12-a?") {
		t.Fatalf("get of a near miss: %s", r)
	}
}

// TestExportDamagedBlob: export of a damaged blob, with -o, exits 4, says
// that nothing was written, writes nothing, and quarantines the blob as get
// does; the next export says it is in quarantine. (Before: no quarantine,
// and "the output is incomplete" though no file was written.)
func TestExportDamagedBlob(t *testing.T) {
	dir := wholeTarDir(t)
	img, _ := genImage(t, testimage.Options{Layers: 2, FilesPerLayer: 2, FileSize: 1 << 20})
	digest := strings.TrimPrefix(must(t, dir, "put", "capy-ubuntu-25.04-bad", img), "sha256:")
	blob := filepath.Join(dir, "blobs", "sha256", digest+".tar.zst")
	os.Chmod(blob, 0o644)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	os.WriteFile(blob, data, 0o444)
	out := filepath.Join(t.TempDir(), "x.tar")
	r := imgcache(t, dir, nil, "export", "capy-ubuntu-25.04-bad", "-o", out)
	if r.code != 4 || !strings.Contains(r.stderr, "nothing was written to "+out) || strings.Contains(r.stderr, "incomplete") {
		t.Fatalf("export -o of a damaged blob: %s", r)
	}
	if _, err := os.Lstat(out); err == nil {
		t.Fatalf("export -o of a damaged blob left %s", out)
	}
	if _, err := os.Lstat(blob); err == nil {
		t.Fatal("the damaged blob was not quarantined")
	}
	if q, _ := filepath.Glob(filepath.Join(dir, "quarantine", digest+"-*")); len(q) != 1 {
		t.Fatalf("quarantine holds %v", q)
	}
	if r := imgcache(t, dir, nil, "export", "capy-ubuntu-25.04-bad"); r.code != 4 || !strings.Contains(r.stderr, "in quarantine") {
		t.Fatalf("export after quarantine: %s", r)
	}
}

// TestSaveRoundTrip: save from the daemon, export byte-identical, get back.
func TestSaveRoundTrip(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	tarPath, img := genImage(t, testimage.Options{})
	must(t, dir, "put", "capy-ubuntu-25.04-src", tarPath)
	ref := must(t, dir, "get", "capy-ubuntu-25.04-src")

	digest := must(t, dir, "save", ref, "capy-ubuntu-25.04-saved")
	out := filepath.Join(t.TempDir(), "exported.tar")
	must(t, dir, "export", "capy-ubuntu-25.04-saved", "-o", out, "--sync")
	if got := "sha256:" + sha256File(t, out); got != digest {
		t.Fatalf("export of a saved image hashes to %s, save printed %s", got, digest)
	}
	var e struct {
		ImageID string `json:"image_id"`
	}
	json.Unmarshal([]byte(must(t, dir, "inspect", "--json", "capy-ubuntu-25.04-saved")), &e)
	if e.ImageID != img.ImageID.String() {
		t.Fatalf("saved entry has image ID %s, want %s", e.ImageID, img.ImageID)
	}
	removeImage(img.ImageID.String())
	if inDaemon(t, img.ImageID.String()) {
		t.Fatal("could not remove the image")
	}
	must(t, dir, "get", "capy-ubuntu-25.04-saved")
	if !inDaemon(t, img.ImageID.String()) {
		t.Fatal("get of the saved entry did not load the image")
	}
	// save of an image the daemon does not have is "not found".
	if r := imgcache(t, dir, nil, "save", "imgcache-e2e/absent:nope", "capy-ubuntu-25.04-absent"); r.code != 3 {
		t.Fatalf("save of an absent image: %s", r)
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func findLastLayer(t *testing.T, tarPath string) string {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	last := ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return last
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, "/layer.tar") || strings.HasPrefix(h.Name, "blobs/") && h.Size > 4096 {
			last = h.Name
		}
	}
}

// tamperTar rewrites the tar with tamper applied to each entry.
func tamperTar(t *testing.T, tarPath string, tamper func(*testing.T, *tar.Header, []byte) []byte) []byte {
	t.Helper()
	in, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var buf bytes.Buffer
	tr, tw := tar.NewReader(in), tar.NewWriter(&buf)
	changed := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		out := tamper(t, h, data)
		if !bytes.Equal(out, data) {
			changed = true
		}
		h.Size = int64(len(out))
		tw.WriteHeader(h)
		tw.Write(out)
	}
	tw.Close()
	if !changed {
		t.Fatal("tamper changed nothing")
	}
	return buf.Bytes()
}

// swapBlob puts the tampered tar, compressed, in place of the stored blob
// (same name, so the manifest still expects the original digest).
func swapBlob(t *testing.T, dir, digest, tarPath string, tamper func(*testing.T, *tar.Header, []byte) []byte) {
	t.Helper()
	data := tamperTar(t, tarPath, tamper)
	if got := sha256.Sum256(data); hex.EncodeToString(got[:]) == digest {
		t.Fatal("tampered tar has the original digest")
	}
	blob := filepath.Join(dir, "blobs", "sha256", digest+".tar.zst")
	os.Chmod(blob, 0o644)
	f, err := os.Create(blob)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(f)
	enc.Write(data)
	enc.Close()
	f.Close()
}

// TestDockerAcceptsTamperedArchive is the control for the tamper test: plain
// docker load takes a retagged or edited archive, so only imgcache's digest
// check stands between such a blob and the daemon.
func TestDockerAcceptsTamperedArchive(t *testing.T) {
	needDocker(t)
	for _, tc := range tamperCases[:1] {
		t.Run(tc.name, func(t *testing.T) {
			tarPath, img := genImage(t, testimage.Options{})
			data := tamperTar(t, tarPath, tc.tamper)
			t.Cleanup(func() { removeImage("evil/retagged:latest") })
			resp, err := docker.ImageLoad(context.Background(), bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp)
			resp.Close()
			if !inDaemon(t, img.ImageID.String()) || !inDaemon(t, "evil/retagged:latest") {
				t.Fatalf("docker load refused the retagged archive; the tamper test proves less than it claims")
			}
		})
	}
	t.Run("edit repositories (last entry)", func(t *testing.T) {
		tarPath, img := genImage(t, testimage.Options{})
		data := tamperTar(t, tarPath, tamperCases[2].tamper)
		resp, err := docker.ImageLoad(context.Background(), bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp)
		resp.Close()
		if !inDaemon(t, img.ImageID.String()) {
			t.Fatalf("docker load refused an archive with an edited repositories file")
		}
	})
}

// TestMetadataFarFromTheEnd: when the archive's manifest lies further from
// its end than the hold-back limit, get verifies the blob in a first pass
// and only then loads it; a tampered blob never reaches the daemon.
func TestMetadataFarFromTheEnd(t *testing.T) {
	needDocker(t)
	t.Run("clean", func(t *testing.T) {
		dir := t.TempDir()
		tarPath, img := genImage(t, testimage.Options{MetadataFirst: true, FileSize: 64 << 10})
		must(t, dir, "put", "capy-ubuntu-25.04-metafirst", tarPath)
		if r := imgcache(t, dir, nil, "--hold-back-limit", "4K", "get", "capy-ubuntu-25.04-metafirst"); r.code != 0 {
			t.Fatalf("get: %s", r)
		}
		if !inDaemon(t, img.ImageID.String()) {
			t.Fatal("not loaded")
		}
	})
	t.Run("tampered", func(t *testing.T) {
		dir := wholeTarDir(t)
		tarPath, img := genImage(t, testimage.Options{MetadataFirst: true, FileSize: 64 << 10})
		digest := strings.TrimPrefix(must(t, dir, "put", "capy-ubuntu-25.04-metafirst", tarPath), "sha256:")
		swapBlob(t, dir, digest, tarPath, tamperCases[0].tamper)
		t.Cleanup(func() { removeImage("evil/retagged:latest") })
		r := imgcache(t, dir, nil, "--hold-back-limit", "4K", "get", "capy-ubuntu-25.04-metafirst")
		if r.code != 4 || !strings.Contains(r.stderr, "integrity") {
			t.Fatalf("get of a tampered metadata-first blob: %s", r)
		}
		if inDaemon(t, img.ImageID.String()) || inDaemon(t, "evil/retagged:latest") {
			t.Fatal("tampered metadata-first blob reached the daemon")
		}
	})
}

// TestDaemonRejectsArchive: an archive imgcache can store but whose layer
// does not match its config's diff ID; Docker refuses it: exit 8, the
// daemon's reason in the message, nothing loaded, the blob kept (it is
// intact: the content, not the cache, is wrong).
func TestDaemonRejectsArchive(t *testing.T) {
	needDocker(t)
	dir := wholeTarDir(t)
	tarPath, img := genImage(t, testimage.Options{})
	lastLayer = findLastLayer(t, tarPath)
	bad := filepath.Join(t.TempDir(), "bad.tar")
	if err := os.WriteFile(bad, tamperTar(t, tarPath, tamperCases[1].tamper), 0o644); err != nil {
		t.Fatal(err)
	}
	digest := strings.TrimPrefix(must(t, dir, "put", "capy-ubuntu-25.04-rejected", bad), "sha256:")
	r := imgcache(t, dir, nil, "get", "capy-ubuntu-25.04-rejected")
	if r.code != 8 || !strings.Contains(r.stderr, "rejected by docker daemon") {
		t.Fatalf("get of an archive Docker refuses: want exit 8; got %s", r)
	}
	if inDaemon(t, img.ImageID.String()) {
		t.Fatal("refused archive left an image")
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", digest+".tar.zst")); err != nil {
		t.Fatalf("an intact blob was removed: %v", err)
	}
}
