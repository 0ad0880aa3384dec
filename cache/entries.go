package cache

import (
	"context"
	"errors"

	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// List returns every entry, sorted by name. Listing is not a use.
func (c *Cache) List(ctx context.Context) ([]manifest.Entry, error) {
	m, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]manifest.Entry, 0, len(m.Entries))
	for _, name := range m.Names() {
		out = append(out, *m.Entries[name])
	}
	return out, nil
}

// Inspect returns n's entry. Inspecting is not a use.
func (c *Cache) Inspect(ctx context.Context, n naming.Name) (manifest.Entry, error) {
	return c.entry(ctx, n)
}

// Remove drops the names (all or nothing: an unknown name changes nothing).
// Their blobs stay until gc finds nobody names them.
func (c *Cache) Remove(ctx context.Context, names ...naming.Name) error {
	return c.updateThen(ctx, func(m *manifest.Manifest) error {
		var missing []error
		for _, n := range names {
			if _, ok := m.Entries[n.String()]; !ok {
				missing = append(missing, notFound(n, m.Names()))
			}
		}
		if len(missing) > 0 {
			return errors.Join(missing...)
		}
		for _, n := range names {
			delete(m.Entries, n.String())
		}
		return nil
	}, func(*manifest.Manifest) {
		for _, n := range names {
			if err := c.dropLink(n); err != nil {
				c.opt.Log.Warn("name link not removed; imgcache verify will fix it", "name", n.String(), "err", err)
			}
		}
	})
}

// SetPinned pins or unpins n: a pinned entry is never evicted by gc.
func (c *Cache) SetPinned(ctx context.Context, n naming.Name, pinned bool) error {
	return c.update(ctx, func(m *manifest.Manifest) error {
		e, ok := m.Entries[n.String()]
		if !ok {
			return notFound(n, m.Names())
		}
		e.Pinned = pinned
		return nil
	})
}

// Usage is how an entry's stored bytes divide when layers are shared.
type Usage struct {
	Own    int64 `json:"own"`    // stored bytes of blobs no other distinct tar uses
	Shared int64 `json:"shared"` // stored bytes of blobs other tars use too
}

// Usages computes each entry's Usage from the records alone (no I/O): a
// blob (whole tar, skeleton or piece) counts as an entry's own when only
// tars of that entry's digest use it. Names of the same tar share nothing
// with each other: their content is one.
func Usages(entries []manifest.Entry) map[string]Usage {
	type blob struct {
		stored int64
		tars   map[string]bool
	}
	blobs := map[string]*blob{}
	note := func(key, tar string, stored int64) {
		b := blobs[key]
		if b == nil {
			b = &blob{stored: stored, tars: map[string]bool{}}
			blobs[key] = b
		}
		b.tars[tar] = true
	}
	keysOf := func(e *manifest.Entry) map[string]int64 {
		if !e.Split() {
			return map[string]int64{e.Digest.String(): e.StoredSize}
		}
		ks := map[string]int64{layerKeyPrefix + e.Skeleton.Digest.String(): e.Skeleton.StoredSize}
		for _, p := range e.Pieces {
			ks[layerKeyPrefix+p.Digest.String()] = p.StoredSize
		}
		return ks
	}
	for i := range entries {
		for k, stored := range keysOf(&entries[i]) {
			note(k, entries[i].Digest.String(), stored)
		}
	}
	out := map[string]Usage{}
	for i := range entries {
		e := &entries[i]
		var u Usage
		for k := range keysOf(e) {
			if b := blobs[k]; len(b.tars) > 1 {
				u.Shared += b.stored
			} else {
				u.Own += b.stored
			}
		}
		out[e.Name] = u
	}
	return out
}
