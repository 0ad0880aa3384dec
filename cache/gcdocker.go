package cache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/dockerbridge"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// The daemon's side of gc --docker. The images imgcache loaded carry its
// tags: imgcache/<name>:<12 hex of the digest> and imgcache/<name>:latest.
// gc removes those tags, never forced (an image a container uses stays),
// and never a tag imgcache did not make: an image that also carries one is
// untagged, not deleted. Every tag is protected as its entry is: by a pin,
// by a use within the min-age, by a hold; a superseded version's tag by the
// last use of that version (the retired log) and the holds on its digest.

// gcDocker removes the evicted names' imgcache tags from the daemon. An image
// still used by a container is reported and left alone.
func (c *Cache) gcDocker(ctx context.Context, evicted map[string]digest.Digest, rep *GCReport) {
	if len(evicted) == 0 {
		return
	}
	b, err := c.docker(ctx)
	if err != nil {
		rep.DockerErrors = append(rep.DockerErrors, err.Error())
		return
	}
	for _, name := range slices.Sorted(maps.Keys(evicted)) {
		n, err := naming.Parse(name)
		if err != nil {
			continue
		}
		for _, ref := range []string{naming.PinnedRef(n, evicted[name].Encoded()), naming.LatestRef(n)} {
			c.removeTag(ctx, b, ref, false, rep)
		}
	}
}

// removeTag removes one of imgcache's tags (or, in a dry run, says it
// would), reporting it in rep.
func (c *Cache) removeTag(ctx context.Context, b Engine, ref string, dryRun bool, rep *GCReport) bool {
	if dryRun {
		rep.Docker = append(rep.Docker, ref)
		return true
	}
	err := b.Remove(ctx, ref)
	switch {
	case err == nil:
		rep.Docker = append(rep.Docker, ref)
		return true
	case errors.Is(err, errdefs.ErrNotFound):
	default:
		rep.DockerErrors = append(rep.DockerErrors, err.Error())
	}
	return false
}

// daemonTag is one imgcache tag in the daemon, with what protects it.
type daemonTag struct {
	ref      string
	image    string // image ID
	name     string
	lastUsed time.Time
	held     time.Time
	pinned   bool
	current  bool // the name's current version (or its latest tag)
}

// daemonTags lists imgcache's tags in the daemon: per image, its imgcache
// tags (with their entry's protection, read from m) and whether it carries
// others.
func daemonTags(imgs []dockerbridge.ImageSummary, m *manifest.Manifest) (tags []daemonTag, foreign map[string]bool, size map[string]int64) {
	foreign, size = map[string]bool{}, map[string]int64{}
	for _, img := range imgs {
		for _, ref := range img.RepoTags {
			n, tag, ok := naming.ParseRef(ref)
			if !ok {
				foreign[img.ID] = true
				continue
			}
			name := n.String()
			size[img.ID] = img.Size
			// Reported as imgcache writes it: Podman lists docker.io/imgcache/….
			t := daemonTag{ref: naming.ImageRepo(n) + ":" + tag, image: img.ID, name: name}
			if e := m.Entries[name]; e != nil {
				if tag == "latest" || strings.HasPrefix(e.Digest.Encoded(), tag) {
					t.current, t.lastUsed, t.pinned, t.held = true, e.LastUsed, e.Pinned, m.HeldUntil(name, e.Digest)
				}
			}
			if !t.current && tag != "latest" {
				t.lastUsed, t.held = m.LastUsedRetired(name, tag), m.HeldUntilPrefix(name, tag)
			}
			tags = append(tags, t)
		}
	}
	return tags, foreign, size
}

// protected: a use within minAge, or a hold past now.
func (t daemonTag) protected(now time.Time, minAge time.Duration) bool {
	return t.held.After(now) || (minAge > 0 && !t.lastUsed.IsZero() && now.Sub(t.lastUsed) < minAge)
}

// gcDaemon is gc --docker's work on the daemon beyond the evicted names:
// superseded versions' tags go, then, with a daemon-side limit, imgcache's
// images least recently used first until the data root has that much free.
func (c *Cache) gcDaemon(ctx context.Context, opt GCOptions, rep *GCReport) error {
	b, err := c.docker(ctx)
	if err != nil {
		if opt.DockerMinFree > 0 {
			return err
		}
		rep.DockerErrors = append(rep.DockerErrors, err.Error())
		return nil
	}
	var root string
	if opt.DockerMinFree > 0 {
		if root, err = b.DataRoot(ctx); err != nil {
			return fmt.Errorf("gc --docker-min-free: %w", err)
		}
	}
	m, err := c.load(ctx)
	if err != nil {
		return err
	}
	imgs, err := b.Images(ctx)
	if err != nil {
		return err
	}
	now := c.opt.Now()
	tags, _, _ := daemonTags(imgs, m)
	for _, t := range tags {
		if t.current || m.Entries[t.name] == nil {
			continue // the newest version stays; names the cache dropped are the limit's
		}
		if t.protected(now, opt.Limits.MinAge) {
			rep.DockerProtected = append(rep.DockerProtected, t.ref)
			continue
		}
		c.removeTag(ctx, b, t.ref, opt.DryRun, rep)
	}
	if opt.DockerMinFree == 0 {
		return nil
	}
	return c.daemonLimit(ctx, b, root, opt, m, rep)
}

// daemonLimit removes imgcache's images least recently used first until the
// data root's filesystem has DockerMinFree free (then DockerTargetFree): the
// policy is lru's, over images (sized by the daemon's list, an estimate when
// they share layers) and their tags; free space is measured again after each
// round, until the target holds or nothing more may go.
func (c *Cache) daemonLimit(ctx context.Context, b Engine, root string, opt GCOptions, m *manifest.Manifest, rep *GCReport) error {
	free, err := c.freeBytes(root)
	if err != nil {
		return err
	}
	rep.DockerFree, rep.DockerFreeAfter = free, free
	target := max(opt.DockerTargetFree, opt.DockerMinFree)
	lim := lru.Limits{MinFree: opt.DockerMinFree, TargetFree: target, MinAge: opt.Limits.MinAge}
	gone := map[string]bool{}
	for round := 0; round < 100; round++ {
		imgs, err := b.Images(ctx)
		if err != nil {
			return err
		}
		tags, foreign, size := daemonTags(imgs, m)
		st := lru.State{Free: free, Now: c.opt.Now()}
		named := map[string]bool{}
		for _, t := range tags {
			if m.Entries[t.name] != nil {
				named[t.image] = true
			} else {
				foreign[t.image] = true // another cache's tag keeps the image
			}
		}
		for _, id := range slices.Sorted(maps.Keys(named)) {
			s := size[id]
			if foreign[id] {
				s = 0 // untagging frees nothing: the image stays for its other tags
			}
			st.Blobs = append(st.Blobs, lru.Blob{Key: id, Size: s})
		}
		for _, t := range tags {
			// Only names this cache holds: another cache on the same daemon
			// knows its own uses and holds, this one does not.
			if !gone[t.ref] && m.Entries[t.name] != nil {
				st.Entries = append(st.Entries, lru.Entry{Name: t.ref, Blob: t.image, LastUsed: t.lastUsed, Pinned: t.pinned, HeldUntil: t.held})
			}
		}
		plan, err := lru.Compute(st, lim)
		if err != nil {
			return fmt.Errorf("gc --docker-min-free: %w", err)
		}
		if round == 0 {
			rep.DockerProtected = append(rep.DockerProtected, plan.Protected...)
		}
		removed := 0
		for _, v := range plan.Victims {
			for _, ref := range v.Names {
				gone[ref] = true
				if c.removeTag(ctx, b, ref, opt.DryRun, rep) {
					removed++
				}
			}
		}
		if opt.DryRun {
			rep.DockerFreeAfter = plan.FreeAfter
			rep.DockerMissing = max(0, target-plan.FreeAfter)
			return nil
		}
		if free, err = c.freeBytes(root); err != nil {
			return err
		}
		rep.DockerFreeAfter = free
		if removed == 0 || free >= target {
			break
		}
		lim.MinFree = target // below the target still: go on, as the hysteresis asked
	}
	if rep.DockerFree < opt.DockerMinFree && rep.DockerFreeAfter < target {
		rep.DockerMissing = target - rep.DockerFreeAfter
	}
	return nil
}
