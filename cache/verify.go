package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
	"github.com/imgcache/imgcache/skeleton"
)

// ProblemKind names what Verify found. The strings are part of the CLI's
// output (text and JSON).
type ProblemKind string

// Problem kinds reported by Verify.
const (
	ProblemManifest     ProblemKind = "manifest-corrupt"
	ProblemBadName      ProblemKind = "bad-name"
	ProblemMissingBlob  ProblemKind = "missing-blob"
	ProblemQuarantined  ProblemKind = "quarantined"
	ProblemMismatch     ProblemKind = "digest-mismatch"
	ProblemSize         ProblemKind = "size-mismatch"
	ProblemLink         ProblemKind = "stale-link"
	ProblemStrayLink    ProblemKind = "stray-link"
	ProblemStrayFile    ProblemKind = "stray-file"
	ProblemUnreferenced ProblemKind = "unreferenced-blob"
)

// Integrity reports whether the kind means damaged content or metadata
// (exit 4) rather than a problem of another sort (exit 9).
func (k ProblemKind) Integrity() bool {
	switch k {
	case ProblemMismatch, ProblemManifest, ProblemQuarantined, ProblemSize:
		return true
	}
	return false
}

// Problem is one finding. Fixed findings (links re-derived, entries dropped
// by --repair) are reported but do not make the cache unhealthy; neither do
// unreferenced blobs, which gc reclaims.
type Problem struct {
	Kind   ProblemKind `json:"kind"`
	Name   string      `json:"name,omitempty"`
	Digest string      `json:"digest,omitempty"`
	Path   string      `json:"path,omitempty"`
	Detail string      `json:"detail"`
	Fixed  bool        `json:"fixed"`
}

// Failure reports whether p makes the cache unhealthy: not fixed, and not a
// mere note (an unreferenced blob).
func (p Problem) Failure() bool { return !p.Fixed && p.Kind != ProblemUnreferenced }

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Entries  int       `json:"entries"`
	Blobs    int       `json:"blobs_hashed"`
	Bytes    int64     `json:"bytes_hashed"`
	Problems []Problem `json:"problems"`
}

// OK reports whether nothing unfixed and harmful was found.
func (r *VerifyReport) OK() bool { return r.Failures() == 0 }

// Failures counts the unfixed problems.
func (r *VerifyReport) Failures() int {
	n := 0
	for _, p := range r.Problems {
		if p.Failure() {
			n++
		}
	}
	return n
}

// Err is the report's verdict: nil when OK, an error wrapping
// errdefs.ErrIntegrity when content or metadata is damaged, else one
// wrapping errdefs.ErrProblems.
func (r *VerifyReport) Err() error {
	n := r.Failures()
	if n == 0 {
		return nil
	}
	for _, p := range r.Problems {
		if p.Failure() && p.Kind.Integrity() {
			return fmt.Errorf("verify: %d problems: damaged content or metadata found: %w", n, errdefs.ErrIntegrity)
		}
	}
	return fmt.Errorf("verify: %d problems: %w", n, errdefs.ErrProblems)
}

func (r *VerifyReport) add(p Problem) { r.Problems = append(r.Problems, p) }

// finding is a problem with one entry seen while hashing, before it is
// confirmed against the manifest as it is once hashing is done.
type finding struct {
	Problem
	digest      digest.Digest // the entry's
	blob        blobRef       // the blob found wrong
	quarantined bool          // the bad blob was moved to quarantine/ by this verify
	drop        bool          // with repair, the entry goes
}

// Verify re-hashes the blobs of the named entries (all when names is empty)
// and checks that manifest, blobs and links agree. Blobs that fail are
// quarantined. Links are a derived view and are re-derived on the spot. With
// repair, a corrupt manifest is rebuilt from links and blobs, and entries
// whose blob is gone or bad are dropped. Verifying is not a use.
//
// Hashing takes long and runs on a snapshot; every finding about an entry
// then counts only if the manifest, read under its lock once hashing is
// done, still holds that entry with that digest (a put, rm or gc that
// landed meanwhile is not a problem), and repair acts in that same locked
// update.
func (c *Cache) Verify(ctx context.Context, names []naming.Name, repair bool) (*VerifyReport, error) {
	rep := &VerifyReport{Problems: []Problem{}}
	m, err := c.snapshot(ctx, repair, rep)
	if err != nil || m == nil {
		return rep, err
	}
	selected, err := selectEntries(m, names)
	if err != nil {
		return rep, err
	}
	rep.Entries = len(selected)
	if c.hooks.verifySnapshot != nil {
		c.hooks.verifySnapshot()
	}
	found, err := c.hashEntries(ctx, selected, repair, rep)
	if err != nil {
		return rep, err
	}
	return rep, c.commitVerify(ctx, found, selected, len(names) == 0, rep)
}

// snapshot reads the manifest; a corrupt one is reported (nil manifest) or,
// with repair, rebuilt.
func (c *Cache) snapshot(ctx context.Context, repair bool, rep *VerifyReport) (*manifest.Manifest, error) {
	m, err := c.load(ctx)
	if !errors.Is(err, errdefs.ErrCorrupt) {
		return m, err
	}
	if !repair {
		rep.add(Problem{Kind: ProblemManifest, Path: c.man.Path(), Detail: err.Error()})
		return nil, nil
	}
	return c.repairManifest(ctx, rep)
}

// selectEntries is the named entries (all when names is empty), sorted.
func selectEntries(m *manifest.Manifest, names []naming.Name) ([]*manifest.Entry, error) {
	var selected []*manifest.Entry
	if len(names) == 0 {
		for _, name := range m.Names() {
			selected = append(selected, m.Entries[name])
		}
		return selected, nil
	}
	for _, n := range names {
		e, ok := m.Entries[n.String()]
		if !ok {
			return nil, notFound(n, m.Names())
		}
		selected = append(selected, e)
	}
	return selected, nil
}

// blobRef is one blob an entry uses: in which store, and the size the
// manifest records for it.
type blobRef struct {
	store Blobs
	d     digest.Digest
	size  int64
}

// entryBlobs are the blobs of e: its whole tar, or its skeleton and pieces.
func (c *Cache) entryBlobs(e *manifest.Entry) []blobRef {
	if !e.Split() {
		return []blobRef{{c.blobs, e.Digest, e.Size}}
	}
	refs := []blobRef{{c.layers, e.Skeleton.Digest, e.Skeleton.Size}}
	for _, p := range e.Pieces {
		refs = append(refs, blobRef{c.layers, p.Digest, p.Size})
	}
	return refs
}

// verdict is what hashing one blob found.
type verdict struct {
	size        int64
	err         error
	quarantined bool
}

// hashEntries hashes each distinct blob of the selected entries once and
// returns what it found wrong with each entry, still to be confirmed. A
// split entry whose blobs are all sound must also be described by its
// skeleton: the tar's digest and size, and no piece it does not list.
func (c *Cache) hashEntries(ctx context.Context, selected []*manifest.Entry, repair bool, rep *VerifyReport) ([]finding, error) {
	verdicts := map[string]verdict{}
	var found []finding
	for _, e := range selected {
		about := Problem{Name: e.Name, Digest: e.Digest.String()}
		if _, err := naming.Parse(e.Name); err != nil {
			about.Kind, about.Detail = ProblemBadName, err.Error()
			found = append(found, finding{Problem: about, digest: e.Digest})
			continue
		}
		if e.Split() && c.layers == nil {
			about.Kind, about.Detail, about.Path = ProblemMissingBlob, "split entry, but the cache has no layer store", filepath.Join(c.dir, layerDir)
			found = append(found, finding{Problem: about, digest: e.Digest, drop: repair})
			continue
		}
		f, bad, err := c.hashEntry(ctx, e, about, verdicts, rep)
		if err != nil {
			return nil, err
		}
		if bad {
			f.drop = f.drop && repair
			found = append(found, f)
		}
	}
	return found, nil
}

// hashEntry hashes e's blobs not hashed yet and returns the first problem.
func (c *Cache) hashEntry(ctx context.Context, e *manifest.Entry, about Problem, verdicts map[string]verdict, rep *VerifyReport) (finding, bool, error) {
	for _, b := range c.entryBlobs(e) {
		key := c.blobKey(b.store, b.d)
		v, done := verdicts[key]
		if !done {
			size, quarantined, err := c.hashBlob(ctx, b.store, b.d)
			if err != nil && ctx.Err() != nil {
				return finding{}, false, ctx.Err()
			}
			v = verdict{size, err, quarantined}
			verdicts[key] = v
			if err == nil {
				rep.Blobs++
				rep.Bytes += size
			}
		}
		f := finding{Problem: about, digest: e.Digest, blob: b, quarantined: v.quarantined}
		if e.Split() {
			f.Detail = "blob " + b.d.String() + ": "
		}
		switch {
		case v.err == nil && v.size != b.size:
			f.Kind, f.Detail = ProblemSize, f.Detail+fmt.Sprintf("blob holds %d bytes, manifest says %d", v.size, b.size)
		case v.err == nil:
			continue
		case errors.Is(v.err, errdefs.ErrNotFound):
			f.Kind, f.Detail, f.drop = ProblemMissingBlob, f.Detail+"blob is missing", true
		case errors.Is(v.err, errdefs.ErrIntegrity):
			f.Kind, f.Detail, f.drop = ProblemMismatch, f.Detail+v.err.Error(), true
		default:
			return finding{}, false, v.err
		}
		return f, true, nil
	}
	if !e.Split() {
		return finding{}, false, nil
	}
	if err := c.checkSkeleton(e); err != nil {
		f := finding{Problem: about, digest: e.Digest, blob: blobRef{c.layers, e.Skeleton.Digest, e.Skeleton.Size}, drop: true}
		f.Kind, f.Detail = ProblemMismatch, "the skeleton does not reassemble this entry: "+err.Error()
		return f, true, nil
	}
	return finding{}, false, nil
}

// checkSkeleton checks that e's skeleton describes e's tar from e's pieces.
func (c *Cache) checkSkeleton(e *manifest.Entry) error {
	skel, err := c.readSkeleton(*e)
	if err != nil {
		return err
	}
	v, err := skeleton.NewView(skel, nil)
	if err != nil {
		return err
	}
	if end := v.Tar(); end.Digest != e.Digest || end.Size != e.Size {
		return fmt.Errorf("it describes a tar %s of %d bytes, the manifest says %s of %d", end.Digest, end.Size, e.Digest, e.Size)
	}
	pieces := map[digest.Digest]int64{}
	for _, p := range e.Pieces {
		pieces[p.Digest] = p.Size
	}
	for _, r := range v.Refs() {
		if size, ok := pieces[r.Digest]; !ok || size != r.Size {
			return fmt.Errorf("it needs a piece %s of %d bytes the manifest does not list", r.Digest, r.Size)
		}
	}
	return nil
}

// commitVerify confirms the findings against the current manifest, drops
// what repair drops, and re-derives the links, all under the manifest's
// lock: the snapshot is stale once hashing is done, and a put or remove
// that landed meanwhile must neither be undone nor reported.
func (c *Cache) commitVerify(ctx context.Context, found []finding, selected []*manifest.Entry, all bool, rep *VerifyReport) error {
	derive := func(now *manifest.Manifest) {
		c.checkLinks(now, selected, all, rep)
		if all {
			c.checkBlobs(now, rep)
		}
	}
	err := c.updateThen(ctx, func(now *manifest.Manifest) error {
		dropped := false
		for _, f := range found {
			if !c.confirm(now, &f) {
				c.opt.Log.Debug("verify: finding no longer applies; the entry changed while verify ran", "name", f.Name, "kind", string(f.Kind))
				continue
			}
			f.Fixed = f.drop
			rep.add(f.Problem)
			if f.drop {
				delete(now.Entries, f.Name)
				dropped = true
			}
		}
		if !dropped {
			derive(now)
			return errNoWrite
		}
		return nil
	}, derive)
	if errors.Is(err, errNoWrite) {
		return nil
	}
	return err
}

// confirm reports whether a finding still holds for the manifest as it is
// now: the entry still names the digest that was hashed, and a blob found
// missing (or moved to quarantine by this verify) has not been ingested
// again since. A missing blob is reported as quarantined if it is there.
func (c *Cache) confirm(now *manifest.Manifest, f *finding) bool {
	cur := now.Entries[f.Name]
	if cur == nil || cur.Digest != f.digest {
		return false // removed, evicted or re-put meanwhile
	}
	store := f.blob.store
	if store == nil {
		return true
	}
	if f.Kind == ProblemMissingBlob || (f.Kind == ProblemMismatch && f.quarantined) {
		if _, err := store.Stat(f.blob.d); err == nil {
			return false // ingested again (verified on the way) since
		}
	}
	if f.Kind == ProblemMissingBlob {
		if q := store.Quarantined(f.blob.d); q != "" {
			f.Kind, f.Detail = ProblemQuarantined, "blob "+f.blob.d.String()+" failed verification earlier and is in quarantine: "+q
		}
	}
	return true
}

// errNoWrite ends a manifest update without writing.
var errNoWrite = errors.New("manifest unchanged")

// hashBlob re-hashes one blob under its shared lock and quarantines it on a
// mismatch (quarantined: it was moved). It returns the uncompressed size.
func (c *Cache) hashBlob(ctx context.Context, store Blobs, d digest.Digest) (size int64, quarantined bool, err error) {
	lctx, cancel := c.lockCtx(ctx)
	lock, err := store.Lock(lctx, d, false)
	cancel()
	if err != nil {
		return 0, false, err
	}
	r, err := store.Open(d, cas.Parallel())
	if err != nil {
		lock.Release()
		return 0, false, err
	}
	_, err = r.WriteTo(ctxWriter{ctx})
	size = r.Size()
	r.Close()
	lock.Release()
	if !errors.Is(err, errdefs.ErrIntegrity) {
		return size, false, err
	}
	// Quarantine under the exclusive lock, unless someone is using it.
	c.count(func(s *Counters) { s.IntegrityFailures++ })
	if xl, ok, lerr := store.TryLock(d, true); lerr == nil && ok {
		if dst, qerr := store.Quarantine(d); qerr == nil {
			err, quarantined = fmt.Errorf("%w; moved to %s", err, dst), true
		}
		xl.Release()
	}
	return size, quarantined, err
}

// ctxWriter discards, failing once ctx is done (so Ctrl-C stops a long hash).
type ctxWriter struct{ ctx context.Context }

func (w ctxWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// checkLinks re-derives the links of the selected entries (as m has them)
// and, when all entries were selected, removes links no entry accounts for.
func (c *Cache) checkLinks(m *manifest.Manifest, selected []*manifest.Entry, all bool, rep *VerifyReport) {
	for _, sel := range selected {
		if e := m.Entries[sel.Name]; e != nil { // nil: dropped by repair, or removed meanwhile
			c.checkLink(e, rep)
		}
	}
	if all {
		c.removeStrayLinks(m, rep)
	}
}

// checkLink re-derives one entry's link.
func (c *Cache) checkLink(e *manifest.Entry, rep *VerifyReport) {
	n, err := naming.Parse(e.Name)
	if err != nil {
		return
	}
	p := c.linkPath(n)
	cur, err := os.Readlink(p)
	if err == nil && cur == linkTargetOf(e) {
		return
	}
	detail := "link missing"
	if err == nil {
		detail = "link pointed at " + cur
	} else if fi, lerr := os.Lstat(p); lerr == nil && fi.Mode()&os.ModeSymlink == 0 {
		rep.add(Problem{Kind: ProblemStrayFile, Name: e.Name, Path: p, Detail: "not a symlink; left alone (remove it by hand)"})
		return
	}
	ferr := c.setLink(n, linkTargetOf(e))
	rep.add(Problem{Kind: ProblemLink, Name: e.Name, Path: p, Detail: detail + "; re-linked", Fixed: ferr == nil})
}

// removeStrayLinks removes the links under names/ that no entry of m
// accounts for, and reports files there that are no links.
func (c *Cache) removeStrayLinks(m *manifest.Manifest, rep *VerifyReport) {
	dirs, _ := filepath.Glob(filepath.Join(c.dir, "names", "*"))
	for _, d := range dirs {
		if err := checkLinkDir(d); err != nil {
			rep.add(Problem{Kind: ProblemStrayFile, Path: d, Detail: err.Error()})
		}
	}
	links, _ := filepath.Glob(filepath.Join(c.dir, "names", "*", "*"))
	for _, p := range links {
		if checkLinkDir(filepath.Dir(p)) != nil {
			continue // reported above; what it leads to is not ours
		}
		if n, ok := c.linkName(p); ok {
			if _, known := m.Entries[n.String()]; known {
				continue
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			rep.add(Problem{Kind: ProblemStrayFile, Path: p, Detail: "unexpected file under names/; left alone"})
			continue
		}
		err = os.Remove(p)
		rep.add(Problem{Kind: ProblemStrayLink, Path: p, Detail: "link for no entry; removed", Fixed: err == nil})
	}
}

// checkBlobs notes blobs no entry names (gc reclaims them) and stray files.
func (c *Cache) checkBlobs(m *manifest.Manifest, rep *VerifyReport) {
	named := map[string]bool{}
	for _, e := range m.Entries {
		head, parts := entryKeys(e)
		named[head] = true
		for _, k := range parts {
			named[k] = true
		}
	}
	for _, store := range c.stores() {
		where := "blobs/"
		if store == c.layers {
			where = layerDir + "/blobs/"
		}
		_ = store.Walk(func(i cas.Info) error {
			if !named[c.blobKey(store, i.Digest)] {
				rep.add(Problem{Kind: ProblemUnreferenced, Digest: i.Digest.String(), Path: where, Detail: "no entry uses this blob; gc reclaims it"})
			}
			return nil
		}, func(p string) {
			rep.add(Problem{Kind: ProblemStrayFile, Path: p, Detail: "unexpected file under " + where + "; left alone"})
		})
	}
}

// repairManifest replaces a corrupt manifest with one derived from the name
// links and the blobs they point at (manifest.Store.Repair: derived without
// the lock, swapped in under it only if no other process repaired it
// first). Pins and last-use times are not recoverable: last use becomes the
// blob's modification time.
func (c *Cache) repairManifest(ctx context.Context, rep *VerifyReport) (*manifest.Manifest, error) {
	var lost []Problem
	res, err := c.man.Repair(ctx, func(ctx context.Context) (*manifest.Manifest, error) {
		m, notRecovered := c.deriveManifest(ctx)
		lost = notRecovered
		return m, nil
	})
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	if !res.Repaired {
		return res.Manifest, nil // repaired by another process meanwhile
	}
	for _, p := range lost {
		rep.add(p)
	}
	rep.add(Problem{Kind: ProblemManifest, Path: c.man.Path(), Fixed: true,
		Detail: fmt.Sprintf("rebuilt with %d entries from names/ and blobs/; the damaged file is kept as %s; pins were reset", len(res.Manifest.Entries), res.Kept)})
	return res.Manifest, nil
}

// deriveManifest re-derives entries from the links under names/, reading
// each blob (which verifies it); links it could not use are reported.
func (c *Cache) deriveManifest(ctx context.Context) (*manifest.Manifest, []Problem) {
	m := manifest.New()
	if c.layers == nil {
		m.Version = manifest.WholeTarSchema // older binaries share this cache
	}
	var lost []Problem
	links, _ := filepath.Glob(filepath.Join(c.dir, "names", "*", "*.tar.zst"))
	sort.Strings(links)
	for _, p := range links {
		n, ok := c.linkName(p)
		if !ok {
			continue
		}
		target, err := os.Readlink(p)
		if err != nil {
			continue
		}
		d, ok := cas.ParseRelPath(target)
		if !ok || (target != linkTarget(d) && target != layerLinkTarget(d)) {
			continue
		}
		var e *manifest.Entry
		if target == layerLinkTarget(d) {
			e, err = c.entryFromSkeleton(ctx, n, d)
		} else {
			e, err = c.entryFromBlob(ctx, n, d)
		}
		if err != nil {
			lost = append(lost, Problem{Kind: ProblemStrayLink, Name: n.String(), Path: p, Detail: "not recovered: " + err.Error()})
			continue
		}
		m.Entries[n.String()] = e
	}
	return m, lost
}

// entryFromBlob re-derives an entry by streaming its blob through the archive
// parser (verifying the digest on the way).
func (c *Cache) entryFromBlob(ctx context.Context, n naming.Name, d digest.Digest) (*manifest.Entry, error) {
	lctx, cancel := c.lockCtx(ctx)
	lock, err := c.blobs.Lock(lctx, d, false)
	cancel()
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	st, err := c.blobs.Stat(d)
	if err != nil {
		return nil, err
	}
	r, err := c.blobs.Open(d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	info, err := archive.Read(r)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, err
	}
	img := info.Images[0]
	t := st.ModTime.UTC()
	return &manifest.Entry{
		Name: n.String(), Digest: d, Size: r.Size(), StoredSize: st.Stored, Format: string(info.Format),
		ImageID: img.ID.String(), RepoTags: img.RepoTags, OS: img.OS, Arch: img.Architecture, Variant: img.Variant,
		MetadataOffset: info.MetadataOffset, Created: img.Created, Added: t, LastUsed: t,
	}, nil
}

// entryFromSkeleton re-derives a split entry from its skeleton d: the
// archive parser reads the reassembled tar (every piece verified on the
// way) and the skeleton's headers name the pieces.
func (c *Cache) entryFromSkeleton(ctx context.Context, n naming.Name, d digest.Digest) (*manifest.Entry, error) {
	if c.layers == nil {
		return nil, fmt.Errorf("the link leads into %s/, which this cache lacks", layerDir)
	}
	lock, err := c.headLock(ctx, manifest.Entry{Name: n.String(), Skeleton: &manifest.Blob{Digest: d}}, false)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	st, err := c.layers.Stat(d)
	if err != nil {
		return nil, err
	}
	r, err := c.layers.Open(d)
	if err != nil {
		return nil, err
	}
	skel, err := io.ReadAll(io.LimitReader(r, skeleton.MaxViewLiterals+(1<<20)))
	r.Close()
	if err != nil {
		return nil, err
	}
	named, err := skeleton.Named(skel)
	if err != nil {
		return nil, err
	}
	e := &manifest.Entry{Name: n.String(), Skeleton: &manifest.Blob{Digest: d, Size: int64(len(skel)), StoredSize: st.Stored}}
	unlock, err := c.lockPieces(ctx, manifest.Entry{Pieces: piecesOf(named)})
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := skeleton.NewView(skel, func(d digest.Digest) (io.ReadCloser, error) { return c.layers.Open(d) })
	if err != nil {
		return nil, err
	}
	defer v.Close()
	info, err := archive.Read(v)
	if err == nil {
		_, err = io.Copy(io.Discard, v)
	}
	if err != nil {
		return nil, err
	}
	e.StoredSize = st.Stored
	for _, p := range piecesOf(named) {
		pst, err := c.layers.Stat(p.Digest)
		if err != nil {
			return nil, err
		}
		p.StoredSize = pst.Stored
		e.Pieces = append(e.Pieces, p)
		e.StoredSize += pst.Stored
	}
	img := info.Images[0]
	t := st.ModTime.UTC()
	end := v.Tar()
	e.Digest, e.Size, e.Format = end.Digest, end.Size, string(info.Format)
	e.ImageID, e.RepoTags, e.OS, e.Arch, e.Variant = img.ID.String(), img.RepoTags, img.OS, img.Architecture, img.Variant
	e.MetadataOffset, e.Created, e.Added, e.LastUsed = info.MetadataOffset, img.Created, t, t
	e.Layers = layersOf(info, named)
	return e, nil
}

// piecesOf lists the distinct payloads of refs, in order of first use.
func piecesOf(refs []skeleton.Ref) []manifest.Blob {
	seen := map[digest.Digest]bool{}
	var out []manifest.Blob
	for _, r := range refs {
		if !seen[r.Digest] {
			seen[r.Digest] = true
			out = append(out, manifest.Blob{Digest: r.Digest, Size: r.Size})
		}
	}
	return out
}

// linkName is the name a path under names/<project>/ stands for, if it is
// well-formed and in its project's directory (a real one, not a symlink).
func (c *Cache) linkName(p string) (naming.Name, bool) {
	name, ok := strings.CutSuffix(filepath.Base(p), ".tar.zst")
	if !ok {
		return naming.Name{}, false
	}
	n, err := naming.Parse(name)
	if err != nil || filepath.Base(filepath.Dir(p)) != n.Project() || checkLinkDir(filepath.Dir(p)) != nil {
		return naming.Name{}, false
	}
	return n, true
}
