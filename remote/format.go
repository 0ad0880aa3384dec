package remote

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
)

// The format of the fleet tier, version 1. Every media type carries the
// version, so that an imgcache meeting a newer one says so (exit 10)
// instead of misreading it.
const (
	// FormatVersion is the version this imgcache reads and writes.
	FormatVersion = 1

	// ArtifactEntry is the artifactType of an entry's manifest; its config
	// is the entry's record (MediaRecord), its layers the entry's stored
	// blobs (MediaBlob), in the order manifest.Entry.LayerBlobs gives them.
	ArtifactEntry = "application/vnd.imgcache.entry.v1"
	// MediaRecord is the entry's record: JSON of Record.
	MediaRecord = "application/vnd.imgcache.entry.v1+json"
	// ArtifactBlob is the artifactType of a blob's own manifest, tagged
	// BlobTag(content digest): how any host finds a blob by what it holds,
	// whatever the bytes its uploader's compressor made.
	ArtifactBlob = "application/vnd.imgcache.blob.v1"
	// MediaBlob is a stored blob: one zstd stream of content whose sha256
	// (uncompressed) is the AnnContent annotation.
	MediaBlob = "application/vnd.imgcache.blob.v1+zstd"

	// AnnContent is a blob's uncompressed sha256, AnnContentSize its size.
	AnnContent     = "org.imgcache.content.digest"
	AnnContentSize = "org.imgcache.content.size"
	// AnnName is the cache name a name manifest is tagged with; a digest
	// manifest (EntryTag) has none, so that deleting a name's manifest
	// never deletes the digest's.
	AnnName = "org.imgcache.name"
	// AnnEntry is the entry's digest (the sha256 of its whole tar), AnnSize
	// the tar's size: what `ls --remote` shows without the record.
	AnnEntry = "org.imgcache.entry.digest"
	AnnSize  = "org.imgcache.entry.size"
)

// Tags other than names start with '_', which no cache name does.
const (
	entryTagPrefix = "_entry_sha256_"
	blobTagPrefix  = "_blob_sha256_"
)

// EntryTag is the tag of the entry whose tar has digest d, whatever its name.
func EntryTag(d digest.Digest) string { return entryTagPrefix + d.Encoded() }

// BlobTag is the tag of the manifest of the blob holding content u.
func BlobTag(u digest.Digest) string { return blobTagPrefix + u.Encoded() }

// IsNameTag reports whether tag is a cache name's (not a digest's or a blob's).
func IsNameTag(tag string) bool { return !strings.HasPrefix(tag, "_") }

// Record is the config blob of an entry manifest: the entry as the pushing
// host recorded it, less what is only local (stored sizes, times of use,
// pins).
type Record struct {
	Version int            `json:"version"`
	Entry   manifest.Entry `json:"entry"`
}

// newRecord is e as pushed.
func newRecord(e manifest.Entry) Record {
	e.StoredSize = 0
	e.LastUsed = e.Added
	e.Pinned = false
	if e.Skeleton != nil {
		s := *e.Skeleton
		s.StoredSize = 0
		e.Skeleton = &s
	}
	pieces := make([]manifest.Blob, len(e.Pieces))
	for i, p := range e.Pieces {
		p.StoredSize = 0
		pieces[i] = p
	}
	if len(pieces) > 0 {
		e.Pieces = pieces
	}
	return Record{Version: FormatVersion, Entry: e}
}

var versioned = regexp.MustCompile(`^application/vnd\.imgcache\.[a-z]+\.v([0-9]+)`)

// checkMediaType accepts got if it is want; a newer version of imgcache's
// format is ErrNewerSchema, anything else not imgcache's.
func checkMediaType(got, want, what string) error {
	if got == want {
		return nil
	}
	if m := versioned.FindStringSubmatch(got); m != nil {
		if v, err := strconv.Atoi(m[1]); err == nil && v > FormatVersion {
			return fmt.Errorf("%w: %s has media type %s, format v%d, written by a newer imgcache (this one reads v%d): upgrade imgcache", errdefs.ErrNewerSchema, what, got, v, FormatVersion)
		}
	}
	return fmt.Errorf("%w: %s has media type %q, not imgcache's %q (is this repository an imgcache remote?)", errdefs.ErrInvalid, what, got, want)
}

// parseManifest decodes an OCI manifest of artifact type want.
func parseManifest(b []byte, want, what string) (*ocispec.Manifest, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s is not JSON: %w", errdefs.ErrInvalid, what, err)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("%w: %s has media type %q, not an OCI image manifest (is this repository an imgcache remote?)", errdefs.ErrInvalid, what, m.MediaType)
	}
	if err := checkMediaType(m.ArtifactType, want, what); err != nil {
		return nil, err
	}
	for i, l := range m.Layers {
		if err := checkMediaType(l.MediaType, MediaBlob, fmt.Sprintf("%s, layer %d", what, i)); err != nil {
			return nil, err
		}
		if _, err := contentOf(l); err != nil {
			return nil, fmt.Errorf("%s, layer %d: %w", what, i, err)
		}
	}
	return &m, nil
}

// contentOf is the uncompressed digest a blob descriptor announces.
func contentOf(l ocispec.Descriptor) (digest.Digest, error) {
	d := digest.Digest(l.Annotations[AnnContent])
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("%w: blob %s has no valid %s annotation (%q)", errdefs.ErrInvalid, l.Digest, AnnContent, d)
	}
	if err := l.Digest.Validate(); err != nil {
		return "", fmt.Errorf("%w: blob descriptor digest %q: %v", errdefs.ErrInvalid, l.Digest, err)
	}
	return d, nil
}

// ContentOf is the uncompressed digest a blob descriptor of an entry
// manifest announces ("" if none).
func ContentOf(l ocispec.Descriptor) digest.Digest {
	d, _ := contentOf(l)
	return d
}

// parseRecord decodes and checks an entry's record.
func parseRecord(b []byte, what string) (manifest.Entry, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return manifest.Entry{}, fmt.Errorf("%w: %s: the entry record is not JSON: %w", errdefs.ErrInvalid, what, err)
	}
	if r.Version > FormatVersion {
		return manifest.Entry{}, fmt.Errorf("%w: %s: record version %d, written by a newer imgcache (this one reads %d): upgrade imgcache", errdefs.ErrNewerSchema, what, r.Version, FormatVersion)
	}
	if r.Version != FormatVersion {
		return manifest.Entry{}, fmt.Errorf("%w: %s: record version %d", errdefs.ErrInvalid, what, r.Version)
	}
	if err := r.Entry.Digest.Validate(); err != nil {
		return manifest.Entry{}, fmt.Errorf("%w: %s: entry digest %q: %v", errdefs.ErrInvalid, what, r.Entry.Digest, err)
	}
	return r.Entry, nil
}
