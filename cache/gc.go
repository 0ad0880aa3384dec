package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	units "github.com/docker/go-units"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/internal/lockfile"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// GCOptions say what gc should reach.
type GCOptions struct {
	// Limits are what gc reaches; Limits.MinAge protects entries used
	// that recently (and holds protect theirs) from every limit.
	Limits lru.Limits
	DryRun bool // plan only: change nothing
	// Docker also acts on the daemon: the evicted names' imgcache tags go,
	// and the superseded versions' (protected as entries are).
	Docker bool
	// DockerMinFree (with DockerTargetFree, the hysteresis of MinFree)
	// removes imgcache's images from the daemon, least recently used first,
	// until the filesystem of its data root has that much free; the blobs
	// stay. It needs a daemon on this host. Setting it implies Docker.
	DockerMinFree, DockerTargetFree int64
}

// validateDocker checks the daemon-side limits as Limits.Validate checks
// the cache's, in their own words.
func (o GCOptions) validateDocker() error {
	switch {
	case o.DockerMinFree < 0 || o.DockerTargetFree < 0:
		return errors.New("docker-min-free and docker-target-free must not be negative")
	case o.DockerTargetFree > 0 && o.DockerMinFree == 0:
		return errors.New("docker-target-free needs docker-min-free: it is where removal stops once the data root's free space fell below docker-min-free")
	case o.DockerTargetFree > 0 && o.DockerTargetFree < o.DockerMinFree:
		return fmt.Errorf("docker-target-free (%s) must be at least docker-min-free (%s)", units.BytesSize(float64(o.DockerTargetFree)), units.BytesSize(float64(o.DockerMinFree)))
	}
	return nil
}

// GCVictim is one step of what gc did (or would do).
type GCVictim struct {
	Names []string `json:"names"`
	Blob  string   `json:"blob,omitempty"`
	// Layers are the layer-store blobs deleted with it (keys
	// "layers/sha256:…"): those no remaining entry needs.
	Layers   []string  `json:"layers,omitempty"`
	Freed    int64     `json:"freed"`
	LastUsed time.Time `json:"last_used,omitzero"`
	Reason   string    `json:"reason"`
}

// GCReport says what gc did.
type GCReport struct {
	DryRun       bool            `json:"dry_run"`
	Victims      []GCVictim      `json:"victims"`
	Freed        int64           `json:"freed"`         // blob bytes reclaimed
	TmpFreed     int64           `json:"tmp_freed"`     // bytes of dead ingests removed from tmp/
	TmpFiles     int             `json:"tmp_files"`     // dead ingests removed
	LocksRemoved int             `json:"locks_removed"` // orphaned lock files removed
	StoredBefore int64           `json:"stored_before"`
	StoredAfter  int64           `json:"stored_after"`
	Free         int64           `json:"free"`       // free bytes before
	FreeAfter    int64           `json:"free_after"` // free bytes after (measured; estimated in a dry run)
	Skipped      []string        `json:"skipped"`    // blobs kept because pinned or in use
	Shared       []string        `json:"shared"`     // names kept: evicting them would free none of their layers
	Shortfalls   []lru.Shortfall `json:"shortfalls"`
	// Protected are names a limit would have evicted that were used within
	// the min-age or are held (get --hold): kept, with their daemon images.
	Protected    []string `json:"protected"`
	Docker       []string `json:"docker_removed,omitempty"`
	DockerErrors []string `json:"docker_errors,omitempty"`
	// DockerProtected are imgcache tags in the daemon gc kept for their
	// min-age or hold (superseded versions, or under the daemon limit).
	DockerProtected []string `json:"docker_protected,omitempty"`
	// With a daemon-side limit: free bytes on the daemon's data root before
	// and after, and what is still missing to the target.
	DockerFree      int64 `json:"docker_free,omitempty"`
	DockerFreeAfter int64 `json:"docker_free_after,omitempty"`
	DockerMissing   int64 `json:"docker_missing,omitempty"`
}

// Short reports whether a target could not be reached.
func (r *GCReport) Short() bool { return len(r.Shortfalls) > 0 || r.DockerMissing > 0 }

// GC evicts least-recently-used entries until the limits hold, deletes blobs
// no name points at, and clears leftovers of dead ingests. gc is not a use.
//
// It works in steps: plan (walk blobs/, read the manifest, compute the
// victims, take their blobs' exclusive locks without waiting: a blob
// another process reads or loads is skipped this round), commit (under the
// manifest's lock, for milliseconds: drop the victims' names that still
// hold what the plan saw, and the links), delete the blobs no name points
// at now, report. A crash between commit and delete leaves unreferenced
// blobs for the next gc, never a name without a blob.
func (c *Cache) GC(ctx context.Context, opt GCOptions) (*GCReport, error) {
	if err := opt.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("gc: %w: %w", errdefs.ErrInvalid, err)
	}
	if err := opt.validateDocker(); err != nil {
		return nil, fmt.Errorf("gc: %w: %w", errdefs.ErrInvalid, err)
	}
	opt.Docker = opt.Docker || opt.DockerMinFree > 0
	rep := &GCReport{DryRun: opt.DryRun, Victims: []GCVictim{}, Skipped: []string{}, Shared: []string{}, Shortfalls: []lru.Shortfall{}, Protected: []string{}}
	if !opt.DryRun {
		for _, store := range c.stores() {
			freed, removed, err := store.CleanTmp()
			if err != nil {
				return nil, err
			}
			rep.TmpFreed, rep.TmpFiles = rep.TmpFreed+freed, rep.TmpFiles+len(removed)
		}
	}
	free, err := fsutil.FreeBytes(c.dir)
	if err != nil {
		return nil, err
	}
	rep.Free = free
	p, err := c.planGC(ctx, free, opt.Limits, !opt.DryRun)
	if err != nil {
		return nil, err
	}
	defer p.release()
	if opt.DryRun {
		c.reportPlan(p.plan, nil, rep)
		rep.Freed, rep.FreeAfter = p.plan.Freed, free+p.plan.Freed
		if opt.Docker {
			if err := c.gcDaemon(ctx, opt, rep); err != nil {
				return nil, err
			}
		}
		return rep, nil
	}
	if c.hooks.gcPlanned != nil {
		c.hooks.gcPlanned()
	}
	evicted, doomed, err := c.commitGC(ctx, p)
	if err != nil {
		return nil, err
	}
	c.reportPlan(p.plan, evicted, rep)
	c.deleteBlobs(p, doomed, rep)
	gone := map[string]bool{}
	for _, key := range doomed {
		gone[key] = true
	}
	size := map[string]int64{}
	for _, b := range p.sizes {
		size[b.Key] = b.Size
	}
	for i, v := range rep.Victims {
		// Credit what went; a blob named again since the plan stayed.
		rv := &rep.Victims[i]
		rv.Freed = 0
		if v.Blob != "" && !gone[v.Blob] {
			rv.Blob = ""
		} else if v.Blob != "" {
			rv.Freed += size[v.Blob]
		}
		rv.Layers = slices.DeleteFunc(slices.Clone(v.Layers), func(k string) bool { return !gone[k] })
		for _, k := range rv.Layers {
			rv.Freed += size[k]
		}
	}
	rep.StoredAfter = rep.StoredBefore - rep.Freed
	c.count(func(s *Counters) { s.Evictions += int64(len(evicted)); s.BytesReclaimed += rep.Freed + rep.TmpFreed })
	for _, store := range c.stores() {
		if n, err := store.CleanLocks(); err == nil {
			rep.LocksRemoved += n
		}
	}
	if opt.Docker {
		c.gcDocker(ctx, evicted, rep)
		if err := c.gcDaemon(ctx, opt, rep); err != nil {
			return rep, err
		}
	}
	rep.FreeAfter, _ = fsutil.FreeBytes(c.dir)
	return rep, nil
}

// gcPlan is a plan and what it was made from.
type gcPlan struct {
	plan  lru.Plan
	sizes []lru.Blob                // every blob the plan saw
	seen  *manifest.Manifest        // the manifest the plan was made from
	held  map[string]*lockfile.Lock // exclusive locks on the blobs the plan deletes
}

func (p *gcPlan) release() {
	for _, l := range p.held {
		l.Release()
	}
}

// planGC computes the plan from a walk of blobs/ and the manifest as read
// now, without holding the manifest's lock. With lock, every blob the plan
// deletes is exclusively locked (left in held); a blob that cannot be
// locked is in use: it is marked so and the plan is computed again.
func (c *Cache) planGC(ctx context.Context, free int64, limits lru.Limits, lock bool) (*gcPlan, error) {
	st := lru.State{Free: free, Now: c.opt.Now()}
	index := map[string]int{}
	for _, store := range c.stores() {
		err := store.Walk(func(i cas.Info) error {
			key := c.blobKey(store, i.Digest)
			index[key] = len(st.Blobs)
			st.Blobs = append(st.Blobs, lru.Blob{Key: key, Size: i.Stored})
			return nil
		}, nil)
		if err != nil {
			return nil, err
		}
	}
	m, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range m.Names() {
		e := m.Entries[name]
		head, parts := entryKeys(e)
		if _, ok := index[head]; !ok {
			continue // blob missing: verify reports it, nothing to evict
		}
		parts = slices.DeleteFunc(parts, func(k string) bool { _, ok := index[k]; return !ok }) // missing: verify's
		st.Entries = append(st.Entries, lru.Entry{Name: name, Blob: head, Parts: parts, LastUsed: e.LastUsed, Pinned: e.Pinned, HeldUntil: m.HeldUntil(name, e.Digest)})
	}
	p := &gcPlan{seen: m, held: map[string]*lockfile.Lock{}, sizes: st.Blobs}
	for {
		p.plan, err = lru.Compute(st, limits)
		if err != nil {
			p.release()
			return nil, fmt.Errorf("gc: %w", err)
		}
		if !lock {
			return p, nil
		}
		busy, err := p.lockVictims(c)
		if err != nil {
			p.release()
			return nil, err
		}
		if len(busy) == 0 {
			return p, nil
		}
		for _, key := range busy {
			st.Blobs[index[key]].InUse = true
		}
	}
}

// lockVictims takes the exclusive locks of the blobs the plan deletes,
// releases those of blobs it no longer deletes, and returns the blobs that
// are busy.
func (p *gcPlan) lockVictims(c *Cache) (busy []string, err error) {
	keep := map[string]bool{}
	for _, key := range p.plan.Deleted() {
		keep[key] = true
		if p.held[key] != nil {
			continue
		}
		store, d := c.keyBlob(key)
		l, ok, err := store.TryLock(d, true)
		if err != nil {
			return nil, err
		}
		if !ok {
			busy = append(busy, key)
			continue
		}
		p.held[key] = l
	}
	for key, l := range p.held {
		if !keep[key] {
			l.Release()
			delete(p.held, key)
		}
	}
	return busy, nil
}

// commitGC drops the victims' names under the manifest's lock, each only if
// it still holds the digest the plan saw, unpinned, not used since and not
// held now (a put, pin, get or hold that landed after the plan wins), and
// their links. It
// returns the names dropped (with the digest each named) and the planned
// blobs that no name points at now.
func (c *Cache) commitGC(ctx context.Context, p *gcPlan) (map[string]digest.Digest, []string, error) {
	evicted := map[string]digest.Digest{}
	var doomed []string
	err := c.updateThen(ctx, func(now *manifest.Manifest) error {
		t := c.opt.Now()
		for _, v := range p.plan.Victims {
			for _, name := range v.Names {
				was, cur := p.seen.Entries[name], now.Entries[name]
				if was == nil || cur == nil || cur.Digest != was.Digest || cur.Pinned || cur.LastUsed.After(was.LastUsed) || now.HeldUntil(name, cur.Digest).After(t) {
					continue
				}
				evicted[name] = cur.Digest
				delete(now.Entries, name)
			}
		}
		used := map[string]bool{}
		for _, e := range now.Entries {
			head, parts := entryKeys(e)
			used[head] = true
			for _, k := range parts {
				used[k] = true
			}
		}
		for _, key := range p.plan.Deleted() {
			if !used[key] {
				doomed = append(doomed, key)
			}
		}
		if len(evicted) == 0 {
			return errNoWrite
		}
		return nil
	}, func(*manifest.Manifest) {
		for name := range evicted {
			if n, err := naming.Parse(name); err == nil {
				c.dropLink(n)
			}
		}
	})
	if err != nil && !errors.Is(err, errNoWrite) {
		return nil, nil, err
	}
	return evicted, doomed, nil
}

// deleteBlobs deletes the doomed blobs (their exclusive locks are held),
// with one fsync of blobs/ for all of them.
func (c *Cache) deleteBlobs(p *gcPlan, doomed []string, rep *GCReport) {
	size := map[string]int64{}
	for _, b := range p.sizes {
		size[b.Key] = b.Size
	}
	for _, key := range doomed {
		store, d := c.keyBlob(key)
		if err := store.DeleteNoSync(d); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			c.opt.Log.Warn("blob not deleted; the next gc retries", "blob", key, "err", err)
			continue
		}
		rep.Freed += size[key]
		if l := p.held[key]; l != nil {
			l.Remove()
			delete(p.held, key)
		}
	}
	if rep.Freed > 0 {
		for _, store := range c.stores() {
			if err := store.Sync(); err != nil {
				c.opt.Log.Warn("fsync of a blob directory failed", "err", err)
			}
		}
	}
}

// stores are the cache's blob stores: blobs/, and layers/ if it has one.
func (c *Cache) stores() []Blobs {
	if c.layers == nil {
		return []Blobs{c.blobs}
	}
	return []Blobs{c.blobs, c.layers}
}

// layerKeyPrefix marks gc keys of the layer store's blobs.
const layerKeyPrefix = layerDir + "/"

// blobKey is the gc key of blob d of store: its digest for blobs/,
// "layers/<digest>" for the layer store.
func (c *Cache) blobKey(store Blobs, d digest.Digest) string {
	if store == c.layers {
		return layerKeyPrefix + d.String()
	}
	return d.String()
}

// keyBlob is the inverse of blobKey.
func (c *Cache) keyBlob(key string) (Blobs, digest.Digest) {
	if d, ok := strings.CutPrefix(key, layerKeyPrefix); ok && c.layers != nil {
		return c.layers, digest.Digest(d)
	}
	return c.blobs, digest.Digest(key)
}

// entryKeys are the gc keys of an entry's head blob (its whole tar, or
// its skeleton) and of its parts (a split entry's pieces).
func entryKeys(e *manifest.Entry) (head string, parts []string) {
	if !e.Split() {
		return e.Digest.String(), nil
	}
	for _, p := range e.Pieces {
		parts = append(parts, layerKeyPrefix+p.Digest.String())
	}
	return layerKeyPrefix + e.Skeleton.Digest.String(), parts
}

// reportPlan fills the report from the plan (after a commit, with only
// the names it evicted: a victim used, pinned or re-put since the plan is
// kept, and its blob reported as skipped) and says what min-age and holds
// kept from a limit.
func (c *Cache) reportPlan(plan lru.Plan, evicted map[string]digest.Digest, rep *GCReport) {
	for _, v := range plan.Victims {
		gv := GCVictim{Names: []string{}, Blob: v.Blob, Layers: v.Parts, Freed: v.Freed, LastUsed: v.LastUsed, Reason: string(v.Reason)}
		for _, name := range v.Names {
			if _, ok := evicted[name]; ok || evicted == nil {
				gv.Names = append(gv.Names, name)
			}
		}
		if len(v.Names) > 0 && len(gv.Names) == 0 {
			if v.Blob != "" {
				rep.Skipped = append(rep.Skipped, v.Blob)
			}
			continue // kept: changed since the plan
		}
		rep.Victims = append(rep.Victims, gv)
	}
	rep.StoredBefore, rep.StoredAfter = plan.StoredBefore, plan.StoredAfter
	rep.Shortfalls = append(rep.Shortfalls, plan.Shortfalls...)
	rep.Skipped = append(rep.Skipped, plan.Skipped...)
	rep.Shared = append(rep.Shared, plan.Shared...)
	rep.Protected = append(rep.Protected, plan.Protected...)
	if len(rep.Protected) > 0 {
		c.opt.Log.Info("gc kept entries used within the min-age or held by a job", "names", rep.Protected)
	}
}
