package archive_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
)

var updateCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite testdata/fuzz/FuzzRead from corpusSeeds")

// FuzzRead feeds arbitrary bytes to Read. Invariants: no panic; memory
// allocated stays bounded (not driven by sizes the input declares); every
// error wraps one of the package's sentinels; success means at least one
// image, a MetadataOffset before Size, and exactly Size bytes consumed.
//
// Its seeds are the files in testdata/fuzz/FuzzRead plus the archives the
// FuzzTarEntries seeds expand to. Raw tar inputs are large (512-byte
// blocks), so the fuzzing engine spends much of a short run minimizing
// them; FuzzTarEntries explores the same code through a compact encoding.
func FuzzRead(f *testing.F) {
	for _, s := range entrySeeds {
		b, _ := expandEntries([]byte(s))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkRead(t, data, nil)
	})
}

// FuzzTarEntries builds a tar from a compact text description (see
// expandEntries) and reads it. Beyond FuzzRead's invariants it checks
// MetadataOffset against the offsets recorded while writing.
func FuzzTarEntries(f *testing.F) {
	for _, s := range entrySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, desc []byte) {
		if len(desc) > 16<<10 {
			return
		}
		data, meta := expandEntries(desc)
		checkRead(t, data, meta)
	})
}

// checkRead reads data and checks the invariants. meta, when non-nil,
// holds the writer's offsets of the top-level manifest.json / index.json
// headers, by cleaned name.
func checkRead(t *testing.T, data []byte, meta map[string]int64) {
	allocs := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(allocs)
	before := allocs[0].Value.Uint64()
	r := bytes.NewReader(data)
	info, err := archive.Read(r)
	metrics.Read(allocs)
	// Fixed buffers plus what the input actually holds (kept metadata,
	// JSON decoding); never what a header merely declares.
	if alloc := allocs[0].Value.Uint64() - before; alloc > 16<<20+64*uint64(len(data)) {
		t.Errorf("Read of %d bytes allocated %d bytes", len(data), alloc)
	}
	if err != nil {
		if info != nil {
			t.Errorf("error %v with non-nil Info", err)
		}
		if !errors.Is(err, archive.ErrNotTar) && !errors.Is(err, archive.ErrTruncated) &&
			!errors.Is(err, archive.ErrNotImage) && !errors.Is(err, archive.ErrUnsafe) {
			t.Errorf("error wraps no sentinel: %v", err)
		}
		return
	}
	if len(info.Images) == 0 {
		t.Errorf("success with no images: %+v", info)
	}
	if info.MetadataOffset < 0 || info.MetadataOffset >= info.Size || info.MetadataOffset%512 != 0 {
		t.Errorf("MetadataOffset %d, Size %d", info.MetadataOffset, info.Size)
	}
	if consumed := int64(len(data) - r.Len()); consumed != info.Size {
		t.Errorf("consumed %d bytes, Size %d", consumed, info.Size)
	}
	if info.Format != archive.FormatDocker && info.Format != archive.FormatOCI {
		t.Errorf("Format %q", info.Format)
	}
	for _, img := range info.Images {
		if img.ID.Validate() != nil || img.ID.Algorithm() != digest.SHA256 {
			t.Errorf("image ID %q", img.ID)
		}
	}
	if meta != nil {
		m, hasManifest := meta["manifest.json"]
		i, hasIndex := meta["index.json"]
		want := m
		if !hasManifest || (hasIndex && i < m) {
			want = i
		}
		if info.MetadataOffset != want {
			t.Errorf("MetadataOffset %d, the writer put the first metadata header at %d (%v)", info.MetadataOffset, want, meta)
		}
		if (info.Format == archive.FormatDocker) != hasManifest {
			t.Errorf("Format %s, manifest.json present: %v", info.Format, hasManifest)
		}
	}
}

// entrySeeds describe small archives for expandEntries.
var entrySeeds = []string{
	// docker-archive, config named by its digest, config before manifest.json.
	"dl/\n" +
		"fl/layer.tar layer-bytes\n" +
		`f$..json {"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","rootfs":{"type":"layers","diff_ids":["sha256:$1"]}}` + "\n" +
		`fmanifest.json [{"Config":"$2.json","RepoTags":["x/y:1"],"Layers":["l/layer.tar"]}]` + "\n" +
		"frepositories {}\n",
	// The same, metadata first, with a PAX header on manifest.json.
	"fl/layer.tar layer-bytes\n" +
		`fc.json {"architecture":"arm64","variant":"v8","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:$0"]}}` + "\n" +
		`pmanifest.json [{"Config":"c.json","RepoTags":null,"Layers":["l/layer.tar"]}]` + "\n" +
		"!reverse\n",
	// OCI layout with a docker manifest.json too.
	"fblobs/sha256/$. layer-bytes\n" +
		`fblobs/sha256/$. {"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:$0"]}}` + "\n" +
		`fblobs/sha256/$. {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$1","size":#1},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$0","size":#0}]}` + "\n" +
		`findex.json {"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$2","size":#2,"annotations":{"io.containerd.image.name":"docker.io/x/y:1","org.opencontainers.image.ref.name":"1"}}]}` + "\n" +
		`fmanifest.json [{"Config":"blobs/sha256/$1","RepoTags":["x/y:1"],"Layers":["blobs/sha256/$0"]}]` + "\n" +
		`foci-layout {"imageLayoutVersion":"1.0.0"}` + "\n",
	// OCI layout only, nested index, no trailer.
	"fblobs/sha256/$. layer-bytes\n" +
		`fblobs/sha256/$. {"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":["sha256:$0"]}}` + "\n" +
		`fblobs/sha256/$. {"config":{"digest":"sha256:$1","size":#1},"layers":[{"digest":"sha256:$0","size":#0}]}` + "\n" +
		`fblobs/sha256/$. {"manifests":[{"digest":"sha256:$2","size":#2,"platform":{"os":"linux","architecture":"amd64"}}]}` + "\n" +
		`findex.json {"manifests":[{"digest":"sha256:$3","size":#3,"annotations":{"org.opencontainers.image.ref.name":"x/y:2"}}]}` + "\n" +
		"!notrailer\n",
	// Unsafe and broken shapes.
	"f../evil x\nfmanifest.json []\n",
	"s./l ../../etc\nhh /etc/passwd\n",
	"fmanifest.json []\nf./manifest.json []\n",
	"Tmanifest.json [{\n",
	"Sindex.json {\n",
	"fa.json {\n!cut700\n",
}

// expandEntries turns a compact description into a tar and returns, by
// cleaned name, where it wrote the headers of top-level manifest.json and
// index.json. The description is lines "<kind><name> <body>":
//
//	f  regular file        d  directory        s  symlink (body = target)
//	h  hard link           p  file with a PAX header
//	T  file declaring 100 bytes more than its body: the stream ends there
//	S  file declaring 1 GiB: the stream ends after its body
//
// other kinds are regular files whose name starts with that character. In
// names and bodies "$N" expands to the sha256 hex of entry N's body, "#N"
// to its length (N an earlier entry), and "$." in a name to the hex of the
// entry's own body. Lines "!reverse", "!notrailer" and "!cutN" reverse the
// entry order, drop the end-of-archive marker, or keep only N bytes.
func expandEntries(desc []byte) ([]byte, map[string]int64) {
	type entry struct {
		kind       byte
		name, body string
	}
	var entries []entry
	var bodies []string
	reverse, trailer, cut := false, true, -1
	for _, line := range strings.Split(string(desc), "\n") {
		switch {
		case line == "":
			continue
		case line == "!reverse":
			reverse = true
			continue
		case line == "!notrailer":
			trailer = false
			continue
		case strings.HasPrefix(line, "!cut"):
			if n, err := strconv.Atoi(line[4:]); err == nil && n >= 0 {
				cut = n
			}
			continue
		}
		kind := line[0]
		if !strings.ContainsRune("fdshpTS", rune(kind)) {
			kind = 'f'
		} else {
			line = line[1:]
		}
		name, body, _ := strings.Cut(line, " ")
		body = expandRefs(body, bodies)
		name = expandRefs(name, bodies)
		name = strings.ReplaceAll(name, "$.", digest.FromString(body).Encoded())
		bodies = append(bodies, body)
		entries = append(entries, entry{kind, name, body})
	}
	if reverse {
		slices.Reverse(entries)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	meta := map[string]int64{}
	for _, e := range entries {
		tw.Flush() // writes the previous entry's padding
		off := int64(b.Len())
		h := &tar.Header{Name: e.name, Mode: 0o644, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(e.body))}
		switch e.kind {
		case 'd':
			h.Typeflag, h.Size = tar.TypeDir, 0
		case 's', 'h':
			h.Typeflag, h.Size, h.Linkname = tar.TypeSymlink, 0, e.body
			if e.kind == 'h' {
				h.Typeflag = tar.TypeLink
			}
		case 'p':
			h.Format, h.PAXRecords = tar.FormatPAX, map[string]string{"comment": "fuzz"}
		case 'T':
			h.Size += 100
		case 'S':
			h.Size = 1 << 30
		}
		if err := tw.WriteHeader(h); err != nil {
			continue // a name or link archive/tar cannot write
		}
		if c := path.Clean(e.name); (c == "manifest.json" || c == "index.json") && !strings.HasPrefix(e.name, "/") {
			if _, ok := meta[c]; !ok {
				meta[c] = off
			}
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
		if h.Size > int64(len(e.body)) {
			trailer = false
			break
		}
	}
	if trailer {
		tw.Close()
	} else {
		tw.Flush()
	}
	out := b.Bytes()
	if cut >= 0 && cut < len(out) {
		out = out[:cut]
	}
	return out, meta
}

// expandRefs replaces "$N" and "#N" (N an index into bodies) in s.
func expandRefs(s string, bodies []string) string {
	if !strings.ContainsAny(s, "$#") {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		j := i + 1
		for j < len(s) && j-i <= 3 && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if (c == '$' || c == '#') && j > i+1 {
			n, _ := strconv.Atoi(s[i+1 : j])
			if n < len(bodies) {
				if c == '$' {
					out.WriteString(digest.FromString(bodies[n]).Encoded())
				} else {
					out.WriteString(strconv.Itoa(len(bodies[n])))
				}
				i = j - 1
				continue
			}
		}
		out.WriteByte(c)
	}
	return out.String()
}

// corpusSeeds are the small archives stored in testdata/fuzz/FuzzRead. To
// keep each file under 8 KiB (a zero byte costs four in the corpus
// encoding) they leave out the end-of-archive marker, which Read does not
// need, and pad JSON bodies with spaces to whole 512-byte blocks.
func corpusSeeds(t testing.TB) map[string][]byte {
	pad := func(s string) string {
		if r := len(s) % 512; r != 0 {
			s += strings.Repeat(" ", 512-r)
		}
		return s
	}
	cfg := pad(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfgHex := digest.FromString(cfg).Encoded()
	manifest := pad(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[]}`, cfgHex, len(cfg)))
	index := pad(fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d,"annotations":{"io.containerd.image.name":"docker.io/library/x:1"}}]}`, digest.FromString(manifest), len(manifest)))
	// A PAX record of exactly one block: "512 comment=xxx…\n".
	paxComment := strings.Repeat("x", 512-len("512 comment=\n"))
	return map[string][]byte{
		"docker_minimal": buildTar(t, false,
			ent{name: cfgHex + ".json", body: cfg},
			ent{name: "manifest.json", body: pad(`[{"Config":"` + cfgHex + `.json","RepoTags":["x:1"],"Layers":[]}]`)},
		),
		"oci_minimal": buildTar(t, false,
			ent{name: "blobs/sha256/" + cfgHex, body: cfg},
			ent{name: "blobs/sha256/" + digest.FromString(manifest).Encoded(), body: manifest},
			ent{name: "index.json", body: index},
		),
		"pax_manifest": buildTar(t, false,
			ent{name: "c.json", body: cfg},
			ent{name: "manifest.json", body: pad(`[{"Config":"c.json","Layers":[]}]`), pax: map[string]string{"comment": paxComment}},
		),
		"duplicate": buildTar(t, false, ent{name: "manifest.json", body: "[]"}, ent{name: "./manifest.json"}),
		"traversal": buildTar(t, false, ent{name: "a/../../etc/passwd", body: "x"}),
		"symlink":   buildTar(t, false, ent{name: "l", typ: tar.TypeSymlink, link: "../../x"}),
		"huge":      buildTar(t, false, ent{name: "manifest.json", body: "[", size: 1 << 30}),
		"truncated": buildTar(t, false, ent{name: "index.json", body: `{"manifests":[`, size: 100}),
	}
}

func corpusFile(b []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
}

// TestFuzzCorpus checks testdata/fuzz/FuzzRead holds corpusSeeds, each under
// 8 KiB. Regenerate with: go test ./archive -run TestFuzzCorpus -update-fuzz-corpus
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzRead")
	for name, b := range corpusSeeds(t) {
		want := corpusFile(b)
		_, err := archive.Read(bytes.NewReader(b))
		if valid := name == "docker_minimal" || name == "oci_minimal" || name == "pax_manifest"; valid != (err == nil) {
			t.Errorf("seed %s: Read error %v", name, err)
		}
		if len(want) >= 8<<10 {
			t.Errorf("corpus file %s is %d bytes, want < 8 KiB", name, len(want))
		}
		path := filepath.Join(dir, name)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (regenerate with -update-fuzz-corpus)", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from corpusSeeds (regenerate with -update-fuzz-corpus)", path)
		}
	}
}

// TestEntrySeeds pins what the FuzzTarEntries seeds expand to, so they keep
// covering both formats and the error paths.
func TestEntrySeeds(t *testing.T) {
	want := []struct {
		format archive.Format
		err    error
	}{
		{archive.FormatDocker, nil},
		{archive.FormatDocker, nil},
		{archive.FormatDocker, nil},
		{archive.FormatOCI, nil},
		{"", archive.ErrUnsafe},
		{"", archive.ErrUnsafe},
		{"", archive.ErrUnsafe},
		{"", archive.ErrTruncated},
		{"", archive.ErrUnsafe},
		{"", archive.ErrTruncated},
	}
	if len(want) != len(entrySeeds) {
		t.Fatalf("%d seeds, %d expectations", len(entrySeeds), len(want))
	}
	for i, s := range entrySeeds {
		data, _ := expandEntries([]byte(s))
		info, err := archive.Read(bytes.NewReader(data))
		if want[i].err != nil {
			if !errors.Is(err, want[i].err) {
				t.Errorf("seed %d: error %v, want %v", i, err, want[i].err)
			}
			continue
		}
		if err != nil || info.Format != want[i].format {
			t.Errorf("seed %d: %+v, %v; want format %s", i, info, err, want[i].format)
		}
	}
}
