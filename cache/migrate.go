package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// MigrateReport says what Migrate did.
type MigrateReport struct {
	Converted    []string `json:"converted"`     // names now split
	Left         []string `json:"left"`          // names still whole (see Errors), or changed meanwhile
	Errors       []string `json:"errors"`        // why a tar could not be converted
	StoredBefore int64    `json:"stored_before"` // bytes of all blobs on disk before
	StoredAfter  int64    `json:"stored_after"`  // and after (shared layers stored once)
	Upgraded     bool     `json:"upgraded"`      // this run made the manifest schema 2
}

// Migrate converts a whole-tar cache to the layer store: first the
// manifest becomes schema 2 (from then on older imgcache binaries refuse
// the cache, exit 10, and delete nothing; the layer store is created only
// after that), then each whole tar is split, verified on the way, its
// entries switch to the split record under the manifest's lock, and the
// whole blob goes once no entry needs it. It is explicit (never a side
// effect of put or gc) and resumable: killed at any point it loses
// nothing (an entry is either still whole, its blob intact, or split,
// its pieces published before it switched), and a second run carries on.
func (c *Cache) Migrate(ctx context.Context) (*MigrateReport, error) {
	rep := &MigrateReport{Converted: []string{}, Left: []string{}, Errors: []string{}}
	rep.StoredBefore = c.storedBytes()
	defer func() { rep.StoredAfter = c.storedBytes() }()
	if err := c.upgrade(ctx, rep); err != nil {
		return rep, err
	}
	m, err := c.load(ctx)
	if err != nil {
		return rep, err
	}
	byDigest := map[digest.Digest][]string{}
	for _, name := range m.Names() {
		if e := m.Entries[name]; !e.Split() {
			byDigest[e.Digest] = append(byDigest[e.Digest], name)
		}
	}
	ds := make([]digest.Digest, 0, len(byDigest))
	for d := range byDigest {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	for _, d := range ds {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		names := byDigest[d]
		if err := c.convert(ctx, *m.Entries[names[0]], rep); err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, errdefs.ErrNoSpace) {
				return rep, err
			}
			rep.Left = append(rep.Left, names...)
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", names[0], err))
		}
	}
	return rep, nil
}

// upgrade makes the manifest schema 2, then creates the layer store.
func (c *Cache) upgrade(ctx context.Context, rep *MigrateReport) error {
	err := c.update(ctx, func(m *manifest.Manifest) error {
		if m.Layered() {
			return errNoWrite
		}
		m.Version = manifest.SchemaVersion
		rep.Upgraded = true
		return nil
	})
	if err != nil && !errors.Is(err, errNoWrite) {
		return err
	}
	return c.mkLayers()
}

// convert splits the whole blob of e (and of every name of that digest).
func (c *Cache) convert(ctx context.Context, e manifest.Entry, rep *MigrateReport) error {
	lock, err := c.headLock(ctx, e, false)
	if err != nil {
		return err
	}
	r, err := c.blobs.Open(e.Digest)
	if err != nil {
		lock.Release()
		return err
	}
	known, err := c.knownLayers(ctx)
	if err != nil {
		r.Close()
		lock.Release()
		return err
	}
	st, info, err := c.storeSplit(ctx, io.Reader(r), known)
	r.Close()
	lock.Release()
	if err != nil {
		return err
	}
	defer st.release()
	if st.res.Digest != e.Digest || st.res.Size != e.Size {
		c.dropFresh(ctx, st.fresh)
		return fmt.Errorf("%w: the blob holds a tar %s, the entry says %s", errdefs.ErrIntegrity, st.res.Digest, e.Digest)
	}
	layers := layersOf(info, st.res.Refs)
	var converted []string
	var after int64
	err = c.updateThen(ctx, func(m *manifest.Manifest) error {
		converted, after = nil, st.skel.StoredSize
		for _, p := range st.pieces {
			after += p.StoredSize
		}
		for _, name := range m.Names() {
			cur := m.Entries[name]
			if cur.Split() || cur.Digest != e.Digest {
				continue
			}
			skel := st.skel
			cur.Skeleton, cur.Pieces, cur.StoredSize, cur.Whole = &skel, slices.Clone(st.pieces), after, ""
			cur.Layers = slices.Clone(layers)
			converted = append(converted, name)
		}
		if len(converted) == 0 {
			return errNoWrite // removed or replaced meanwhile
		}
		return nil
	}, func(m *manifest.Manifest) {
		for _, name := range converted {
			if n, err := naming.Parse(name); err == nil {
				if err := c.setLink(n, linkTargetOf(m.Entries[name])); err != nil {
					c.opt.Log.Warn("name link not updated; imgcache verify will fix it", "name", name, "err", err)
				}
			}
		}
	})
	if errors.Is(err, errNoWrite) {
		c.dropFresh(ctx, st.fresh)
		return nil
	}
	if err != nil {
		c.dropFresh(ctx, st.fresh)
		return err
	}
	rep.Converted = append(rep.Converted, converted...)
	st.release()
	c.dropWhole(ctx, e.Digest)
	return nil
}

// dropWhole deletes whole blob d once no entry names it and nobody holds
// it; else gc reclaims it later.
func (c *Cache) dropWhole(ctx context.Context, d digest.Digest) {
	l, ok, err := c.blobs.TryLock(d, true)
	if err != nil || !ok {
		return
	}
	defer l.Release()
	m, err := c.load(ctx)
	if err != nil || m.Referenced(d) {
		return
	}
	if c.blobs.DeleteNoSync(d) == nil {
		c.blobs.Sync()
	}
}

// storedBytes is the bytes of all blobs on disk.
func (c *Cache) storedBytes() int64 {
	var n int64
	for _, store := range c.stores() {
		store.Walk(func(i cas.Info) error { n += i.Stored; return nil }, nil)
	}
	return n
}
