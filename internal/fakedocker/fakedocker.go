// Package fakedocker is a Docker Engine API server on a unix socket that
// answers as Docker 28/29 with the containerd image store does, for tests
// of an engine that cannot be installed on the test machines.
//
// What it replays, and where each shape comes from:
//   - GET /_ping: headers API-Version 1.52, OSType linux (Engine API
//     v1.52 reference, "Ping").
//   - GET /version: Version 29.0.0, ApiVersion 1.52, MinAPIVersion 1.44,
//     Components Engine and containerd (Engine API v1.52, "Version";
//     moby daemon/info.go).
//   - GET /info: DriverStatus [["driver-type",
//     "io.containerd.snapshotter.v1"]], Driver "overlayfs" — how `docker
//     info` shows the containerd store (moby daemon/info.go,
//     daemon/containerd/service.go); DockerRootDir, ID.
//   - GET /images/{name}/json: Id is the image's manifest digest, not the
//     config digest (moby daemon/containerd/image.go: the image ID is the
//     target descriptor's digest); RootFS.Layers are the diff IDs;
//     Descriptor is the manifest's descriptor (API 1.48+). A lookup by the
//     config digest finds nothing (404 "No such image"), as on Docker 29.
//   - POST /images/load: every blob is ingested (no layer is skipped, the
//     containerd store has no partial load: containerd#11978); the reply
//     stream says "Loaded image: REF" per tag, or "Loaded image ID:
//     sha256:<manifest digest>" for an untagged image
//     (moby daemon/containerd/image_import.go).
//   - POST /images/{name}/tag, DELETE /images/{name}, GET /images/json.
//
// It checks what it is sent as a daemon would: the whole archive is read
// and nothing is committed if the body fails; manifest.json must name a
// config whose sha256 is its file name and layer files whose sha256 are
// the config's diff IDs (uncompressed layers) or their blob digests
// (gzip- or zstd-compressed layers, then decompressed to their diff ID),
// every one present. Unknown endpoints are recorded and answered 404.
package fakedocker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// Image is one image the fake holds.
type Image struct {
	ID      digest.Digest // the manifest digest
	Config  digest.Digest
	DiffIDs []digest.Digest
	Tags    []string
	OS      string
	Arch    string
}

// Load is one load request.
type Load struct {
	Bytes     int64
	Err       string // why it was refused; "" when committed
	Committed []digest.Digest
}

// Server is a running fake.
type Server struct {
	Socket string
	srv    *http.Server

	mu      sync.Mutex
	images  map[digest.Digest]*Image
	loads   []Load
	unknown []string
	tags    int
}

// Start serves on socket until Close.
func Start(socket string) (*Server, error) {
	os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	s := &Server{Socket: socket, images: map[digest.Digest]*Image{}}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(l)
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// Loads are the load requests so far.
func (s *Server) Loads() []Load {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Load(nil), s.loads...)
}

// Unknown are requests to endpoints the fake does not serve.
func (s *Server) Unknown() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unknown...)
}

// Images are the images it holds.
func (s *Server) Images() []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Image
	for _, im := range s.images {
		out = append(out, *im)
	}
	return out
}

var versioned = regexp.MustCompile(`^/v1\.[0-9]+`)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	path := versioned.ReplaceAllString(r.URL.Path, "")
	switch {
	case path == "/_ping":
		w.Header().Set("API-Version", "1.52")
		w.Header().Set("OSType", "linux")
		w.Header().Set("Docker-Experimental", "false")
		w.Write([]byte("OK"))
	case path == "/version":
		writeJSON(w, 200, map[string]any{
			"Platform":      map[string]string{"Name": "Docker Engine - Community"},
			"Components":    []map[string]any{{"Name": "Engine", "Version": "29.0.0", "Details": map[string]string{"ApiVersion": "1.52", "MinAPIVersion": "1.44", "Os": "linux", "Arch": "amd64"}}, {"Name": "containerd", "Version": "v2.1.4"}},
			"Version":       "29.0.0",
			"ApiVersion":    "1.52",
			"MinAPIVersion": "1.44",
			"Os":            "linux",
			"Arch":          "amd64",
			"KernelVersion": "6.1.0",
		})
	case path == "/info":
		writeJSON(w, 200, map[string]any{
			"ID":              "fake-containerd-store-0001",
			"Driver":          "overlayfs",
			"DriverStatus":    [][2]string{{"driver-type", "io.containerd.snapshotter.v1"}},
			"DockerRootDir":   "/var/lib/docker",
			"OSType":          "linux",
			"OperatingSystem": "fakedocker",
			"Architecture":    "x86_64",
			"ServerVersion":   "29.0.0",
		})
	case path == "/images/json" && r.Method == http.MethodGet:
		s.list(w)
	case path == "/images/load" && r.Method == http.MethodPost:
		s.load(w, r)
	case strings.HasPrefix(path, "/images/") && strings.HasSuffix(path, "/json") && r.Method == http.MethodGet:
		s.inspect(w, strings.TrimSuffix(strings.TrimPrefix(path, "/images/"), "/json"))
	case strings.HasPrefix(path, "/images/") && strings.HasSuffix(path, "/tag") && r.Method == http.MethodPost:
		s.tag(w, strings.TrimSuffix(strings.TrimPrefix(path, "/images/"), "/tag"), r.URL.Query().Get("repo"), r.URL.Query().Get("tag"))
	case strings.HasPrefix(path, "/images/") && r.Method == http.MethodDelete:
		s.remove(w, strings.TrimPrefix(path, "/images/"))
	default:
		s.mu.Lock()
		s.unknown = append(s.unknown, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		writeJSON(w, 404, map[string]string{"message": "fakedocker: not served: " + r.Method + " " + path})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// familiar is a reference as the store lists it (Docker shows
// docker.io/library/x as x).
func familiar(ref string) string {
	ref = strings.TrimPrefix(ref, "docker.io/")
	ref = strings.TrimPrefix(ref, "library/")
	if !strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		ref += ":latest"
	}
	return ref
}

// find resolves a name as the containerd store does: a manifest digest
// (full, or "sha256:"-less hex), or a tag. Never the config digest.
func (s *Server) find(name string) *Image {
	d := digest.Digest(name)
	if !strings.HasPrefix(name, "sha256:") && len(name) == 64 {
		d = digest.NewDigestFromEncoded(digest.SHA256, name)
	}
	if im, ok := s.images[d]; ok {
		return im
	}
	want := familiar(name)
	for _, im := range s.images {
		for _, t := range im.Tags {
			if t == want {
				return im
			}
		}
	}
	return nil
}

func (s *Server) inspect(w http.ResponseWriter, name string) {
	s.mu.Lock()
	im := s.find(name)
	var c Image
	if im != nil {
		c = *im
	}
	s.mu.Unlock()
	if im == nil {
		writeJSON(w, 404, map[string]string{"message": "No such image: " + name})
		return
	}
	layers := make([]string, len(c.DiffIDs))
	for i, d := range c.DiffIDs {
		layers[i] = d.String()
	}
	tags := c.Tags
	if tags == nil {
		tags = []string{}
	}
	writeJSON(w, 200, map[string]any{
		"Id":           c.ID.String(),
		"RepoTags":     tags,
		"RepoDigests":  []string{},
		"Created":      "2024-01-02T03:04:05Z",
		"Os":           c.OS,
		"Architecture": c.Arch,
		"Size":         1,
		"RootFS":       map[string]any{"Type": "layers", "Layers": layers},
		"Metadata":     map[string]any{},
		"Descriptor":   map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": c.ID.String(), "size": 1},
		"Config":       map[string]any{},
	})
}

func (s *Server) list(w http.ResponseWriter) {
	s.mu.Lock()
	var out []map[string]any
	for _, im := range s.images {
		tags := im.Tags
		if tags == nil {
			tags = []string{}
		}
		out = append(out, map[string]any{"Id": im.ID.String(), "RepoTags": tags, "RepoDigests": []string{}, "Size": 1, "Created": 1704164645, "Containers": -1})
	}
	s.mu.Unlock()
	if out == nil {
		out = []map[string]any{}
	}
	writeJSON(w, 200, out)
}

func (s *Server) tag(w http.ResponseWriter, name, repo, tag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	im := s.find(name)
	if im == nil {
		writeJSON(w, 404, map[string]string{"message": "No such image: " + name})
		return
	}
	if tag == "" {
		tag = "latest"
	}
	ref := familiar(repo + ":" + tag)
	for _, o := range s.images { // a tag names one image
		o.Tags = without(o.Tags, ref)
	}
	im.Tags = append(im.Tags, ref)
	s.tags++
	w.WriteHeader(http.StatusCreated)
}

func without(tags []string, t string) []string {
	var out []string
	for _, x := range tags {
		if x != t {
			out = append(out, x)
		}
	}
	return out
}

func (s *Server) remove(w http.ResponseWriter, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	im := s.find(name)
	if im == nil {
		writeJSON(w, 404, map[string]string{"message": "No such image: " + name})
		return
	}
	if ref := familiar(name); !strings.HasPrefix(name, "sha256:") && len(im.Tags) > 1 {
		im.Tags = without(im.Tags, ref)
		writeJSON(w, 200, []map[string]string{{"Untagged": ref}})
		return
	}
	delete(s.images, im.ID)
	writeJSON(w, 200, []map[string]string{{"Deleted": im.ID.String()}})
}

// load reads the whole archive, checks it, and only then commits.
func (s *Server) load(w http.ResponseWriter, r *http.Request) {
	files := map[string][]byte{}        // small files, kept
	sums := map[string]digest.Digest{}  // every file's sha256
	diffs := map[string]digest.Digest{} // compressed layer files: their content's sha256
	cr := &counter{r: r.Body}
	tr := tar.NewReader(cr)
	var err error
	for {
		var h *tar.Header
		h, err = tr.Next()
		if err != nil {
			break
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		var buf bytes.Buffer
		hs := sha256.New()
		dst := io.Writer(hs)
		if h.Size <= 1<<20 {
			dst = io.MultiWriter(hs, &buf)
		}
		peek := make([]byte, 4)
		n, _ := io.ReadFull(tr, peek)
		dst.Write(peek[:n])
		var rest io.Reader = tr
		var ds digest.Digest
		if n == 4 && (bytes.HasPrefix(peek, []byte{0x1f, 0x8b}) || bytes.Equal(peek, []byte{0x28, 0xb5, 0x2f, 0xfd})) {
			pr, pw := io.Pipe()
			done := make(chan digest.Digest, 1)
			go func(gz bool) {
				var dec io.Reader
				var derr error
				if gz {
					dec, derr = gzip.NewReader(pr)
				} else {
					var z *zstd.Decoder
					z, derr = zstd.NewReader(pr)
					if z != nil {
						defer z.Close()
						dec = z
					}
				}
				if derr != nil {
					io.Copy(io.Discard, pr)
					done <- ""
					return
				}
				dh := sha256.New()
				if _, derr := io.Copy(dh, dec); derr != nil {
					io.Copy(io.Discard, pr)
					done <- ""
					return
				}
				io.Copy(io.Discard, pr)
				done <- digest.NewDigest(digest.SHA256, dh)
			}(peek[0] == 0x1f)
			pw.Write(peek[:n])
			_, err = io.Copy(io.MultiWriter(dst, pw), rest)
			pw.CloseWithError(err)
			ds = <-done
		} else {
			_, err = io.Copy(dst, rest)
		}
		if err != nil {
			break
		}
		name := strings.TrimPrefix(h.Name, "./")
		sums[name] = digest.NewDigest(digest.SHA256, hs)
		if ds != "" {
			diffs[name] = ds
		}
		if buf.Len() > 0 || h.Size == 0 {
			files[name] = buf.Bytes()
		}
	}
	rec := Load{Bytes: cr.n}
	if !errors.Is(err, io.EOF) {
		// The request failed (a verifying client aborted it): commit nothing.
		rec.Err = fmt.Sprintf("reading the archive: %v", err)
		s.record(rec)
		writeJSON(w, 500, map[string]string{"message": rec.Err})
		return
	}
	imgs, verr := check(files, sums, diffs)
	if verr != nil {
		rec.Err = verr.Error()
		s.record(rec)
		writeJSON(w, 500, map[string]string{"message": verr.Error()})
		return
	}
	var reply bytes.Buffer
	s.mu.Lock()
	for _, im := range imgs {
		if old, ok := s.images[im.ID]; ok {
			im.Tags = append(old.Tags, im.Tags...)
		}
		for _, t := range im.Tags {
			for _, o := range s.images {
				o.Tags = without(o.Tags, t)
			}
		}
		s.images[im.ID] = im
		rec.Committed = append(rec.Committed, im.ID)
		if len(im.Tags) == 0 {
			json.NewEncoder(&reply).Encode(map[string]string{"stream": "Loaded image ID: " + im.ID.String() + "\n"})
		}
		for _, t := range im.Tags {
			json.NewEncoder(&reply).Encode(map[string]string{"stream": "Loaded image: " + t + "\n"})
		}
	}
	s.loads = append(s.loads, rec)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write(reply.Bytes())
}

func (s *Server) record(l Load) {
	s.mu.Lock()
	s.loads = append(s.loads, l)
	s.mu.Unlock()
}

// check reads manifest.json: each image's config must be present and match
// its name; each layer file present and its sha256 (or, compressed, its
// content's) the config's diff ID.
func check(files map[string][]byte, sums, diffs map[string]digest.Digest) ([]*Image, error) {
	mb, ok := files["manifest.json"]
	if !ok {
		return nil, errors.New("archive has no manifest.json")
	}
	var man []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(mb, &man); err != nil || len(man) == 0 {
		return nil, fmt.Errorf("manifest.json: %v", err)
	}
	var out []*Image
	for _, m := range man {
		cb, ok := files[m.Config]
		if !ok {
			return nil, fmt.Errorf("config %s missing from the archive", m.Config)
		}
		cd := sums[m.Config]
		if hex := strings.TrimSuffix(m.Config[strings.LastIndex(m.Config, "/")+1:], ".json"); hex != cd.Encoded() {
			return nil, fmt.Errorf("config %s has sha256 %s", m.Config, cd)
		}
		var cfg struct {
			OS           string `json:"os"`
			Architecture string `json:"architecture"`
			RootFS       struct {
				DiffIDs []digest.Digest `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal(cb, &cfg); err != nil {
			return nil, fmt.Errorf("config %s: %v", m.Config, err)
		}
		if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
			return nil, fmt.Errorf("config %s lists %d diff IDs for %d layers", m.Config, len(cfg.RootFS.DiffIDs), len(m.Layers))
		}
		var mf bytes.Buffer
		fmt.Fprintf(&mf, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":%q}`, cd)
		for i, l := range m.Layers {
			got, ok := sums[l]
			if !ok {
				return nil, fmt.Errorf("layer %s missing from the archive (the containerd store needs every layer)", l)
			}
			if d, compressed := diffs[l]; compressed {
				got = d
			}
			if got != cfg.RootFS.DiffIDs[i] {
				return nil, fmt.Errorf("layer %s has diff ID %s, its config says %s", l, got, cfg.RootFS.DiffIDs[i])
			}
			fmt.Fprintf(&mf, `,{"digest":%q}`, sums[l])
		}
		mf.WriteString("}")
		var tags []string
		for _, t := range m.RepoTags {
			tags = append(tags, familiar(t))
		}
		out = append(out, &Image{ID: digest.FromBytes(mf.Bytes()), Config: cd, DiffIDs: cfg.RootFS.DiffIDs, Tags: tags, OS: cfg.OS, Arch: cfg.Architecture})
	}
	return out, nil
}

type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
