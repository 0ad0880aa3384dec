package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/internal/lockfile"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
	"github.com/imgcache/imgcache/remote"
	"github.com/imgcache/imgcache/skeleton"
)

// Remote is the fleet tier as the cache uses it: one repository of an OCI
// registry (remote.Registry). Errors wrap errdefs.ErrRemote (unreachable,
// failing), ErrRemoteAuth (credentials refused), ErrNotFound, ErrIntegrity.
type Remote interface {
	String() string
	// FindBlob is the registry's blob holding content u, if it has one.
	FindBlob(ctx context.Context, u digest.Digest) (ocispec.Descriptor, bool, error)
	// PushBlob uploads desc's bytes from open unless the registry says it
	// has them (force: whatever it says), and the blob's own manifest;
	// sent says whether bytes went.
	PushBlob(ctx context.Context, desc ocispec.Descriptor, open func() (io.ReadCloser, error), force bool) (sent bool, err error)
	// OpenBlob streams a blob's content, verified at its end.
	OpenBlob(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
	// FetchStored streams a blob's stored bytes (zstd), verified against
	// desc's digest at their end.
	FetchStored(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
	// Resolve reads the entry a tag names.
	Resolve(ctx context.Context, tag string) (*remote.Entry, error)
	// PushEntry pushes e's digest manifest over blobs (tagged
	// remote.EntryTag), TagName its name's; remote.ErrBlobUnknown when the
	// registry lacks one of the blobs.
	PushEntry(ctx context.Context, e manifest.Entry, blobs []ocispec.Descriptor) error
	TagName(ctx context.Context, name string, e manifest.Entry, blobs []ocispec.Descriptor) (ocispec.Descriptor, error)
	// Delete removes a name.
	Delete(ctx context.Context, name string) error
	// List lists the names.
	List(ctx context.Context) ([]remote.Listed, error)
}

var _ Remote = (*remote.Registry)(nil)

// errNoRemote: a remote operation without --remote.
var errNoRemote = fmt.Errorf("%w: no remote configured (--remote REPO, IMGCACHE_REMOTE or the config key remote, e.g. 127.0.0.1:5000/ci/imgcache)", errdefs.ErrInvalid)

// HasRemote reports whether a remote is configured.
func (c *Cache) HasRemote() bool { return c.opt.Remote != nil }

// remote connects to the remote on first use.
func (c *Cache) remote(ctx context.Context) (Remote, error) {
	if c.opt.Remote == nil {
		return nil, errNoRemote
	}
	c.remoteMu.Lock()
	defer c.remoteMu.Unlock()
	if c.rem == nil {
		r, err := c.opt.Remote(ctx)
		if err != nil {
			return nil, err
		}
		c.rem = r
	}
	return c.rem, nil
}

// PushOptions change a push.
type PushOptions struct {
	// Force replaces a remote name that another host moved since this one
	// last saw it.
	Force bool
}

// PushResult reports one pushed entry.
type PushResult struct {
	Name     string        `json:"name"`
	Digest   digest.Digest `json:"digest"`
	Remote   string        `json:"remote"`
	Manifest digest.Digest `json:"manifest"`
	Blobs    int           `json:"blobs"`    // blobs the entry is stored as
	Uploaded int           `json:"uploaded"` // of which this push sent
	Bytes    int64         `json:"bytes"`    // bytes sent
	UpToDate bool          `json:"up_to_date"`
	Replaced digest.Digest `json:"replaced,omitempty"` // the entry the remote name held before, if another
}

// origin is what this host last saw of a name at a remote: the entry it
// pulled or pushed, and when it last checked the tag.
type origin struct {
	Entry    digest.Digest `json:"entry"`
	Manifest digest.Digest `json:"manifest"`
	Checked  time.Time     `json:"checked"`
}

// originPath is remotes/<project>/<name>.json: per remote repository, the
// origin of the name (a hint for push's moved-name check and get's refresh
// interval; not integrity data).
func (c *Cache) originPath(n naming.Name) string {
	return filepath.Join(c.dir, "remotes", n.Project(), n.String()+".json")
}

func (c *Cache) readOrigin(n naming.Name, repo string) origin {
	b, err := os.ReadFile(c.originPath(n))
	if err != nil {
		return origin{}
	}
	var m map[string]origin
	if json.Unmarshal(b, &m) != nil {
		return origin{}
	}
	return m[repo]
}

var originMu sync.Mutex

func (c *Cache) writeOrigin(n naming.Name, repo string, o origin) {
	originMu.Lock()
	defer originMu.Unlock()
	p := c.originPath(n)
	m := map[string]origin{}
	if b, err := os.ReadFile(p); err == nil {
		json.Unmarshal(b, &m)
	}
	m[repo] = o
	err := fsutil.MkdirAll(filepath.Dir(p))
	if err == nil {
		err = fsutil.WriteAtomic(p, "", func(w io.Writer) error { return json.NewEncoder(w).Encode(m) })
	}
	if err != nil {
		c.opt.Log.Debug("remote origin not recorded", "name", n.String(), "err", err)
	}
}

// Push uploads n's entry to the remote: the blobs the registry lacks (by
// content, whatever their compression), then its manifests, tagged with
// the name and with the entry's digest. Blobs go first, so a push killed
// midway leaves no manifest pointing at missing blobs. A remote name that
// holds other content than this host last saw there (another host moved
// it) is refused with errdefs.ErrMoved unless opt.Force.
func (c *Cache) Push(ctx context.Context, n naming.Name, opt PushOptions) (*PushResult, error) {
	res, err := c.push(ctx, n, opt)
	c.count(func(s *Counters) {
		if err != nil {
			s.RemoteFailures++
			return
		}
		s.RemotePushes++
		s.BytesPushed += res.Bytes
	})
	return res, err
}

func (c *Cache) push(ctx context.Context, n naming.Name, opt PushOptions) (*PushResult, error) {
	r, err := c.remote(ctx)
	if err != nil {
		return nil, err
	}
	e, err := c.entry(ctx, n)
	if err != nil {
		return nil, err
	}
	res := &PushResult{Name: n.String(), Digest: e.Digest, Remote: r.String()}
	cur, err := r.Resolve(ctx, n.String())
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("push %s: %w", n, err)
	case cur.Record.Digest == e.Digest:
		res.UpToDate, res.Manifest, res.Blobs = true, cur.Manifest.Digest, len(cur.Blobs)
		c.writeOrigin(n, r.String(), origin{Entry: e.Digest, Manifest: cur.Manifest.Digest, Checked: c.opt.Now().UTC()})
		return res, nil
	default:
		seen := c.readOrigin(n, r.String())
		if seen.Entry != cur.Record.Digest && !opt.Force {
			last := "never saw the name there"
			if seen.Entry != "" {
				last = "last saw it hold " + seen.Entry.String()
			}
			return nil, fmt.Errorf("push %s: %w: at %s it holds %s, which another host pushed (this host %s); to keep it: imgcache pull %s; to replace it with this host's %s: imgcache push --force %s",
				n, errdefs.ErrMoved, r.String(), cur.Record.Digest, last, n, e.Digest, n)
		}
		res.Replaced = cur.Record.Digest
	}
	blobs, release, err := c.storedBlobs(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", n, err)
	}
	defer release()
	res.Blobs = len(blobs)
	descs, err := c.pushBlobs(ctx, r, blobs, res, false)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", n, err)
	}
	err = r.PushEntry(ctx, e, descs)
	if errors.Is(err, remote.ErrBlobUnknown) {
		// The registry lost a blob it had (its gc ran): upload them all again.
		c.opt.Log.Warn("the registry lacks a blob it had; uploading the entry's blobs again", "name", n.String(), "remote", r.String())
		if descs, err = c.pushBlobs(ctx, r, blobs, res, true); err != nil {
			return nil, fmt.Errorf("push %s: %w", n, err)
		}
		err = r.PushEntry(ctx, e, descs)
	}
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", n, err)
	}
	// Again, now that the uploads are done: registries have no
	// compare-and-swap on tags, so the window left for another host's push
	// is the time between this check and the tag's write (and the check
	// after it catches a push that lands later).
	if err := c.checkMoved(ctx, r, n, e, opt, cur, res); err != nil {
		return nil, err
	}
	desc, err := r.TagName(ctx, n.String(), e, descs)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", n, err)
	}
	res.Manifest = desc.Digest
	c.writeOrigin(n, r.String(), origin{Entry: e.Digest, Manifest: desc.Digest, Checked: c.opt.Now().UTC()})
	// A push that raced this one and wrote the tag last has won: say so.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(raceSettle):
	}
	if after, err := r.Resolve(ctx, n.String()); err == nil && after.Record.Digest != e.Digest {
		c.writeOrigin(n, r.String(), origin{Entry: after.Record.Digest, Manifest: after.Manifest.Digest, Checked: c.opt.Now().UTC()})
		return nil, fmt.Errorf("push %s: %w: another host pushed %s under this name at the same time and its push landed last; this host's %s stays reachable by its digest tag (push --force replaces the name)", n, errdefs.ErrMoved, after.Record.Digest, e.Digest)
	}
	return res, nil
}

// raceSettle is how long after writing a name's tag a push looks again,
// to see a concurrent push that checked before this one wrote and wrote
// after it.
const raceSettle = 300 * time.Millisecond

// checkMoved refuses to replace a remote name that holds other content
// than it held at the start of the push (cur, nil if absent) when that is
// not what this host last saw there, unless --force.
func (c *Cache) checkMoved(ctx context.Context, r Remote, n naming.Name, e manifest.Entry, opt PushOptions, cur *remote.Entry, res *PushResult) error {
	now, err := r.Resolve(ctx, n.String())
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("push %s: %w", n, err)
	case now.Record.Digest == e.Digest, opt.Force:
		return nil
	case cur != nil && now.Manifest.Digest == cur.Manifest.Digest && res.Replaced != "":
		return nil // as at the start, and accepted then
	}
	return fmt.Errorf("push %s: %w: another host pushed %s under this name while this push uploaded; to keep it: imgcache pull %s; to replace it: imgcache push --force %s", n, errdefs.ErrMoved, now.Record.Digest, n, n)
}

// storedBlob is one blob an entry is stored as.
type storedBlob struct {
	store   Blobs
	content digest.Digest
	size    int64 // uncompressed
}

// storedBlobs lists e's blobs (skeleton and pieces, or its whole tar) and
// holds their shared locks until release.
func (c *Cache) storedBlobs(ctx context.Context, e manifest.Entry) ([]storedBlob, func(), error) {
	head, err := c.headLock(ctx, e, false)
	if err != nil {
		return nil, nil, err
	}
	if !e.Split() {
		return []storedBlob{{c.blobs, e.Digest, e.Size}}, func() { head.Release() }, nil
	}
	unlock, err := c.lockPieces(ctx, e)
	if err != nil {
		head.Release()
		return nil, nil, err
	}
	out := []storedBlob{{c.layers, e.Skeleton.Digest, e.Skeleton.Size}}
	for _, p := range e.Pieces {
		out = append(out, storedBlob{c.layers, p.Digest, p.Size})
	}
	return out, func() { unlock(); head.Release() }, nil
}

// pushBlobs makes sure the registry holds every blob: found by content
// (another host's upload counts), else uploaded. always uploads each again
// (after the registry said it lacks one).
func (c *Cache) pushBlobs(ctx context.Context, r Remote, blobs []storedBlob, res *PushResult, always bool) ([]ocispec.Descriptor, error) {
	var descs []ocispec.Descriptor
	for _, b := range blobs {
		if !always {
			desc, ok, err := r.FindBlob(ctx, b.content)
			if err != nil {
				return nil, err
			}
			if ok {
				descs = append(descs, desc)
				continue
			}
		}
		stored, size, err := c.checkStored(b)
		if err != nil {
			return nil, err
		}
		desc := remote.BlobDescriptor(stored, size, b.content, b.size)
		open := func() (io.ReadCloser, error) { return b.store.OpenStored(b.content) }
		sent, err := c.pushBlob(ctx, r, desc, open, always)
		if err != nil {
			return nil, err
		}
		if sent {
			res.Uploaded++
			res.Bytes += size
		}
		descs = append(descs, desc)
	}
	return descs, nil
}

// pushBlob is Remote.PushBlob, tried again from the start (after 1 s,
// then 4 s) when the upload failed on the way: the registry failed after
// its own retries, or refused a token that expired during a long upload
// (the next attempt authenticates again).
func (c *Cache) pushBlob(ctx context.Context, r Remote, desc ocispec.Descriptor, open func() (io.ReadCloser, error), force bool) (bool, error) {
	wait := time.Second
	for attempt := 1; ; attempt++ {
		sent, err := r.PushBlob(ctx, desc, open, force)
		if err == nil || attempt == 3 || !(errors.Is(err, errdefs.ErrRemote) || errors.Is(err, errdefs.ErrRemoteAuth)) {
			return sent, err
		}
		c.opt.Log.Warn("blob upload failed; uploading it again", "blob", desc.Digest.String(), "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(wait):
		}
		wait *= 4
	}
}

// checkStored hashes a blob's stored bytes (what the registry will key
// it by) and checks that they hold its content: a damaged local blob is
// never uploaded.
func (c *Cache) checkStored(b storedBlob) (digest.Digest, int64, error) {
	d, n, err := b.store.CheckStored(b.content)
	if errors.Is(err, errdefs.ErrIntegrity) {
		err = fmt.Errorf("%w; not uploading it (imgcache verify --repair)", err)
	}
	return d, n, err
}

// PullResult reports one pull.
type PullResult struct {
	PutResult
	Remote   string `json:"remote"`
	UpToDate bool   `json:"up_to_date"` // the local entry was the remote's already
	Fetched  int    `json:"fetched"`    // blobs fetched from the registry
	Bytes    int64  `json:"bytes"`      // bytes fetched
}

// Pull fetches n's entry from the remote: its manifest, then only the
// blobs this cache lacks, each verified while it streams; the tar they
// make is checked against the entry's digest and published as a put
// publishes, under n. A local entry of the same content is left as is.
func (c *Cache) Pull(ctx context.Context, n naming.Name) (*PullResult, error) {
	return c.pullLoading(ctx, n, nil)
}

// pullLoading is Pull; a split entry pulled into the layer store is also
// loaded on the way by load, if not nil (pullSplit).
func (c *Cache) pullLoading(ctx context.Context, n naming.Name, load streamLoad) (*PullResult, error) {
	res, err := c.pull(ctx, n, load)
	c.count(func(s *Counters) {
		if err != nil {
			if !errors.Is(err, errdefs.ErrNotFound) {
				s.RemoteFailures++
			}
			return
		}
		if !res.UpToDate {
			s.RemotePulls++
			s.BytesPulled += res.Bytes
		}
	})
	return res, err
}

func (c *Cache) pull(ctx context.Context, n naming.Name, load streamLoad) (*PullResult, error) {
	if err := checkName(n); err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	r, err := c.remote(ctx)
	if err != nil {
		return nil, err
	}
	re, err := r.Resolve(ctx, n.String())
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("pull %s: no such name at %s: %w (imgcache ls --remote lists it)", n, r.String(), errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", n, err)
	}
	res := &PullResult{Remote: r.String()}
	now := c.opt.Now().UTC()
	upToDate := func() bool {
		e, err := c.entry(ctx, n)
		if err != nil || e.Digest != re.Record.Digest {
			return false
		}
		res.UpToDate, res.Entry = true, e
		c.writeOrigin(n, r.String(), origin{Entry: e.Digest, Manifest: re.Manifest.Digest, Checked: now})
		return true
	}
	if upToDate() {
		return res, nil
	}
	// One pull of a name at a time: processes that miss together download
	// each blob once; the others find the entry stored when they get the lock.
	lock, err := c.keyLock(ctx, "pull-"+n.String())
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", n, err)
	}
	defer lock.Remove()
	if upToDate() {
		return res, nil
	}
	put, err := c.pullEntry(ctx, r, n, re, res, load)
	if err != nil {
		return nil, fmt.Errorf("pull %s from %s: %w", n, r.String(), err)
	}
	res.PutResult = *put
	c.writeOrigin(n, r.String(), origin{Entry: re.Record.Digest, Manifest: re.Manifest.Digest, Checked: now})
	return res, nil
}

// keyLock takes the exclusive lock locks/<key>.lock, waiting at most the
// lock timeout.
func (c *Cache) keyLock(ctx context.Context, key string) (*lockfile.Lock, error) {
	path, err := c.blobs.KeyLockPath(key)
	if err != nil {
		return nil, err
	}
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	l, err := lockfile.Acquire(lctx, path, true)
	if err != nil {
		return nil, fmt.Errorf("waiting for another process (%s): %w", key, err)
	}
	return l, nil
}

// pullEntry streams the entry's tar (reassembled from its skeleton, with
// the pieces this cache holds read locally and the others fetched) into
// the one ingest path, which stores it as this cache stores tars and
// refuses it unless its sha256 is the entry's.
func (c *Cache) pullEntry(ctx context.Context, r Remote, n naming.Name, re *remote.Entry, res *PullResult, load streamLoad) (*PutResult, error) {
	rec := re.Record
	if rec.Split() && c.layers != nil {
		return c.pullSplit(ctx, r, n, re, res, load)
	}
	fetch := func(desc ocispec.Descriptor) (io.ReadCloser, error) {
		rc, err := r.OpenBlob(ctx, desc)
		if err == nil {
			res.Fetched++
			res.Bytes += desc.Size
		}
		return rc, err
	}
	var src io.ReadCloser
	if !rec.Split() {
		rc, err := fetch(re.Blobs[0])
		if err != nil {
			return nil, err
		}
		src = rc
	} else {
		rc, err := c.joinRemote(ctx, re, fetch)
		if err != nil {
			return nil, err
		}
		src = rc
	}
	defer src.Close()
	in := &firstError{r: src}
	put, err := c.ingest(ctx, n, in, "pull", rec.Size, func(e *manifest.Entry) error {
		if e.Digest != rec.Digest || e.Size != rec.Size {
			return fmt.Errorf("%w: the tar the registry's blobs make has sha256 %s (%d bytes), where the entry says %s (%d bytes); nothing was stored", errdefs.ErrIntegrity, e.Digest, e.Size, rec.Digest, rec.Size)
		}
		e.Base, e.Recipe = rec.Base, rec.Recipe
		if len(e.RepoTags) == 0 {
			e.RepoTags = rec.RepoTags
		}
		return nil
	})
	if err != nil && in.err != nil && !errors.Is(err, in.err) {
		return nil, in.err // the registry's stream failed: that is the cause
	}
	return put, err
}

// pullSplit pulls a split entry into the layer store: each blob this
// cache lacks is stored as the registry holds it (its zstd stream kept,
// its bytes checked against their digest and its content against the
// content digest, nothing compressed again); the skeleton must describe
// the entry's tar from the entry's pieces; then the entry is recorded as
// a put records it. Every blob's shared lock is held until then.
//
// With load set (a get that missed), the skeleton is fetched first and
// load is called with the entry and an opener that streams each piece
// the cache lacks from the registry into the layer store and, as it is
// checked, to load's reader: the pull and the load are one pass over the
// bytes. Pieces load did not read are fetched after it; a load that fails
// fails the pull, and nothing is recorded.
func (c *Cache) pullSplit(ctx context.Context, r Remote, n naming.Name, re *remote.Entry, res *PullResult, load streamLoad) (*PutResult, error) {
	p := &splitPull{c: c, ctx: ctx, r: r, res: res, stored: map[digest.Digest]int64{}, byContent: map[digest.Digest]ocispec.Descriptor{}}
	defer p.held.release()
	put, err := p.run(n, re, load)
	if err != nil {
		p.held.release() // the fresh blobs can be dropped once no lock of ours holds them
		c.dropFresh(ctx, p.held.fresh)
		return nil, err
	}
	return put, nil
}

// splitPull is one pullSplit's state. A streaming fetch runs beside the
// load, so mu guards held, stored and res.
type splitPull struct {
	c   *Cache
	ctx context.Context
	r   Remote
	res *PullResult

	mu        sync.Mutex
	held      held
	stored    map[digest.Digest]int64              // content digest → stored size, of the blobs the layer store holds for us
	byContent map[digest.Digest]ocispec.Descriptor // the entry's remote blobs by content digest
}

func (p *splitPull) run(n naming.Name, re *remote.Entry, load streamLoad) (*PutResult, error) {
	var missing []ocispec.Descriptor
	for _, desc := range re.Blobs {
		u := remote.ContentOf(desc)
		if _, ok := p.byContent[u]; ok {
			continue
		}
		p.byContent[u] = desc
		ok, err := p.have(u)
		if err != nil {
			return nil, err
		}
		if !ok {
			missing = append(missing, desc)
		}
	}
	e := re.Record
	e.Name = n.String()
	now := p.c.opt.Now().UTC()
	e.Added, e.LastUsed, e.Pinned = now, now, false
	if load != nil && e.Skeleton != nil {
		if !p.isStored(e.Skeleton.Digest) {
			if err := p.fetch(p.byContent[e.Skeleton.Digest], nil); err != nil {
				return nil, err
			}
		}
		if err := p.loadWhilePulling(e, load); err != nil {
			return nil, err
		}
	}
	for _, desc := range missing {
		if p.isStored(remote.ContentOf(desc)) {
			continue // the load streamed it
		}
		if err := p.fetch(desc, nil); err != nil {
			return nil, err
		}
	}
	skel := *e.Skeleton
	skel.StoredSize = p.stored[skel.Digest]
	e.Skeleton = &skel
	e.StoredSize = skel.StoredSize
	pieces := make([]manifest.Blob, len(e.Pieces))
	for i, b := range e.Pieces {
		b.StoredSize = p.stored[b.Digest]
		pieces[i] = b
		e.StoredSize += b.StoredSize
	}
	e.Pieces = pieces
	if err := p.c.checkSkeleton(&e); err != nil {
		return nil, fmt.Errorf("%w: the entry's skeleton from %s: %v", errdefs.ErrIntegrity, p.r.String(), err)
	}
	put, err := p.c.record(p.ctx, n, e)
	if err != nil {
		return nil, err
	}
	put.New, put.Reused = len(p.held.fresh), len(re.Blobs)-len(p.held.fresh)
	p.c.count(func(s *Counters) { s.Puts++; s.BytesIngested += e.Size })
	return put, nil
}

func (p *splitPull) isStored(u digest.Digest) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.stored[u]
	return ok
}

// have locks u if the layer store holds it; false: it must be fetched.
func (p *splitPull) have(u digest.Digest) (bool, error) {
	lctx, cancel := p.c.lockCtx(p.ctx)
	lock, err := p.c.layers.Lock(lctx, u, false)
	cancel()
	if err != nil {
		return false, err
	}
	st, err := p.c.layers.Stat(u)
	if err != nil {
		lock.Release()
		return false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held.locks = append(p.held.locks, lock)
	p.stored[u] = st.Stored
	return true, nil
}

// fetch stores the blob desc from the registry, passing its content to
// content if not nil.
func (p *splitPull) fetch(desc ocispec.Descriptor, content io.Writer) error {
	u := remote.ContentOf(desc)
	rc, err := p.r.FetchStored(p.ctx, desc)
	if err != nil {
		return err
	}
	in, err := p.c.layers.IngestStored(p.ctx, rc, u, content)
	rc.Close()
	if err != nil {
		if errors.Is(err, errdefs.ErrIntegrity) {
			err = fmt.Errorf("blob %s from %s: %w", desc.Digest, p.r.String(), err)
		}
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.Fetched++
	p.res.Bytes += desc.Size
	p.held.locks = append(p.held.locks, in)
	if !in.Deduplicated {
		p.held.fresh = append(p.held.fresh, u)
	}
	p.stored[u] = in.Stored
	return nil
}

// streamLoad loads a split entry while it is pulled (pullSplit), its
// pieces read through open.
type streamLoad func(e manifest.Entry, open skeleton.Open) error

// loadWhilePulling calls load with an opener that gives a stored piece
// from the layer store and streams any other from the registry (through
// fetch, on a goroutine of its own, into a pipe whose end comes only once
// the blob matched); every fetch has ended when it returns.
func (p *splitPull) loadWhilePulling(e manifest.Entry, load streamLoad) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	open := func(d digest.Digest) (io.ReadCloser, error) {
		if p.isStored(d) {
			return p.c.layers.Open(d)
		}
		desc, ok := p.byContent[d]
		if !ok {
			return nil, fmt.Errorf("%w: the skeleton references %s, which the entry's manifest does not list", errdefs.ErrIntegrity, d)
		}
		pr, pw := loadPipe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			pw.CloseWithError(p.fetch(desc, pw)) // EOF only once the blob matched
		}()
		return pr, nil
	}
	return load(e, open)
}

// joinRemote reassembles a split remote entry's tar: its skeleton and
// the pieces, each read from the layer store when it holds it, else from
// the registry.
func (c *Cache) joinRemote(ctx context.Context, re *remote.Entry, fetch func(ocispec.Descriptor) (io.ReadCloser, error)) (io.ReadCloser, error) {
	byContent := map[digest.Digest]ocispec.Descriptor{}
	for _, b := range re.Blobs {
		byContent[remote.ContentOf(b)] = b
	}
	var last *ocispec.Descriptor // the remote blob read last: the one a mismatch blames
	open := func(d digest.Digest) (io.ReadCloser, error) {
		last = nil
		if c.layers != nil {
			if r, err := c.layers.Open(d); err == nil {
				return r, nil
			}
		}
		desc, ok := byContent[d]
		if !ok {
			return nil, fmt.Errorf("%w: the skeleton references %s, which the entry's manifest does not list", errdefs.ErrIntegrity, d)
		}
		last = &desc
		return fetch(desc)
	}
	skr, err := open(re.Record.Skeleton.Digest)
	if err != nil {
		return nil, err
	}
	skel, err := io.ReadAll(io.LimitReader(skr, skeleton.MaxViewLiterals+(1<<20)+1))
	skr.Close()
	if err != nil {
		return nil, err
	}
	if int64(len(skel)) != re.Record.Skeleton.Size {
		return nil, fmt.Errorf("%w: skeleton %s holds %d bytes, the entry says %d", errdefs.ErrIntegrity, re.Record.Skeleton.Digest, len(skel), re.Record.Skeleton.Size)
	}
	pr, pw := io.Pipe()
	go func() {
		ref, err := skeleton.Join(pw, bytes.NewReader(skel), open, skeleton.TrustOpen())
		if errors.Is(err, skeleton.ErrMismatch) && !errors.Is(err, errdefs.ErrIntegrity) && last != nil {
			err = fmt.Errorf("%w: blob %s (content %s) from the registry: %w", errdefs.ErrIntegrity, last.Digest, remote.ContentOf(*last), err)
		}
		if err == nil && ref.Digest != re.Record.Digest {
			err = fmt.Errorf("%w: the skeleton makes a tar of sha256 %s, the entry says %s", errdefs.ErrIntegrity, ref.Digest, re.Record.Digest)
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// firstError remembers its source's first error other than io.EOF.
type firstError struct {
	r   io.Reader
	err error
}

func (f *firstError) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err != nil && err != io.EOF && f.err == nil {
		f.err = err
	}
	return n, err
}

// RemoveRemote removes names from the remote (their digest tags and blobs
// stay until the registry's own gc).
func (c *Cache) RemoveRemote(ctx context.Context, n naming.Name) error {
	r, err := c.remote(ctx)
	if err != nil {
		return err
	}
	if err := r.Delete(ctx, n.String()); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("rm --remote %s: no such name at %s: %w", n, r.String(), errdefs.ErrNotFound)
		}
		return fmt.Errorf("rm --remote %s: %w", n, err)
	}
	return nil
}

// ListRemote lists the names the remote holds.
func (c *Cache) ListRemote(ctx context.Context) ([]remote.Listed, string, error) {
	r, err := c.remote(ctx)
	if err != nil {
		return nil, "", err
	}
	l, err := r.List(ctx)
	return l, r.String(), err
}

// remoteEntry is n's local entry, pulled first when the cache misses it
// and a remote is configured, or when the remote moved it and refresh
// (or the configured interval) says to look. A remote that fails while a
// local entry exists is a warning: the local entry is used.
// On a local miss, load (if not nil) loads the entry as it is pulled.
func (c *Cache) remoteEntry(ctx context.Context, n naming.Name, refresh bool, load streamLoad) (manifest.Entry, error) {
	e, err := c.entry(ctx, n)
	if c.opt.Remote == nil {
		return e, err
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		res, perr := c.pullLoading(ctx, n, load)
		if errors.Is(perr, errdefs.ErrNotFound) {
			return manifest.Entry{}, fmt.Errorf("%w; nor at the remote", err)
		}
		if perr != nil {
			return manifest.Entry{}, perr
		}
		c.opt.Log.Info("pulled from the remote", "name", n.String(), "fetched", res.Fetched, "bytes", res.Bytes)
		return res.Entry, nil
	}
	if err != nil {
		return e, err
	}
	if !refresh {
		if c.opt.RemoteRefresh <= 0 {
			return e, nil
		}
		r, rerr := c.remote(ctx)
		if rerr != nil {
			return e, nil
		}
		if seen := c.readOrigin(n, r.String()); c.opt.Now().Sub(seen.Checked) < c.opt.RemoteRefresh {
			return e, nil
		}
	}
	res, perr := c.Pull(ctx, n)
	switch {
	case perr == nil:
		if !res.UpToDate {
			c.opt.Log.Info("the remote name moved; pulled its new content", "name", n.String(), "was", e.Digest.String(), "now", res.Entry.Digest.String())
		}
		return res.Entry, nil
	case errors.Is(perr, errdefs.ErrNotFound):
		return e, nil // only local
	case errors.Is(perr, context.Canceled):
		return e, perr
	default:
		c.opt.Log.Warn("remote check failed; using the local entry", "name", n.String(), "err", perr)
		return e, nil
	}
}

// writeBack pushes n after a local publish when Options.Push is set; a
// failure is a warning and a counter, never the local operation's.
func (c *Cache) writeBack(ctx context.Context, n naming.Name) error {
	if !c.opt.Push || c.opt.Remote == nil {
		return nil
	}
	res, err := c.Push(ctx, n, PushOptions{})
	if err != nil {
		c.opt.Log.Warn("push to the remote failed; the local entry stands", "name", n.String(), "err", err)
		return err
	}
	c.opt.Log.Info("pushed", "name", n.String(), "remote", res.Remote, "uploaded", res.Uploaded, "bytes", res.Bytes)
	return nil
}
