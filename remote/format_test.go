package remote

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

func splitEntry() manifest.Entry {
	skel := manifest.Blob{Digest: digest.FromString("skeleton"), Size: 100, StoredSize: 60}
	return manifest.Entry{
		Name: "capy-ubuntu-25.04-gcc15", Digest: digest.FromString("tar"), Size: 4096, StoredSize: 999,
		Format: "docker-archive", ImageID: digest.FromString("config").String(), OS: "linux", Arch: "amd64",
		Added: time.Unix(100, 0).UTC(), LastUsed: time.Unix(200, 0).UTC(), Pinned: true,
		Skeleton: &skel,
		Pieces:   []manifest.Blob{{Digest: digest.FromString("layer"), Size: 3000, StoredSize: 900}},
		Base:     &manifest.Base{Name: "capy-ubuntu-25.04-base", Digest: digest.FromString("base")},
	}
}

func blobsOf(e manifest.Entry) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for i, d := range e.LayerBlobs() {
		out = append(out, BlobDescriptor(digest.FromString("stored"+d.String()), int64(10+i), d, 1))
	}
	return out
}

func entryManifestJSON(t *testing.T, e manifest.Entry, artifact string) []byte {
	t.Helper()
	config, _, ann, err := entryManifest(e, blobsOf(e))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: artifact, Config: config, Layers: blobsOf(e), Annotations: ann})
	return b
}

// The record is the entry less what is only local, and reads back.
func TestRecordRoundTrip(t *testing.T) {
	e := splitEntry()
	b, err := json.Marshal(newRecord(e))
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseRecord(b, "test")
	if err != nil {
		t.Fatal(err)
	}
	if got.Pinned || got.StoredSize != 0 || got.Skeleton.StoredSize != 0 || got.Pieces[0].StoredSize != 0 || !got.LastUsed.Equal(e.Added) {
		t.Errorf("local fields pushed: %+v", got)
	}
	if got.Digest != e.Digest || got.Base.Name != e.Base.Name || got.Skeleton.Digest != e.Skeleton.Digest || got.Pieces[0].Digest != e.Pieces[0].Digest {
		t.Errorf("record lost fields: %+v", got)
	}
	if e.Pieces[0].StoredSize != 900 || e.Skeleton.StoredSize != 60 {
		t.Error("newRecord changed the caller's entry")
	}
}

// A newer format is said to be newer (exit 10), not misread; a foreign
// artifact is not imgcache's.
func TestNewerFormat(t *testing.T) {
	e := splitEntry()
	if _, err := parseManifest(entryManifestJSON(t, e, ArtifactEntry), ArtifactEntry, "m"); err != nil {
		t.Fatalf("v1: %v", err)
	}
	_, err := parseManifest(entryManifestJSON(t, e, "application/vnd.imgcache.entry.v2"), ArtifactEntry, "m")
	if !errors.Is(err, errdefs.ErrNewerSchema) || !strings.Contains(err.Error(), "upgrade imgcache") {
		t.Errorf("v2 manifest: %v, want ErrNewerSchema", err)
	}
	_, err = parseManifest(entryManifestJSON(t, e, "application/vnd.example.sbom"), ArtifactEntry, "m")
	if !errors.Is(err, errdefs.ErrInvalid) || errors.Is(err, errdefs.ErrNewerSchema) {
		t.Errorf("foreign artifact: %v, want ErrInvalid", err)
	}
	if _, err := parseRecord([]byte(`{"version":2,"entry":{}}`), "r"); !errors.Is(err, errdefs.ErrNewerSchema) {
		t.Errorf("record v2: %v", err)
	}
	// A layer of a newer blob format.
	var m ocispec.Manifest
	json.Unmarshal(entryManifestJSON(t, e, ArtifactEntry), &m)
	m.Layers[0].MediaType = "application/vnd.imgcache.blob.v7+zstd"
	b, _ := json.Marshal(m)
	if _, err := parseManifest(b, ArtifactEntry, "m"); !errors.Is(err, errdefs.ErrNewerSchema) {
		t.Errorf("v7 blob: %v", err)
	}
}

// The manifest's blobs must be exactly the record's, in order.
func TestCheckBlobs(t *testing.T) {
	e := splitEntry()
	bl := blobsOf(e)
	if err := checkBlobs(e, bl); err != nil {
		t.Fatal(err)
	}
	if err := checkBlobs(e, bl[:1]); !errors.Is(err, errdefs.ErrIntegrity) {
		t.Errorf("missing blob: %v", err)
	}
	bl[0], bl[1] = bl[1], bl[0]
	if err := checkBlobs(e, bl); !errors.Is(err, errdefs.ErrIntegrity) {
		t.Errorf("swapped blobs: %v", err)
	}
	whole := e
	whole.Skeleton, whole.Pieces = nil, nil
	if err := checkBlobs(whole, []ocispec.Descriptor{BlobDescriptor(digest.FromString("x"), 1, whole.Digest, whole.Size)}); err != nil {
		t.Errorf("whole entry: %v", err)
	}
}

// No tag imgcache writes for itself can be a cache name, and every name is
// a valid tag.
func TestTags(t *testing.T) {
	d := digest.FromString("x")
	for _, tag := range []string{EntryTag(d), BlobTag(d)} {
		if IsNameTag(tag) {
			t.Errorf("%s taken for a name", tag)
		}
		if _, err := naming.Parse(tag); err == nil {
			t.Errorf("%s parses as a cache name", tag)
		}
		if len(tag) > 128 {
			t.Errorf("%s is longer than a tag may be", tag)
		}
	}
	if !IsNameTag("capy-ubuntu-25.04-gcc15") {
		t.Error("a name is not a name tag")
	}
}

func TestOpenRefusesBadRepos(t *testing.T) {
	for _, repo := range []string{"", "127.0.0.1:5000", "127.0.0.1:5000/ci/imgcache:tag", "Bad Host/x"} {
		if _, err := Open(Options{Repo: repo}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid", repo, err)
		}
	}
	if _, err := Open(Options{Repo: "127.0.0.1:1/ci/imgcache"}); err != nil {
		t.Errorf("a loopback repository: %v", err)
	}
}

// FuzzParseManifest: any bytes from a registry are refused with an error
// or accepted as a manifest whose blobs all name their content; never a
// panic.
func FuzzParseManifest(f *testing.F) {
	e := splitEntry()
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.imgcache.entry.v9"}`))
	var tt testing.T
	f.Add(entryManifestJSON(&tt, e, ArtifactEntry))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b, ArtifactEntry, "fuzz")
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, errdefs.ErrNewerSchema) {
				t.Fatalf("error of no category: %v", err)
			}
			return
		}
		for _, l := range m.Layers {
			if ContentOf(l) == "" || l.MediaType != MediaBlob {
				t.Fatalf("accepted a layer without content: %+v", l)
			}
		}
	})
}

// FuzzParseRecord: a record is refused or has a valid digest.
func FuzzParseRecord(f *testing.F) {
	b, _ := json.Marshal(newRecord(splitEntry()))
	f.Add(b)
	f.Add([]byte(`{"version":1,"entry":{"digest":"sha256:x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseRecord(b, "fuzz")
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, errdefs.ErrNewerSchema) {
				t.Fatalf("error of no category: %v", err)
			}
			return
		}
		if e.Digest.Validate() != nil {
			t.Fatalf("accepted digest %q", e.Digest)
		}
	})
}
