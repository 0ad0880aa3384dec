package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/imgcache/imgcache/builder"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// RebuildOptions tune a Rebuild.
type RebuildOptions struct {
	// Jobs is the most builds run at once (default 1).
	Jobs int
	// Force rebuilds the named entries even when they are up to date, and
	// without the daemon's layer cache.
	Force bool
	// MaxAge > 0 also makes entries built longer ago than this outdated.
	MaxAge time.Duration
	// Output receives every build's output, each line prefixed "[name] ".
	Output io.Writer
	// OnQueue receives the build queue's reports (queue positions, starts,
	// ends). Calls are serialized.
	OnQueue func(builder.Status)
	// OnResult receives each name's outcome as soon as it is known. Calls
	// are serialized.
	OnResult func(RebuildResult)
}

// The outcomes of one name in a Rebuild.
const (
	Rebuilt = "rebuilt"
	Skipped = "skipped"
	Failed  = "failed"
)

// RebuildResult is one name's outcome.
type RebuildResult struct {
	Name       string   `json:"name"`
	Status     string   `json:"status"` // rebuilt, skipped, failed
	Digest     string   `json:"digest,omitempty"`
	Base       string   `json:"base,omitempty"`
	BaseDigest string   `json:"base_digest,omitempty"`
	Reasons    []string `json:"reasons,omitempty"` // why it was outdated (builder reason kinds; "forced")
	Waited     bool     `json:"waited,omitempty"`  // another process was building it; this one waited
	Detail     string   `json:"detail,omitempty"`  // why it was skipped
	Error      string   `json:"error,omitempty"`
	err        error
}

// RebuildReport says what a Rebuild did.
type RebuildReport struct {
	// Order is the build order the targets were scheduled in: levels,
	// bases first.
	Order [][]string `json:"order"`
	// Results are the outcomes, skipped names first, then in the order the
	// builds finished.
	Results []RebuildResult `json:"results"`
}

// Rebuild rebuilds names from their recorded recipes or, when names is
// empty, every outdated entry that can be rebuilt (see Outdated; entries
// whose base is gone are skipped). A named entry that is up to date is
// skipped unless opt.Force; its outdated ancestors are rebuilt first.
//
// The targets form a dependency graph (each name's base); builds run bases
// first, a name starting as soon as the build of its nearest ancestor among
// the targets has finished, at most opt.Jobs at once. A cycle is an error
// wrapping errdefs.ErrInvalid and nothing is built. A name whose base failed
// fails without building. Each build takes the name's build lock (see
// Build): a name another process is building is waited for, and when that
// build leaves it fresh it is reported as skipped, not built twice.
//
// The error joins the failures (the report is returned too).
func (c *Cache) Rebuild(ctx context.Context, names []naming.Name, opt RebuildOptions) (*RebuildReport, error) {
	start := c.opt.Now()
	m, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	in := infos(m)
	sel, err := builder.Select(in, nameStrings(names), start, opt.MaxAge, opt.Force)
	if err != nil {
		return nil, selectError(err)
	}
	baseOf := map[string]string{}
	for name, i := range in {
		if i.Base != "" {
			baseOf[name] = i.Base
		}
	}
	list := slices.Sorted(maps.Keys(sel.Targets))
	order, err := builder.Order(list, baseOf)
	if err != nil {
		return nil, fmt.Errorf("rebuild: %w: %w", errdefs.ErrInvalid, err)
	}
	rep := &RebuildReport{Order: order, Results: []RebuildResult{}}
	for _, s := range sel.Skipped {
		r := RebuildResult{Name: s.Name, Status: Skipped, Base: s.Base, Digest: s.Digest, Detail: s.Detail}
		rep.Results = append(rep.Results, r)
		if opt.OnResult != nil {
			opt.OnResult(r)
		}
	}
	if len(list) == 0 {
		return rep, nil
	}
	// One connection for all builds, made before they run concurrently.
	if _, err := c.docker(ctx); err != nil {
		return nil, err
	}
	r := &rebuildRun{c: c, opt: opt, start: start, targets: sel.Targets, baseOf: baseOf, rep: rep}
	return rep, r.run(ctx, list)
}

// nameStrings is names as strings.
func nameStrings(names []naming.Name) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n.String()
	}
	return out
}

// selectError maps builder.Select's errors to the error categories.
func selectError(err error) error {
	switch {
	case errors.Is(err, builder.ErrUnknown):
		return fmt.Errorf("rebuild %w: %w (imgcache ls lists the cache)", err, errdefs.ErrNotFound)
	case errors.Is(err, builder.ErrBaseMissing):
		return fmt.Errorf("rebuild %w: %w", err, errdefs.ErrNotFound)
	}
	return fmt.Errorf("rebuild %w: %w", err, errdefs.ErrInvalid)
}

// rebuildRun is one Rebuild's builds in flight: each target waits for its
// nearest ancestor among the targets, then queues for a build slot.
type rebuildRun struct {
	c       *Cache
	opt     RebuildOptions
	start   time.Time
	targets map[string][]string
	baseOf  map[string]string

	mu     sync.Mutex // serializes callbacks, results, output and failed
	rep    *RebuildReport
	failed map[string]bool // written before the name's done channel closes
	errs   []error
}

// run builds the targets, bases first, and joins the failures.
func (r *rebuildRun) run(ctx context.Context, list []string) error {
	q := builder.NewQueue(r.opt.Jobs, func(s builder.Status) {
		if r.opt.OnQueue != nil {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.opt.OnQueue(s)
		}
	})
	deps := builder.Deps(list, r.baseOf)
	done := map[string]chan struct{}{}
	for _, name := range list {
		done[name] = make(chan struct{})
	}
	r.failed = map[string]bool{}
	var wg sync.WaitGroup
	for _, name := range list {
		wg.Go(func() {
			defer close(done[name])
			var baseDone chan struct{}
			if d := deps[name]; d != "" {
				baseDone = done[d]
			}
			r.finish(r.one(ctx, q, name, deps[name], baseDone))
		})
	}
	wg.Wait()
	return errors.Join(r.errs...)
}

// one waits for name's base among the targets, then builds name in q.
func (r *rebuildRun) one(ctx context.Context, q *builder.Queue, name, dep string, baseDone chan struct{}) RebuildResult {
	res := RebuildResult{Name: name, Reasons: r.targets[name], Base: r.baseOf[name]}
	if baseDone != nil {
		<-baseDone
		r.mu.Lock()
		baseFailed := r.failed[dep]
		r.mu.Unlock()
		if baseFailed {
			res.Status, res.err = Failed, fmt.Errorf("rebuild %s: its base %s failed to rebuild", name, dep)
			return res
		}
	}
	forced := r.opt.Force && slices.Equal(r.targets[name], []string{builder.ReasonForced})
	var br *BuildResult
	_, err := q.Do(ctx, name, func(ctx context.Context) error {
		var err error
		br, err = r.c.rebuildOne(ctx, naming.MustParse(name), forced, r.start, &prefixWriter{mu: &r.mu, w: r.opt.Output, prefix: "[" + name + "] "})
		return err
	})
	switch {
	case err != nil:
		res.Status, res.err = Failed, err
	case br.Built:
		res.Status = Rebuilt
	default:
		res.Status, res.Detail = Skipped, "built by another process while this one waited"
	}
	if br != nil {
		res.Digest, res.Waited = br.Entry.Digest.String(), br.Waited
		if br.Entry.Base != nil {
			res.BaseDigest = br.Entry.Base.Digest.String()
		}
	}
	return res
}

// finish records one name's outcome and reports it.
func (r *rebuildRun) finish(res RebuildResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if res.err != nil {
		res.Error = res.err.Error()
		r.failed[res.Name] = true
		r.errs = append(r.errs, res.err)
	}
	r.rep.Results = append(r.rep.Results, res)
	if r.opt.OnResult != nil {
		r.opt.OnResult(res)
	}
}

// rebuildOne builds name from the recipe its entry holds now.
func (c *Cache) rebuildOne(ctx context.Context, n naming.Name, forced bool, since time.Time, out io.Writer) (*BuildResult, error) {
	e, err := c.entry(ctx, n)
	if err != nil {
		return nil, err
	}
	if e.Base == nil || e.Recipe == nil {
		return nil, fmt.Errorf("rebuild %s: %w: no recorded recipe", n, errdefs.ErrInvalid)
	}
	base, err := naming.Parse(e.Base.Name)
	if err != nil {
		return nil, fmt.Errorf("rebuild %s: recorded base: %w", n, err)
	}
	spec := BuildSpec{Base: base, Dockerfile: e.Recipe.Dockerfile, Context: e.Recipe.Context, BuildArgs: e.Recipe.BuildArgs}
	res, err := c.Build(ctx, n, spec, BuildOptions{Output: out, NoCache: forced, FreshSince: since})
	if f, ok := out.(*prefixWriter); ok {
		f.Flush()
	}
	return res, err
}

// prefixWriter writes whole lines, each prefixed, to w under mu: the
// output of concurrent builds interleaves by line, never within one.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if p.w == nil {
		return len(b), nil
	}
	p.buf = append(p.buf, b...)
	i := bytes.LastIndexByte(p.buf, '\n')
	if i < 0 {
		return len(b), nil
	}
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(p.buf[:i+1], []byte("\n")) {
		if len(line) > 0 {
			out.WriteString(p.prefix)
			out.Write(line)
		}
	}
	p.buf = append(p.buf[:0], p.buf[i+1:]...)
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.w.Write(out.Bytes())
	return len(b), err
}

// Flush writes a last unfinished line.
func (p *prefixWriter) Flush() {
	if len(p.buf) > 0 {
		p.Write([]byte("\n"))
	}
}

// GetOrBuild is Get, except that on a miss it builds the name first: from
// its recorded recipe (Recipe) or, when spec gives a Dockerfile or a
// context, from spec. A base that neither spec nor the recipe names is the
// one Resolve picks. With a recipe, spec's build args are merged over the
// recorded ones and spec.Base, if set, replaces the recorded base.
//
// An entry whose blob was lost (missing, or quarantined after failing
// verification) counts as a miss when it can be rebuilt. Concurrent
// GetOrBuilds of one missing name build it once: the others wait for that
// build and then use its result.
func (c *Cache) GetOrBuild(ctx context.Context, n naming.Name, spec BuildSpec, opt BuildOptions) (*GetResult, *BuildResult, error) {
	e, err := c.entry(ctx, n)
	var broken string // the digest of an entry whose blob is lost
	switch {
	case err == nil:
		res, gerr := c.Get(ctx, n)
		if gerr == nil || (!errors.Is(gerr, errdefs.ErrNotFound) && !errors.Is(gerr, errdefs.ErrIntegrity)) {
			return res, nil, gerr
		}
		if e.Recipe == nil && spec.Dockerfile == "" && spec.Context == "" {
			return nil, nil, gerr
		}
		broken = e.Digest.String()
		c.opt.Log.Warn("building again: the cached image cannot be used", "name", n.String(), "err", gerr)
	case !errors.Is(err, errdefs.ErrNotFound):
		return nil, nil, err
	case c.opt.Remote != nil:
		// A local miss: the remote may have it. A remote that misses too,
		// or cannot be reached, is a miss: build.
		pr, perr := c.Pull(ctx, n)
		if perr == nil {
			res, gerr := c.Get(ctx, n)
			if gerr == nil || (!errors.Is(gerr, errdefs.ErrNotFound) && !errors.Is(gerr, errdefs.ErrIntegrity)) {
				return res, nil, gerr
			}
			broken = pr.Entry.Digest.String()
		} else if errors.Is(perr, context.Canceled) {
			return nil, nil, perr
		} else if !errors.Is(perr, errdefs.ErrNotFound) {
			c.opt.Log.Warn("the remote cannot be used; building", "name", n.String(), "err", perr)
		}
	}

	use := BuildSpec{Base: spec.Base, BuildArgs: map[string]string{}}
	rec, recorded, err := c.Recipe(ctx, n)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case spec.Dockerfile != "" || spec.Context != "":
		use.Dockerfile, use.Context = spec.Dockerfile, spec.Context
		if use.Base.IsZero() && recorded {
			use.Base, _ = naming.Parse(rec.Base)
		}
	case recorded:
		use.Dockerfile, use.Context = rec.Recipe.Dockerfile, rec.Recipe.Context
		maps.Copy(use.BuildArgs, rec.Recipe.BuildArgs)
		if use.Base.IsZero() {
			use.Base, _ = naming.Parse(rec.Base)
		}
	default:
		return nil, nil, fmt.Errorf("no entry named %q and no recorded recipe to build it from: %w (pass -f DOCKERFILE and CONTEXT, see imgcache build --help)", n, errdefs.ErrNotFound)
	}
	maps.Copy(use.BuildArgs, spec.BuildArgs)
	if use.Base.IsZero() {
		plan, err := c.Resolve(ctx, n)
		if err != nil {
			return nil, nil, err
		}
		if plan.BestBase == nil {
			hint := "a base image"
			if b, ok := n.BaseName(); ok {
				hint = b.String()
			}
			return nil, nil, fmt.Errorf("build %s: no cached base to build it from: %w (put %s, or pass --base)", n, errdefs.ErrNotFound, hint)
		}
		use.Base = naming.MustParse(*plan.BestBase)
		c.opt.Log.Info("base chosen by resolve", "name", n.String(), "base", *plan.BestBase, "rule", plan.BaseRule)
	}
	opt.Satisfied = func(cur *manifest.Entry) bool {
		return cur != nil && cur.Digest.String() != broken // someone built it while we waited
	}
	br, err := c.Build(ctx, n, use, opt)
	if err != nil {
		return nil, nil, err
	}
	res, err := c.Get(ctx, n)
	return res, br, err
}
