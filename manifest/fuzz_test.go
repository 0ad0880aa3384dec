package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/imgcache/imgcache/errdefs"
)

// FuzzDecode: Decode never panics, fails only with errdefs.ErrCorrupt, and
// whatever it accepts survives Encode then Decode unchanged.
func FuzzDecode(f *testing.F) {
	for _, m := range []*Manifest{
		New(),
		{Version: SchemaVersion, Entries: map[string]*Entry{"capy-ubuntu-25.04-gcc15": fullEntry("capy-ubuntu-25.04-gcc15")}},
		{Version: SchemaVersion, Entries: map[string]*Entry{"a-b-c-d": minimalEntry("a-b-c-d", digestA), "e-f-g-h": minimalEntry("e-f-g-h", digestB)}},
		{Version: SchemaVersion, Entries: map[string]*Entry{"x-y-z-w": splitEntry("x-y-z-w")}},
		{Version: WholeTarSchema, Entries: map[string]*Entry{"a-b-c-d": minimalEntry("a-b-c-d", digestA)}},
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
			if !errors.Is(err, errdefs.ErrCorrupt) && !errors.Is(err, ErrNewerSchema) {
				t.Fatalf("Decode error %v wraps neither ErrCorrupt nor ErrNewerSchema", err)
			}
			if m != nil {
				t.Fatal("Decode returned a manifest with its error")
			}
			return
		}
		if (m.Version != SchemaVersion && m.Version != WholeTarSchema) || m.Entries == nil {
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

// FuzzLookup: the scanner that finds one entry agrees with encoding/json
// whenever it claims the document (ok), and lookup agrees with Decode
// whenever Decode accepts the document.
func FuzzLookup(f *testing.F) {
	full := fullEntry("capy-ubuntu-25.04-gcc15")
	for _, m := range []*Manifest{
		New(),
		{Version: SchemaVersion, Entries: map[string]*Entry{full.Name: full, "a-b-c-d": minimalEntry("a-b-c-d", digestA)}},
		{Version: SchemaVersion, Entries: map[string]*Entry{full.Name: splitEntry(full.Name)}},
	} {
		data, err := json.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "a-b-c-d")
		f.Add(data, full.Name)
	}
	// Encode's indented form, small: minimizing costs time quadratic in
	// an input's length.
	f.Add([]byte("{\n  \"version\": 1,\n  \"entries\": {\n    \"a-b-c-d\": {\"name\": \"a-b-c-d\"}\n  }\n}\n"), "a-b-c-d")
	for _, b := range brokenManifests {
		f.Add([]byte(b.json), "a-b-c-d")
	}
	f.Add([]byte(`{"entries":{"a-b-c-d":{},"a-b-c-d":{"x":"}"}},"version":1}`), "a-b-c-d")
	f.Add([]byte(`{"version":1,"entries":{"a\u002db-c-d":{}}}`), "a-b-c-d")
	f.Add([]byte(`{"Version":1,"entries":{"\xff":[]}}`), "\ufffd")

	f.Fuzz(func(t *testing.T, data []byte, name string) {
		raw, found, ok := findEntry(data, name)
		if ok {
			var ref struct {
				Version int                        `json:"version"`
				Entries map[string]json.RawMessage `json:"entries"`
			}
			if err := json.Unmarshal(data, &ref); err != nil {
				t.Fatalf("scanner claimed a document encoding/json refuses: %v", err)
			}
			want, has := ref.Entries[name]
			if (ref.Version != SchemaVersion && ref.Version != WholeTarSchema) || has != found || !bytes.Equal(raw, want) {
				t.Fatalf("scanner: found %v %q; encoding/json: version %d, found %v %q", found, raw, ref.Version, has, want)
			}
		}
		e, err := lookup(data, name)
		if err != nil && !errors.Is(err, errdefs.ErrCorrupt) && !errors.Is(err, ErrNewerSchema) {
			t.Fatalf("lookup error %v wraps neither ErrCorrupt nor ErrNewerSchema", err)
		}
		m, derr := Decode(bytes.NewReader(data))
		if derr != nil {
			return
		}
		if err != nil {
			t.Fatalf("lookup refused what Decode accepts: %v", err)
		}
		if want := m.Entries[name]; !reflect.DeepEqual(e, want) {
			t.Fatalf("lookup = %+v, Decode has %+v", e, want)
		}
	})
}

// FuzzParseUses: the use-log parser never fails on readable input, keeps at
// most one use per line, and every use it keeps is written back by useLine
// as a line that parses to the same use.
func FuzzParseUses(f *testing.F) {
	t1 := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	line, _ := useLine("capy-ubuntu-25.04-gcc15", digestA, t1)
	f.Add(line)
	f.Add(append(append([]byte{}, line...), line[:20]...))
	f.Add([]byte("2025-03-04T05:06:07+02:00 sha256:" + hexB + " a-b-c-d\ngarbage\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		uses, err := ParseUses(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("ParseUses: %v", err)
		}
		if len(uses) > bytes.Count(data, []byte{'\n'}) {
			t.Fatalf("%d uses from %d lines", len(uses), bytes.Count(data, []byte{'\n'}))
		}
		if len(uses) > 0 { // the hot path's filter keeps exactly one name's uses
			name := uses[0].Name
			var want []Use
			for _, u := range uses {
				if u.Name == name {
					want = append(want, u)
				}
			}
			if got, err := parseUses(bytes.NewReader(data), name); err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("parseUses(%q) = %+v, %v; want %+v", name, got, err, want)
			}
		}
		for _, u := range uses {
			line, err := useLine(u.Name, u.Digest, u.Time)
			if err != nil {
				continue // parsed, but not something Touch would write (a name with odd bytes)
			}
			back, err := ParseUses(bytes.NewReader(line))
			if err != nil || len(back) != 1 || !back[0].Time.Equal(u.Time) || back[0].Digest != u.Digest || back[0].Name != u.Name {
				t.Fatalf("use %+v written as %q parses to %+v, %v", u, line, back, err)
			}
		}
	})
}
