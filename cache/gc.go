package cache

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/lockfile"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// GCOptions say what gc should reach.
type GCOptions struct {
	Limits lru.Limits
	DryRun bool // plan only: change nothing
	Docker bool // also remove evicted names' imgcache/<name> tags from the daemon
	// Recent is the window in which an eviction counts as thrashing: gc warns
	// when it evicts something used that recently. Default 10 minutes.
	Recent time.Duration
}

// GCVictim is one step of what gc did (or would do).
type GCVictim struct {
	Names    []string  `json:"names"`
	Blob     string    `json:"blob,omitempty"`
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
	Shortfalls   []lru.Shortfall `json:"shortfalls"`
	Recent       []string        `json:"recently_used_evicted"` // evicted names used within the Recent window
	Docker       []string        `json:"docker_removed,omitempty"`
	DockerErrors []string        `json:"docker_errors,omitempty"`
}

// Short reports whether a target could not be reached.
func (r *GCReport) Short() bool { return len(r.Shortfalls) > 0 }

// GC evicts least-recently-used entries until the limits hold, deletes blobs
// no name points at, and clears leftovers of dead ingests. A blob is deleted
// only under its exclusive lock, taken without waiting: one another process
// is reading or loading is skipped this round. The manifest changes in one
// step under its lock; blobs are deleted after it is written (a crash in
// between leaves unreferenced blobs for the next gc, never a name without a
// blob). gc is not a use.
func (c *Cache) GC(ctx context.Context, opt GCOptions) (*GCReport, error) {
	if err := opt.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("gc: %w: %w", errdefs.ErrInvalid, err)
	}
	if opt.Recent <= 0 {
		opt.Recent = 10 * time.Minute
	}
	rep := &GCReport{DryRun: opt.DryRun, Victims: []GCVictim{}, Skipped: []string{}, Shortfalls: []lru.Shortfall{}, Recent: []string{}}
	if !opt.DryRun {
		freed, removed, err := c.blobs.CleanTmp()
		if err != nil {
			return nil, err
		}
		rep.TmpFreed, rep.TmpFiles = freed, len(removed)
	}
	free, err := freeBytes(c.dir)
	if err != nil {
		return nil, err
	}
	rep.Free = free

	held := map[string]*lockfile.Lock{} // exclusive locks on the blobs to delete
	defer func() {
		for _, l := range held {
			l.Release()
		}
	}()
	var plan lru.Plan
	evicted := map[string]digest.Digest{} // name → the digest it named
	decide := func(m *manifest.Manifest) error {
		p, err := c.planGC(m, free, opt.Limits, held)
		if err != nil {
			return err
		}
		plan = p
		if opt.DryRun {
			return nil
		}
		for _, v := range p.Victims {
			for _, name := range v.Names {
				evicted[name] = m.Entries[name].Digest
				delete(m.Entries, name)
			}
		}
		return nil
	}
	if opt.DryRun {
		m, err := c.load(ctx)
		if err == nil {
			err = decide(m)
		}
		if err != nil {
			return nil, err
		}
	} else if err := c.updateThen(ctx, decide, func(*manifest.Manifest) {
		for name := range evicted {
			if n, err := naming.Parse(name); err == nil {
				c.dropLink(n)
			}
		}
	}); err != nil {
		return nil, err
	}

	now := c.opt.Now()
	for _, v := range plan.Victims {
		gv := GCVictim{Names: v.Names, Blob: v.Blob, Freed: v.Freed, LastUsed: v.LastUsed, Reason: string(v.Reason)}
		if gv.Names == nil {
			gv.Names = []string{}
		}
		rep.Victims = append(rep.Victims, gv)
		if !v.LastUsed.IsZero() && now.Sub(v.LastUsed) < opt.Recent {
			rep.Recent = append(rep.Recent, v.Names...)
		}
	}
	rep.StoredBefore, rep.StoredAfter = plan.StoredBefore, plan.StoredAfter
	rep.Shortfalls = append(rep.Shortfalls, plan.Shortfalls...)
	rep.Skipped = append(rep.Skipped, plan.Skipped...)
	if len(rep.Recent) > 0 {
		c.opt.Log.Warn("gc evicted entries used in the last minutes: the limits may be too tight for the working set", "names", rep.Recent, "window", opt.Recent.String())
	}
	if opt.DryRun {
		rep.Freed, rep.FreeAfter = plan.Freed, free+plan.Freed
		return rep, nil
	}

	for _, v := range plan.Victims {
		if v.Blob == "" {
			continue
		}
		d := digest.Digest(v.Blob)
		if err := c.blobs.DeleteNoSync(d); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			c.opt.Log.Warn("blob not deleted; the next gc retries", "blob", v.Blob, "err", err)
			continue
		}
		rep.Freed += v.Freed
		if l := held[v.Blob]; l != nil {
			l.Remove()
			delete(held, v.Blob)
		}
	}
	if rep.Freed > 0 {
		if err := c.blobs.Sync(); err != nil {
			c.opt.Log.Warn("fsync of blobs/ failed", "err", err)
		}
	}
	evictions := 0
	for _, v := range plan.Victims {
		evictions += len(v.Names)
	}
	c.count(func(s *Counters) { s.Evictions += int64(evictions); s.BytesReclaimed += rep.Freed + rep.TmpFreed })
	if n, err := c.blobs.CleanLocks(); err == nil {
		rep.LocksRemoved = n
	}
	if opt.Docker {
		c.gcDocker(ctx, plan, evicted, rep)
	}
	rep.FreeAfter, _ = freeBytes(c.dir)
	return rep, nil
}

// planGC computes a plan whose every blob to delete is exclusively locked
// (the locks are left in held). A blob that cannot be locked is in use: it is
// marked so and the plan is computed again.
func (c *Cache) planGC(m *manifest.Manifest, free int64, limits lru.Limits, held map[string]*lockfile.Lock) (lru.Plan, error) {
	st := lru.State{Free: free, Now: c.opt.Now()}
	index := map[string]int{}
	err := c.blobs.Walk(func(i cas.Info) error {
		index[i.Digest.String()] = len(st.Blobs)
		st.Blobs = append(st.Blobs, lru.Blob{Key: i.Digest.String(), Size: i.Stored})
		return nil
	}, nil)
	if err != nil {
		return lru.Plan{}, err
	}
	for _, name := range m.Names() {
		e := m.Entries[name]
		if _, ok := index[e.Digest.String()]; !ok {
			continue // blob missing: verify reports it, nothing to evict
		}
		st.Entries = append(st.Entries, lru.Entry{Name: name, Blob: e.Digest.String(), LastUsed: e.LastUsed, Pinned: e.Pinned})
	}
	for {
		plan, err := lru.Compute(st, limits)
		if err != nil {
			return plan, fmt.Errorf("gc: %w", err)
		}
		busy := false
		for _, key := range plan.Deleted() {
			if held[key] != nil {
				continue
			}
			l, ok, err := c.blobs.TryLock(digest.Digest(key), true)
			if err != nil {
				return plan, err
			}
			if !ok {
				st.Blobs[index[key]].InUse = true
				busy = true
				continue
			}
			held[key] = l
		}
		if busy {
			continue
		}
		// Release locks on blobs a later plan no longer deletes.
		keep := map[string]bool{}
		for _, key := range plan.Deleted() {
			keep[key] = true
		}
		for key, l := range held {
			if !keep[key] {
				l.Release()
				delete(held, key)
			}
		}
		return plan, nil
	}
}

// gcDocker removes the evicted names' imgcache tags from the daemon. An image
// still used by a container is reported and left alone.
func (c *Cache) gcDocker(ctx context.Context, plan lru.Plan, evicted map[string]digest.Digest, rep *GCReport) {
	b, err := c.docker(ctx)
	if err != nil {
		rep.DockerErrors = append(rep.DockerErrors, err.Error())
		return
	}
	for _, v := range plan.Victims {
		for _, name := range v.Names {
			n, err := naming.Parse(name)
			if err != nil {
				continue
			}
			refs := []string{naming.PinnedRef(n, evicted[name].Encoded()), naming.LatestRef(n)}
			for _, ref := range refs {
				err := b.Remove(ctx, ref)
				switch {
				case err == nil:
					rep.Docker = append(rep.Docker, ref)
				case errors.Is(err, errdefs.ErrNotFound):
				default:
					rep.DockerErrors = append(rep.DockerErrors, err.Error())
				}
			}
		}
	}
}

// freeBytes is the space available to unprivileged users on dir's filesystem.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
