package archive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/opencontainers/go-digest"
)

// Format names the layout of an image archive.
type Format string

const (
	// FormatDocker is the `docker save` layout: a top-level manifest.json.
	// It takes precedence when an archive has both manifest.json and
	// index.json, as archives written by Docker 25 and later do.
	FormatDocker Format = "docker-archive"
	// FormatOCI is an OCI image layout tarball: index.json without
	// manifest.json.
	FormatOCI Format = "oci-archive"
)

// Image is one image described by an archive.
type Image struct {
	// ID is the digest of the image's config blob ("sha256:…"), which is the
	// image ID a classic (graphdriver) Docker image store reports. (Docker's
	// containerd image store reports the manifest or index digest instead.)
	ID digest.Digest
	// RepoTags are the image's names. Docker format: manifest.json RepoTags.
	// OCI format: the io.containerd.image.name annotation, else
	// org.opencontainers.image.ref.name when it is a full reference rather
	// than a bare tag. Nil when the archive names none.
	RepoTags     []string
	OS           string
	Architecture string
	Variant      string
	// Created is the config's "created" time (zero when absent).
	Created time.Time
	// Config is the path of the image's config file in the archive.
	Config string
	// Layers are the image's layers, bottom first, as its manifest lists them.
	Layers []Layer
}

// Layer is one layer of an image: where the archive holds it and what the
// image's config and manifest say of it.
type Layer struct {
	// Path is the layer file's (cleaned) name in the archive.
	Path string
	// DiffID is the config's rootfs diff_id: the sha256 of the uncompressed
	// layer tar.
	DiffID digest.Digest
	// Digest is the descriptor's digest for an OCI manifest (the sha256 of
	// the file, compressed or not); "" for a docker-archive, whose layer
	// files are uncompressed and so should hash to DiffID.
	Digest digest.Digest
	// MediaType is the descriptor's media type (OCI), or Docker's
	// uncompressed layer type for a docker-archive.
	MediaType string
}

// MediaTypeDockerLayer is the media type of a docker-archive's layer.tar.
const MediaTypeDockerLayer = "application/vnd.docker.image.rootfs.diff.tar"

// Info is what [Read] learns from an archive.
type Info struct {
	Format Format
	// Images holds at least one image, in manifest.json / index.json order.
	Images []Image
	// MetadataOffset is the byte offset, within the tar stream, of the
	// (first) header block of the earliest of the top-level entries
	// manifest.json and index.json. A loader that holds back every byte from
	// this offset on keeps the daemon from ever seeing the archive's
	// manifest.
	MetadataOffset int64
	// Size is the number of bytes of the tar read, up to and including the
	// end-of-archive marker (or up to a clean EOF at an entry boundary, which
	// Read accepts). Read never reads past it.
	Size int64
}

var (
	// ErrNotTar: the input is not a tar archive (its first header is
	// unreadable or garbage), or a later header is corrupt.
	ErrNotTar = errors.New("not a tar archive")
	// ErrTruncated: the stream ends inside a tar header or entry.
	ErrTruncated = errors.New("truncated archive")
	// ErrNotImage: a tar, but not an image archive: no manifest.json or
	// index.json, invalid metadata, or metadata referencing missing files.
	ErrNotImage = errors.New("not an image archive")
	// ErrUnsafe: an absolute path, a ".." path element, a link leaving the
	// archive, a duplicate entry name, a sparse file, an entry too large for
	// its kind, a blob whose content does not match its digest or size, or
	// more entries, metadata or index nesting than the limits allow.
	ErrUnsafe = errors.New("unsafe archive")
)

// Limits. They bound memory whatever the archive holds.
const (
	// maxMetadataFile is the largest manifest.json, index.json, config or
	// OCI manifest Read keeps in memory.
	maxMetadataFile = 8 << 20
	// maxMetadataTotal caps all metadata kept in memory at once.
	maxMetadataTotal = 64 << 20
	// maxEntries caps the number of tar entries (their names are kept to
	// detect duplicates).
	maxEntries = 1_000_000
	// maxNameBytes caps the total length of those names.
	maxNameBytes = 64 << 20
	// maxIndexDepth is how deep OCI image indexes may nest below index.json.
	maxIndexDepth = 4
	// maxDescriptors caps the manifest descriptors followed in an OCI layout.
	maxDescriptors = 10_000

	blockSize    = 512
	drainBufSize = 64 << 10
)

const (
	manifestName = "manifest.json"
	indexName    = "index.json"
	blobsPrefix  = "blobs/sha256/"
)

// Read reads the metadata of a docker-archive or OCI-archive tarball from r
// in one pass, without seeking, consuming r exactly up to the end of the
// archive (see [Info.Size]). Layers are drained, not kept: memory stays
// bounded whatever the archive size. Small JSON metadata files are kept
// while streaming, because `docker save` writes configs before
// manifest.json, and resolved once the whole archive has been read.
//
// Every error wraps [ErrNotTar], [ErrTruncated], [ErrNotImage] or
// [ErrUnsafe], except an error returned by r itself, which is returned
// wrapped (errors.Is finds it).
func Read(r io.Reader) (*Info, error) {
	rd := &reader{
		cr:          &countingReader{r: r},
		names:       make(map[string]entry),
		retained:    make(map[string][]byte),
		digests:     make(map[string]digest.Digest),
		configs:     make(map[string]*parsedConfig),
		docs:        make(map[string]*ociDoc),
		manifests:   make(map[string]ociImage),
		manifestOff: -1,
		indexOff:    -1,
	}
	bp := drainBufs.Get().(*[]byte)
	defer drainBufs.Put(bp)
	rd.buf = *bp
	if err := rd.scan(); err != nil {
		return nil, err
	}
	return rd.resolve()
}

// drainBufs holds the buffers layers are drained through.
var drainBufs = sync.Pool{New: func() any {
	b := make([]byte, drainBufSize)
	return &b
}}

// countingReader counts the bytes read through it, remembers the first few
// (to recognise compressed input) and the last error the source returned
// other than io.EOF (to tell I/O errors from tar format errors).
type countingReader struct {
	r     io.Reader
	n     int64
	head  [4]byte
	nhead int
	err   error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		if c.nhead < len(c.head) {
			c.nhead += copy(c.head[c.nhead:], p[:n])
		}
		c.n += int64(n)
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// entry is what Read remembers of every tar entry.
type entry struct {
	size int64
	typ  byte
}

type parsedConfig struct {
	img     Image
	diffIDs []digest.Digest
}

type reader struct {
	cr        *countingReader
	entries   int
	nameBytes int
	names     map[string]entry
	retained  map[string][]byte // small JSON metadata, by cleaned name
	total     int64             // bytes in retained
	digests   map[string]digest.Digest
	configs   map[string]*parsedConfig
	docs      map[string]*ociDoc  // parsed OCI indexes and manifests
	manifests map[string]ociImage // images resolved from OCI manifests
	visits    int                 // OCI descriptors followed

	manifestOff, indexOff int64
	buf                   []byte
}

func roundUp(n int64) int64 { return (n + blockSize - 1) / blockSize * blockSize }

// scan walks the tar to its end, checking names and keeping metadata.
func (rd *reader) scan() error {
	tr := tar.NewReader(rd.cr)
	prev := ""
	for {
		off := roundUp(rd.cr.n)
		hdr, err := tr.Next()
		if err == tar.ErrInsecurePath {
			err = nil // GODEBUG=tarinsecurepath=0; names are checked below
		}
		if err == io.EOF {
			if rd.entries == 0 {
				if rd.cr.n == 0 {
					return fmt.Errorf("%w: empty input", ErrNotTar)
				}
				return fmt.Errorf("%w: the tar archive has no entries", ErrNotImage)
			}
			if rd.cr.n%blockSize != 0 {
				// archive/tar reads a short padding as a clean end.
				return fmt.Errorf("%w: the stream ends inside the padding of entry %q at offset %d", ErrTruncated, prev, rd.cr.n)
			}
			return nil
		}
		if err != nil {
			return rd.headerError(err, off, prev)
		}
		rd.entries++
		if rd.entries > maxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrUnsafe, maxEntries)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			// PAX global header (git archive writes one): metadata, not a file.
			if err := rd.drain(tr, "pax_global_header", hdr.Size); err != nil {
				return err
			}
			continue
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		if err := checkLink(name, hdr); err != nil {
			return err
		}
		if isSparse(hdr) {
			// A sparse entry's holes read as zeros without consuming input:
			// draining a 2^62-byte hole would never end.
			return fmt.Errorf("%w: entry %q is a sparse file, which image archives never contain", ErrUnsafe, name)
		}
		if _, dup := rd.names[name]; dup {
			return fmt.Errorf("%w: duplicate entry %q", ErrUnsafe, name)
		}
		rd.nameBytes += len(name)
		if rd.nameBytes > maxNameBytes {
			return fmt.Errorf("%w: entry names total more than %d MiB (at entry %q)", ErrUnsafe, maxNameBytes>>20, name)
		}
		rd.names[name] = entry{size: hdr.Size, typ: hdr.Typeflag}

		regular := hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA
		switch {
		case name == manifestName || name == indexName:
			if name == manifestName {
				rd.manifestOff = off
			} else {
				rd.indexOff = off
			}
			if regular {
				if hdr.Size > maxMetadataFile {
					return fmt.Errorf("%w: %s is %d bytes, more than the %d MiB limit", ErrUnsafe, name, hdr.Size, maxMetadataFile>>20)
				}
				if err := rd.keep(tr, name, hdr.Size, false); err != nil {
					return err
				}
			}
		case regular && hdr.Size <= maxMetadataFile && isCandidate(name):
			if err := rd.keep(tr, name, hdr.Size, true); err != nil {
				return err
			}
		}
		if err := rd.drain(tr, name, hdr.Size); err != nil {
			return err
		}
		prev = name
	}
}

// isCandidate reports whether name may be metadata that resolve needs: a
// top-level *.json file (a docker-archive config) or a blob (an OCI config,
// manifest or index).
func isCandidate(name string) bool {
	if !strings.Contains(name, "/") {
		return strings.HasSuffix(name, ".json")
	}
	return strings.HasPrefix(name, blobsPrefix) && !strings.Contains(name[len(blobsPrefix):], "/")
}

// cleanName returns the cleaned form of a tar entry name, or an ErrUnsafe
// error when it is empty, absolute or escapes the archive.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: entry with an empty name", ErrUnsafe)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: entry %q has an absolute path", ErrUnsafe, name)
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%w: entry %q escapes the archive", ErrUnsafe, name)
	}
	return c, nil
}

// CleanName is the name [Image.Config] and [Layer.Path] use for a tar
// entry's name, or an error for a name that is empty, absolute or escapes
// the archive.
func CleanName(name string) (string, error) { return cleanName(name) }

// isSparse reports whether hdr is a GNU sparse file (old GNU format or one
// of the GNU PAX sparse formats).
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// checkLink rejects symbolic and hard links whose target lies outside the
// archive. (`docker save` links shared layers as "../<id>/layer.tar".)
func checkLink(name string, hdr *tar.Header) error {
	var target string
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		if strings.HasPrefix(hdr.Linkname, "/") {
			return fmt.Errorf("%w: symlink %q points to the absolute path %q", ErrUnsafe, name, hdr.Linkname)
		}
		target = path.Join(path.Dir(name), hdr.Linkname)
	case tar.TypeLink:
		if strings.HasPrefix(hdr.Linkname, "/") {
			return fmt.Errorf("%w: hard link %q points to the absolute path %q", ErrUnsafe, name, hdr.Linkname)
		}
		target = path.Clean(hdr.Linkname)
	default:
		return nil
	}
	if target == ".." || strings.HasPrefix(target, "../") {
		return fmt.Errorf("%w: link %q points outside the archive (%q)", ErrUnsafe, name, hdr.Linkname)
	}
	return nil
}

// headerError classifies an error from tar.Reader.Next.
func (rd *reader) headerError(err error, off int64, prev string) error {
	if rd.cr.err != nil && errors.Is(err, rd.cr.err) {
		return fmt.Errorf("archive: reading the tar header at offset %d: %w", off, err)
	}
	if rd.entries == 0 {
		h := rd.cr.head[:rd.cr.nhead]
		switch {
		case len(h) >= 2 && h[0] == 0x1f && h[1] == 0x8b:
			return fmt.Errorf("%w: the input is gzip-compressed; decompress it first (gunzip, or docker save without | gzip)", ErrNotTar)
		case len(h) >= 4 && h[0] == 0x28 && h[1] == 0xb5 && h[2] == 0x2f && h[3] == 0xfd:
			return fmt.Errorf("%w: the input is zstd-compressed; decompress it first (zstd -d)", ErrNotTar)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("%w: the input is %d bytes, shorter than one %d-byte tar header", ErrNotTar, rd.cr.n, blockSize)
		}
		return fmt.Errorf("%w: the first %d bytes are not a tar header (%v)", ErrNotTar, blockSize, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the stream ends inside the tar header at offset %d, after entry %q", ErrTruncated, off, prev)
	}
	return fmt.Errorf("%w: corrupt tar header at offset %d, after entry %q (%v)", ErrNotTar, off, prev, err)
}

// dataError classifies an error met while reading an entry's content.
func (rd *reader) dataError(err error, name string, size int64) error {
	if rd.cr.err != nil && errors.Is(err, rd.cr.err) {
		return fmt.Errorf("archive: reading entry %q: %w", name, err)
	}
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the stream ends inside entry %q (%d bytes declared) at offset %d", ErrTruncated, name, size, rd.cr.n)
	}
	return fmt.Errorf("%w: corrupt entry %q (%v)", ErrNotTar, name, err)
}

// drain reads the rest of the current entry.
func (rd *reader) drain(tr *tar.Reader, name string, size int64) error {
	for {
		_, err := tr.Read(rd.buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return rd.dataError(err, name, size)
		}
	}
}

// keep reads the current entry (size bytes, at most maxMetadataFile) into
// memory. When onlyObjects is set it first peeks at the content and keeps
// it only if its first non-whitespace byte is '{', leaving the rest of
// other entries to drain.
func (rd *reader) keep(tr *tar.Reader, name string, size int64, onlyObjects bool) error {
	var head []byte
	if onlyObjects {
		var chunk [blockSize]byte
		found := false
		for int64(len(head)) < size && !found {
			n, err := io.ReadFull(tr, chunk[:min(int64(len(chunk)), size-int64(len(head)))])
			head = append(head, chunk[:n]...)
			if err != nil {
				return rd.dataError(err, name, size)
			}
			for _, c := range chunk[:n] {
				if !isSpace(c) {
					if c != '{' {
						return nil
					}
					found = true
					break
				}
			}
		}
		if !found {
			return nil // empty or all whitespace
		}
	}
	if rd.total+size > maxMetadataTotal {
		return fmt.Errorf("%w: too much metadata: more than %d MiB of JSON files and small blobs (at entry %q)", ErrUnsafe, maxMetadataTotal>>20, name)
	}
	data, err := readN(tr, size, head)
	if err != nil {
		return rd.dataError(err, name, size)
	}
	rd.total += size
	rd.retained[name] = data
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// readN returns prefix followed by the next n-len(prefix) bytes of r. It
// grows its buffer as data arrives, so a declared size the stream does not
// back costs no more memory than the bytes actually read (times two).
func readN(r io.Reader, n int64, prefix []byte) ([]byte, error) {
	c := max(min(n, 64<<10), int64(len(prefix)))
	b := make([]byte, len(prefix), c)
	copy(b, prefix)
	for int64(len(b)) < n {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(n, 2*int64(cap(b))))
			copy(nb, b)
			b = nb
		}
		m, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			if int64(len(b)) < n {
				return nil, io.ErrUnexpectedEOF
			}
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// resolve turns the retained metadata into an Info.
func (rd *reader) resolve() (*Info, error) {
	info := &Info{Size: rd.cr.n}
	var err error
	switch {
	case rd.manifestOff >= 0:
		info.Format = FormatDocker
		info.Images, err = rd.resolveDocker()
	case rd.indexOff >= 0:
		info.Format = FormatOCI
		info.Images, err = rd.resolveOCI()
	default:
		return nil, fmt.Errorf("%w: no manifest.json or index.json at the top level (is this a docker save tarball?)", ErrNotImage)
	}
	if err != nil {
		return nil, err
	}
	info.MetadataOffset = rd.manifestOff
	if info.MetadataOffset < 0 || (rd.indexOff >= 0 && rd.indexOff < info.MetadataOffset) {
		info.MetadataOffset = rd.indexOff
	}
	return info, nil
}

// topLevel returns the retained content of manifest.json or index.json.
func (rd *reader) topLevel(name string) ([]byte, error) {
	data, ok := rd.retained[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a regular file (tar type %q)", ErrNotImage, name, rd.names[name].typ)
	}
	return data, nil
}

type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func (rd *reader) resolveDocker() ([]Image, error) {
	data, err := rd.topLevel(manifestName)
	if err != nil {
		return nil, err
	}
	var m []dockerManifestEntry
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest.json is not a valid docker-archive manifest: %v", ErrNotImage, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("%w: manifest.json lists no images", ErrNotImage)
	}
	images := make([]Image, 0, len(m))
	for i, e := range m {
		what := fmt.Sprintf("manifest.json image %d", i)
		if e.Config == "" {
			return nil, fmt.Errorf("%w: %s has no Config", ErrNotImage, what)
		}
		cfgName, err := cleanName(e.Config)
		if err != nil {
			return nil, fmt.Errorf("%s: config path: %w", what, err)
		}
		cfg, err := rd.config(cfgName, digestFromName(cfgName), -1, what)
		if err != nil {
			return nil, err
		}
		if len(cfg.diffIDs) != len(e.Layers) {
			return nil, fmt.Errorf("%w: %s lists %d layers but its config %q has %d diff_ids", ErrNotImage, what, len(e.Layers), e.Config, len(cfg.diffIDs))
		}
		img := cfg.img
		img.Config = cfgName
		img.Layers = make([]Layer, 0, len(e.Layers))
		for i, l := range e.Layers {
			ln, err := cleanName(l)
			if err != nil {
				return nil, fmt.Errorf("%s: layer path: %w", what, err)
			}
			if _, ok := rd.names[ln]; !ok {
				return nil, fmt.Errorf("%w: %s references layer %q, which is not in the archive", ErrNotImage, what, l)
			}
			layer := Layer{Path: ln, DiffID: cfg.diffIDs[i], MediaType: MediaTypeDockerLayer}
			if d := digestFromName(ln); d != "" && d != cfg.diffIDs[i] {
				// An OCI layout's blob (Docker 25+ writes manifest.json
				// beside it): compressed, as the containerd store keeps
				// layers; its media type is the OCI manifest's.
				layer.Digest = d
				layer.MediaType = rd.layerMediaType(d)
			}
			img.Layers = append(img.Layers, layer)
		}
		if len(e.RepoTags) > 0 {
			img.RepoTags = append([]string(nil), e.RepoTags...)
		}
		images = append(images, img)
	}
	return images, nil
}

// layerMediaType is the media type the archive's OCI manifests give the
// layer blob d ("" when none describes it).
func (rd *reader) layerMediaType(d digest.Digest) string {
	for name, data := range rd.retained {
		if !strings.HasPrefix(name, blobsPrefix) || !bytes.Contains(data, []byte(`"layers"`)) {
			continue
		}
		var doc ociDoc
		if json.Unmarshal(data, &doc) != nil {
			continue
		}
		for _, l := range doc.Layers {
			if l.Digest == d {
				return l.MediaType
			}
		}
	}
	return ""
}

// digestFromName returns the digest a file name claims for its content:
// "<hex>.json" at the top level or "blobs/sha256/<hex>"; "" otherwise.
func digestFromName(name string) digest.Digest {
	var hex string
	switch {
	case strings.HasPrefix(name, blobsPrefix):
		hex = name[len(blobsPrefix):]
	case !strings.Contains(name, "/") && strings.HasSuffix(name, ".json"):
		hex = strings.TrimSuffix(name, ".json")
	default:
		return ""
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, hex)
	if d.Validate() != nil {
		return ""
	}
	return d
}

// blob returns the retained content of name. found is false when the
// archive has no entry of that name at all. When want is set the content's
// digest must equal it; when size >= 0 its length must equal size.
func (rd *reader) blob(name string, want digest.Digest, size int64, what string) (data []byte, found bool, err error) {
	data, ok := rd.retained[name]
	if !ok {
		e, exists := rd.names[name]
		switch {
		case !exists:
			return nil, false, fmt.Errorf("%w: %s references %q, which is not in the archive", ErrNotImage, what, name)
		case e.typ != tar.TypeReg && e.typ != tar.TypeRegA:
			return nil, true, fmt.Errorf("%w: %s references %q, which is not a regular file (tar type %q)", ErrNotImage, what, name, e.typ)
		case e.size > maxMetadataFile:
			return nil, true, fmt.Errorf("%w: %s references %q, which is %d bytes, more than the %d MiB limit for metadata", ErrUnsafe, what, name, e.size, maxMetadataFile>>20)
		default:
			return nil, true, fmt.Errorf("%w: %s references %q, which is not a JSON object", ErrNotImage, what, name)
		}
	}
	if size >= 0 && int64(len(data)) != size {
		return nil, true, fmt.Errorf("%w: %s says %q is %d bytes, but it is %d", ErrUnsafe, what, name, size, len(data))
	}
	if want != "" {
		got, ok := rd.digests[name]
		if !ok {
			got = digest.FromBytes(data)
			rd.digests[name] = got
		}
		if got != want {
			return nil, true, fmt.Errorf("%w: %q has digest %s, not %s as %s says", ErrUnsafe, name, got, want, what)
		}
	}
	return data, true, nil
}

// imageConfig is image-spec's image config, with rootfs a pointer so that
// a config without one can be told from an empty one.
type imageConfig struct {
	ocispec.Image
	RootFS *ocispec.RootFS `json:"rootfs"`
}

// config loads and parses the image config stored as name.
func (rd *reader) config(name string, want digest.Digest, size int64, what string) (*parsedConfig, error) {
	data, _, err := rd.blob(name, want, size, what)
	if err != nil {
		return nil, err
	}
	if c, ok := rd.configs[name]; ok {
		return c, nil
	}
	var ic imageConfig
	if err := json.Unmarshal(data, &ic); err != nil {
		return nil, fmt.Errorf("%w: config %q of %s is not a valid image config: %v", ErrNotImage, name, what, err)
	}
	if ic.RootFS == nil {
		return nil, fmt.Errorf("%w: config %q of %s has no rootfs", ErrNotImage, name, what)
	}
	id, ok := rd.digests[name]
	if !ok {
		id = digest.FromBytes(data)
		rd.digests[name] = id
	}
	c := &parsedConfig{
		img: Image{
			ID:           id,
			OS:           ic.OS,
			Architecture: ic.Architecture,
			Variant:      ic.Variant,
		},
		diffIDs: ic.RootFS.DiffIDs,
	}
	if ic.Created != nil {
		c.img.Created = *ic.Created
	}
	rd.configs[name] = c
	return c, nil
}

// The media types and annotations Read understands: OCI's from image-spec,
// Docker's (which image-spec does not define) here.
const (
	mediaTypeOCIIndex        = ocispec.MediaTypeImageIndex
	mediaTypeOCIManifest     = ocispec.MediaTypeImageManifest
	mediaTypeOCIConfig       = ocispec.MediaTypeImageConfig
	mediaTypeDockerList      = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerManifest  = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerConfig    = "application/vnd.docker.container.image.v1+json"
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = ocispec.AnnotationRefName
	annotationReferenceType  = "vnd.docker.reference.type"
)

// descriptor is image-spec's.
type descriptor = ocispec.Descriptor

// ociDoc is an image index or an image manifest; which one is told by the
// descriptor's media type, else by its own, else by its fields.
type ociDoc struct {
	MediaType string       `json:"mediaType"`
	Manifests []descriptor `json:"manifests"`
	Config    *descriptor  `json:"config"`
	Layers    []descriptor `json:"layers"`
}

func (rd *reader) resolveOCI() ([]Image, error) {
	data, err := rd.topLevel(indexName)
	if err != nil {
		return nil, err
	}
	var idx ociDoc
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%w: index.json is not a valid OCI image index: %v", ErrNotImage, err)
	}
	if len(idx.Manifests) == 0 {
		return nil, fmt.Errorf("%w: index.json lists no manifests", ErrNotImage)
	}
	var images []Image
	var skipped error
	if err := rd.walkIndex(&idx, "index.json", 0, nil, &images, &skipped); err != nil {
		return nil, err
	}
	if len(images) == 0 {
		if skipped != nil {
			return nil, fmt.Errorf("index.json leads to no image in the archive: %w", skipped)
		}
		return nil, fmt.Errorf("%w: index.json leads to no image manifest", ErrNotImage)
	}
	return images, nil
}

// walkIndex collects the images an image index leads to. Manifests absent
// from the archive below the top level are skipped (docker save of a
// multi-platform image keeps only some platforms); the first reason for
// skipping is kept in *skipped.
func (rd *reader) walkIndex(idx *ociDoc, what string, depth int, tags []string, images *[]Image, skipped *error) error {
	for i, d := range idx.Manifests {
		rd.visits++
		if rd.visits > maxDescriptors {
			return fmt.Errorf("%w: the image indexes list more than %d manifests", ErrUnsafe, maxDescriptors)
		}
		dWhat := fmt.Sprintf("%s manifests[%d]", what, i)
		if d.Annotations[annotationReferenceType] == "attestation-manifest" ||
			(d.Platform != nil && d.Platform.OS == "unknown" && d.Platform.Architecture == "unknown") {
			continue // buildkit attestations, not images
		}
		t := tags
		if depth == 0 {
			t = tagsFrom(d.Annotations)
		}
		name, want, err := blobName(d, dWhat)
		if err != nil {
			return err
		}
		data, found, err := rd.blob(name, want, d.Size, dWhat)
		if err != nil {
			if !found && depth > 0 {
				if *skipped == nil {
					*skipped = err
				}
				continue
			}
			return err
		}
		doc, ok := rd.docs[name]
		if !ok {
			doc = new(ociDoc)
			if err := json.Unmarshal(data, doc); err != nil {
				return fmt.Errorf("%w: %s (%s) is not valid JSON: %v", ErrNotImage, dWhat, name, err)
			}
			rd.docs[name] = doc
		}
		mt := d.MediaType
		if mt == "" {
			mt = doc.MediaType
		}
		if mt == "" {
			switch {
			case doc.Manifests != nil:
				mt = mediaTypeOCIIndex
			case doc.Config != nil:
				mt = mediaTypeOCIManifest
			}
		}
		switch mt {
		case mediaTypeOCIIndex, mediaTypeDockerList:
			if depth+1 > maxIndexDepth {
				return fmt.Errorf("%w: image indexes nest more than %d levels below index.json (at %s)", ErrUnsafe, maxIndexDepth, dWhat)
			}
			if err := rd.walkIndex(doc, dWhat, depth+1, t, images, skipped); err != nil {
				return err
			}
		case mediaTypeOCIManifest, mediaTypeDockerManifest:
			res, ok := rd.manifests[name]
			if !ok {
				res.img, res.ok, err = rd.imageFromManifest(doc, dWhat)
				if err != nil {
					return err
				}
				rd.manifests[name] = res
			}
			img := res.img
			if !res.ok {
				if *skipped == nil {
					*skipped = fmt.Errorf("%w: %s is not a container image (config media type %q)", ErrNotImage, dWhat, doc.Config.MediaType)
				}
				continue
			}
			if len(t) > 0 {
				img.RepoTags = append([]string(nil), t...)
			}
			*images = append(*images, img)
		default:
			if *skipped == nil {
				*skipped = fmt.Errorf("%w: %s has media type %q, neither an image index nor an image manifest", ErrNotImage, dWhat, mt)
			}
		}
	}
	return nil
}

// ociImage is the result of imageFromManifest, cached per manifest blob.
type ociImage struct {
	img Image
	ok  bool
}

// imageFromManifest resolves an image manifest's config. ok is false for
// manifests that are not container images (artifacts).
func (rd *reader) imageFromManifest(m *ociDoc, what string) (img Image, ok bool, err error) {
	if m.Config == nil {
		return Image{}, false, fmt.Errorf("%w: %s is an image manifest without a config", ErrNotImage, what)
	}
	switch m.Config.MediaType {
	case mediaTypeOCIConfig, mediaTypeDockerConfig, "":
	default:
		return Image{}, false, nil
	}
	cfgWhat := what + " config"
	name, want, err := blobName(*m.Config, cfgWhat)
	if err != nil {
		return Image{}, false, err
	}
	cfg, err := rd.config(name, want, m.Config.Size, cfgWhat)
	if err != nil {
		return Image{}, false, err
	}
	if len(cfg.diffIDs) != len(m.Layers) {
		return Image{}, false, fmt.Errorf("%w: %s lists %d layers but its config has %d diff_ids", ErrNotImage, what, len(m.Layers), len(cfg.diffIDs))
	}
	img = cfg.img
	img.Config = name
	img.Layers = make([]Layer, 0, len(m.Layers))
	for i, l := range m.Layers {
		lWhat := fmt.Sprintf("%s layers[%d]", what, i)
		ln, ld, err := blobName(l, lWhat)
		if err != nil {
			return Image{}, false, err
		}
		if _, ok := rd.names[ln]; !ok {
			return Image{}, false, fmt.Errorf("%w: %s references %q, which is not in the archive", ErrNotImage, lWhat, ln)
		}
		img.Layers = append(img.Layers, Layer{Path: ln, DiffID: cfg.diffIDs[i], Digest: ld, MediaType: l.MediaType})
	}
	return img, true, nil
}

// blobName validates a descriptor's digest and returns the blob's path.
func blobName(d descriptor, what string) (string, digest.Digest, error) {
	dg, err := digest.Parse(string(d.Digest))
	if err != nil {
		return "", "", fmt.Errorf("%w: %s has an invalid digest %q: %v", ErrNotImage, what, d.Digest, err)
	}
	if dg.Algorithm() != digest.SHA256 {
		return "", "", fmt.Errorf("%w: %s uses digest algorithm %q; only sha256 is supported", ErrNotImage, what, dg.Algorithm())
	}
	if d.Size < 0 {
		return "", "", fmt.Errorf("%w: %s has a negative size %d", ErrNotImage, what, d.Size)
	}
	return blobsPrefix + dg.Encoded(), dg, nil
}

// tagsFrom returns the repo tags an index.json descriptor's annotations name.
func tagsFrom(a map[string]string) []string {
	if v := a[annotationContainerdName]; v != "" {
		return []string{v}
	}
	if v := a[annotationRefName]; looksLikeRef(v) {
		return []string{v}
	}
	return nil
}

// looksLikeRef reports whether an org.opencontainers.image.ref.name value is
// a full reference ("alpine:3.20", "ghcr.io/x/y:1") rather than a bare tag
// ("latest"), which can contain neither ':' nor '/'.
func looksLikeRef(v string) bool {
	return v != "" && strings.ContainsAny(v, ":/") && !strings.Contains(v, "@") &&
		!strings.ContainsAny(v, " \t\r\n")
}
