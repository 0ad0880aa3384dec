package testimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/distribution/reference"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
)

// Options describe the archive to generate. The zero value is valid.
type Options struct {
	// Tag names the image, e.g. "imgcache-test/foo:latest" (a missing tag
	// means ":latest"). Empty: the archive names no tag (RepoTags null, no
	// repositories file, no name annotations).
	Tag string
	// Seed changes every file's content, hence the layer and image IDs.
	Seed int64
	// Layers is the number of layers (default 2).
	Layers int
	// FilesPerLayer is the number of regular files in each layer (default 3).
	FilesPerLayer int
	// FileSize is the size of each file in bytes (default 1024).
	FileSize int
	// Compressible makes file content repetitive text instead of
	// pseudo-random bytes (still different for every seed, layer and file).
	Compressible bool
	// OS defaults to "linux".
	OS string
	// Architecture defaults to runtime.GOARCH (Docker and Go use the same
	// names: amd64, arm64, 386, ppc64le, s390x, riscv64…).
	Architecture string
	// Format is archive.FormatDocker (default) or archive.FormatOCI: an OCI
	// layout (index.json, oci-layout, blobs/sha256/…) plus manifest.json.
	Format archive.Format
	// OCIOnly leaves out manifest.json and the repositories file of an OCI
	// layout: index.json, oci-layout and blobs only, as skopeo, Podman and
	// buildah write oci-archives. FormatOCI only.
	OCIOnly bool
	// MetadataFirst writes manifest.json / index.json (and the other
	// top-level metadata) before the layers instead of last.
	MetadataFirst bool
	// SharedLayers is how many bottom layers are a common base: their
	// content depends on BaseSeed instead of Seed, so images with the same
	// BaseSeed and SharedLayers share those layers (same diff IDs, and the
	// same layer paths in a docker-archive, which derive from the chain as
	// Docker's do).
	SharedLayers int
	BaseSeed     int64
	// Compression ("", "gzip", "zstd" or "mixed": gzip and zstd in turn,
	// bottom layer gzip) compresses the layer blobs of an OCI layout, as
	// Docker's containerd store saves them: the descriptors then carry
	// media types …tar+gzip / …tar+zstd and the blob digests, which are
	// not the diff IDs. FormatOCI only.
	Compression string
	// Executables are files put at the root of the top layer with mode
	// 0755 (a program to run in the image: e2e tests put a binary built for
	// the image's architecture there), in name order.
	Executables map[string][]byte
}

// Result describes a generated archive.
type Result struct {
	// ImageID is the config digest: the image ID Docker reports after a load.
	ImageID digest.Digest
	// Digest is the sha256 of the whole tar, exactly as written.
	Digest digest.Digest
	// Size is the number of bytes written.
	Size int64
	// DiffIDs are the sha256 digests of the layer tars, in order.
	DiffIDs []digest.Digest
}

// fixedTime is every mtime and "created" time in generated archives.
var fixedTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	defaultLayers        = 2
	defaultFilesPerLayer = 3
	defaultFileSize      = 1024
	chunkSize            = 32 << 10
)

// Bytes generates the archive in memory.
func Bytes(o Options) ([]byte, Result, error) {
	var b bytes.Buffer
	res, err := Write(&b, o)
	if err != nil {
		return nil, Result{}, err
	}
	return b.Bytes(), res, nil
}

// WriteFile generates the archive into the file at path (created or
// truncated); on error the file is removed.
func WriteFile(path string, o Options) (res Result, err error) {
	f, err := os.Create(path)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if res, err = Write(bw, o); err != nil {
		return Result{}, err
	}
	if err = bw.Flush(); err != nil {
		return Result{}, err
	}
	if err = f.Close(); err != nil {
		return Result{}, err
	}
	return res, nil
}

// spec is Options with defaults applied and names parsed.
type spec struct {
	Options
	repoTag  string // familiar "repo:tag", "" when untagged
	repoName string // familiar repository name
	tagName  string
	fullName string // normalized "docker.io/repo:tag"
}

func (o Options) spec() (*spec, error) {
	s := &spec{Options: o}
	if s.Layers == 0 {
		s.Layers = defaultLayers
	}
	if s.FilesPerLayer == 0 {
		s.FilesPerLayer = defaultFilesPerLayer
	}
	if s.FileSize == 0 {
		s.FileSize = defaultFileSize
	}
	if s.SharedLayers < 0 || s.SharedLayers > s.Layers {
		return nil, fmt.Errorf("testimage: SharedLayers %d outside 0..%d layers", s.SharedLayers, s.Layers)
	}
	if s.Layers < 0 || s.FilesPerLayer < 0 || s.FileSize < 0 {
		return nil, fmt.Errorf("testimage: negative Layers, FilesPerLayer or FileSize (%d, %d, %d)", o.Layers, o.FilesPerLayer, o.FileSize)
	}
	if s.OS == "" {
		s.OS = "linux"
	}
	if s.Architecture == "" {
		s.Architecture = runtime.GOARCH
	}
	switch s.Format {
	case "":
		s.Format = archive.FormatDocker
	case archive.FormatDocker, archive.FormatOCI:
	default:
		return nil, fmt.Errorf("testimage: unknown format %q", s.Format)
	}
	switch s.Compression {
	case "":
	case "gzip", "zstd", "mixed":
		if s.Format != archive.FormatOCI {
			return nil, fmt.Errorf("testimage: Compression %q needs FormatOCI", s.Compression)
		}
	default:
		return nil, fmt.Errorf("testimage: unknown compression %q", s.Compression)
	}
	if s.OCIOnly && s.Format != archive.FormatOCI {
		return nil, errors.New("testimage: OCIOnly needs FormatOCI")
	}
	if s.Tag != "" {
		named, err := reference.ParseNormalizedNamed(s.Tag)
		if err != nil {
			return nil, fmt.Errorf("testimage: tag %q: %w", s.Tag, err)
		}
		tagged, ok := reference.TagNameOnly(named).(reference.NamedTagged)
		if !ok {
			return nil, fmt.Errorf("testimage: tag %q must be repo[:tag], without a digest", s.Tag)
		}
		s.repoTag = reference.FamiliarString(tagged)
		s.repoName = reference.FamiliarName(tagged)
		s.tagName = tagged.Tag()
		s.fullName = tagged.String()
	}
	return s, nil
}

// layerInfo is what the first pass learns of a layer.
type layerInfo struct {
	diffID digest.Digest
	size   int64
	v1ID   string // legacy docker-archive layer directory name
	// blob is the compressed layer (Compression), its media type's suffix.
	blob     []byte
	blobType string
}

// blobDigest is the layer blob's digest: the diff ID when uncompressed.
func (l layerInfo) blobDigest() digest.Digest {
	if l.blob == nil {
		return l.diffID
	}
	return digest.FromBytes(l.blob)
}

func (l layerInfo) blobSize() int64 {
	if l.blob == nil {
		return l.size
	}
	return int64(len(l.blob))
}

// compressLayer makes layer i's blob, deterministically.
func (s *spec) compressLayer(i int) ([]byte, string, error) {
	kind := s.Compression
	if kind == "mixed" {
		kind = [2]string{"gzip", "zstd"}[i%2]
	}
	var buf bytes.Buffer
	var w io.WriteCloser
	switch kind {
	case "gzip":
		w = gzip.NewWriter(&buf) // no name, no time: the same bytes every run
	case "zstd":
		z, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, "", err
		}
		w = z
	}
	if err := s.writeLayer(w, i); err != nil {
		return nil, "", err
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), kind, nil
}

// Write streams the archive to w and returns what it wrote.
func Write(w io.Writer, o Options) (Result, error) {
	s, err := o.spec()
	if err != nil {
		return Result{}, err
	}

	// Pass 1: learn every layer's diff ID and size without keeping it.
	layers := make([]layerInfo, s.Layers)
	parent := ""
	for i := range layers {
		h := sha256.New()
		cw := &countWriter{w: h}
		if err := s.writeLayer(cw, i); err != nil {
			return Result{}, err
		}
		d := digest.NewDigest(digest.SHA256, h)
		id := sha256.Sum256([]byte(d.String() + "\n" + parent))
		layers[i] = layerInfo{diffID: d, size: cw.n, v1ID: hex.EncodeToString(id[:])}
		parent = layers[i].v1ID
		if s.Compression != "" {
			if layers[i].blob, layers[i].blobType, err = s.compressLayer(i); err != nil {
				return Result{}, err
			}
		}
	}
	cfg, err := s.configJSON(layers)
	if err != nil {
		return Result{}, err
	}
	cfgDigest := digest.FromBytes(cfg)

	out := &countWriter{w: w, h: sha256.New()}
	tw := tar.NewWriter(out)
	ar := &archiveWriter{s: s, tw: tw, layers: layers, cfg: cfg, cfgDigest: cfgDigest}
	if s.Format == archive.FormatOCI {
		err = ar.writeOCI()
	} else {
		err = ar.writeDocker()
	}
	if err != nil {
		return Result{}, err
	}
	if err := tw.Close(); err != nil {
		return Result{}, err
	}
	res := Result{
		ImageID: cfgDigest,
		Digest:  digest.NewDigest(digest.SHA256, out.h),
		Size:    out.n,
	}
	for _, l := range layers {
		res.DiffIDs = append(res.DiffIDs, l.diffID)
	}
	return res, nil
}

// countWriter counts (and optionally hashes) what passes through it.
type countWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if c.h != nil {
		c.h.Write(p[:n])
	}
	c.n += int64(n)
	return n, err
}

// writeLayer writes layer i's tar: a directory and FilesPerLayer files.
func (s *spec) writeLayer(w io.Writer, i int) error {
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir, Name: "imgcache/", Mode: 0o755, ModTime: fixedTime, Format: tar.FormatUSTAR,
	}); err != nil {
		return err
	}
	buf := make([]byte, min(chunkSize, s.FileSize))
	for j := 0; j < s.FilesPerLayer; j++ {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: fmt.Sprintf("imgcache/layer%d-file%d.dat", i, j),
			Mode: 0o644, Size: int64(s.FileSize), ModTime: fixedTime, Format: tar.FormatUSTAR,
		}); err != nil {
			return err
		}
		if err := s.writeContent(tw, buf, i, j); err != nil {
			return err
		}
	}
	if i == s.Layers-1 {
		for _, name := range slices.Sorted(maps.Keys(s.Executables)) {
			data := s.Executables[name]
			if err := tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(data)), ModTime: fixedTime, Format: tar.FormatUSTAR,
			}); err != nil {
				return err
			}
			if _, err := tw.Write(data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// writeContent writes file j of layer i: FileSize bytes determined by the
// seed, layer and file.
func (s *spec) writeContent(w io.Writer, buf []byte, i, j int) error {
	var pattern []byte
	var rng splitMix
	seed := s.Seed
	if i < s.SharedLayers {
		seed = s.BaseSeed ^ 0x5eed
	}
	if s.Compressible {
		pattern = fmt.Appendf(nil, "imgcache testimage seed %d layer %d file %d: the quick brown fox jumps over the lazy dog\n", seed, i, j)
	} else {
		rng = splitMix(uint64(seed)*0x9e3779b97f4a7c15 ^ uint64(i)<<32 ^ uint64(j))
		rng.next()
	}
	pos := 0
	for left := s.FileSize; left > 0; {
		b := buf[:min(len(buf), left)]
		if s.Compressible {
			for k := range b {
				b[k] = pattern[pos%len(pattern)]
				pos++
			}
		} else {
			for k := 0; k < len(b); k += 8 {
				v := rng.next()
				for m := k; m < k+8 && m < len(b); m++ {
					b[m] = byte(v)
					v >>= 8
				}
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		left -= len(b)
	}
	return nil
}

// splitMix is SplitMix64: tiny, fast, and fixed forever, so archives stay
// byte-identical across Go versions.
type splitMix uint64

func (x *splitMix) next() uint64 {
	*x += 0x9e3779b97f4a7c15
	z := uint64(*x)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

type containerConfig struct {
	Env []string `json:"Env"`
	Cmd []string `json:"Cmd"`
}

type history struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

type rootFS struct {
	Type    string          `json:"type"`
	DiffIDs []digest.Digest `json:"diff_ids"`
}

type imageConfig struct {
	Architecture string          `json:"architecture"`
	Config       containerConfig `json:"config"`
	Created      string          `json:"created"`
	History      []history       `json:"history"`
	OS           string          `json:"os"`
	RootFS       rootFS          `json:"rootfs"`
}

func (s *spec) configJSON(layers []layerInfo) ([]byte, error) {
	c := imageConfig{
		Architecture: s.Architecture,
		Config: containerConfig{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: []string{"/bin/sh"},
		},
		Created: fixedTime.Format(time.RFC3339),
		OS:      s.OS,
		RootFS:  rootFS{Type: "layers", DiffIDs: []digest.Digest{}},
	}
	for i, l := range layers {
		c.RootFS.DiffIDs = append(c.RootFS.DiffIDs, l.diffID)
		c.History = append(c.History, history{
			Created:   c.Created,
			CreatedBy: fmt.Sprintf("imgcache testimage: layer %d of seed %d", i, s.Seed),
		})
	}
	return json.Marshal(c)
}

// legacyLayerJSON is the v1 "<layerid>/json" file of a docker-archive.
type legacyLayerJSON struct {
	ID              string          `json:"id"`
	Parent          string          `json:"parent,omitempty"`
	Created         string          `json:"created"`
	ContainerConfig legacyContainer `json:"container_config"`
	OS              string          `json:"os"`
}

type legacyContainer struct {
	Hostname     string
	Domainname   string
	User         string
	AttachStdin  bool
	AttachStdout bool
	AttachStderr bool
	Tty          bool
	OpenStdin    bool
	StdinOnce    bool
	Env          []string
	Cmd          []string
	Image        string
	Volumes      map[string]struct{}
	WorkingDir   string
	Entrypoint   []string
	OnBuild      []string
	Labels       map[string]string
}

type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// archiveWriter writes the outer archive.
type archiveWriter struct {
	s         *spec
	tw        *tar.Writer
	layers    []layerInfo
	cfg       []byte
	cfgDigest digest.Digest
}

func (a *archiveWriter) dir(name string) error {
	return a.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: fixedTime, Format: tar.FormatUSTAR,
	})
}

func (a *archiveWriter) file(name string, data []byte) error {
	if err := a.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: fixedTime, Format: tar.FormatUSTAR,
	}); err != nil {
		return err
	}
	_, err := a.tw.Write(data)
	return err
}

// layer writes layer i's tar as the entry name, generating it again.
func (a *archiveWriter) layer(name string, i int) error {
	if err := a.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: a.layers[i].size, ModTime: fixedTime, Format: tar.FormatUSTAR,
	}); err != nil {
		return err
	}
	h := sha256.New()
	if err := a.s.writeLayer(io.MultiWriter(a.tw, h), i); err != nil {
		return err
	}
	if d := digest.NewDigest(digest.SHA256, h); d != a.layers[i].diffID {
		return fmt.Errorf("testimage: layer %d is not deterministic (%s, then %s)", i, a.layers[i].diffID, d)
	}
	return nil
}

func (a *archiveWriter) repoTags() []string {
	if a.s.repoTag == "" {
		return nil
	}
	return []string{a.s.repoTag}
}

func (a *archiveWriter) repositories() ([]byte, error) {
	last := a.layers[len(a.layers)-1].v1ID
	return json.Marshal(map[string]map[string]string{a.s.repoName: {a.s.tagName: last}})
}

// metadata writes the top-level metadata files, in name order.
func (a *archiveWriter) metadata(files []namedData) error {
	for _, f := range files {
		if err := a.file(f.name, f.data); err != nil {
			return err
		}
	}
	return nil
}

type namedData struct {
	name string
	data []byte
}

func (a *archiveWriter) writeDocker() error {
	cfgName := a.cfgDigest.Encoded() + ".json"
	m := []dockerManifestEntry{{Config: cfgName, RepoTags: a.repoTags()}}
	for _, l := range a.layers {
		m[0].Layers = append(m[0].Layers, l.v1ID+"/layer.tar")
	}
	mj, err := json.Marshal(m)
	if err != nil {
		return err
	}
	meta := []namedData{{"manifest.json", mj}}
	if a.s.repoTag != "" {
		rj, err := a.repositories()
		if err != nil {
			return err
		}
		meta = append(meta, namedData{"repositories", rj})
	}
	if a.s.MetadataFirst {
		if err := a.metadata(meta); err != nil {
			return err
		}
	}
	parent := ""
	for i, l := range a.layers {
		lj, err := json.Marshal(legacyLayerJSON{
			ID: l.v1ID, Parent: parent, Created: fixedTime.Format(time.RFC3339), OS: a.s.OS,
		})
		if err != nil {
			return err
		}
		if err := a.dir(l.v1ID + "/"); err != nil {
			return err
		}
		if err := a.file(l.v1ID+"/VERSION", []byte("1.0")); err != nil {
			return err
		}
		if err := a.file(l.v1ID+"/json", lj); err != nil {
			return err
		}
		if err := a.layer(l.v1ID+"/layer.tar", i); err != nil {
			return err
		}
		parent = l.v1ID
	}
	if err := a.file(cfgName, a.cfg); err != nil {
		return err
	}
	if !a.s.MetadataFirst {
		return a.metadata(meta)
	}
	return nil
}

// OCI media types.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      digest.Digest     `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ociManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type ociIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

func (a *archiveWriter) writeOCI() error {
	const blobs = "blobs/sha256/"
	man := ociManifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        descriptor{MediaType: mediaTypeConfig, Digest: a.cfgDigest, Size: int64(len(a.cfg))},
	}
	dm := []dockerManifestEntry{{Config: blobs + a.cfgDigest.Encoded(), RepoTags: a.repoTags()}}
	for _, l := range a.layers {
		mt := mediaTypeLayer
		if l.blobType != "" {
			mt += "+" + l.blobType
		}
		man.Layers = append(man.Layers, descriptor{MediaType: mt, Digest: l.blobDigest(), Size: l.blobSize()})
		dm[0].Layers = append(dm[0].Layers, blobs+l.blobDigest().Encoded())
	}
	mj, err := json.Marshal(man)
	if err != nil {
		return err
	}
	manDigest := digest.FromBytes(mj)
	desc := descriptor{MediaType: mediaTypeManifest, Digest: manDigest, Size: int64(len(mj))}
	if a.s.repoTag != "" {
		desc.Annotations = map[string]string{
			"io.containerd.image.name":          a.s.fullName,
			"org.opencontainers.image.ref.name": a.s.tagName,
		}
	}
	ij, err := json.Marshal(ociIndex{SchemaVersion: 2, MediaType: mediaTypeIndex, Manifests: []descriptor{desc}})
	if err != nil {
		return err
	}
	dj, err := json.Marshal(dm)
	if err != nil {
		return err
	}
	meta := []namedData{
		{"index.json", ij},
		{"manifest.json", dj},
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	}
	if a.s.OCIOnly {
		meta = slices.Delete(meta, 1, 2)
	}
	if a.s.repoTag != "" && !a.s.OCIOnly {
		rj, err := a.repositories()
		if err != nil {
			return err
		}
		meta = append(meta, namedData{"repositories", rj})
	}
	if a.s.MetadataFirst {
		if err := a.metadata(meta); err != nil {
			return err
		}
	}
	if err := a.dir("blobs/"); err != nil {
		return err
	}
	if err := a.dir(blobs); err != nil {
		return err
	}
	seen := map[digest.Digest]bool{}
	for i, l := range a.layers {
		if seen[l.blobDigest()] {
			continue
		}
		seen[l.blobDigest()] = true
		if l.blob != nil {
			if err := a.file(blobs+l.blobDigest().Encoded(), l.blob); err != nil {
				return err
			}
			continue
		}
		if err := a.layer(blobs+l.diffID.Encoded(), i); err != nil {
			return err
		}
	}
	for _, b := range []namedData{{blobs + a.cfgDigest.Encoded(), a.cfg}, {blobs + manDigest.Encoded(), mj}} {
		if seen[digest.Digest("sha256:"+b.name[len(blobs):])] {
			return errors.New("testimage: a layer collides with the config or manifest blob")
		}
		if err := a.file(b.name, b.data); err != nil {
			return err
		}
	}
	if !a.s.MetadataFirst {
		return a.metadata(meta)
	}
	return nil
}
