package cache

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/aside"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
	"github.com/imgcache/imgcache/skeleton"
)

// layerDir is the layer store's root under the cache directory: a blob
// store of its own (layers/blobs, layers/tmp, layers/locks,
// layers/quarantine), out of reach of the gc and repair of imgcache
// releases that know only whole tars. It exists only in a cache whose
// manifest is schema 2 (created with it, or by migrate after the manifest
// was converted), so that an older binary never sees its files without
// refusing the cache first.
const layerDir = "layers"

// openLayers opens the layer store if the cache has one.
func openLayers(dir string, level int) (Blobs, error) {
	if _, err := os.Lstat(filepath.Join(dir, layerDir)); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	s, err := cas.Open(filepath.Join(dir, layerDir), cas.WithLevel(level))
	if err != nil {
		return nil, err
	}
	return CASBlobs(s), nil
}

// held is what a put holds until its entry is recorded: the shared locks
// of every blob it uses, and the blobs it published itself (dropped again
// if the put fails).
type held struct {
	locks  []interface{ Release() error }
	fresh  []digest.Digest
	reused int // pieces found stored: hashed, not compressed
}

func (h *held) release() {
	for _, l := range h.locks {
		l.Release()
	}
	h.locks = nil
}

// splitStored is a tar stored as a skeleton and pieces.
type splitStored struct {
	held
	res    *skeleton.Result
	skel   manifest.Blob
	pieces []manifest.Blob
}

// ingestSplit is ingest for a cache with a layer store: the tar is split
// into its payloads (each a blob of the layer store; one already stored
// under the same archive path costs a hash, not a compression) and a
// skeleton, while the archive parser reads the same bytes.
func (c *Cache) ingestSplit(ctx context.Context, n naming.Name, r io.Reader, guesses map[string]digest.Digest, amend func(*manifest.Entry) error) (*PutResult, bool, error) {
	known, err := c.knownLayers(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("put %s: %w", n, err)
	}
	for p, d := range guesses { // the archive's own config outranks a path's past
		known[p] = manifest.Layer{Path: p, Digest: d, Size: -1}
	}
	st, info, err := c.storeSplit(ctx, r, known)
	if errors.Is(err, skeleton.ErrNotSplittable) {
		return nil, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("put %s: %w", n, err)
	}
	defer st.release()
	e := c.newEntry(n, info, st.res.Digest, st.res.Size, st.skel.StoredSize)
	e.Skeleton = &st.skel
	e.Pieces = st.pieces
	for _, p := range st.pieces {
		e.StoredSize += p.StoredSize
	}
	e.Layers = layersOf(info, st.res.Refs)
	if amend != nil {
		if err := amend(&e); err != nil {
			st.release()
			c.dropFresh(ctx, st.fresh)
			return nil, false, fmt.Errorf("put %s: %w", n, err)
		}
	}
	res, err := c.record(ctx, n, e)
	if err != nil {
		st.release()
		c.dropFresh(ctx, st.fresh)
		return nil, false, fmt.Errorf("put %s: %w", n, err)
	}
	dedup := len(st.fresh) == 0
	res.Reused, res.New = st.reused, len(st.fresh)
	c.count(func(s *Counters) { s.Puts++; s.BytesIngested += e.Size })
	return res, dedup, nil
}

// storeSplit streams r through skeleton.Split (payloads and skeleton into
// the layer store) and the archive parser at once. Nothing stays published
// unless both accepted it.
func (c *Cache) storeSplit(ctx context.Context, r io.Reader, known map[string]manifest.Layer) (*splitStored, *archive.Info, error) {
	pr, pw := io.Pipe()
	done := parse(pr)
	st := &splitStored{}
	src := &sourceReader{r: r}
	err := c.split(ctx, io.TeeReader(src, pw), known, st, src)
	var se *storeError
	ours := err != nil && (errors.As(err, &se) || errors.Is(err, errdefs.ErrNoSpace) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errdefs.ErrInvalid))
	if ours {
		pw.CloseWithError(err)
	} else {
		// The tar reader stopped (a truncated or malformed tar, or the
		// source failed): the parser, given what came so far, says what
		// is wrong with the archive, as for a whole-tar put.
		pw.Close()
	}
	p := <-done
	switch {
	case err == nil && p.err != nil:
		err = asInvalid(p.err)
	case err != nil && !ours && p.err != nil:
		err = asInvalid(p.err)
	case err != nil && !ours && !errors.Is(err, skeleton.ErrNotSplittable):
		err = fmt.Errorf("%w: %w", errdefs.ErrInvalid, err) // the parser had no complaint: the tar itself is bad
	}
	if err != nil {
		st.release()
		c.dropFresh(ctx, st.fresh)
		return nil, nil, err
	}
	return st, p.info, nil
}

// storeError marks a failure of the layer store itself (a piece or the
// skeleton could not be written: permissions, I/O), as opposed to the
// input's: the archive is then not to blame.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// sourceReader remembers the input's own read error.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// storeFault is err marked as the layer store's, unless the input caused
// it: the source failed, or the tar ended inside the payload.
func storeFault(err error, src *sourceReader) error {
	if err == nil || src.err != nil || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errdefs.ErrInvalid) {
		return err
	}
	return &storeError{err}
}

// split runs skeleton.Split with the layer store behind it.
func (c *Cache) split(ctx context.Context, r io.Reader, known map[string]manifest.Layer, st *splitStored, src *sourceReader) error {
	skelR, skelW := io.Pipe()
	type ingested struct {
		in  *cas.Ingested
		err error
	}
	skelDone := make(chan ingested, 1)
	go func() {
		in, err := c.layers.Ingest(ctx, skelR, nil)
		skelR.CloseWithError(err)
		skelDone <- ingested{in, err}
	}()
	seen := map[digest.Digest]bool{}
	res, err := skeleton.Split(r, skelW, 0, func(name string, size int64, pr io.Reader) (digest.Digest, error) {
		b, err := c.putPiece(ctx, name, size, pr, known, &st.held)
		if err == nil && !seen[b.Digest] {
			seen[b.Digest] = true
			st.pieces = append(st.pieces, b)
		}
		return b.Digest, storeFault(err, src)
	})
	skelW.CloseWithError(err)
	sk := <-skelDone
	if err != nil {
		if sk.in != nil {
			st.locks = append(st.locks, sk.in)
		}
		if sk.err != nil && errors.Is(err, sk.err) {
			return storeFault(err, src) // the skeleton could not be stored: Split's writes to it failed
		}
		return err
	}
	if sk.err != nil {
		return &storeError{fmt.Errorf("store the skeleton: %w", sk.err)}
	}
	st.locks = append(st.locks, sk.in)
	if !sk.in.Deduplicated {
		st.fresh = append(st.fresh, sk.in.Digest)
	}
	st.res = res
	st.skel = manifest.Blob{Digest: sk.in.Digest, Size: sk.in.Size, StoredSize: sk.in.Stored}
	return nil
}

// putPiece stores one payload. When a layer of the same archive path and
// size is stored already (what `docker save` writes for a shared base
// layer: its path derives from the layer chain), the payload is only hashed
// and must match it; else it is compressed into the layer store (and
// dropped there if it turns out to be stored after all).
func (c *Cache) putPiece(ctx context.Context, name string, size int64, r io.Reader, known map[string]manifest.Layer, h *held) (manifest.Blob, error) {
	clean, _ := archive.CleanName(name)
	want := known[clean].Digest
	if k := known[clean].Size; k != size && k != -1 { // -1: a guess from the archive's own config
		want = ""
	}
	if d, ok := ociBlobDigest(clean); ok {
		want = d
	}
	if want != "" {
		if b, ok, err := c.reusePiece(ctx, name, want, size, r, h); ok || err != nil {
			return b, err
		}
	}
	in, err := c.layers.Ingest(ctx, r, nil)
	if err != nil {
		return manifest.Blob{}, err // skeleton.Split names the piece
	}
	h.locks = append(h.locks, in)
	if !in.Deduplicated {
		h.fresh = append(h.fresh, in.Digest)
	}
	return manifest.Blob{Digest: in.Digest, Size: in.Size, StoredSize: in.Stored}, nil
}

// reusePiece hashes r against the stored blob d, holding d's shared lock.
// ok is false (r untouched) when d is not stored.
func (c *Cache) reusePiece(ctx context.Context, name string, d digest.Digest, size int64, r io.Reader, h *held) (manifest.Blob, bool, error) {
	lctx, cancel := c.lockCtx(ctx)
	lock, err := c.layers.Lock(lctx, d, false)
	cancel()
	if err != nil {
		return manifest.Blob{}, false, err
	}
	info, err := c.layers.Stat(d)
	if err != nil {
		lock.Release()
		return manifest.Blob{}, false, nil
	}
	h.reused++
	got, n, err := aside.Reader(r) // the reader hashes the whole tar: two cores
	if err != nil {
		lock.Release()
		return manifest.Blob{}, true, fmt.Errorf("%s: %w", name, err)
	}
	if got != d || n != size {
		lock.Release()
		return manifest.Blob{}, true, fmt.Errorf("%w: %s has sha256 %s, where its archive path and size say it is the stored layer %s (an archive that names content wrongly); nothing was stored", errdefs.ErrInvalid, name, got, d)
	}
	h.locks = append(h.locks, lock)
	return manifest.Blob{Digest: d, Size: size, StoredSize: info.Stored}, true, nil
}

// ociBlobDigest is the digest an OCI layout's blob path names.
func ociBlobDigest(name string) (digest.Digest, bool) {
	hex, ok := strings.CutPrefix(name, "blobs/sha256/")
	d := digest.NewDigestFromEncoded(digest.SHA256, hex)
	if !ok || d.Validate() != nil {
		return "", false
	}
	return d, true
}

// knownLayers maps the archive paths of the layers split entries hold to
// those layers.
func (c *Cache) knownLayers(ctx context.Context) (map[string]manifest.Layer, error) {
	m, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	known := map[string]manifest.Layer{}
	for _, e := range m.Entries {
		for _, l := range e.Layers {
			known[l.Path] = l
		}
	}
	return known, nil
}

// dropFresh deletes blobs a failed put published, unless another process
// uses them (it holds a lock) or an entry references them.
func (c *Cache) dropFresh(ctx context.Context, fresh []digest.Digest) {
	if len(fresh) == 0 {
		return
	}
	var locks []interface{ Release() error }
	defer func() {
		for _, l := range locks {
			l.Release()
		}
	}()
	var mine []digest.Digest
	for _, d := range fresh {
		if l, ok, err := c.layers.TryLock(d, true); err == nil && ok {
			locks = append(locks, l)
			mine = append(mine, d)
		}
	}
	m, err := c.load(ctx)
	if err != nil {
		return // gc reclaims them
	}
	for _, d := range mine {
		if !m.ReferencedLayer(d) {
			c.layers.DeleteNoSync(d)
		}
	}
	c.layers.Sync()
}

// layersOf pairs the layers of the archive's only image with the payloads
// that hold them: each must be a payload of its own path whose sha256 is
// what the image says (the diff_id for a docker-archive, the descriptor's
// digest for OCI). Nil when any is not, or the archive holds several
// images: such an entry is always loaded whole.
func layersOf(info *archive.Info, refs []skeleton.Ref) []manifest.Layer {
	if len(info.Images) != 1 {
		return nil
	}
	byName := map[string]skeleton.Ref{}
	dup := map[string]bool{}
	for _, r := range refs {
		name, err := archive.CleanName(r.Name)
		if err != nil {
			return nil
		}
		if _, ok := byName[name]; ok {
			dup[name] = true
		}
		byName[name] = r
	}
	var out []manifest.Layer
	for _, l := range info.Images[0].Layers {
		ref, ok := byName[l.Path]
		want := l.Digest
		if want == "" {
			want = l.DiffID
		}
		if !ok || dup[l.Path] || ref.Digest != want {
			return nil
		}
		out = append(out, manifest.Layer{Digest: ref.Digest, Size: ref.Size, DiffID: l.DiffID, MediaType: l.MediaType, Path: l.Path})
	}
	return out
}

// readSkeleton reads a split entry's skeleton, verified, into memory.
func (c *Cache) readSkeleton(e manifest.Entry) ([]byte, error) {
	if e.Skeleton.Size > skeleton.MaxViewLiterals+(1<<20) {
		return nil, fmt.Errorf("%w: skeleton of %d bytes", errdefs.ErrIntegrity, e.Skeleton.Size)
	}
	r, err := c.layers.Open(e.Skeleton.Digest)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != e.Skeleton.Size {
		return nil, fmt.Errorf("%w: skeleton holds %d bytes, manifest says %d", errdefs.ErrIntegrity, len(b), e.Skeleton.Size)
	}
	return b, nil
}

// pieceOpener opens pieces of the layer store for skeleton.Join/View and
// remembers which it opened last: that is the one to blame for a mismatch.
// With fetch set, it opens pieces through fetch instead.
type pieceOpener struct {
	c     *Cache
	last  digest.Digest
	opts  []cas.ReadOption
	fetch skeleton.Open
}

func (o *pieceOpener) open(d digest.Digest) (io.ReadCloser, error) {
	o.last = d
	if o.fetch != nil {
		return o.fetch(d)
	}
	return o.c.layers.Open(d, o.opts...)
}

// layerLinkTarget is the link target of a split entry: its skeleton.
func layerLinkTarget(d digest.Digest) string {
	return filepath.Join("..", "..", layerDir, cas.RelPath(d))
}

// mkLayers creates the layer store of a cache whose manifest is schema 2.
func (c *Cache) mkLayers() error {
	if c.layers != nil {
		return nil
	}
	l, err := cas.Open(filepath.Join(c.dir, layerDir), cas.WithLevel(c.opt.Level))
	if err != nil {
		return err
	}
	c.layers = CASBlobs(l)
	return fsutil.SyncDir(c.dir)
}

// prescan reads a seekable docker-archive's manifest.json and image
// configs, seeking over everything else, and returns each layer file's
// diff_id by path; the input is rewound to where it was. It is a guess for
// putPiece (a layer whose diff_id is stored is only hashed, and must
// match); nil when the input does not seek or holds no such metadata.
func prescan(r io.Reader) map[string]digest.Digest {
	rs, ok := r.(io.ReadSeeker)
	if !ok {
		return nil
	}
	start, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil
	}
	defer rs.Seek(start, io.SeekStart)
	small := map[string][]byte{}
	tr := tar.NewReader(rs)
	for {
		hdr, err := tr.Next()
		if err != nil {
			break // the end, or not a tar: the real pass says which
		}
		name, err := archive.CleanName(hdr.Name)
		if err != nil || strings.Contains(name, "/") || !strings.HasSuffix(name, ".json") || hdr.Size > 1<<20 {
			continue
		}
		if b, err := io.ReadAll(io.LimitReader(tr, 1<<20)); err == nil {
			small[name] = b
		}
	}
	var man []struct {
		Config string
		Layers []string
	}
	if json.Unmarshal(small["manifest.json"], &man) != nil {
		return nil
	}
	paths := map[string]digest.Digest{}
	for _, img := range man {
		var cfg struct {
			RootFS struct {
				DiffIDs []digest.Digest `json:"diff_ids"`
			} `json:"rootfs"`
		}
		cname, _ := archive.CleanName(img.Config)
		if json.Unmarshal(small[cname], &cfg) != nil || len(cfg.RootFS.DiffIDs) != len(img.Layers) {
			continue
		}
		for i, l := range img.Layers {
			if p, err := archive.CleanName(l); err == nil && cfg.RootFS.DiffIDs[i].Validate() == nil {
				paths[p] = cfg.RootFS.DiffIDs[i]
			}
		}
	}
	return paths
}
