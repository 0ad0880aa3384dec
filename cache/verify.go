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
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// Problem kinds reported by Verify.
const (
	ProblemManifest     = "manifest-corrupt"
	ProblemBadName      = "bad-name"
	ProblemMissingBlob  = "missing-blob"
	ProblemQuarantined  = "quarantined"
	ProblemMismatch     = "digest-mismatch"
	ProblemSize         = "size-mismatch"
	ProblemLink         = "stale-link"
	ProblemStrayLink    = "stray-link"
	ProblemStrayFile    = "stray-file"
	ProblemUnreferenced = "unreferenced-blob"
)

// Problem is one finding. Fixed findings (links re-derived, entries dropped
// by --repair) are reported but do not make the cache unhealthy; neither do
// unreferenced blobs, which gc reclaims.
type Problem struct {
	Kind   string `json:"kind"`
	Name   string `json:"name,omitempty"`
	Digest string `json:"digest,omitempty"`
	Path   string `json:"path,omitempty"`
	Detail string `json:"detail"`
	Fixed  bool   `json:"fixed"`
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Entries  int       `json:"entries"`
	Blobs    int       `json:"blobs_hashed"`
	Bytes    int64     `json:"bytes_hashed"`
	Problems []Problem `json:"problems"`
}

// OK reports whether nothing unfixed and harmful was found.
func (r *VerifyReport) OK() bool {
	for _, p := range r.Problems {
		if !p.Fixed && p.Kind != ProblemUnreferenced {
			return false
		}
	}
	return true
}

// Failures counts the unfixed problems.
func (r *VerifyReport) Failures() int {
	n := 0
	for _, p := range r.Problems {
		if !p.Fixed && p.Kind != ProblemUnreferenced {
			n++
		}
	}
	return n
}

func (r *VerifyReport) add(p Problem) { r.Problems = append(r.Problems, p) }

// Verify re-hashes the blobs of the named entries (all when names is empty)
// and checks that manifest, blobs and links agree. Blobs that fail are
// quarantined. Links are a derived view and are re-derived on the spot. With
// repair, a corrupt manifest is rebuilt from links and blobs, and entries
// whose blob is gone are dropped. Verifying is not a use.
func (c *Cache) Verify(ctx context.Context, names []naming.Name, repair bool) (*VerifyReport, error) {
	rep := &VerifyReport{Problems: []Problem{}}
	m, err := c.load(ctx)
	if errors.Is(err, errdefs.ErrCorrupt) && !errors.Is(err, manifest.ErrNewerSchema) {
		if !repair {
			rep.add(Problem{Kind: ProblemManifest, Path: c.man.Path(), Detail: err.Error()})
			return rep, nil
		}
		m, err = c.rebuildManifest(ctx, rep)
	}
	if err != nil {
		return rep, err
	}
	all := len(names) == 0
	var selected []*manifest.Entry
	if all {
		for _, name := range m.Names() {
			selected = append(selected, m.Entries[name])
		}
	} else {
		for _, n := range names {
			e, ok := m.Entries[n.String()]
			if !ok {
				return rep, notFound(n)
			}
			selected = append(selected, e)
		}
	}
	rep.Entries = len(selected)

	// Hash each distinct blob once.
	verdict := map[digest.Digest]error{}
	sizes := map[digest.Digest]int64{}
	var drop []string
	for _, e := range selected {
		if _, err := naming.Parse(e.Name); err != nil {
			rep.add(Problem{Kind: ProblemBadName, Name: e.Name, Digest: e.Digest.String(), Detail: err.Error()})
			continue
		}
		if _, done := verdict[e.Digest]; !done {
			size, err := c.hashBlob(ctx, e.Digest)
			if err != nil && ctx.Err() != nil {
				return rep, ctx.Err()
			}
			verdict[e.Digest], sizes[e.Digest] = err, size
			if err == nil {
				rep.Blobs++
				rep.Bytes += size
			}
		}
		switch err := verdict[e.Digest]; {
		case err == nil && sizes[e.Digest] != e.Size:
			rep.add(Problem{Kind: ProblemSize, Name: e.Name, Digest: e.Digest.String(), Detail: fmt.Sprintf("blob holds %d bytes, manifest says %d", sizes[e.Digest], e.Size)})
		case err == nil:
		case errors.Is(err, errdefs.ErrNotFound):
			kind, detail := ProblemMissingBlob, "blob is missing"
			if q, _ := filepath.Glob(filepath.Join(c.dir, "quarantine", e.Digest.Encoded()+"-*")); len(q) > 0 {
				kind, detail = ProblemQuarantined, "blob failed verification earlier and is in quarantine: "+q[len(q)-1]
			}
			rep.add(Problem{Kind: kind, Name: e.Name, Digest: e.Digest.String(), Detail: detail, Fixed: repair})
			if repair {
				drop = append(drop, e.Name)
			}
		case errors.Is(err, errdefs.ErrIntegrity):
			rep.add(Problem{Kind: ProblemMismatch, Name: e.Name, Digest: e.Digest.String(), Detail: err.Error(), Fixed: repair})
			if repair {
				drop = append(drop, e.Name)
			}
		default:
			return rep, err
		}
	}
	if len(drop) > 0 {
		if err := c.update(ctx, func(m *manifest.Manifest) error {
			for _, name := range drop {
				delete(m.Entries, name)
			}
			return nil
		}); err != nil {
			return rep, err
		}
		for _, name := range drop {
			delete(m.Entries, name)
		}
	}
	// Links are re-derived from the manifest as it is now, under its lock:
	// the snapshot above is stale once hashing is done, and a put or remove
	// that landed meanwhile must not see its link reverted or removed.
	err = c.update(ctx, func(now *manifest.Manifest) error {
		c.checkLinks(now, selected, all, rep)
		if all {
			c.checkBlobs(now, rep)
		}
		return errNoWrite
	})
	if err != nil && !errors.Is(err, errNoWrite) {
		return rep, err
	}
	return rep, nil
}

// errNoWrite ends a manifest update without writing.
var errNoWrite = errors.New("manifest unchanged")

// hashBlob re-hashes one blob under its shared lock and quarantines it on a
// mismatch. It returns the uncompressed size.
func (c *Cache) hashBlob(ctx context.Context, d digest.Digest) (int64, error) {
	lctx, cancel := c.lockCtx(ctx)
	lock, err := c.blobs.Lock(lctx, d, false)
	cancel()
	if err != nil {
		return 0, err
	}
	r, err := c.blobs.Open(d)
	if err != nil {
		lock.Release()
		return 0, err
	}
	_, err = r.WriteTo(ctxWriter{ctx})
	size := r.Size()
	r.Close()
	lock.Release()
	if !errors.Is(err, errdefs.ErrIntegrity) {
		return size, err
	}
	// Quarantine under the exclusive lock, unless someone is using it.
	c.count(func(s *Counters) { s.IntegrityFailures++ })
	if xl, ok, lerr := c.blobs.TryLock(d, true); lerr == nil && ok {
		if dst, qerr := c.blobs.Quarantine(d); qerr == nil {
			err = fmt.Errorf("%w; moved to %s", err, dst)
		}
		xl.Release()
	}
	return size, err
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
		e := m.Entries[sel.Name]
		if e == nil {
			continue // dropped by repair, or removed meanwhile
		}
		n, err := naming.Parse(e.Name)
		if err != nil {
			continue
		}
		p := c.linkPath(n)
		cur, err := os.Readlink(p)
		if err == nil && cur == linkTarget(e.Digest) {
			continue
		}
		detail := "link missing"
		if err == nil {
			detail = "link pointed at " + cur
		} else if fi, lerr := os.Lstat(p); lerr == nil && fi.Mode()&os.ModeSymlink == 0 {
			rep.add(Problem{Kind: ProblemStrayFile, Name: e.Name, Path: p, Detail: "not a symlink; left alone (remove it by hand)"})
			continue
		}
		ferr := c.setLink(n, e.Digest)
		rep.add(Problem{Kind: ProblemLink, Name: e.Name, Path: p, Detail: detail + "; re-linked", Fixed: ferr == nil})
	}
	if !all {
		return
	}
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
		base := filepath.Base(p)
		name, ok := strings.CutSuffix(base, ".tar.zst")
		if n, err := naming.Parse(name); ok && err == nil && filepath.Base(filepath.Dir(p)) == n.Project {
			if _, known := m.Entries[name]; known {
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
	named := map[digest.Digest]bool{}
	for _, e := range m.Entries {
		named[e.Digest] = true
	}
	_ = c.blobs.Walk(func(i cas.Info) error {
		if !named[i.Digest] {
			rep.add(Problem{Kind: ProblemUnreferenced, Digest: i.Digest.String(), Detail: "no name points at this blob; gc reclaims it"})
		}
		return nil
	}, func(p string) {
		rep.add(Problem{Kind: ProblemStrayFile, Path: p, Detail: "unexpected file under blobs/; left alone"})
	})
}

// rebuildManifest replaces a corrupt manifest with one derived from the name
// links and the blobs they point at, re-reading each blob's metadata (which
// also verifies it). Pins and last-use times are not recoverable: last use
// becomes the blob's modification time.
func (c *Cache) rebuildManifest(ctx context.Context, rep *VerifyReport) (*manifest.Manifest, error) {
	m := manifest.New()
	links, _ := filepath.Glob(filepath.Join(c.dir, "names", "*", "*.tar.zst"))
	sort.Strings(links)
	for _, p := range links {
		name := strings.TrimSuffix(filepath.Base(p), ".tar.zst")
		n, err := naming.Parse(name)
		if err != nil || filepath.Base(filepath.Dir(p)) != n.Project || checkLinkDir(filepath.Dir(p)) != nil {
			continue
		}
		target, err := os.Readlink(p)
		if err != nil {
			continue
		}
		hexpart, ok := strings.CutSuffix(filepath.Base(target), ".tar.zst")
		d := digest.NewDigestFromEncoded(digest.SHA256, hexpart)
		if !ok || d.Validate() != nil || target != linkTarget(d) {
			continue
		}
		e, err := c.entryFromBlob(ctx, n, d)
		if err != nil {
			rep.add(Problem{Kind: ProblemStrayLink, Name: name, Path: p, Detail: "not recovered: " + err.Error()})
			continue
		}
		m.Entries[name] = e
	}
	corrupt := fmt.Sprintf("%s.corrupt-%s", c.man.Path(), time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(c.man.Path(), corrupt); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("repair: keep the damaged manifest: %w", err)
	}
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	if err := c.man.Replace(lctx, m); err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	rep.add(Problem{Kind: ProblemManifest, Path: c.man.Path(), Fixed: true,
		Detail: fmt.Sprintf("rebuilt with %d entries from names/ and blobs/; the damaged file is kept as %s; pins were reset", len(m.Entries), corrupt)})
	return m, nil
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
