package cache_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

const (
	baseName  = "capy-ubuntu-25.04-base"
	gccName   = "capy-ubuntu-25.04-gcc15"
	asanName  = "capy-ubuntu-25.04-gcc15-asan"
	copyOnlyD = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /opt/\n"
)

// recipeDir makes a build context with a Dockerfile and one file.
func recipeDir(t *testing.T, dockerfile, file string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file.txt"), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func build(t *testing.T, c *cache.Cache, name, base, ctxDir string) *cache.BuildResult {
	t.Helper()
	res, err := c.Build(context.Background(), mustName(t, name), cache.BuildSpec{Base: mustName(t, base), Context: ctxDir}, cache.BuildOptions{})
	if err != nil {
		t.Fatalf("Build(%s from %s): %v", name, base, err)
	}
	return res
}

// TestBuild: the base is loaded verified, the engine builds with BASE_IMAGE
// set to the base's pinned ref and the labels, the context is sent, the
// result is stored with its base and recipe and tagged, the temporary tag
// is gone, and the recipe is recorded under recipes/.
func TestBuild(t *testing.T) {
	c, eng, _ := engineCache(t)
	baseData, baseImg := image(t, "t/base:1", 1)
	put(t, c, baseName, baseData)
	ctxDir := recipeDir(t, copyOnlyD, "gcc 15")

	var out bytes.Buffer
	res, err := c.Build(context.Background(), mustName(t, gccName), cache.BuildSpec{Base: mustName(t, baseName), Context: ctxDir, BuildArgs: map[string]string{"JOBS": "4"}}, cache.BuildOptions{Output: &out})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if l := eng.committedLoads(); len(l) != 1 || l[0].Digest != baseImg.Digest {
		t.Fatalf("loads %+v, want the base, verified", l)
	}
	builds := eng.allBuilds()
	if len(builds) != 1 {
		t.Fatalf("%d builds", len(builds))
	}
	b := builds[0]
	wantRef := naming.PinnedRef(mustName(t, baseName), baseImg.Digest.Encoded())
	if b.Base != wantRef || b.Opts.Labels[cache.LabelBaseName] != baseName || b.Opts.Labels[cache.LabelBaseDigest] != baseImg.Digest.String() {
		t.Errorf("build sent BASE_IMAGE=%q labels %v; want %s and the base's name and digest", b.Base, b.Opts.Labels, wantRef)
	}
	if v := b.Opts.BuildArgs["JOBS"]; v == nil || *v != "4" {
		t.Errorf("build args %v", b.Opts.BuildArgs)
	}
	if b.Files["file.txt"] != "gcc 15" || b.Files["Dockerfile"] != copyOnlyD {
		t.Errorf("context sent: %v", b.Files)
	}
	e := inspect(t, c, gccName)
	if e.Base == nil || e.Base.Name != baseName || e.Base.Digest != baseImg.Digest {
		t.Errorf("entry base %+v", e.Base)
	}
	if e.Recipe == nil || e.Recipe.Context != ctxDir || e.Recipe.Dockerfile != filepath.Join(ctxDir, "Dockerfile") || e.Recipe.BuildArgs["JOBS"] != "4" {
		t.Errorf("entry recipe %+v", e.Recipe)
	}
	if !res.Built || res.Entry.Digest != e.Digest || res.ImageID != e.ImageID || res.ImageID != b.ID {
		t.Errorf("result %+v, entry %+v", res, e)
	}
	if eng.tagged(res.Ref) != b.ID || eng.tagged(naming.LatestRef(mustName(t, gccName))) != b.ID {
		t.Errorf("refs not tagged in the engine")
	}
	for _, tag := range b.Opts.Tags {
		if eng.tagged(tag) != "" {
			t.Errorf("temporary tag %s left in the engine", tag)
		}
	}
	if !strings.Contains(out.String(), "Step 3/3 : COPY . /opt/") {
		t.Errorf("build output not passed on: %q", out.String())
	}
	rec, ok, err := c.Recipe(context.Background(), mustName(t, gccName))
	if err != nil || !ok || rec.Base != baseName || rec.Recipe.Context != ctxDir {
		t.Errorf("Recipe = %+v, %v, %v", rec, ok, err)
	}
	// It outlives the entry.
	if err := c.Remove(context.Background(), mustName(t, gccName)); err != nil {
		t.Fatal(err)
	}
	if rec, ok, _ := c.Recipe(context.Background(), mustName(t, gccName)); !ok || rec.Recipe.Context != ctxDir {
		t.Errorf("recipe after rm: %+v, %v", rec, ok)
	}
	// A get right after a build is warm.
	res = build(t, c, gccName, baseName, ctxDir)
	if g := get(t, c, gccName); g.Loaded || g.Ref != res.Ref {
		t.Errorf("get after build = %+v", g)
	}
}

func TestBuildRefuses(t *testing.T) {
	c, eng, _ := engineCache(t)
	baseData, _ := image(t, "t/base:1", 1)
	put(t, c, baseName, baseData)
	good := recipeDir(t, copyOnlyD, "x")
	failing := recipeDir(t, "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN false\n", "x")
	ctx := context.Background()
	cases := []struct {
		name string
		n    string
		spec cache.BuildSpec
		want error
		msg  string
	}{
		{"failing Dockerfile", gccName, cache.BuildSpec{Base: mustName(t, baseName), Context: failing}, errdefs.ErrRejected, `step "Step 3/3 : RUN false"`},
		{"missing base", gccName, cache.BuildSpec{Base: mustName(t, "capy-ubuntu-25.04-none"), Context: good}, errdefs.ErrNotFound, "capy-ubuntu-25.04-none"},
		{"own base", baseName, cache.BuildSpec{Base: mustName(t, baseName), Context: good}, errdefs.ErrInvalid, "own base"},
		{"BASE_IMAGE given", gccName, cache.BuildSpec{Base: mustName(t, baseName), Context: good, BuildArgs: map[string]string{cache.BaseArg: "x"}}, errdefs.ErrInvalid, "set by imgcache"},
		{"no context", gccName, cache.BuildSpec{Base: mustName(t, baseName), Context: filepath.Join(good, "nope")}, errdefs.ErrInvalid, "not a directory"},
		{"no Dockerfile", gccName, cache.BuildSpec{Base: mustName(t, baseName), Context: good, Dockerfile: filepath.Join(good, "nope")}, errdefs.ErrInvalid, "no Dockerfile"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Build(ctx, mustName(t, tc.n), tc.spec, cache.BuildOptions{})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Build = %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if tc.n != baseName {
				if _, err := c.Inspect(ctx, mustName(t, tc.n)); !errors.Is(err, errdefs.ErrNotFound) {
					t.Errorf("a refused build left an entry: %v", err)
				}
			}
		})
	}
	if n := len(eng.allBuilds()); n != 1 {
		t.Errorf("%d builds reached the engine, want only the failing Dockerfile's", n)
	}
}

// chain builds base → gcc15 → gcc15-asan and returns the contexts.
func chain(t *testing.T, c *cache.Cache) (gccCtx, asanCtx string) {
	t.Helper()
	baseData, _ := image(t, "t/base:1", 1)
	put(t, c, baseName, baseData)
	gccCtx, asanCtx = recipeDir(t, copyOnlyD, "gcc"), recipeDir(t, copyOnlyD, "asan")
	build(t, c, gccName, baseName, gccCtx)
	build(t, c, asanName, gccName, asanCtx)
	return gccCtx, asanCtx
}

func rebuild(t *testing.T, c *cache.Cache, opt cache.RebuildOptions, names ...string) (*cache.RebuildReport, error) {
	t.Helper()
	var ns []naming.Name
	for _, n := range names {
		ns = append(ns, mustName(t, n))
	}
	return c.Rebuild(context.Background(), ns, opt)
}

func statuses(rep *cache.RebuildReport) map[string]string {
	m := map[string]string{}
	for _, r := range rep.Results {
		m[r.Name] = r.Status
	}
	return m
}

// TestRebuildChainInOrder: after the base changes, rebuild builds gcc15 on
// the new base, then gcc15-asan on the new gcc15, and nothing is outdated
// after. Fails if the order is not bases first (asan would be built on the
// old gcc15 and still be outdated).
func TestRebuildChainInOrder(t *testing.T) {
	c, eng, clk := engineCache(t)
	chain(t, c)
	clk.Advance(time.Hour)
	newBase, newImg := image(t, "t/base:2", 2)
	put(t, c, baseName, newBase)
	stale, err := c.Outdated(context.Background(), 0)
	if err != nil || len(stale) != 2 {
		t.Fatalf("Outdated = %+v, %v", stale, err)
	}
	before := len(eng.allBuilds())
	var results []string
	rep, err := rebuild(t, c, cache.RebuildOptions{Jobs: 2, OnResult: func(r cache.RebuildResult) { results = append(results, r.Name+":"+r.Status) }})
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	if want := [][]string{{gccName}, {asanName}}; !slices.EqualFunc(rep.Order, want, slices.Equal) {
		t.Errorf("order %v, want %v", rep.Order, want)
	}
	if want := []string{gccName + ":rebuilt", asanName + ":rebuilt"}; !slices.Equal(results, want) {
		t.Errorf("results %v, want %v", results, want)
	}
	builds := eng.allBuilds()[before:]
	if len(builds) != 2 {
		t.Fatalf("%d builds, want 2", len(builds))
	}
	gcc := inspect(t, c, gccName)
	if builds[0].Base != naming.PinnedRef(mustName(t, baseName), newImg.Digest.Encoded()) || gcc.Base.Digest != newImg.Digest {
		t.Errorf("gcc15 built on %s (entry base %s), want the new base", builds[0].Base, gcc.Base.Digest)
	}
	if builds[1].Base != naming.PinnedRef(mustName(t, gccName), gcc.Digest.Encoded()) || inspect(t, c, asanName).Base.Digest != gcc.Digest {
		t.Errorf("asan built on %s, want the new gcc15 %s", builds[1].Base, gcc.Digest)
	}
	if stale, _ := c.Outdated(context.Background(), 0); len(stale) != 0 {
		t.Errorf("still outdated after rebuild: %+v", stale)
	}
	// Nothing to do now: no builds.
	rep, err = rebuild(t, c, cache.RebuildOptions{})
	if err != nil || len(rep.Results) != 0 || len(eng.allBuilds()) != before+2 {
		t.Errorf("second rebuild: %+v, %v", rep, err)
	}
	// Named and up to date: skipped; forced: rebuilt without the layer cache.
	rep, err = rebuild(t, c, cache.RebuildOptions{}, asanName)
	if err != nil || statuses(rep)[asanName] != cache.Skipped {
		t.Errorf("named up-to-date rebuild: %+v, %v", rep, err)
	}
	clk.Advance(time.Minute) // the build it forces starts after the last one
	rep, err = rebuild(t, c, cache.RebuildOptions{Force: true}, asanName)
	if err != nil || statuses(rep)[asanName] != cache.Rebuilt || !eng.allBuilds()[len(eng.allBuilds())-1].Opts.NoCache {
		t.Errorf("forced rebuild: %+v, %v", rep, err)
	}
}

// TestRebuildFailingBase: when gcc15 fails to rebuild, asan is not built
// and fails naming its base; the error is the build's refusal.
func TestRebuildFailingBase(t *testing.T) {
	c, eng, clk := engineCache(t)
	gccCtx, _ := chain(t, c)
	clk.Advance(time.Hour)
	newBase, _ := image(t, "t/base:2", 2)
	put(t, c, baseName, newBase)
	if err := os.WriteFile(filepath.Join(gccCtx, "Dockerfile"), []byte("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := len(eng.allBuilds())
	rep, err := rebuild(t, c, cache.RebuildOptions{})
	if !errors.Is(err, errdefs.ErrRejected) {
		t.Fatalf("Rebuild = %v, want ErrRejected", err)
	}
	st := statuses(rep)
	if st[gccName] != cache.Failed || st[asanName] != cache.Failed {
		t.Errorf("statuses %v", st)
	}
	for _, r := range rep.Results {
		if r.Name == asanName && !strings.Contains(r.Error, "its base "+gccName+" failed") {
			t.Errorf("asan error %q", r.Error)
		}
	}
	if n := len(eng.allBuilds()) - before; n != 1 {
		t.Errorf("%d builds, want only gcc15's", n)
	}
}

// TestRebuildCycle: a manifest whose bases form a cycle is refused before
// anything is built.
func TestRebuildCycle(t *testing.T) {
	c, eng, _ := engineCache(t)
	chain(t, c)
	m := readManifest(t, c)
	gcc := m.Entries[gccName]
	gcc.Base = &manifest.Base{Name: asanName, Digest: gcc.Digest} // gcc15 ← asan ← gcc15
	writeManifest(t, c, m)
	before := len(eng.allBuilds())
	_, err := rebuild(t, c, cache.RebuildOptions{Force: true}, gccName, asanName)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("Rebuild of a cycle = %v", err)
	}
	if len(eng.allBuilds()) != before {
		t.Error("something was built")
	}
}

// TestRebuildRefusals: names that cannot be rebuilt are errors, and an
// entry whose base is gone is skipped when rebuilding all.
func TestRebuildRefusals(t *testing.T) {
	c, _, clk := engineCache(t)
	chain(t, c)
	if _, err := rebuild(t, c, cache.RebuildOptions{}, baseName); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("rebuild of a put entry = %v, want ErrInvalid", err)
	}
	if _, err := rebuild(t, c, cache.RebuildOptions{}, "capy-ubuntu-25.04-none"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("rebuild of a missing name = %v", err)
	}
	clk.Advance(time.Hour)
	if err := c.Remove(context.Background(), mustName(t, baseName)); err != nil {
		t.Fatal(err)
	}
	rep, err := rebuild(t, c, cache.RebuildOptions{})
	if err != nil || statuses(rep)[gccName] != cache.Skipped {
		t.Errorf("rebuild with the base gone: %+v, %v", rep, err)
	}
	if _, err := rebuild(t, c, cache.RebuildOptions{}, gccName); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("named rebuild with the base gone = %v", err)
	}
}

// TestConcurrentBuildsOfOneName: two Builds of one name at once build it
// once; the second waits for the first and returns its result.
func TestConcurrentBuildsOfOneName(t *testing.T) {
	dir := t.TempDir()
	c, eng, _ := engineCacheIn(t, dir)
	baseData, _ := image(t, "t/base:1", 1)
	put(t, c, baseName, baseData)
	// Warm the base, so that the only engine work is the build.
	get(t, c, baseName)
	ctxDir := recipeDir(t, copyOnlyD, "gcc")
	eng.loadStarted = nil
	var wg sync.WaitGroup
	res := make([]*cache.BuildResult, 2)
	for i := range res {
		other, err := cache.Open(dir, cache.Options{Engine: eng.connect, Log: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		wg.Go(func() {
			r, err := other.Build(context.Background(), mustName(t, gccName), cache.BuildSpec{Base: mustName(t, baseName), Context: ctxDir}, cache.BuildOptions{})
			if err != nil {
				t.Errorf("Build %d: %v", i, err)
			}
			res[i] = r
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	built := 0
	for _, r := range res {
		if r.Built {
			built++
		}
	}
	if n := len(eng.allBuilds()); n != 1 || built != 1 || res[0].Entry.Digest != res[1].Entry.Digest {
		t.Errorf("%d engine builds, %d reported built; results %+v %+v", n, built, res[0], res[1])
	}
}

// TestGetOrBuild: a hit is a Get; a miss builds from the recorded recipe
// (after rm), from a given context (base chosen by resolve), or fails when
// there is no recipe at all.
func TestGetOrBuild(t *testing.T) {
	c, eng, _ := engineCache(t)
	chain(t, c)
	ctx := context.Background()
	before := len(eng.allBuilds())
	res, br, err := c.GetOrBuild(ctx, mustName(t, gccName), cache.BuildSpec{}, cache.BuildOptions{})
	if err != nil || br != nil || res.Entry.Name != gccName || len(eng.allBuilds()) != before {
		t.Fatalf("hit: %+v %+v %v", res, br, err)
	}
	// Miss after rm: the recorded recipe.
	if err := c.Remove(ctx, mustName(t, gccName)); err != nil {
		t.Fatal(err)
	}
	res, br, err = c.GetOrBuild(ctx, mustName(t, gccName), cache.BuildSpec{}, cache.BuildOptions{})
	if err != nil || br == nil || !br.Built || res.Ref != br.Ref || br.Entry.Base.Name != baseName {
		t.Fatalf("miss with a recorded recipe: %+v %+v %v", res, br, err)
	}
	// Miss with a context and no base: resolve's best base (gcc15 for -lto).
	lto := "capy-ubuntu-25.04-gcc15-lto"
	res, br, err = c.GetOrBuild(ctx, mustName(t, lto), cache.BuildSpec{Context: recipeDir(t, copyOnlyD, "lto")}, cache.BuildOptions{})
	if err != nil || br == nil || br.Entry.Base.Name != gccName || res.Entry.Name != lto {
		t.Fatalf("miss with a context: %+v %+v %v", res, br, err)
	}
	// No recipe anywhere.
	if _, _, err := c.GetOrBuild(ctx, mustName(t, "capy-ubuntu-25.04-none"), cache.BuildSpec{}, cache.BuildOptions{}); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "no recorded recipe") {
		t.Errorf("no recipe: %v", err)
	}
	// No base to build from.
	if _, _, err := c.GetOrBuild(ctx, mustName(t, "zeta-alpine-3.22-musl"), cache.BuildSpec{Context: recipeDir(t, copyOnlyD, "z")}, cache.BuildOptions{}); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "no cached base") {
		t.Errorf("no base: %v", err)
	}
	// A lost blob counts as a miss when it can be rebuilt.
	e := inspect(t, c, asanName)
	os.Remove(blobPath(c, e.Digest))
	before = len(eng.allBuilds())
	eng.Remove(ctx, naming.PinnedRef(mustName(t, asanName), e.Digest.Encoded()))
	eng.Remove(ctx, naming.LatestRef(mustName(t, asanName)))
	res, br, err = c.GetOrBuild(ctx, mustName(t, asanName), cache.BuildSpec{}, cache.BuildOptions{})
	if err != nil || br == nil || len(eng.allBuilds()) != before+1 {
		t.Fatalf("lost blob: %+v %+v %v", res, br, err)
	}
	if !hasBlob(t, c, res.Entry.Digest) {
		t.Error("rebuilt entry has no blob")
	}
}
