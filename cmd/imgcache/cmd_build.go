package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/imgcache/imgcache/builder"
	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/naming"
)

type buildCmd struct {
	Name     string   `arg:"" help:"Cache name to store the built image under."`
	Context  string   `arg:"" optional:"" default:"." help:"Build context directory (default: the current directory)."`
	Base     string   `required:"" help:"Cached name to build from (loaded and verified as get does); its pinned ref is passed as --build-arg BASE_IMAGE=<ref>." placeholder:"BASE"`
	File     string   `short:"f" help:"Dockerfile (default: CONTEXT/Dockerfile); it begins ARG BASE_IMAGE / FROM $${BASE_IMAGE}." placeholder:"DOCKERFILE"`
	BuildArg []string `name:"build-arg" sep:"none" help:"Build argument (repeatable); recorded in the recipe." placeholder:"K=V"`
	NoCache  bool     `help:"Do not use the daemon's layer cache."`
	JSON     bool     `help:"Print {ref, built, waited, entry} as JSON instead of the digest."`
}

func (c *buildCmd) Help() string {
	return "Example:\n" +
		"  printf 'ARG BASE_IMAGE\\nFROM ${BASE_IMAGE}\\nCOPY gcc15/ /opt/gcc15/\\n' > ci/gcc15.Dockerfile\n" +
		"  imgcache build capy-ubuntu-25.04-gcc15 --base capy-ubuntu-25.04-base -f ci/gcc15.Dockerfile ci/\n\n" +
		"The build output goes to stderr, the digest to stdout. The entry records its base's name and digest " +
		"and the recipe (absolute Dockerfile and context paths, build args), so that rebuild can make it again."
}

func (c *buildCmd) Run(e *env) error {
	n, err := parseName(c.Name)
	if err != nil {
		return err
	}
	base, err := parseName(c.Base)
	if err != nil {
		return fmt.Errorf("--base: %w", err)
	}
	args, err := parseBuildArgs(c.BuildArg)
	if err != nil {
		return err
	}
	ca, err := e.open()
	if err != nil {
		return err
	}
	res, err := ca.Build(e.ctx, n, cache.BuildSpec{Base: base, Dockerfile: c.File, Context: c.Context, BuildArgs: args},
		cache.BuildOptions{Output: e.buildOutput(), NoCache: c.NoCache})
	if err != nil {
		return err
	}
	if err := autoGC(e, ca); err != nil {
		return err
	}
	if c.JSON {
		err = printJSON(e.stdout, map[string]any{"ref": res.Ref, "built": res.Built, "waited": res.Waited, "entry": entryJSON(res.Entry)})
	} else {
		_, err = fmt.Fprintln(e.stdout, res.Entry.Digest)
	}
	if err != nil {
		return err
	}
	return e.strictRemote(res.PushErr)
}

// buildOutput is where build output goes: stderr, unless --quiet.
func (e *env) buildOutput() io.Writer {
	if e.root.Quiet {
		return nil
	}
	return e.stderr
}

// parseBuildArgs parses K=V flags.
func parseBuildArgs(flags []string) (map[string]string, error) {
	args := map[string]string{}
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--build-arg %q: want K=V: %w", f, errUsage)
		}
		args[k] = v
	}
	return args, nil
}

type resolveCmd struct {
	Name string `arg:"" help:"Cache name wanted."`
	JSON bool   `help:"Print the plan as JSON: {name, best_image, best_base, base_rule, needs_build}."`
}

func (c *resolveCmd) Help() string {
	return "best_image is the exact hit (or none); best_base the closest cached ancestor: same project and OS " +
		"with the longest variant prefix (gcc15 for gcc15-asan), then <project>-<os>-base, then any project's " +
		"<os>-base; needs_build is true when there is no exact hit. Resolving is not a use.\n\n" +
		"Example:\n  imgcache resolve capy-ubuntu-25.04-gcc15-asan --json"
}

func (c *resolveCmd) Run(e *env) error {
	n, ca, err := e.nameAndCache(c.Name)
	if err != nil {
		return err
	}
	p, err := ca.Resolve(e.ctx, n)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(e.stdout, p)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	image, base := "-", "-"
	if p.BestImage != nil {
		image = *p.BestImage
	}
	if p.BestBase != nil {
		base = *p.BestBase + " (" + p.BaseRule + ")"
	}
	fmt.Fprintf(tw, "best_image:\t%s\n", image)
	fmt.Fprintf(tw, "best_base:\t%s\n", base)
	fmt.Fprintf(tw, "needs_build:\t%v\n", p.NeedsBuild)
	return tw.Flush()
}

// olderThan is outdated's and rebuild's age limit: --older-than, else the
// deprecated --max-age when it is on this command line (scripts written for
// the first round use it). The root's --max-age is gc's limit on last use;
// its environment variable and config key never count here.
func olderThan(e *env, kctx *kong.Context, own age) time.Duration {
	if own != 0 {
		return time.Duration(own)
	}
	for _, p := range kctx.Path {
		if p.Flag != nil && !p.Resolved && p.Flag.Name == "max-age" {
			e.log.Warn("--max-age on outdated and rebuild is deprecated: use --older-than")
			return time.Duration(e.root.MaxAge)
		}
	}
	return 0
}

type outdatedCmd struct {
	OlderThan age  `help:"Also list entries built longer ago than this (30d, 12h). --max-age is a deprecated alias." placeholder:"DURATION"`
	JSON      bool `help:"Print the outdated entries as a JSON array of {name, base, built, reasons: [{kind, detail}]}."`
}

func (c *outdatedCmd) Help() string {
	return "An entry built by imgcache build is outdated when its base's digest is not the one it was built from " +
		"(base-changed), when its base is itself outdated (base-outdated: transitively), when its base is gone " +
		"(base-missing), or, with --older-than D, when it was built longer ago than D (too-old). " +
		"Entries that were put or saved are never outdated.\n\n" +
		"Example:\n  imgcache outdated --older-than 30d"
}

func (c *outdatedCmd) Run(e *env, kctx *kong.Context) error {
	ca, err := e.open()
	if err != nil {
		return err
	}
	stale, err := ca.Outdated(e.ctx, olderThan(e, kctx, c.OlderThan))
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(e.stdout, stale)
	}
	if len(stale) == 0 {
		if !e.root.Quiet {
			fmt.Fprintln(e.stderr, "imgcache: no outdated entries")
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBASE\tREASONS")
	for _, s := range stale {
		details := make([]string, len(s.Reasons))
		for i, r := range s.Reasons {
			details[i] = r.Kind + ": " + r.Detail
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Base, strings.Join(details, "; "))
	}
	return tw.Flush()
}

type rebuildCmd struct {
	Names     []string `arg:"" optional:"" help:"Names to rebuild (default: every outdated entry). Their outdated ancestors are rebuilt first."`
	Jobs      int      `short:"j" default:"1" help:"Most builds at once."`
	Force     bool     `help:"Rebuild the named entries even when they are up to date, without the layer cache."`
	OlderThan age      `help:"Also rebuild entries built longer ago than this (30d). --max-age is a deprecated alias." placeholder:"DURATION"`
	JSON      bool     `help:"Print the report as JSON: {order: [[names]…], results: [{name, status, digest, base, base_digest, reasons, waited, detail, error}]}."`
}

func (c *rebuildCmd) Help() string {
	return "Builds run bases first (a cycle is an error), each from its recorded recipe, at most --jobs at once. " +
		"A name another process is building is waited for, never built twice at once. " +
		"stdout: one line per rebuilt name, NAME DIGEST, in the order they finished; " +
		"the queue, build output and skipped names go to stderr. rebuild does not run the automatic gc.\n\n" +
		"Example:\n  imgcache rebuild --jobs 4            # everything outdated\n  imgcache rebuild capy-ubuntu-25.04-gcc15-asan"
}

func (c *rebuildCmd) Run(e *env, kctx *kong.Context) error {
	names, err := parseNames(c.Names)
	if err != nil {
		return err
	}
	if c.Jobs < 1 {
		return fmt.Errorf("--jobs %d: want at least 1: %w", c.Jobs, errUsage)
	}
	ca, err := e.open()
	if err != nil {
		return err
	}
	quiet := e.root.Quiet
	note := func(format string, args ...any) {
		if !quiet {
			fmt.Fprintf(e.stderr, "imgcache: "+format+"\n", args...)
		}
	}
	rep, err := ca.Rebuild(e.ctx, names, cache.RebuildOptions{
		Jobs:   c.Jobs,
		Force:  c.Force,
		MaxAge: olderThan(e, kctx, c.OlderThan),
		Output: e.buildOutput(),
		OnQueue: func(s builder.Status) {
			switch s.State {
			case builder.Queued:
				note("%s queued, position %d (%d building)", s.Name, s.Position, s.Running)
			case builder.Joined:
				note("%s is already queued or building (position %d); waiting for that build", s.Name, s.Position)
			case builder.Started:
				note("%s building (%d of at most %d)", s.Name, s.Running, c.Jobs)
			}
		},
		OnResult: func(r cache.RebuildResult) {
			switch r.Status {
			case cache.Rebuilt:
				if !c.JSON {
					fmt.Fprintf(e.stdout, "%s %s\n", r.Name, r.Digest)
				}
				note("%s rebuilt (%s)", r.Name, strings.Join(r.Reasons, ","))
			case cache.Skipped:
				note("%s skipped: %s", r.Name, r.Detail)
			case cache.Failed:
				note("%s failed: %s", r.Name, r.Error)
			}
		},
	})
	if rep != nil {
		if len(rep.Order) == 0 && len(rep.Results) == 0 {
			note("nothing to rebuild")
		}
		if c.JSON {
			if jerr := printJSON(e.stdout, rep); jerr != nil && err == nil {
				err = jerr
			}
		}
	}
	return err
}

// getBuildFlags are get's --build and the recipe it builds from when there
// is no recorded one.
type getBuildFlags struct {
	Build    bool     `help:"On a miss, build NAME and then get it: from its recorded recipe, or from -f/CONTEXT (base: --base, else the recorded one, else resolve's best_base)."`
	Base     string   `help:"With --build: the cached name to build from." placeholder:"BASE"`
	File     string   `short:"f" help:"With --build: the Dockerfile (default: CONTEXT/Dockerfile)." placeholder:"DOCKERFILE"`
	BuildArg []string `name:"build-arg" sep:"none" help:"With --build: build argument (repeatable)." placeholder:"K=V"`
	Context  string   `arg:"" optional:"" help:"With --build: the build context directory."`
}

// buildOnMiss is get --build: Get, building first on a miss.
func (f *getBuildFlags) buildOnMiss(e *env, ca *cache.Cache) func(context.Context, naming.Name) (*cache.GetResult, error) {
	return func(ctx context.Context, n naming.Name) (*cache.GetResult, error) {
		spec := cache.BuildSpec{Dockerfile: f.File, Context: f.Context}
		if f.Base != "" {
			b, err := parseName(f.Base)
			if err != nil {
				return nil, fmt.Errorf("--base: %w", err)
			}
			spec.Base = b
		}
		args, err := parseBuildArgs(f.BuildArg)
		if err != nil {
			return nil, err
		}
		spec.BuildArgs = args
		res, built, err := ca.GetOrBuild(ctx, n, spec, cache.BuildOptions{Output: e.buildOutput()})
		if err != nil {
			return nil, err
		}
		if built != nil && built.Built {
			e.log.Info("built on a miss", "name", n.String(), "digest", built.Entry.Digest.String(), "base", built.Entry.Base.Name)
		}
		if built != nil && built.PushErr != nil && e.root.StrictRemote {
			return res, built.PushErr
		}
		return res, nil
	}
}

// noBuildFlags refuses the recipe flags without --build.
func (f *getBuildFlags) noBuildFlags() error {
	if f.Base != "" || f.File != "" || len(f.BuildArg) > 0 || f.Context != "" {
		return fmt.Errorf("--base, -f, --build-arg and CONTEXT go with --build: %w", errUsage)
	}
	return nil
}
