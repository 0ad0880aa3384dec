package manifest

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/errdefs"
)

var digestC = digest.Digest("sha256:" + strings.Repeat("c", 64))

// splitEntry is fullEntry stored as a skeleton (digest C) and two pieces
// (A, the base layer, and B).
func splitEntry(name string) *Entry {
	e := fullEntry(name)
	e.Skeleton = &Blob{Digest: digestC, Size: 4096, StoredSize: 900}
	e.Pieces = []Blob{{Digest: digestA, Size: 100000, StoredSize: 50000}, {Digest: digestB, Size: 19000, StoredSize: 14000}}
	e.Layers = []Layer{
		{Digest: digestA, Size: 100000, DiffID: digestA, MediaType: "application/vnd.docker.image.rootfs.diff.tar", Path: "aaa/layer.tar"},
		{Digest: digestB, Size: 19000, DiffID: digestB, MediaType: "application/vnd.docker.image.rootfs.diff.tar", Path: "bbb/layer.tar"},
	}
	return e
}

func TestSplitEntryRoundTrip(t *testing.T) {
	m := &Manifest{Version: SchemaVersion, Entries: map[string]*Entry{"capy-ubuntu-25.04-gcc15": splitEntry("capy-ubuntu-25.04-gcc15")}}
	var buf bytes.Buffer
	if err := Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: %+v", got.Entries["capy-ubuntu-25.04-gcc15"])
	}
	e := got.Entries["capy-ubuntu-25.04-gcc15"]
	if !e.Split() || !reflect.DeepEqual(e.LayerBlobs(), []digest.Digest{digestC, digestA, digestB}) ||
		!got.ReferencedLayer(digestA) || got.Referenced(digestA) || !got.HasSplit() || !got.Layered() {
		t.Error("split accessors disagree with the entry")
	}
	// Lookup's fast path reads a schema-2 manifest too.
	found, err := lookup(buf.Bytes(), "capy-ubuntu-25.04-gcc15")
	if err != nil || !reflect.DeepEqual(found, e) {
		t.Errorf("lookup = %+v, %v", found, err)
	}
}

func TestSplitEntryRefused(t *testing.T) {
	for name, mutate := range map[string]func(m *Manifest, e *Entry){
		"split under schema 1":    func(m *Manifest, e *Entry) { m.Version = WholeTarSchema },
		"pieces without skeleton": func(m *Manifest, e *Entry) { e.Skeleton = nil },
		"piece listed twice":      func(m *Manifest, e *Entry) { e.Pieces[1] = e.Pieces[0] },
		"layer not a piece":       func(m *Manifest, e *Entry) { e.Layers[1].Digest = digestC },
		"layer size differs":      func(m *Manifest, e *Entry) { e.Layers[0].Size++ },
		"bad diff_id":             func(m *Manifest, e *Entry) { e.Layers[0].DiffID = "sha256:zz" },
		"bad skeleton digest":     func(m *Manifest, e *Entry) { e.Skeleton.Digest = "sha256:../../x" },
		"pieces larger than tar":  func(m *Manifest, e *Entry) { e.Pieces[0].Size = e.Size },
		"negative stored size":    func(m *Manifest, e *Entry) { e.Pieces[0].StoredSize = -1 },
		"split and whole at once": func(m *Manifest, e *Entry) { e.Whole = "sparse" },
	} {
		t.Run(name, func(t *testing.T) {
			e := splitEntry("a-b-c-d")
			m := &Manifest{Version: SchemaVersion, Entries: map[string]*Entry{e.Name: e}}
			mutate(m, e)
			var buf bytes.Buffer
			if err := Encode(&buf, m); err != nil {
				t.Fatal(err)
			}
			// Encode normalizes a schema-1 manifest with split entries to 2:
			// decode the bytes as written with version 1 by hand.
			data := buf.Bytes()
			if m.Version == WholeTarSchema {
				data = bytes.Replace(data, []byte(`"version": 2`), []byte(`"version": 1`), 1)
			}
			if _, err := Decode(bytes.NewReader(data)); !errors.Is(err, errdefs.ErrCorrupt) {
				t.Fatalf("Decode = %v, want ErrCorrupt", err)
			}
		})
	}
}
