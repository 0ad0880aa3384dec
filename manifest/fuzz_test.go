package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/imgcache/imgcache/errdefs"
)

// FuzzDecode: Decode never panics, fails only with errdefs.ErrCorrupt, and
// whatever it accepts survives Encode then Decode unchanged.
func FuzzDecode(f *testing.F) {
	for _, m := range []*Manifest{
		New(),
		{Version: SchemaVersion, Entries: map[string]*Entry{"capy-ubuntu-25.04-gcc15": fullEntry("capy-ubuntu-25.04-gcc15")}},
		{Version: SchemaVersion, Entries: map[string]*Entry{"a-b-c-d": minimalEntry("a-b-c-d", digestA), "e-f-g-h": minimalEntry("e-f-g-h", digestB)}},
	} {
		// Compact seeds: minimizing a new input costs time quadratic in
		// its length, and the fuzzer derives new inputs from these.
		data, err := json.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, b := range brokenManifests {
		f.Add([]byte(b.json))
	}
	f.Add([]byte(`{"version":1,"entries":{"a-b-c-d":{"name":"a-b-c-d","digest":"sha256:` + hexA + `","size":10,"repo_tags":[],"created":"2025-01-01T01:00:00+01:00","added":"2025-01-01T00:00:00.5-07:00"}}}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, errdefs.ErrCorrupt) {
				t.Fatalf("Decode error %v does not wrap ErrCorrupt", err)
			}
			if m != nil {
				t.Fatal("Decode returned a manifest with its error")
			}
			return
		}
		if m.Version != SchemaVersion || m.Entries == nil {
			t.Fatalf("accepted manifest has version %d, entries %v", m.Version, m.Entries)
		}
		var buf bytes.Buffer
		if err := Encode(&buf, m); err != nil {
			t.Fatalf("Encode of a decoded manifest: %v", err)
		}
		m2, err := Decode(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("Decode(Encode(m)): %v\n%s", err, buf.Bytes())
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip differs:\ninput %q\nencoded %s", data, buf.Bytes())
		}
	})
}
