package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/internal/lockfile"
)

// SchemaVersion is the newest manifest schema this code reads and writes:
// version 2 adds split entries (a skeleton and layer blobs). A version-1
// manifest (the whole-tar cache of earlier releases) is read and written
// as version 1, so that older binaries sharing the cache keep working,
// until `imgcache migrate` converts it; version 1 holds no split entries.
const SchemaVersion = 2

// WholeTarSchema is the schema of caches that store whole tars only.
const WholeTarSchema = 1

// ErrNewerSchema: the manifest was written by a newer imgcache. Repair must
// not overwrite it; upgrading imgcache is the fix. It is errdefs.ErrNewerSchema
// (exit 10), not a corruption.
var ErrNewerSchema = errdefs.ErrNewerSchema

// MaxFileSize bounds manifest.json; a larger file is refused as corrupt.
const MaxFileSize = 256 << 20

// Entry is what the cache knows about one name.
type Entry struct {
	Name       string        `json:"name"`
	Digest     digest.Digest `json:"digest"`      // sha256 of the uncompressed tar
	Size       int64         `json:"size"`        // uncompressed tar bytes
	StoredSize int64         `json:"stored_size"` // compressed bytes on disk
	Format     string        `json:"format"`
	ImageID    string        `json:"image_id"`
	RepoTags   []string      `json:"repo_tags,omitempty"`
	OS         string        `json:"os"`
	Arch       string        `json:"arch"`
	Variant    string        `json:"arch_variant"`
	// MetadataOffset is where, in the tar, its manifest.json/index.json
	// starts: a verified load holds back every byte from there until the
	// digest has matched.
	MetadataOffset int64     `json:"metadata_offset"`
	Created        time.Time `json:"created,omitzero"` // the image's creation time
	Added          time.Time `json:"added"`            // when this content was stored under this name
	LastUsed       time.Time `json:"last_used"`
	Pinned         bool      `json:"pinned"`
	Base           *Base     `json:"base"`
	Recipe         *Recipe   `json:"recipe"`

	// Skeleton is set for a split entry (schema 2): the tar is stored as
	// this skeleton plus the blobs in Pieces, all in the layer store, and
	// reassembled byte for byte. Nil: the tar is one whole blob, Digest.
	Skeleton *Blob `json:"skeleton,omitempty"`
	// Pieces are the payload blobs the skeleton references, each once, in
	// the order of their first reference.
	Pieces []Blob `json:"pieces,omitempty"`
	// Layers are the layers of the archive's image, bottom first, each
	// with the piece that holds it; empty unless every layer of the
	// archive's only image is one of Pieces (what a partial load needs).
	Layers []Layer `json:"layers,omitempty"`
	// Whole says why an entry of a schema-2 cache is stored whole ("" when
	// it is split, or in a schema-1 cache).
	Whole string `json:"whole,omitempty"`
}

// Blob is one stored piece of a split entry, by the sha256 of its bytes as
// the archive holds them.
type Blob struct {
	Digest     digest.Digest `json:"digest"`
	Size       int64         `json:"size"`        // bytes in the archive
	StoredSize int64         `json:"stored_size"` // compressed bytes on disk
}

// Layer is one image layer of a split entry.
type Layer struct {
	Digest    digest.Digest `json:"digest"`  // the piece holding the layer file
	Size      int64         `json:"size"`    // the layer file's bytes
	DiffID    digest.Digest `json:"diff_id"` // the config's diff_id (== Digest for an uncompressed layer)
	MediaType string        `json:"media_type"`
	Path      string        `json:"path"` // the layer file in the archive
}

// Split reports whether the entry is stored as a skeleton and pieces.
func (e *Entry) Split() bool { return e.Skeleton != nil }

// LayerBlobs are the digests of every blob of the layer store a split
// entry uses: its skeleton, then its pieces.
func (e *Entry) LayerBlobs() []digest.Digest {
	if e.Skeleton == nil {
		return nil
	}
	ds := make([]digest.Digest, 0, 1+len(e.Pieces))
	ds = append(ds, e.Skeleton.Digest)
	for _, p := range e.Pieces {
		ds = append(ds, p.Digest)
	}
	return ds
}

// Base records what a derived image was built from.
type Base struct {
	Name   string        `json:"name"`
	Digest digest.Digest `json:"digest"`
}

// Recipe is how to rebuild a derived image.
type Recipe struct {
	Dockerfile string            `json:"dockerfile"`
	Context    string            `json:"context"`
	BuildArgs  map[string]string `json:"build_args,omitempty"`
}

// Manifest is the whole file.
type Manifest struct {
	Version int               `json:"version"`
	Entries map[string]*Entry `json:"entries"`

	// holds are the hold log's lines and retired the retired log's, read
	// with the manifest (holds.go); retiring are the retired log's lines
	// this write adds. None is part of manifest.json.
	holds, retired, retiring []Use
}

// New returns an empty manifest of the current schema.
func New() *Manifest {
	return &Manifest{Version: SchemaVersion, Entries: map[string]*Entry{}}
}

// Names returns the entry names, sorted.
func (m *Manifest) Names() []string {
	names := make([]string, 0, len(m.Entries))
	for n := range m.Entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Referenced reports whether any whole-tar entry points at blob d.
func (m *Manifest) Referenced(d digest.Digest) bool {
	for _, e := range m.Entries {
		if !e.Split() && e.Digest == d {
			return true
		}
	}
	return false
}

// ReferencedLayer reports whether any split entry uses blob d of the layer
// store (as its skeleton or a piece).
func (m *Manifest) ReferencedLayer(d digest.Digest) bool {
	for _, e := range m.Entries {
		if e.Split() && slices.Contains(e.LayerBlobs(), d) {
			return true
		}
	}
	return false
}

// HasSplit reports whether any entry is split.
func (m *Manifest) HasSplit() bool {
	for _, e := range m.Entries {
		if e.Split() {
			return true
		}
	}
	return false
}

// Layered reports whether the manifest's schema has split entries.
func (m *Manifest) Layered() bool { return m.Version >= SchemaVersion }

// Decode parses a manifest strictly: unknown fields, trailing data, an
// unknown schema version or an inconsistent entry are errors wrapping
// errdefs.ErrCorrupt.
func Decode(r io.Reader) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", errdefs.ErrCorrupt, err)
	}
	return decode(data)
}

// decode is Decode of bytes in hand. One strict pass; only when it fails, or
// finds another schema version, does a lenient probe of the version explain
// why (a newer imgcache's manifest may well have fields this one rejects).
func decode(data []byte) (*Manifest, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", errdefs.ErrCorrupt, MaxFileSize)
	}
	m := &Manifest{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(m)
	if err == nil && len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) > 0 {
		err = errors.New("trailing data after the manifest")
	}
	if err != nil || (m.Version != SchemaVersion && m.Version != WholeTarSchema) {
		return nil, explain(data, err)
	}
	if m.Entries == nil {
		m.Entries = map[string]*Entry{}
	}
	for name, e := range m.Entries {
		if err := checkEntry(name, e); err != nil {
			return nil, err
		}
		if e.Split() && !m.Layered() {
			return nil, fmt.Errorf("%w: entry %q is split, which schema version %d cannot hold", errdefs.ErrCorrupt, name, m.Version)
		}
	}
	return m, nil
}

// checkEntry checks one decoded entry and brings it to canonical form.
func checkEntry(name string, e *Entry) error {
	if e == nil {
		return fmt.Errorf("%w: entry %q is null", errdefs.ErrCorrupt, name)
	}
	if e.Name != name {
		return fmt.Errorf("%w: entry %q carries name %q", errdefs.ErrCorrupt, name, e.Name)
	}
	if err := e.Digest.Validate(); err != nil || e.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%w: entry %q has bad digest %q", errdefs.ErrCorrupt, name, e.Digest)
	}
	if e.Size < 0 || e.StoredSize < 0 || e.MetadataOffset < 0 || e.MetadataOffset > e.Size {
		return fmt.Errorf("%w: entry %q has impossible sizes", errdefs.ErrCorrupt, name)
	}
	if e.Base != nil {
		if err := e.Base.Digest.Validate(); err != nil {
			return fmt.Errorf("%w: entry %q has bad base digest %q", errdefs.ErrCorrupt, name, e.Base.Digest)
		}
	}
	if err := checkSplit(name, e); err != nil {
		return err
	}
	// Canonical form: what Encode omits decodes as its zero value, so
	// Decode(Encode(m)) equals m.
	if len(e.RepoTags) == 0 {
		e.RepoTags = nil
	}
	if e.Created.IsZero() {
		e.Created = time.Time{}
	}
	if e.Recipe != nil && len(e.Recipe.BuildArgs) == 0 {
		e.Recipe.BuildArgs = nil
	}
	if len(e.Pieces) == 0 {
		e.Pieces = nil
	}
	if len(e.Layers) == 0 {
		e.Layers = nil
	}
	return nil
}

// checkSplit checks a split entry's blobs: valid sha256 digests, sizes that
// add up to no more than the tar, pieces listed once, every layer held by
// a piece of its size. A whole entry must have no pieces or layers.
func checkSplit(name string, e *Entry) error {
	bad := func(what string, args ...any) error {
		return fmt.Errorf("%w: entry %q: %s", errdefs.ErrCorrupt, name, fmt.Sprintf(what, args...))
	}
	if e.Skeleton == nil {
		if len(e.Pieces) > 0 || len(e.Layers) > 0 {
			return bad("has pieces or layers but no skeleton")
		}
		return nil
	}
	if e.Whole != "" {
		return bad("is split and says it is stored whole")
	}
	sizes := map[digest.Digest]int64{}
	total := int64(0)
	for _, b := range append([]Blob{*e.Skeleton}, e.Pieces...) {
		if err := b.Digest.Validate(); err != nil || b.Digest.Algorithm() != digest.SHA256 {
			return bad("has bad blob digest %q", b.Digest)
		}
		if b.Size < 0 || b.StoredSize < 0 {
			return bad("has impossible blob sizes")
		}
		if _, dup := sizes[b.Digest]; dup {
			return bad("lists blob %s twice", b.Digest)
		}
		sizes[b.Digest] = b.Size
		total += b.Size
	}
	if total-e.Skeleton.Size > e.Size {
		return bad("its pieces hold more bytes than the tar")
	}
	for i, l := range e.Layers {
		if size, ok := sizes[l.Digest]; !ok || l.Digest == e.Skeleton.Digest || size != l.Size {
			return bad("layer %d is not one of its pieces", i)
		}
		if err := l.DiffID.Validate(); err != nil {
			return bad("layer %d has bad diff_id %q", i, l.DiffID)
		}
	}
	return nil
}

// lookup finds one entry in manifest bytes. For the manifests Encode
// writes, it decodes only that entry (strictly); the others need only be
// well-formed JSON. Anything else is decoded whole, strictly.
func lookup(data []byte, name string) (*Entry, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", errdefs.ErrCorrupt, MaxFileSize)
	}
	raw, found, ok := findEntry(data, name)
	if !ok {
		m, err := decode(data)
		if err != nil {
			return nil, err
		}
		return m.Entries[name], nil
	}
	if !found {
		return nil, nil
	}
	var e *Entry
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: entry %q: %w", errdefs.ErrCorrupt, name, err)
	}
	if err := checkEntry(name, e); err != nil {
		return nil, err
	}
	return e, nil
}

// explain says why data is not a manifest of this schema: its version first
// (so a newer manifest is reported as such, whatever else it holds), then
// the strict decoder's complaint.
func explain(data []byte, strict error) error {
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return fmt.Errorf("%w: not valid JSON: %w", errdefs.ErrCorrupt, err)
	}
	if probe.Version == nil {
		return fmt.Errorf("%w: no schema version", errdefs.ErrCorrupt)
	}
	if *probe.Version > SchemaVersion {
		return fmt.Errorf("%w: schema version %d, this imgcache reads version %d: upgrade imgcache (this one must not change it)", ErrNewerSchema, *probe.Version, SchemaVersion)
	}
	if *probe.Version != SchemaVersion {
		return fmt.Errorf("%w: schema version %d, this imgcache reads version %d (upgrade imgcache, or rebuild with verify --repair)", errdefs.ErrCorrupt, *probe.Version, SchemaVersion)
	}
	if strict == nil { // the two passes disagree on the version: say so
		strict = errors.New("ambiguous schema version")
	}
	return fmt.Errorf("%w: %w", errdefs.ErrCorrupt, strict)
}

// Encode writes m as indented JSON.
func Encode(w io.Writer, m *Manifest) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

// Store is the manifest file of one cache directory and its lock.
type Store struct {
	dir string
}

// Open returns the store for the cache directory dir (which must exist).
func Open(dir string) *Store { return &Store{dir: dir} }

// Path is manifest.json's path.
func (s *Store) Path() string     { return filepath.Join(s.dir, "manifest.json") }
func (s *Store) lockPath() string { return filepath.Join(s.dir, "lock") }

// Load reads the manifest under the shared lock. A missing file is an empty
// manifest.
func (s *Store) Load(ctx context.Context) (*Manifest, error) {
	l, err := lockfile.Acquire(ctx, s.lockPath(), false)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer l.Release()
	return s.read()
}

// Lookup returns name's entry, read under the shared lock with the use log
// applied, and false if there is none. It decodes only that entry (Load
// decodes them all), so its cost stays small in a cache of thousands.
func (s *Store) Lookup(ctx context.Context, name string) (Entry, bool, error) {
	l, err := lockfile.Acquire(ctx, s.lockPath(), false)
	if err != nil {
		return Entry{}, false, fmt.Errorf("manifest: %w", err)
	}
	defer l.Release()
	f, err := os.Open(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("manifest %s: %w", s.Path(), err)
	}
	defer f.Close()
	e, err := lookupFile(f, name)
	if err != nil {
		return Entry{}, false, s.readError(err)
	}
	if e == nil {
		return Entry{}, false, nil
	}
	uses, err := s.readUses(name)
	if err != nil {
		return Entry{}, false, err
	}
	m := &Manifest{Version: SchemaVersion, Entries: map[string]*Entry{name: e}}
	m.Apply(uses)
	return *e, true, nil
}

// Update runs fn on the current manifest under the exclusive lock and, when
// fn returns nil, writes the result atomically and durably. When fn returns
// an error nothing is written and that error is returned. fn must be quick.
func (s *Store) Update(ctx context.Context, fn func(*Manifest) error) error {
	return s.UpdateThen(ctx, fn, nil)
}

// UpdateThen is Update, and once the new manifest is written, runs then
// while still holding the lock, so that state derived from the manifest (the
// name links) changes in the same order as the manifest itself.
func (s *Store) UpdateThen(ctx context.Context, fn func(*Manifest) error, then func(*Manifest)) error {
	l, err := lockfile.Acquire(ctx, s.lockPath(), true)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	defer l.Release()
	m, err := s.read()
	if err != nil {
		return err
	}
	if err := fn(m); err != nil {
		return err
	}
	if err := s.write(m); err != nil {
		return err
	}
	// Best effort: the manifest is written; a lost line only lets gc
	// --docker remove a superseded image before its min-age.
	_ = s.writeRetired(m)
	if err := s.clearUses(); err != nil {
		return err
	}
	if then != nil {
		then(m)
	}
	return nil
}

// Replace writes m as the manifest under the exclusive lock, whatever the
// current file holds (even if it is corrupt): for tests and tools that
// make a cache (bench). Repair goes through Repair, which never overwrites
// a manifest another process wrote meanwhile.
func (s *Store) Replace(ctx context.Context, m *Manifest) error {
	l, err := lockfile.Acquire(ctx, s.lockPath(), true)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	defer l.Release()
	uses, err := s.readUses("")
	if err != nil {
		return err
	}
	m.Apply(uses)
	if err := s.write(m); err != nil {
		return err
	}
	return s.clearUses()
}

// read is the current manifest with the use log applied; the caller holds the lock.
func (s *Store) read() (*Manifest, error) {
	_, m, err := s.readLocked()
	return m, err
}

func (s *Store) readError(err error) error {
	if errors.Is(err, ErrNewerSchema) {
		return fmt.Errorf("manifest %s: %w", s.Path(), err)
	}
	return fmt.Errorf("manifest %s: %w (run `imgcache verify --repair` to rebuild it from names/ and blobs/)", s.Path(), err)
}

// lookupFile is lookup on f's content, mapped rather than read where it
// can be. Nothing returned refers to the mapping.
func lookupFile(f *os.File, name string) (e *Entry, err error) {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 || fi.Size() > MaxFileSize {
		data, err := readAll(f)
		if err != nil {
			return nil, err
		}
		return lookup(data, name)
	}
	data, unmap, err := fsutil.MapReadOnly(f, int(fi.Size()))
	if err != nil {
		if data, err = readAll(f); err != nil {
			return nil, err
		}
		return lookup(data, name)
	}
	defer unmap()
	// The writers replace manifest.json by rename and never change it in
	// place; should someone truncate it anyway, reading the mapping faults:
	// make that an error, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			// A fault on the mapping panics with an error that has the
			// faulting address (debug.SetPanicOnFault).
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r) // a bug, not a fault: keep its stack
			}
			e, err = nil, fmt.Errorf("%w: %s changed while it was read (%v); try again", errdefs.ErrCorrupt, f.Name(), r)
		}
	}()
	if testHookMapped != nil {
		testHookMapped(f)
	}
	return lookup(data, name)
}

// testHookMapped runs between mapping and reading (tests truncate the file).
var testHookMapped func(*os.File)

// readAll reads f into one buffer sized from its length (growing a buffer
// from nothing costs more than decoding a large manifest).
func readAll(f *os.File) ([]byte, error) {
	size := int64(512)
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = min(fi.Size()+512, MaxFileSize+1)
	}
	var buf bytes.Buffer
	buf.Grow(int(size))
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxFileSize+1)); err != nil {
		return nil, fmt.Errorf("%w: read: %w", errdefs.ErrCorrupt, err)
	}
	return buf.Bytes(), nil
}

func (s *Store) write(m *Manifest) error {
	if m.Version != WholeTarSchema || m.HasSplit() {
		m.Version = SchemaVersion // ours, unless a schema-1 cache stays one
	}
	// Only ever written under the exclusive lock, so a fixed temp name is
	// safe; a crash leaves at most that file, which the next write truncates.
	if err := fsutil.WriteAtomic(s.Path(), s.Path()+".tmp", func(w io.Writer) error { return Encode(w, m) }); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

// Create writes an empty manifest of the current schema if there is none,
// under the exclusive lock, and reports whether the manifest is now of the
// current schema (false: another imgcache made it first, of an older one).
// A new cache calls it before creating anything else, so that a cache with
// a layer store never lacks the manifest that keeps older binaries out.
func (s *Store) Create(ctx context.Context) (bool, error) {
	l, err := lockfile.Acquire(ctx, s.lockPath(), true)
	if err != nil {
		return false, fmt.Errorf("manifest: %w", err)
	}
	defer l.Release()
	if _, err := os.Lstat(s.Path()); errors.Is(err, fs.ErrNotExist) {
		return true, s.write(New())
	}
	_, m, err := s.readLocked()
	if err != nil {
		return false, nil // the cache is not new: not ours to decide
	}
	return m.Layered(), nil
}
