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
				missing = append(missing, notFound(n))
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
			return notFound(n)
		}
		e.Pinned = pinned
		return nil
	})
}
