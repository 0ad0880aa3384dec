package archive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/internal/testimage"
)

// ---------------------------------------------------------------------------
// Helpers: building tars.

var mtime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// ent is one entry of a tar built by buildTar.
type ent struct {
	name string
	typ  byte   // default tar.TypeReg
	body string // content
	// size, when non-zero, is the declared size; when it exceeds len(body)
	// the archive stops right after body (a truncated stream).
	size int64
	link string
	pax  map[string]string // PAX records; forces the PAX format
}

// buildTar writes entries with archive/tar. With trailer false the
// end-of-archive marker is left out. It stops (without a trailer) after an
// entry whose declared size exceeds its body.
func buildTar(t testing.TB, trailer bool, entries ...ent) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Size: int64(len(e.body)), Mode: 0o644,
			ModTime: mtime, Linkname: e.link, Format: tar.FormatUSTAR,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if e.size != 0 {
			h.Size = e.size
		}
		if e.pax != nil {
			h.Format = tar.FormatPAX
			h.PAXRecords = e.pax
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: h.Typeflag, Name: h.Name, PAXRecords: e.pax}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("WriteHeader %q: %v", e.name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatalf("Write %q: %v", e.name, err)
		}
		if h.Size > int64(len(e.body)) {
			return b.Bytes()
		}
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	if trailer {
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// readEntries reads a tar (written by archive/tar) back into ents.
func readEntries(t testing.TB, b []byte) []ent {
	t.Helper()
	var out []ent
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ent{name: h.Name, typ: h.Typeflag, body: string(body), link: h.Linkname})
	}
}

// rewrite rebuilds a tar, passing each entry through fn (nil drops it).
func rewrite(t testing.TB, b []byte, fn func(e ent) *ent, extra ...ent) []byte {
	t.Helper()
	var out []ent
	for _, e := range readEntries(t, b) {
		if ne := fn(e); ne != nil {
			out = append(out, *ne)
		}
	}
	return buildTar(t, true, append(out, extra...)...)
}

func drop(names ...string) func(e ent) *ent {
	return func(e ent) *ent {
		if slices.Contains(names, e.name) {
			return nil
		}
		return &e
	}
}

func replace(name, body string) func(e ent) *ent {
	return func(e ent) *ent {
		if e.name == name {
			e.body = body
		}
		return &e
	}
}

func image(t testing.TB, o testimage.Options) ([]byte, testimage.Result) {
	t.Helper()
	b, res, err := testimage.Bytes(o)
	if err != nil {
		t.Fatal(err)
	}
	return b, res
}

// ociOnly is an OCI layout archive without the docker manifest.json.
func ociOnly(t testing.TB, o testimage.Options) ([]byte, testimage.Result) {
	t.Helper()
	o.Format = archive.FormatOCI
	b, res := image(t, o)
	return rewrite(t, b, drop("manifest.json", "repositories")), res
}

func entryBody(t testing.TB, b []byte, name string) string {
	t.Helper()
	for _, e := range readEntries(t, b) {
		if e.name == name {
			return e.body
		}
	}
	t.Fatalf("no entry %q", name)
	return ""
}

// mergeDocker combines docker-format archives into one with several images.
func mergeDocker(t testing.TB, archives ...[]byte) []byte {
	t.Helper()
	var all []ent
	var manifest []json.RawMessage
	seen := map[string]bool{}
	for _, b := range archives {
		var m []json.RawMessage
		if err := json.Unmarshal([]byte(entryBody(t, b, "manifest.json")), &m); err != nil {
			t.Fatal(err)
		}
		manifest = append(manifest, m...)
		for _, e := range readEntries(t, b) {
			if e.name == "manifest.json" || e.name == "repositories" || seen[e.name] {
				continue
			}
			seen[e.name] = true
			all = append(all, e)
		}
	}
	mj, _ := json.Marshal(manifest)
	return buildTar(t, true, append(all, ent{name: "manifest.json", body: string(mj)})...)
}

// mergeOCI combines OCI-only archives into one whose index lists them all.
func mergeOCI(t testing.TB, archives ...[]byte) []byte {
	t.Helper()
	var all []ent
	var manifests []json.RawMessage
	seen := map[string]bool{}
	for _, b := range archives {
		var idx struct{ Manifests []json.RawMessage }
		if err := json.Unmarshal([]byte(entryBody(t, b, "index.json")), &idx); err != nil {
			t.Fatal(err)
		}
		manifests = append(manifests, idx.Manifests...)
		for _, e := range readEntries(t, b) {
			if e.name == "index.json" || seen[e.name] {
				continue
			}
			seen[e.name] = true
			all = append(all, e)
		}
	}
	ij, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": manifests})
	return buildTar(t, true, append(all, ent{name: "index.json", body: string(ij)})...)
}

// minimalDocker is a hand-built docker-archive: a config (stored under its
// own digest unless cfgName is set), one layer and manifest.json.
func minimalDocker(t testing.TB, config, cfgName string) []byte {
	t.Helper()
	if cfgName == "" {
		cfgName = digest.FromString(config).Encoded() + ".json"
	}
	m := fmt.Sprintf(`[{"Config":%q,"RepoTags":["x/y:1"],"Layers":["l1/layer.tar"]}]`, cfgName)
	return buildTar(t, true,
		ent{name: "l1/", typ: tar.TypeDir},
		ent{name: "l1/layer.tar", body: "not really a tar"},
		ent{name: cfgName, body: config},
		ent{name: "manifest.json", body: m},
	)
}

const minimalConfig = `{"architecture":"arm64","os":"linux","variant":"v8","created":"2023-04-05T06:07:08Z","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}`

// ---------------------------------------------------------------------------
// An independent walker: header offsets from the raw USTAR/PAX bytes, without
// archive/tar.

func parseOctal(t testing.TB, b []byte) int64 {
	t.Helper()
	s := strings.Trim(string(b), " \x00")
	if s == "" {
		return 0
	}
	n, err := strconv.ParseInt(s, 8, 64)
	if err != nil {
		t.Fatalf("octal %q: %v", s, err)
	}
	return n
}

// headerOffsets maps each entry name to the offset of its first header
// block (its PAX extended header when it has one) and returns the offset just
// past the end-of-archive marker (or the end of the data without one).
func headerOffsets(t testing.TB, b []byte) (map[string]int64, int64) {
	t.Helper()
	offs := map[string]int64{}
	start := int64(-1)
	paxPath := ""
	pos := int64(0)
	for pos+512 <= int64(len(b)) {
		blk := b[pos : pos+512]
		if bytes.Equal(blk, make([]byte, 512)) {
			return offs, min(pos+1024, int64(len(b)))
		}
		name := string(bytes.TrimRight(blk[:100], "\x00"))
		if prefix := string(bytes.TrimRight(blk[345:500], "\x00")); prefix != "" && string(blk[257:262]) == "ustar" {
			name = prefix + "/" + name
		}
		size := parseOctal(t, blk[124:136])
		if start < 0 {
			start = pos
		}
		switch blk[156] {
		case 'x':
			for _, rec := range strings.Split(string(b[pos+512:pos+512+size]), "\n") {
				if _, kv, ok := strings.Cut(rec, " "); ok {
					if v, ok := strings.CutPrefix(kv, "path="); ok {
						paxPath = v
					}
				}
			}
		case 'g':
			start = -1 // a global header applies to what follows; not part of an entry
		case 'L', 'K':
		default:
			if paxPath != "" {
				name = paxPath
			}
			if _, dup := offs[name]; !dup {
				offs[name] = start
			}
			start, paxPath = -1, ""
		}
		pos += 512 + (size+511)/512*512
	}
	return offs, pos
}

// ---------------------------------------------------------------------------
// Tests.

func TestHeaderOffsetsHelper(t *testing.T) {
	b := buildTar(t, true,
		ent{name: "a", body: strings.Repeat("x", 600)},
		ent{name: "b", body: "y", pax: map[string]string{"comment": "hello"}},
		ent{name: "c"},
	)
	offs, end := headerOffsets(t, b)
	want := map[string]int64{"a": 0, "b": 512 + 1024, "c": 512 + 1024 + 512 + 512 + 512 + 512}
	for k, v := range want {
		if offs[k] != v {
			t.Errorf("offset of %q = %d, want %d", k, offs[k], v)
		}
	}
	if end != int64(len(b)) {
		t.Errorf("end = %d, want %d", end, len(b))
	}
}

func TestRead(t *testing.T) {
	const tag = "imgcache-test/foo:latest"
	dockerB, dockerR := image(t, testimage.Options{Tag: tag, Seed: 1})
	dockerFirstB, dockerFirstR := image(t, testimage.Options{Tag: tag, Seed: 2, MetadataFirst: true, Layers: 3})
	bothB, bothR := image(t, testimage.Options{Tag: tag, Seed: 3, Format: archive.FormatOCI})
	bothFirstB, bothFirstR := image(t, testimage.Options{Tag: tag, Seed: 4, Format: archive.FormatOCI, MetadataFirst: true})
	ociB, ociR := ociOnly(t, testimage.Options{Tag: tag, Seed: 5})
	ociFirstB, ociFirstR := ociOnly(t, testimage.Options{Tag: "registry.example:5000/team/app:v1.2", Seed: 6, MetadataFirst: true, Layers: 1})
	ociUntaggedB, ociUntaggedR := ociOnly(t, testimage.Options{Seed: 7, Architecture: "arm64", OS: "linux"})
	untaggedB, untaggedR := image(t, testimage.Options{Seed: 8})

	multiA, resA := image(t, testimage.Options{Tag: "multi/a:1", Seed: 10})
	multiB, resB := image(t, testimage.Options{Tag: "multi/b:2", Seed: 11, Layers: 4})
	multiDocker := mergeDocker(t, multiA, multiB)
	ociA, ociResA := ociOnly(t, testimage.Options{Tag: "multi/a:1", Seed: 12})
	ociBB, ociResB := ociOnly(t, testimage.Options{Tag: "multi/b:2", Seed: 13})
	multiOCI := mergeOCI(t, ociA, ociBB)

	// OCI with only a full-reference org.opencontainers.image.ref.name, and
	// with a bare tag there (not a repo tag).
	refNameB, refNameR := ociOnly(t, testimage.Options{Seed: 14})
	refNameB = rewrite(t, refNameB, func(e ent) *ent {
		if e.name == "index.json" {
			e.body = strings.Replace(e.body, `"size"`, `"annotations":{"org.opencontainers.image.ref.name":"quay.io/x/y:3"},"size"`, 1)
		}
		return &e
	})
	bareTagB := rewrite(t, refNameB, func(e ent) *ent {
		if e.name == "index.json" {
			e.body = strings.Replace(e.body, "quay.io/x/y:3", "3", 1)
		}
		return &e
	})

	// Nested index: index.json → image index blob → the image manifest plus a
	// platform whose manifest docker save left out, and an attestation.
	nestedB, nestedR := ociOnly(t, testimage.Options{Tag: tag, Seed: 15})
	var topIdx struct{ Manifests []map[string]any }
	if err := json.Unmarshal([]byte(entryBody(t, nestedB, "index.json")), &topIdx); err != nil {
		t.Fatal(err)
	}
	inner := topIdx.Manifests[0]
	annotations := inner["annotations"]
	delete(inner, "annotations")
	missing := map[string]any{
		"mediaType": "application/vnd.oci.image.manifest.v1+json",
		"digest":    digest.FromString("absent").String(), "size": 6,
		"platform": map[string]string{"os": "linux", "architecture": "s390x"},
	}
	attest := map[string]any{
		"mediaType": "application/vnd.oci.image.manifest.v1+json",
		"digest":    digest.FromString("attestation").String(), "size": 11,
		"annotations": map[string]string{"vnd.docker.reference.type": "attestation-manifest"},
		"platform":    map[string]string{"os": "unknown", "architecture": "unknown"},
	}
	innerIdx, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{missing, inner, attest},
	})
	innerDigest := digest.FromBytes(innerIdx)
	outerIdx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{
		"mediaType": "application/vnd.oci.image.index.v1+json", "digest": innerDigest,
		"size": len(innerIdx), "annotations": annotations,
	}}})
	nestedB = rewrite(t, nestedB, replace("index.json", string(outerIdx)),
		ent{name: "blobs/sha256/" + innerDigest.Encoded(), body: string(innerIdx)})

	// tar -C dir . style names, and a docker save style shared-layer symlink.
	dotB := rewrite(t, dockerB, func(e ent) *ent { e.name = "./" + e.name; return &e }, ent{name: "zz/layer.tar", typ: tar.TypeSymlink, link: "../" + strings.Split(readEntries(t, dockerB)[0].name, "/")[0] + "/layer.tar"})
	dotB = append(buildTar(t, false, ent{name: "./", typ: tar.TypeDir}), dotB...)

	globalB := append(buildTar(t, false,
		ent{name: "pax_global_header", typ: tar.TypeXGlobalHeader, pax: map[string]string{"comment": "git archive writes one"}},
		ent{name: "pax_global_header", typ: tar.TypeXGlobalHeader, pax: map[string]string{"comment": "and another"}},
	), dockerB...)
	noTrailerB := dockerB[:len(dockerB)-1024]
	oneZeroBlockB := dockerB[:len(dockerB)-512]
	gnuPaddedB := append(slices.Clone(dockerB), make([]byte, 10240-len(dockerB)%10240)...)

	wsConfig := " \n\t" + minimalConfig
	wsConfigB := minimalDocker(t, wsConfig, "")
	wsConfigID := digest.FromString(wsConfig)
	paxB := rewrite(t, minimalDocker(t, minimalConfig, ""), func(e ent) *ent {
		if e.name == "manifest.json" {
			e.pax = map[string]string{"comment": "a PAX header before manifest.json"}
		}
		return &e
	})
	otherNameCfgB := minimalDocker(t, minimalConfig, "config.json")
	minimalID := digest.FromString(minimalConfig)

	one := func(res testimage.Result, tags ...string) archive.Image {
		img := archive.Image{ID: res.ImageID, OS: "linux", Architecture: runtime.GOARCH, Created: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Layers: diffLayers(res.DiffIDs)}
		if len(tags) > 0 {
			img.RepoTags = tags
		}
		return img
	}
	arm := func(img archive.Image) archive.Image { img.Architecture = "arm64"; return img }
	minimal := archive.Image{ID: minimalID, RepoTags: []string{"x/y:1"}, OS: "linux", Architecture: "arm64", Variant: "v8", Created: time.Date(2023, 4, 5, 6, 7, 8, 0, time.UTC), Layers: make([]archive.Layer, 1)}

	tests := []struct {
		name     string
		in       []byte
		format   archive.Format
		images   []archive.Image
		metaName string // the entry MetadataOffset must point at
		size     int64  // expected Size; 0 = len(in)
	}{
		{"docker", dockerB, archive.FormatDocker, []archive.Image{one(dockerR, tag)}, "manifest.json", 0},
		{"docker/metadata-first", dockerFirstB, archive.FormatDocker, []archive.Image{one(dockerFirstR, tag)}, "manifest.json", 0},
		{"docker/untagged", untaggedB, archive.FormatDocker, []archive.Image{one(untaggedR)}, "manifest.json", 0},
		{"both/docker-wins", bothB, archive.FormatDocker, []archive.Image{one(bothR, tag)}, "index.json", 0},
		{"both/metadata-first", bothFirstB, archive.FormatDocker, []archive.Image{one(bothFirstR, tag)}, "index.json", 0},
		{"oci", ociB, archive.FormatOCI, []archive.Image{one(ociR, "docker.io/imgcache-test/foo:latest")}, "index.json", 0},
		{"oci/metadata-first", ociFirstB, archive.FormatOCI, []archive.Image{one(ociFirstR, "registry.example:5000/team/app:v1.2")}, "index.json", 0},
		{"oci/untagged", ociUntaggedB, archive.FormatOCI, []archive.Image{arm(one(ociUntaggedR))}, "index.json", 0},
		{"oci/ref-name-full", refNameB, archive.FormatOCI, []archive.Image{one(refNameR, "quay.io/x/y:3")}, "index.json", 0},
		{"oci/ref-name-bare-tag", bareTagB, archive.FormatOCI, []archive.Image{one(refNameR)}, "index.json", 0},
		{"oci/nested-index", nestedB, archive.FormatOCI, []archive.Image{one(nestedR, "docker.io/imgcache-test/foo:latest")}, "index.json", 0},
		{"docker/multiple-images", multiDocker, archive.FormatDocker, []archive.Image{one(resA, "multi/a:1"), one(resB, "multi/b:2")}, "manifest.json", 0},
		{"oci/multiple-images", multiOCI, archive.FormatOCI, []archive.Image{one(ociResA, "docker.io/multi/a:1"), one(ociResB, "docker.io/multi/b:2")}, "index.json", 0},
		{"docker/dot-slash-names-and-symlink", dotB, archive.FormatDocker, []archive.Image{one(dockerR, tag)}, "./manifest.json", 0},
		{"docker/pax-global-headers", globalB, archive.FormatDocker, []archive.Image{one(dockerR, tag)}, "manifest.json", 0},
		{"docker/no-trailer", noTrailerB, archive.FormatDocker, []archive.Image{one(dockerR, tag)}, "manifest.json", 0},
		{"docker/one-zero-block", oneZeroBlockB, archive.FormatDocker, []archive.Image{one(dockerR, tag)}, "manifest.json", 0},
		{"docker/record-padding-not-read", gnuPaddedB, archive.FormatDocker, []archive.Image{one(dockerR, tag)}, "manifest.json", int64(len(dockerB))},
		{"docker/config-with-leading-whitespace", wsConfigB, archive.FormatDocker, []archive.Image{{ID: wsConfigID, RepoTags: minimal.RepoTags, OS: "linux", Architecture: "arm64", Variant: "v8", Created: minimal.Created, Layers: make([]archive.Layer, 1)}}, "manifest.json", 0},
		{"docker/pax-header-before-manifest", paxB, archive.FormatDocker, []archive.Image{minimal}, "manifest.json", 0},
		{"docker/config-not-named-by-digest", otherNameCfgB, archive.FormatDocker, []archive.Image{minimal}, "manifest.json", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(tc.in)
			info, err := archive.Read(r)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if info.Format != tc.format {
				t.Errorf("Format = %q, want %q", info.Format, tc.format)
			}
			if !imagesEqual(info.Images, tc.images) {
				t.Errorf("Images =\n  %+v\nwant\n  %+v", info.Images, tc.images)
			}
			wantSize := tc.size
			if wantSize == 0 {
				wantSize = int64(len(tc.in))
			}
			if info.Size != wantSize {
				t.Errorf("Size = %d, want %d", info.Size, wantSize)
			}
			if consumed := int64(len(tc.in) - r.Len()); consumed != info.Size {
				t.Errorf("consumed %d bytes, Size says %d", consumed, info.Size)
			}
			offs, end := headerOffsets(t, tc.in)
			if end != wantSize {
				t.Errorf("independent walker ends at %d, Size = %d", end, wantSize)
			}
			want, ok := offs[tc.metaName]
			if !ok {
				t.Fatalf("no entry %q in the test archive", tc.metaName)
			}
			for _, other := range []string{"manifest.json", "index.json", "./manifest.json", "./index.json"} {
				if o, ok := offs[other]; ok && o < want {
					t.Fatalf("test case: %q (at %d) comes before %q (at %d)", other, o, tc.metaName, want)
				}
			}
			if info.MetadataOffset != want {
				t.Errorf("MetadataOffset = %d, want %d (header of %q)", info.MetadataOffset, want, tc.metaName)
			}
			if info.MetadataOffset%512 != 0 || info.MetadataOffset >= info.Size {
				t.Errorf("MetadataOffset %d not a block boundary before Size %d", info.MetadataOffset, info.Size)
			}
		})
	}
}

// TestMetadataOffsetHoldsBackManifest checks the promise behind
// MetadataOffset: the bytes before it do not contain manifest.json.
func TestMetadataOffsetHoldsBackManifest(t *testing.T) {
	for _, o := range []testimage.Options{
		{Tag: "a/b:c", Seed: 20},
		{Tag: "a/b:c", Seed: 21, MetadataFirst: true},
		{Tag: "a/b:c", Seed: 22, Format: archive.FormatOCI},
	} {
		b, _ := image(t, o)
		info, err := archive.Read(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range readEntries(t, b[:info.MetadataOffset]) {
			if e.name == "manifest.json" || e.name == "index.json" {
				t.Errorf("%+v: %s lies before MetadataOffset %d", o, e.name, info.MetadataOffset)
			}
		}
	}
}

func imagesEqual(a, b []archive.Image) bool {
	return slices.EqualFunc(a, b, func(x, y archive.Image) bool {
		return x.ID == y.ID && slices.Equal(x.RepoTags, y.RepoTags) && (x.RepoTags == nil) == (y.RepoTags == nil) &&
			x.OS == y.OS && x.Architecture == y.Architecture && x.Variant == y.Variant &&
			x.Created.Equal(y.Created) && layersMatch(x.Layers, y.Layers)
	})
}

// diffLayers is the layers a test expects, by diff_id only.
func diffLayers(ds []digest.Digest) []archive.Layer {
	ls := make([]archive.Layer, len(ds))
	for i, d := range ds {
		ls[i].DiffID = d
	}
	return ls
}

// layersMatch compares got with want on the fields want sets: every test
// image gives the count, most the diff_ids.
func layersMatch(got, want []archive.Layer) bool {
	return slices.EqualFunc(got, want, func(g, w archive.Layer) bool {
		return g.Path != "" && g.MediaType != "" && (w.DiffID == "" || g.DiffID == w.DiffID) &&
			(w.Path == "" || g.Path == w.Path)
	})
}

func TestReadErrors(t *testing.T) {
	dockerB, _ := image(t, testimage.Options{Tag: "e/e:1", Seed: 30})
	ociB, _ := ociOnly(t, testimage.Options{Tag: "e/e:1", Seed: 31})
	rnd := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(dockerB)
	zw.Close()

	manifestOf := func(b []byte) string { return entryBody(t, b, "manifest.json") }
	cfgEntry := func(b []byte) string {
		var m []struct{ Config string }
		json.Unmarshal([]byte(manifestOf(b)), &m)
		return m[0].Config
	}
	dockerCfg := cfgEntry(dockerB)

	// Flip a byte of the second header's name: its checksum no longer matches.
	corrupt := slices.Clone(dockerB)
	corrupt[512+3] ^= 0x55

	// An OCI manifest blob whose content no longer matches its digest, and
	// one whose index.json descriptor gives the wrong size.
	var idx struct {
		Manifests []struct {
			Digest digest.Digest
			Size   int64
		}
	}
	json.Unmarshal([]byte(entryBody(t, ociB, "index.json")), &idx)
	manBlob := "blobs/sha256/" + idx.Manifests[0].Digest.Encoded()
	tamperedManifest := rewrite(t, ociB, func(e ent) *ent {
		if e.name == manBlob {
			e.body = strings.Replace(e.body, `"schemaVersion"`, `"schemaVersioN"`, 1)
		}
		return &e
	})
	wrongSize := rewrite(t, ociB, func(e ent) *ent {
		if e.name == "index.json" {
			e.body = strings.Replace(e.body, fmt.Sprintf(`"size":%d`, idx.Manifests[0].Size), `"size":1`, 1)
		}
		return &e
	})
	missingManifest := rewrite(t, ociB, drop(manBlob))

	// index.json → index → index → … deeper than the limit.
	var chain []ent
	var next = ent{name: "x"}
	nextDigest := digest.FromString("bottom")
	for i := 0; i < 8; i++ {
		body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":%q,"size":%d}]}`, nextDigest, len(next.body))
		next = ent{name: "blobs/sha256/" + digest.FromString(body).Encoded(), body: body}
		nextDigest = digest.FromString(body)
		chain = append(chain, next)
	}
	chain = append(chain, ent{name: "index.json", body: next.body})
	deepB := buildTar(t, true, chain...)

	huge := 9 << 20
	bigConfig := "{" + strings.Repeat(" ", huge) + "}"
	bigConfigB := minimalDocker(t, bigConfig, "")

	tests := []struct {
		name   string
		in     []byte
		want   error
		substr string
	}{
		{"old GNU sparse file with a 2^62-byte hole", gnuSparseHole(t), archive.ErrUnsafe, `entry "hole" is a sparse file`},
		{"PAX sparse file with a 2^62-byte hole", paxSparseHole(t),
			archive.ErrUnsafe, "is a sparse file"},
		{"empty input", nil, archive.ErrNotTar, "not a tar archive: empty input"},
		{"short random bytes", random(100), archive.ErrNotTar, "shorter than one 512-byte tar header"},
		{"random bytes", random(4096), archive.ErrNotTar, "not a tar header"},
		{"text file", []byte(strings.Repeat("hello, this is a text file\n", 100)), archive.ErrNotTar, "not a tar header"},
		{"gzip-compressed", gz.Bytes(), archive.ErrNotTar, "gzip-compressed"},
		{"empty tar", make([]byte, 1024), archive.ErrNotImage, "no entries"},
		{"plain tar of files", buildTar(t, true, ent{name: "README", body: "hi"}, ent{name: "src/", typ: tar.TypeDir}, ent{name: "src/main.go", body: "package main"}),
			archive.ErrNotImage, "not an image archive: no manifest.json or index.json at the top level (is this a docker save tarball?)"},
		{"manifest.json not at top level", buildTar(t, true, ent{name: "sub/manifest.json", body: "[]"}), archive.ErrNotImage, "no manifest.json or index.json"},
		{"corrupt second header", corrupt, archive.ErrNotTar, "corrupt tar header at offset 512"},
		{"path traversal", buildTar(t, true, ent{name: "../etc/passwd", body: "root"}), archive.ErrUnsafe, `unsafe archive: entry "../etc/passwd" escapes the archive`},
		{"path traversal inside", buildTar(t, true, ent{name: "a/../../b", body: "x"}), archive.ErrUnsafe, `entry "a/../../b" escapes the archive`},
		{"absolute path", buildTar(t, true, ent{name: "/etc/passwd", body: "root"}), archive.ErrUnsafe, `entry "/etc/passwd" has an absolute path`},
		{"symlink escapes", buildTar(t, true, ent{name: "a/l", typ: tar.TypeSymlink, link: "../../etc"}), archive.ErrUnsafe, `link "a/l" points outside the archive`},
		{"symlink absolute", buildTar(t, true, ent{name: "l", typ: tar.TypeSymlink, link: "/etc/passwd"}), archive.ErrUnsafe, `symlink "l" points to the absolute path "/etc/passwd"`},
		{"hard link escapes", buildTar(t, true, ent{name: "h", typ: tar.TypeLink, link: "../x"}), archive.ErrUnsafe, `link "h" points outside the archive`},
		{"duplicate manifest.json", rewrite(t, dockerB, func(e ent) *ent { return &e }, ent{name: "manifest.json", body: manifestOf(dockerB)}),
			archive.ErrUnsafe, `unsafe archive: duplicate entry "manifest.json"`},
		{"duplicate via ./", rewrite(t, dockerB, func(e ent) *ent { return &e }, ent{name: "./manifest.json", body: "[]"}),
			archive.ErrUnsafe, `duplicate entry "manifest.json"`},
		{"huge manifest.json", buildTar(t, false, ent{name: "manifest.json", body: "[", size: 1 << 30}),
			archive.ErrUnsafe, "unsafe archive: manifest.json is 1073741824 bytes, more than the 8 MiB limit"},
		{"huge index.json", buildTar(t, false, ent{name: "index.json", body: "{", size: 9 << 20}),
			archive.ErrUnsafe, "index.json is 9437184 bytes, more than the 8 MiB limit"},
		{"config over 8 MiB", bigConfigB, archive.ErrUnsafe, "which is 9437186 bytes, more than the 8 MiB limit"},
		{"missing config", rewrite(t, dockerB, drop(dockerCfg)), archive.ErrNotImage, fmt.Sprintf("manifest.json image 0 references %q, which is not in the archive", dockerCfg)},
		{"missing layer", rewrite(t, dockerB, func(e ent) *ent {
			if strings.HasSuffix(e.name, "/layer.tar") {
				return nil
			}
			return &e
		}), archive.ErrNotImage, "references layer"},
		{"config name does not match content", rewrite(t, dockerB, func(e ent) *ent {
			if e.name == dockerCfg {
				e.body = strings.Replace(e.body, `"os":"linux"`, `"os":"linux" `, 1)
			}
			return &e
		}), archive.ErrUnsafe, "as manifest.json image 0 says"},
		{"config not a JSON object", minimalDocker(t, "[1,2]", "c.json"), archive.ErrNotImage, `references "c.json", which is not a JSON object`},
		{"config invalid JSON", minimalDocker(t, `{"os":`, "c.json"), archive.ErrNotImage, "not a valid image config"},
		{"config without rootfs", minimalDocker(t, `{"os":"linux"}`, "c.json"), archive.ErrNotImage, "has no rootfs"},
		{"config diff_ids mismatch", minimalDocker(t, `{"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`, "c.json"), archive.ErrNotImage, "lists 1 layers but its config"},
		{"manifest.json invalid JSON", rewrite(t, dockerB, replace("manifest.json", "[{")), archive.ErrNotImage, "manifest.json is not a valid docker-archive manifest"},
		{"manifest.json empty list", rewrite(t, dockerB, replace("manifest.json", " []")), archive.ErrNotImage, "manifest.json lists no images"},
		{"manifest.json without Config", rewrite(t, dockerB, replace("manifest.json", `[{"RepoTags":null}]`)), archive.ErrNotImage, "has no Config"},
		{"manifest.json config escapes", rewrite(t, dockerB, replace("manifest.json", `[{"Config":"../x.json"}]`)), archive.ErrUnsafe, `entry "../x.json" escapes`},
		{"manifest.json is a directory", buildTar(t, true, ent{name: "manifest.json/", typ: tar.TypeDir}), archive.ErrNotImage, "manifest.json is not a regular file"},
		{"oci missing manifest blob", missingManifest, archive.ErrNotImage, "index.json manifests[0] references"},
		{"oci manifest blob tampered", tamperedManifest, archive.ErrUnsafe, "has digest sha256:"},
		{"oci descriptor size wrong", wrongSize, archive.ErrUnsafe, "is 1 bytes, but it is"},
		{"oci index lists nothing", buildTar(t, true, ent{name: "index.json", body: `{"schemaVersion":2,"manifests":[]}`}), archive.ErrNotImage, "index.json lists no manifests"},
		{"oci bad digest", buildTar(t, true, ent{name: "index.json", body: `{"manifests":[{"digest":"sha256:xyz","size":1}]}`}), archive.ErrNotImage, "invalid digest"},
		{"oci nested too deep", deepB, archive.ErrUnsafe, "nest more than 4 levels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := archive.Read(bytes.NewReader(tc.in))
			if err == nil {
				t.Fatalf("Read succeeded: %+v", info)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %q does not wrap %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q does not contain %q", err, tc.substr)
			}
		})
	}
}

// rawHeader builds a header block by hand, for what archive/tar cannot
// write; gnu selects the old GNU magic instead of USTAR's.
func rawHeader(name string, typ byte, size int64, gnu bool, edit func(blk []byte)) []byte {
	blk := make([]byte, 512)
	copy(blk[0:], name)
	copy(blk[100:], "0000644\x00")
	copy(blk[108:], "0000000\x00")
	copy(blk[116:], "0000000\x00")
	copy(blk[124:], fmt.Sprintf("%011o\x00", size))
	copy(blk[136:], "14614242211\x00")
	blk[156] = typ
	if gnu {
		copy(blk[257:], "ustar  \x00")
	} else {
		copy(blk[257:], "ustar\x0000")
	}
	if edit != nil {
		edit(blk)
	}
	copy(blk[148:156], "        ")
	sum := 0
	for _, c := range blk {
		sum += int(c)
	}
	copy(blk[148:], fmt.Sprintf("%06o\x00", sum))
	return blk
}

func padBlock(s string) []byte {
	b := []byte(s)
	return append(b, make([]byte, (512-len(b)%512)%512)...)
}

// gnuSparseHole is a tar whose only entry is an old-GNU-format sparse file
// that is one 2^62-byte hole (no data blocks).
func gnuSparseHole(t testing.TB) []byte {
	blk := rawHeader("hole", tar.TypeGNUSparse, 0, true, func(blk []byte) {
		blk[483] = 0x80 // base-256 realsize: 1<<62
		blk[483+4] = 0x40
	})
	b := append(blk, make([]byte, 1024)...)
	hdr, err := tar.NewReader(bytes.NewReader(b)).Next()
	if err != nil || hdr.Typeflag != tar.TypeGNUSparse || hdr.Size != 1<<62 {
		t.Fatalf("hand-made sparse header reads as %+v, %v", hdr, err)
	}
	return b
}

// paxSparseHole is the same hole in the GNU PAX sparse format 1.0.
func paxSparseHole(t testing.TB) []byte {
	var recs string
	for _, kv := range []string{"GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.name=hole", "GNU.sparse.realsize=4611686018427387904"} {
		n := len(kv) + 3
		if len(strconv.Itoa(n))+len(kv)+2 != n {
			n++
		}
		recs += fmt.Sprintf("%d %s\n", n, kv)
	}
	var b []byte
	b = append(b, rawHeader("PaxHeaders/hole", tar.TypeXHeader, int64(len(recs)), false, nil)...)
	b = append(b, padBlock(recs)...)
	b = append(b, rawHeader("hole", tar.TypeReg, 512, false, nil)...)
	b = append(b, padBlock("0\n")...) // the sparse map: no data fragments
	b = append(b, make([]byte, 1024)...)
	hdr, err := tar.NewReader(bytes.NewReader(b)).Next()
	if err != nil || hdr.Name != "hole" || hdr.Size != 1<<62 {
		t.Fatalf("hand-made PAX sparse header reads as %+v, %v", hdr, err)
	}
	return b
}

// TestReadTruncated cuts a docker-archive at chosen points.
func TestReadTruncated(t *testing.T) {
	b, _ := image(t, testimage.Options{Tag: "t/t:1", Seed: 40, FileSize: 2000})
	offs, _ := headerOffsets(t, b)
	entries := readEntries(t, b)
	layer := entries[3] // <id>/layer.tar
	if !strings.HasSuffix(layer.name, "/layer.tar") {
		t.Fatalf("entry 3 is %q", layer.name)
	}
	lo := offs[layer.name]
	mo := offs["manifest.json"]
	cfg := entries[len(entries)-3] // <config>.json, manifest.json, repositories
	if !strings.HasSuffix(cfg.name, ".json") || len(cfg.body)%512 == 0 {
		t.Fatalf("entry %q is not the config, or has no padding", cfg.name)
	}
	co := offs[cfg.name]
	tests := []struct {
		name string
		cut  int64
		want error
	}{
		{"inside the first header", 100, archive.ErrNotTar},
		{"inside the second header", 512 + 100, archive.ErrTruncated},
		{"inside layer.tar data", lo + 512 + 1000, archive.ErrTruncated},
		{"inside layer.tar data, at a block boundary", lo + 512 + 1024, archive.ErrTruncated},
		{"just after layer.tar data (a block boundary)", lo + 512 + int64(len(layer.body)), archive.ErrNotImage},
		{"inside the config's padding", co + 512 + int64(len(cfg.body)) + 5, archive.ErrTruncated},
		{"inside the manifest.json header", mo + 10, archive.ErrTruncated},
		{"inside manifest.json data", mo + 512 + 10, archive.ErrTruncated},
		// A cut at an entry boundary reads as a clean end of archive: the tar
		// format cannot tell. Without manifest.json, it is not an image.
		{"at the manifest.json header (entry boundary)", mo, archive.ErrNotImage},
		{"in the middle of the trailer", int64(len(b)) - 100, archive.ErrTruncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := archive.Read(bytes.NewReader(b[:tc.cut]))
			if !errors.Is(err, tc.want) {
				t.Errorf("cut at %d: error %v, want %v", tc.cut, err, tc.want)
			}
		})
	}
}

// TestReadTruncatedEverywhere cuts an archive at every block boundary and
// at points inside blocks. Observed behaviour, which this test pins down:
//   - a cut inside a 512-byte block always gives ErrTruncated (ErrNotTar
//     inside the very first header), including a cut inside an entry's
//     padding, which archive/tar itself reports as a clean end and Read
//     catches because the stream did not end on a block boundary;
//   - a cut at a block boundary inside an entry's data gives ErrTruncated;
//   - a cut exactly at an entry boundary reads as a clean EOF: ErrNotImage
//     while manifest.json has not been read, success after it (the archive
//     lacks only its trailing entries, like `docker load` accepts);
//   - a cut inside the two-block trailer: after the first zero block it is a
//     clean end; a partial block is ErrTruncated.
func TestReadTruncatedEverywhere(t *testing.T) {
	b, _ := image(t, testimage.Options{Tag: "t/t:1", Seed: 41, Layers: 2, FilesPerLayer: 2, FileSize: 700})
	offs, _ := headerOffsets(t, b)
	boundary := map[int64]bool{}
	for _, o := range offs {
		boundary[o] = true
	}
	trailer := int64(len(b)) - 1024
	boundary[trailer] = true
	mo := offs["manifest.json"]
	for cut := int64(0); cut < int64(len(b)); cut += 128 {
		_, err := archive.Read(bytes.NewReader(b[:cut]))
		var want []error
		switch {
		case cut == 0:
			want = []error{archive.ErrNotTar}
		case cut < 512:
			want = []error{archive.ErrNotTar}
		case cut%512 != 0:
			want = []error{archive.ErrTruncated}
		case cut >= trailer:
			want = []error{nil}
		case boundary[cut] && cut <= mo:
			want = []error{archive.ErrNotImage}
		case boundary[cut]:
			want = []error{nil}
		default:
			want = []error{archive.ErrTruncated}
		}
		ok := false
		for _, w := range want {
			if (w == nil && err == nil) || (w != nil && errors.Is(err, w)) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("cut at %d of %d: error %v, want one of %v", cut, len(b), err, want)
		}
	}
}

// errAfter returns data then a custom error.
type errAfter struct {
	r   io.Reader
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

func TestReadPassesReaderErrorsThrough(t *testing.T) {
	b, _ := image(t, testimage.Options{Seed: 50})
	boom := errors.New("connection reset")
	for _, cut := range []int{0, 300, 512, 2000} {
		_, err := archive.Read(&errAfter{r: bytes.NewReader(b[:cut]), err: boom})
		if !errors.Is(err, boom) {
			t.Errorf("cut %d: error %v does not wrap the reader's error", cut, err)
		}
		for _, s := range []error{archive.ErrTruncated, archive.ErrNotTar, archive.ErrNotImage} {
			if errors.Is(err, s) {
				t.Errorf("cut %d: reader error reported as %v: %v", cut, s, err)
			}
		}
	}
}

// TestReadDoesNotReadAhead checks Read leaves the bytes after the
// end-of-archive marker in the reader.
func TestReadDoesNotReadAhead(t *testing.T) {
	b, _ := image(t, testimage.Options{Seed: 51})
	garbage := []byte("trailing bytes the caller drains")
	r := bytes.NewReader(append(slices.Clone(b), garbage...))
	info, err := archive.Read(r)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(b)) || r.Len() != len(garbage) {
		t.Errorf("Size %d (want %d), %d bytes left (want %d)", info.Size, len(b), r.Len(), len(garbage))
	}
}

// jsonFlood streams a tar of n top-level JSON files of size bytes each
// ("{" then spaces) without holding them, then manifest.json.
type jsonFlood struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	i, n int
	size int
}

func (f *jsonFlood) Read(p []byte) (int, error) {
	for f.buf.Len() == 0 {
		if f.i > f.n {
			return 0, io.EOF
		}
		if f.tw == nil {
			f.tw = tar.NewWriter(&f.buf)
		}
		if f.i == f.n {
			f.tw.Close()
		} else {
			f.tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d.json", f.i), Size: int64(f.size), Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR, ModTime: mtime})
			f.tw.Write([]byte("{"))
			f.tw.Write(bytes.Repeat([]byte(" "), f.size-1))
		}
		f.i++
	}
	return f.buf.Read(p)
}

func TestReadTooMuchMetadata(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 72 MiB; skipped with -short")
	}
	_, err := archive.Read(&jsonFlood{n: 9, size: 8 << 20})
	if !errors.Is(err, archive.ErrUnsafe) || !strings.Contains(err.Error(), "too much metadata") {
		t.Fatalf("error %v, want ErrUnsafe: too much metadata", err)
	}
}

// headerFlood streams n+1 USTAR directory headers with distinct names.
type headerFlood struct {
	tmpl  [512]byte
	block [512]byte
	i, n  int
	off   int
}

func (g *headerFlood) Read(p []byte) (int, error) {
	if g.off == 0 || g.off == 512 {
		if g.i > g.n {
			return 0, io.EOF
		}
		g.block = g.tmpl
		copy(g.block[:], fmt.Appendf(nil, "d%08d/", g.i))
		copy(g.block[148:156], "        ")
		sum := 0
		for _, c := range g.block {
			sum += int(c)
		}
		copy(g.block[148:], fmt.Appendf(nil, "%06o\x00", sum))
		g.i++
		g.off = 0
	}
	n := copy(p, g.block[g.off:])
	g.off += n
	return n, nil
}

func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				return true
			}
		}
	}
	return false
}

// TestReadTooManyEntries: a tar of a million directory headers is refused
// as unsafe. Fails if the reader's entry limit goes. Skipped under -race;
// scripts/test.sh runs it without the race detector.
func TestReadTooManyEntries(t *testing.T) {
	if testing.Short() || raceEnabled() {
		t.Skip("reads 1,000,001 tar headers (~4 s; ~25 s under -race); skipped with -short and -race")
	}
	g := &headerFlood{n: 1_000_000}
	tmpl := buildTar(t, false, ent{name: "d00000000/", typ: tar.TypeDir})
	copy(g.tmpl[:], tmpl)
	_, err := archive.Read(g)
	if !errors.Is(err, archive.ErrUnsafe) || !strings.Contains(err.Error(), "more than 1000000 entries") {
		t.Fatalf("error %v, want ErrUnsafe: more than 1000000 entries", err)
	}
}
