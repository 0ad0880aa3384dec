package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/imgcache/imgcache/builder"
	"github.com/imgcache/imgcache/dockerbridge"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/internal/lockfile"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// BaseArg is the build argument that carries the base's content-pinned ref:
// Dockerfiles for imgcache begin `ARG BASE_IMAGE` / `FROM ${BASE_IMAGE}`.
const BaseArg = "BASE_IMAGE"

// The labels a built image carries.
const (
	LabelBaseName   = "org.imgcache.base.name"
	LabelBaseDigest = "org.imgcache.base.digest"
)

// BuildSpec is how to build a derived image.
type BuildSpec struct {
	Base       naming.Name       // a cached name; loaded as Get does
	Dockerfile string            // path on disk (default <Context>/Dockerfile)
	Context    string            // directory (default ".")
	BuildArgs  map[string]string // --build-arg K=V; BaseArg is set by Build
}

// BuildOptions tune one Build.
type BuildOptions struct {
	// Output receives the builder's output ("Step 1/3 : …") and status
	// lines (waiting for another process); nil discards.
	Output io.Writer
	// NoCache builds every step afresh instead of reusing the daemon's
	// layer cache.
	NoCache bool
	// FreshSince: once the build lock is held, an entry built at or after
	// this time, from the same recipe, from its base's current digest,
	// counts as done and Build returns it without building. When zero and
	// Build had to wait for another process building the name, the time the
	// wait started is used: a build that waited for an equivalent one does
	// not repeat it.
	FreshSince time.Time
	// Satisfied, when set, replaces that freshness test: it is asked once
	// the build lock is held, with the name's current entry (nil: none).
	Satisfied func(current *manifest.Entry) bool
}

// BuildResult reports a Build.
type BuildResult struct {
	Entry    manifest.Entry
	Ref      string // imgcache/<name>:<12 hex>, tagged in the daemon
	ImageID  string
	Built    bool   // false: the entry was already fresh once the lock was held (see Waited)
	Waited   bool   // another process was building the name; this one waited for it
	Replaced string // the digest the name pointed at before, if it changed
	// PushErr is why the write-back push failed (Options.Push); the
	// local entry stands.
	PushErr error
}

// Build builds n from spec and stores the result under n:
//
//  1. take the exclusive lock <dir>/locks/build-<name>.lock, so no two
//     processes build one name at once (a second one waits, then returns
//     the first one's result when it is fresh: see BuildOptions.FreshSince);
//  2. make sure the base is in the daemon, verified (Get);
//  3. build through the Engine API with BASE_IMAGE=<the base's pinned ref>,
//     labelled org.imgcache.base.name and org.imgcache.base.digest, the
//     context streamed as a tar (.dockerignore honoured);
//  4. stream the image out of the daemon into the cache (as Save does),
//     recording the base's name and digest and the recipe (absolute paths,
//     build args) in the entry, and the recipe under recipes/ (so that
//     get --build can rebuild the name after rm or gc);
//  5. tag it imgcache/<name>:<12 hex> and :latest, and drop the temporary
//     build tag.
//
// A failing build stores nothing; its error wraps errdefs.ErrRejected and
// names the failing step. A missing base wraps errdefs.ErrNotFound; a bad
// spec errdefs.ErrInvalid. A build is a use.
func (c *Cache) Build(ctx context.Context, n naming.Name, spec BuildSpec, opt BuildOptions) (*BuildResult, error) {
	recipe, err := c.checkSpec(n, spec)
	if err != nil {
		return nil, err
	}
	out := opt.Output
	if out == nil {
		out = io.Discard
	}
	lock, waitedSince, err := c.buildLock(ctx, n, out)
	if err != nil {
		return nil, err
	}
	defer lock.Remove() // held exclusively: waiters notice and retry on a new file
	waited := !waitedSince.IsZero()

	satisfied := opt.Satisfied
	if satisfied == nil {
		since := opt.FreshSince
		if since.IsZero() {
			since = waitedSince
		}
		if !since.IsZero() {
			satisfied = c.freshTest(ctx, spec.Base, recipe, since)
		}
	}
	if satisfied != nil {
		e, err := c.entry(ctx, n)
		var cur *manifest.Entry
		if err == nil {
			cur = &e
		} else if !errors.Is(err, errdefs.ErrNotFound) {
			return nil, err
		}
		if satisfied(cur) && cur != nil {
			if waited {
				fmt.Fprintf(out, "imgcache: %s was built by another process while this one waited: %s\n", n, cur.Digest)
			}
			return &BuildResult{Entry: *cur, Ref: naming.PinnedRef(n, cur.Digest.Encoded()), ImageID: cur.ImageID, Waited: waited}, nil
		}
	}
	res, err := c.build(ctx, n, spec.Base, recipe, opt, out)
	if err != nil {
		return nil, err
	}
	res.Waited = waited
	if err := c.saveRecipe(n, spec.Base, *recipe); err != nil {
		c.opt.Log.Warn("recipe not recorded under recipes/; get --build cannot rebuild this name once it is gone", "name", n.String(), "err", err)
	}
	res.PushErr = c.writeBack(ctx, n)
	return res, nil
}

// checkSpec validates spec and returns its recipe with absolute paths.
func (c *Cache) checkSpec(n naming.Name, spec BuildSpec) (*manifest.Recipe, error) {
	if err := checkName(n); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if err := checkName(spec.Base); err != nil {
		return nil, fmt.Errorf("build %s: base: %w", n, err)
	}
	if spec.Base == n {
		return nil, fmt.Errorf("build %s: %w: an image cannot be its own base", n, errdefs.ErrInvalid)
	}
	args := map[string]string{}
	for k, v := range spec.BuildArgs {
		switch k {
		case "":
			return nil, fmt.Errorf("build %s: %w: a build argument without a name", n, errdefs.ErrInvalid)
		case BaseArg:
			return nil, fmt.Errorf("build %s: %w: %s is set by imgcache to the base's ref (choose the base with --base)", n, errdefs.ErrInvalid, BaseArg)
		}
		args[k] = v
	}
	if len(args) == 0 {
		args = nil
	}
	ctxDir := spec.Context
	if ctxDir == "" {
		ctxDir = "."
	}
	ctxDir, err := filepath.Abs(ctxDir)
	if err != nil {
		return nil, fmt.Errorf("build %s: context: %w", n, err)
	}
	df := spec.Dockerfile
	if df == "" {
		df = filepath.Join(ctxDir, "Dockerfile")
	}
	if df, err = filepath.Abs(df); err != nil {
		return nil, fmt.Errorf("build %s: dockerfile: %w", n, err)
	}
	if fi, err := os.Stat(ctxDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("build %s: %w: context %s is not a directory", n, errdefs.ErrInvalid, ctxDir)
	}
	if fi, err := os.Stat(df); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("build %s: %w: no Dockerfile %s", n, errdefs.ErrInvalid, df)
	}
	return &manifest.Recipe{Dockerfile: df, Context: ctxDir, BuildArgs: args}, nil
}

// buildLock takes n's build lock. waitedSince is when it started waiting
// for another holder; zero when the lock was free.
func (c *Cache) buildLock(ctx context.Context, n naming.Name, out io.Writer) (*lockfile.Lock, time.Time, error) {
	path, err := c.blobs.KeyLockPath("build-" + n.String())
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("build %s: %w", n, err)
	}
	l, ok, err := lockfile.TryAcquire(path, true)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("build %s: %w", n, err)
	}
	if ok {
		return l, time.Time{}, nil
	}
	since := c.opt.Now()
	fmt.Fprintf(out, "imgcache: another process is building %s; waiting for it\n", n)
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	l, err = lockfile.Acquire(lctx, path, true)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("build %s: waiting for another process building it: %w", n, err)
	}
	return l, since, nil
}

// freshTest is the default Satisfied: the entry was built at or after
// since, from the same base and recipe, and that base has not changed since.
func (c *Cache) freshTest(ctx context.Context, base naming.Name, recipe *manifest.Recipe, since time.Time) func(*manifest.Entry) bool {
	return func(e *manifest.Entry) bool {
		if e == nil || e.Base == nil || e.Recipe == nil || e.Base.Name != base.String() || e.Added.Before(since) || !sameRecipe(e.Recipe, recipe) {
			return false
		}
		b, err := c.entry(ctx, base)
		return err == nil && b.Digest == e.Base.Digest
	}
}

func sameRecipe(a, b *manifest.Recipe) bool {
	return a.Dockerfile == b.Dockerfile && a.Context == b.Context && maps.Equal(a.BuildArgs, b.BuildArgs)
}

// build does the work of Build once the lock is held.
func (c *Cache) build(ctx context.Context, n, base naming.Name, recipe *manifest.Recipe, opt BuildOptions, out io.Writer) (*BuildResult, error) {
	start := c.opt.Now()
	got, err := c.Get(ctx, base)
	if err != nil {
		return nil, fmt.Errorf("build %s: base %s: %w", n, base, err)
	}
	b, err := c.docker(ctx)
	if err != nil {
		return nil, err
	}
	tr, dockerfile, err := dockerbridge.ContextTar(recipe.Context, recipe.Dockerfile)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", n, err)
	}
	defer tr.Close()
	args := map[string]*string{BaseArg: &got.Ref}
	for k, v := range recipe.BuildArgs {
		args[k] = &v
	}
	tmpTag := fmt.Sprintf("%s:build-%d-%d", naming.ImageRepo(n), os.Getpid(), time.Now().UnixNano())
	fmt.Fprintf(out, "imgcache: building %s from %s (%s=%s)\n", n, base, BaseArg, got.Ref)
	id, err := b.Build(ctx, tr, dockerbridge.BuildOptions{
		Dockerfile: dockerfile,
		Tags:       []string{tmpTag},
		BuildArgs:  args,
		Labels:     map[string]string{LabelBaseName: base.String(), LabelBaseDigest: got.Entry.Digest.String()},
		NoCache:    opt.NoCache,
	}, out)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", n, err)
	}
	// Untag: the image keeps its imgcache tags, or goes if the ingest failed.
	defer func() {
		if err := b.Remove(context.WithoutCancel(ctx), tmpTag); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			c.opt.Log.Warn("temporary build tag not removed", "tag", tmpTag, "err", err)
		}
	}()
	img, err := b.Inspect(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", n, err)
	}
	rc, err := b.Save(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", n, err)
	}
	defer rc.Close()
	baseRec := &manifest.Base{Name: base.String(), Digest: got.Entry.Digest}
	res, err := c.ingest(ctx, n, rc, "build", img.Size, func(e *manifest.Entry) error {
		e.Base, e.Recipe = baseRec, recipe
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", n, err)
	}
	e := res.Entry
	if e.Added.Before(start) {
		// Same content as before (the layer cache): it was still built now.
		now := c.opt.Now().UTC()
		err := c.update(ctx, func(m *manifest.Manifest) error {
			if cur, ok := m.Entries[n.String()]; ok && cur.Digest == e.Digest {
				cur.Added = now
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", n, err)
		}
		e.Added = now
	}
	ref := naming.PinnedRef(n, e.Digest.Encoded())
	for _, r := range []string{ref, naming.LatestRef(n)} {
		if err := b.Tag(ctx, id, r); err != nil {
			return nil, fmt.Errorf("build %s: %w", n, err)
		}
	}
	return &BuildResult{Entry: e, Ref: ref, ImageID: id, Built: true, Replaced: res.Replaced}, nil
}

// RecordedRecipe is what recipes/<project>/<name>.json holds: the last
// recipe a name was built from. It outlives the entry (rm, gc), so that
// get --build can build the name again.
type RecordedRecipe struct {
	Name   string          `json:"name"`
	Base   string          `json:"base"`
	Recipe manifest.Recipe `json:"recipe"`
}

func (c *Cache) recipePath(n naming.Name) string {
	return filepath.Join(c.dir, "recipes", n.Project(), n.String()+".json")
}

// saveRecipe records n's recipe, atomically and durably.
func (c *Cache) saveRecipe(n naming.Name, base naming.Name, r manifest.Recipe) error {
	p := c.recipePath(n)
	if err := checkLinkDir(filepath.Dir(p)); err != nil {
		return err
	}
	if err := fsutil.MkdirAll(filepath.Dir(p)); err != nil {
		return err
	}
	rec := RecordedRecipe{Name: n.String(), Base: base.String(), Recipe: r}
	return fsutil.WriteAtomic(p, "", func(w io.Writer) error { return writeJSON(w, rec) })
}

// Recipe returns the recipe n was last built from: its entry's, else the
// one recorded under recipes/. ok is false when there is none.
func (c *Cache) Recipe(ctx context.Context, n naming.Name) (rec RecordedRecipe, ok bool, err error) {
	if err := checkName(n); err != nil {
		return rec, false, err
	}
	e, err := c.entry(ctx, n)
	switch {
	case err == nil && e.Base != nil && e.Recipe != nil:
		return RecordedRecipe{Name: e.Name, Base: e.Base.Name, Recipe: *e.Recipe}, true, nil
	case err != nil && !errors.Is(err, errdefs.ErrNotFound):
		return rec, false, err
	}
	data, err := os.ReadFile(c.recipePath(n))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, err
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.Name != n.String() {
		c.opt.Log.Warn("recorded recipe unreadable; ignored", "path", c.recipePath(n), "err", err)
		return RecordedRecipe{}, false, nil
	}
	if _, err := naming.Parse(rec.Base); err != nil {
		return RecordedRecipe{}, false, nil
	}
	return rec, true, nil
}

// writeJSON writes v as indented JSON (recipes, stats).
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Resolve plans n against the cache: the exact hit, the best base to build
// it from, whether it needs a build (builder.Resolve's rules).
func (c *Cache) Resolve(ctx context.Context, n naming.Name) (builder.Plan, error) {
	m, err := c.load(ctx)
	if err != nil {
		return builder.Plan{}, err
	}
	return builder.Resolve(n, m.Names()), nil
}

// Outdated lists the built entries that are stale: their base's digest
// changed (transitively), their base is gone, or (maxAge > 0) they were
// built longer ago than maxAge. Sorted by name; not a use.
func (c *Cache) Outdated(ctx context.Context, maxAge time.Duration) ([]builder.Stale, error) {
	m, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	return builder.Outdated(infos(m), c.opt.Now(), maxAge), nil
}

// infos is the manifest as builder sees it.
func infos(m *manifest.Manifest) map[string]builder.Info {
	in := make(map[string]builder.Info, len(m.Entries))
	for name, e := range m.Entries {
		i := builder.Info{Digest: e.Digest.String(), Built: e.Added, Recipe: e.Recipe != nil}
		if e.Base != nil {
			i.Base, i.BaseDigest = e.Base.Name, e.Base.Digest.String()
		}
		in[name] = i
	}
	return in
}
