package testimage_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/internal/testimage"
)

func mustBytes(t *testing.T, o testimage.Options) ([]byte, testimage.Result) {
	t.Helper()
	b, res, err := testimage.Bytes(o)
	if err != nil {
		t.Fatalf("Bytes(%+v): %v", o, err)
	}
	return b, res
}

// entries returns the tar's entry names and contents, in order.
func entries(t *testing.T, b []byte) ([]string, map[string][]byte) {
	t.Helper()
	var names []string
	bodies := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, bodies
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		bodies[h.Name] = body
	}
}

func TestDeterministic(t *testing.T) {
	for _, o := range []testimage.Options{
		{Tag: "imgcache-test/det:latest", Seed: 7},
		{Seed: 7, Format: archive.FormatOCI, MetadataFirst: true, Compressible: true},
	} {
		b1, r1 := mustBytes(t, o)
		b2, r2 := mustBytes(t, o)
		if !bytes.Equal(b1, b2) || r1.Digest != r2.Digest || r1.ImageID != r2.ImageID {
			t.Errorf("%+v: two runs differ (%s, %s)", o, r1.Digest, r2.Digest)
		}
	}
}

func TestResult(t *testing.T) {
	b, res := mustBytes(t, testimage.Options{Tag: "a/b:c", Seed: 1, Layers: 3})
	if want := digest.FromBytes(b); res.Digest != want {
		t.Errorf("Digest %s, sha256 of the bytes %s", res.Digest, want)
	}
	if res.Size != int64(len(b)) {
		t.Errorf("Size %d, len %d", res.Size, len(b))
	}
	if len(res.DiffIDs) != 3 {
		t.Errorf("%d diff IDs, want 3", len(res.DiffIDs))
	}
	names, bodies := entries(t, b)
	var m []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(bodies["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(bodies[m[0].Config]); got != res.ImageID || m[0].Config != res.ImageID.Encoded()+".json" {
		t.Errorf("config %s hashes to %s, ImageID %s", m[0].Config, got, res.ImageID)
	}
	for i, l := range m[0].Layers {
		if got := digest.FromBytes(bodies[l]); got != res.DiffIDs[i] {
			t.Errorf("layer %s hashes to %s, DiffIDs[%d] = %s", l, got, i, res.DiffIDs[i])
		}
	}
	// docker save order: layer directories, config, manifest.json, repositories.
	if n := len(names); names[n-3] != m[0].Config || names[n-2] != "manifest.json" || names[n-1] != "repositories" {
		t.Errorf("entry order ends with %q", names[n-3:])
	}
	var repos map[string]map[string]string
	if err := json.Unmarshal(bodies["repositories"], &repos); err != nil {
		t.Fatal(err)
	}
	if last := strings.TrimSuffix(m[0].Layers[2], "/layer.tar"); repos["a/b"]["c"] != last {
		t.Errorf("repositories %v, want a/b:c → %s", repos, last)
	}
}

func TestSeeds(t *testing.T) {
	seen := map[digest.Digest]int64{}
	layers := map[digest.Digest]int64{}
	for seed := int64(0); seed < 20; seed++ {
		for _, c := range []bool{false, true} {
			_, res := mustBytes(t, testimage.Options{Seed: seed, Compressible: c})
			if prev, dup := seen[res.ImageID]; dup {
				t.Errorf("seed %d and %d give image ID %s", seed, prev, res.ImageID)
			}
			seen[res.ImageID] = seed
			for _, d := range res.DiffIDs {
				if prev, dup := layers[d]; dup {
					t.Errorf("seed %d and %d share layer %s", seed, prev, d)
				}
				layers[d] = seed
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		o          testimage.Options
		wantFormat archive.Format
		wantTags   []string
	}{
		{"docker", testimage.Options{Tag: "imgcache-test/foo:latest", Seed: 1}, archive.FormatDocker, []string{"imgcache-test/foo:latest"}},
		{"docker/metadata-first", testimage.Options{Tag: "imgcache-test/foo:v2", Seed: 2, MetadataFirst: true}, archive.FormatDocker, []string{"imgcache-test/foo:v2"}},
		{"docker/untagged", testimage.Options{Seed: 3}, archive.FormatDocker, nil},
		{"docker/implicit-latest", testimage.Options{Tag: "alpine", Seed: 4}, archive.FormatDocker, []string{"alpine:latest"}},
		{"docker/other-platform", testimage.Options{Tag: "x/y:1", Seed: 5, OS: "linux", Architecture: "s390x"}, archive.FormatDocker, []string{"x/y:1"}},
		{"oci", testimage.Options{Tag: "imgcache-test/foo:latest", Seed: 6, Format: archive.FormatOCI}, archive.FormatDocker, []string{"imgcache-test/foo:latest"}},
		{"oci/metadata-first", testimage.Options{Tag: "imgcache-test/foo:latest", Seed: 7, Format: archive.FormatOCI, MetadataFirst: true, Layers: 1}, archive.FormatDocker, []string{"imgcache-test/foo:latest"}},
		{"oci/untagged", testimage.Options{Seed: 8, Format: archive.FormatOCI}, archive.FormatDocker, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, res := mustBytes(t, tc.o)
			info, err := archive.Read(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			arch := tc.o.Architecture
			if arch == "" {
				arch = runtime.GOARCH
			}
			img := info.Images[0]
			if info.Format != tc.wantFormat || len(info.Images) != 1 || img.ID != res.ImageID ||
				!slices.Equal(img.RepoTags, tc.wantTags) || img.OS != "linux" || img.Architecture != arch ||
				!sameDiffIDs(img.Layers, res.DiffIDs) || info.Size != res.Size {
				t.Errorf("Read = %+v\nwant format %s, ID %s, tags %v, linux/%s, %d layers, size %d",
					info, tc.wantFormat, res.ImageID, tc.wantTags, arch, len(res.DiffIDs), res.Size)
			}
			names, _ := entries(t, b)
			first := slices.IndexFunc(names, func(n string) bool { return n == "manifest.json" || n == "index.json" })
			layer := slices.IndexFunc(names, func(n string) bool { return strings.HasSuffix(n, "layer.tar") || strings.HasPrefix(n, "blobs/sha256/") })
			if tc.o.MetadataFirst != (first < layer) {
				t.Errorf("MetadataFirst %v, but metadata at entry %d and first layer at %d: %q", tc.o.MetadataFirst, first, layer, names)
			}
		})
	}
}

// TestOCILayout checks the OCI side of FormatOCI on its own: without
// manifest.json the archive reads as an OCI layout with the same image.
func TestOCILayout(t *testing.T) {
	b, res := mustBytes(t, testimage.Options{Tag: "imgcache-test/foo:latest", Seed: 9, Format: archive.FormatOCI})
	names, bodies := entries(t, b)
	for _, want := range []string{"index.json", "oci-layout", "manifest.json", "blobs/sha256/" + res.ImageID.Encoded()} {
		if !slices.Contains(names, want) {
			t.Errorf("no entry %q in %q", want, names)
		}
	}
	if got := string(bodies["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	var idx struct {
		Manifests []struct {
			Digest      digest.Digest
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(bodies["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	ann := idx.Manifests[0].Annotations
	if ann["io.containerd.image.name"] != "docker.io/imgcache-test/foo:latest" || ann["org.opencontainers.image.ref.name"] != "latest" {
		t.Errorf("annotations %v", ann)
	}
	// Rebuild without manifest.json and repositories.
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, n := range names {
		if n == "manifest.json" || n == "repositories" {
			continue
		}
		typ := byte(tar.TypeReg)
		if strings.HasSuffix(n, "/") {
			typ = tar.TypeDir
		}
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: typ, Size: int64(len(bodies[n])), Mode: 0o644})
		tw.Write(bodies[n])
	}
	tw.Close()
	info, err := archive.Read(&out)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != archive.FormatOCI || info.Images[0].ID != res.ImageID ||
		!slices.Equal(info.Images[0].RepoTags, []string{"docker.io/imgcache-test/foo:latest"}) {
		t.Errorf("OCI-only read: %+v", info)
	}
}

func TestCompressible(t *testing.T) {
	o := testimage.Options{Seed: 1, FileSize: 64 << 10, FilesPerLayer: 4}
	random, _ := mustBytes(t, o)
	o.Compressible = true
	text, _ := mustBytes(t, o)
	ratio := func(b []byte) float64 {
		enc, _ := zstd.NewWriter(nil)
		defer enc.Close()
		return float64(len(b)) / float64(len(enc.EncodeAll(b, nil)))
	}
	if r := ratio(random); r > 1.2 {
		t.Errorf("random content compresses %.1fx", r)
	}
	if r := ratio(text); r < 20 {
		t.Errorf("compressible content compresses only %.1fx", r)
	}
}

// TestStreams writes a 64 MiB image without holding it: allocations stay
// far below its size.
func TestStreams(t *testing.T) {
	o := testimage.Options{Seed: 3, Layers: 2, FilesPerLayer: 4, FileSize: 8 << 20}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := testimage.Write(io.Discard, o)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size < 64<<20 {
		t.Errorf("Size %d, want > 64 MiB", res.Size)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("writing %d bytes allocated %d", res.Size, alloc)
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img.tar")
	o := testimage.Options{Tag: "file/test:1", Seed: 4}
	res, err := testimage.WriteFile(path, o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := mustBytes(t, o)
	if !bytes.Equal(got, want) || res.Digest != digest.FromBytes(got) {
		t.Errorf("WriteFile wrote %d bytes (digest %s), Bytes gives %d", len(got), res.Digest, len(want))
	}
}

func TestInvalidOptions(t *testing.T) {
	for _, o := range []testimage.Options{
		{Tag: "Upper:1"},
		{Tag: "x@sha256:0000000000000000000000000000000000000000000000000000000000000000"},
		{Layers: -1},
		{Format: "tarball"},
	} {
		if _, _, err := testimage.Bytes(o); err == nil {
			t.Errorf("Bytes(%+v) succeeded", o)
		}
	}
	if _, err := testimage.WriteFile(filepath.Join(t.TempDir(), "no", "such", "dir.tar"), testimage.Options{}); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}

// sameDiffIDs reports whether the parsed layers carry exactly these diff_ids.
func sameDiffIDs(layers []archive.Layer, diffIDs []digest.Digest) bool {
	return slices.EqualFunc(layers, diffIDs, func(l archive.Layer, d digest.Digest) bool { return l.DiffID == d })
}

// Compressed OCI layers: the blobs are gzip/zstd of the layer tars, named
// by their own digest, described with the compressed media types; the
// config's diff IDs are the uncompressed tars'.
func TestCompressedOCILayers(t *testing.T) {
	data, res, err := testimage.Bytes(testimage.Options{Format: archive.FormatOCI, Compression: "mixed", Layers: 3, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	info, err := archive.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("archive.Read: %v", err)
	}
	ls := info.Images[0].Layers
	if len(ls) != 3 {
		t.Fatalf("%d layers", len(ls))
	}
	for i, l := range ls {
		want := [2]string{"gzip", "zstd"}[i%2]
		if !strings.HasSuffix(l.MediaType, "+"+want) || l.Digest == l.DiffID || l.DiffID != res.DiffIDs[i] {
			t.Errorf("layer %d: %+v, want a %s blob whose digest is not its diff ID %s", i, l, want, res.DiffIDs[i])
		}
	}
	again, _, _ := testimage.Bytes(testimage.Options{Format: archive.FormatOCI, Compression: "mixed", Layers: 3, Seed: 9})
	if !bytes.Equal(data, again) {
		t.Error("compressed archives are not deterministic")
	}
}
