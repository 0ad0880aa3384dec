package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/alecthomas/kong"
	kongcompletion "github.com/jotaen/kong-completion"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/naming"
)

// cli is the root of the command line.
type cli struct {
	Dir         string           `help:"Cache directory." env:"IMGCACHE_DIR" placeholder:"DIR"`
	LockTimeout time.Duration    `help:"Longest wait for a lock (manifest, or a blob another process is loading)." env:"IMGCACHE_LOCK_TIMEOUT" default:"15m"`
	Level       int              `help:"zstd level for new blobs (1-22)." env:"IMGCACHE_LEVEL" default:"1"`
	Quiet       bool             `short:"q" help:"No progress or informational messages on stderr."`
	LogLevel    string           `help:"Log level on stderr: debug, info, warn, error." env:"IMGCACHE_LOG_LEVEL" default:"warn" enum:"debug,info,warn,error"`
	Umask       umask            `help:"Umask for everything imgcache creates (002 lets a group share the cache; default: the process's own)." env:"IMGCACHE_UMASK" placeholder:"MODE"`
	HoldBack    byteSize         `help:"Most memory a verified load holds back (default 64M); archives whose metadata lies further from their end are verified in a first pass." hidden:"" name:"hold-back-limit"`
	Version     kong.VersionFlag `help:"Print the version and exit."`
	limitFlags  `embed:""`
	remoteFlags `embed:""`

	Put     putCmd     `cmd:"" help:"Ingest a docker-archive/OCI tarball under NAME; print its digest."`
	Save    saveCmd    `cmd:"" help:"Stream an image from the Docker daemon into the cache under NAME."`
	Get     getCmd     `cmd:"" help:"Make sure NAME's image is in the daemon, verified; print its ref."`
	Export  exportCmd  `cmd:"" help:"Write NAME's original tar back out, verified, byte-identical."`
	Ls      lsCmd      `cmd:"" help:"List the cache entries."`
	Inspect inspectCmd `cmd:"" help:"Show one entry."`
	Rm      rmCmd      `cmd:"" help:"Drop names; blobs nobody names are reclaimed by gc."`
	Verify  verifyCmd  `cmd:"" help:"Re-hash blobs; check that manifest, blobs and links agree."`
	Pin     pinCmd     `cmd:"" help:"Keep an entry out of eviction."`
	Unpin   unpinCmd   `cmd:"" help:"Let gc evict an entry again."`
	Gc      gcCmd      `cmd:"" help:"Reclaim disk least-recently-used first: --min-free, --max-size, --max-age."`
	Stats   statsCmd   `cmd:"" help:"Hits, loads, bytes, evictions; --prometheus FILE for node_exporter."`
	Config  configCmd  `cmd:"" help:"Print the effective settings and where each came from."`
	Migrate migrateCmd `cmd:"" help:"Convert a whole-tar cache to the layer store (explicit, resumable; older imgcache binaries then refuse the cache)."`
	Push    pushCmd    `cmd:"" help:"Upload entries to the remote (--remote): the blobs it lacks, then their manifests."`
	Pull    pullCmd    `cmd:"" help:"Fetch entries from the remote: the manifest and only the blobs this cache lacks, verified."`

	Completion kongcompletion.Completion `cmd:"" help:"Print shell code that enables tab completion (bash, zsh, fish)."`

	// Derived images (cmd_build.go).
	Build    buildCmd    `cmd:"" help:"Build NAME from a cached base with a Dockerfile; store it; print its digest."`
	Resolve  resolveCmd  `cmd:"" help:"The plan for NAME: exact hit, best base to build from, whether it needs a build."`
	Outdated outdatedCmd `cmd:"" help:"List built entries whose base changed (transitively) or, with --max-age, that are too old."`
	Rebuild  rebuildCmd  `cmd:"" help:"Rebuild the named or all outdated entries from their recipes, bases first, --jobs at once."`
}

// env is what every command's Run receives.
type env struct {
	ctx     context.Context
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	root    *cli
	log     *slog.Logger
	c       *cache.Cache
	sources sources
}

// open opens the cache directory named by the flags.
func (e *env) open() (*cache.Cache, error) {
	if e.c != nil {
		return e.c, nil
	}
	dir := e.root.Dir
	if dir == "" {
		dir = defaultDir()
	}
	c, err := cache.Open(dir, cache.Options{
		LockTimeout:   e.root.LockTimeout,
		HoldBackLimit: int64(e.root.HoldBack),
		Level:         e.root.Level,
		Log:           e.log,
		Progress:      e.progressHook(),
		Remote:        e.root.remoteOption(e),
		Push:          e.root.WriteBack,
		RemoteRefresh: time.Duration(e.root.RemoteRefresh),
	})
	if err != nil {
		return nil, err
	}
	e.c = c
	return c, nil
}

// defaultDir is /var/cache/imgcache for root, else the user's cache directory.
func defaultDir() string {
	if os.Geteuid() == 0 {
		return "/var/cache/imgcache"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "imgcache")
	}
	return filepath.Join(os.TempDir(), "imgcache-"+fmt.Sprint(os.Geteuid()))
}

// Run parses args, runs the command and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	var root cli
	exited := -1
	files, err := loadConfigFiles()
	if err != nil {
		fmt.Fprintln(stderr, "imgcache:", err)
		return exitCode(err)
	}
	src := sources{}
	parser, err := kong.New(&root,
		kong.Resolvers(resolver(files, src)),
		kong.Name("imgcache"),
		kong.Description("A content-addressed cache of Docker image tarballs for CI executors."),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { exited = c; panic(exitPanic{}) }),
		kong.Vars{"version": "imgcache " + version + " (zstd encoder: " + cache.Encoder + ")"},
	)
	if err != nil {
		fmt.Fprintln(stderr, "imgcache:", err)
		return exitCode(err)
	}
	if err := validateConfig(files, parser.Model); err != nil {
		fmt.Fprintln(stderr, "imgcache:", err)
		return exitCode(err)
	}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(exitPanic); !ok {
				panic(r)
			}
			code = exited
		}
	}()
	kongcompletion.Register(parser, kongcompletion.WithPredictor("name", namePredictor{}),
		kongcompletion.WithExitFunc(func(c int) { exited = c; panic(exitPanic{}) }))
	kctx, err := parser.Parse(remoteSwitch(args))
	if err != nil {
		fmt.Fprintln(stderr, "imgcache:", err)
		return exitCode(fmt.Errorf("%w: %w", errUsage, err))
	}
	if root.Umask.set {
		if _, err := fsutil.SetUmask(int(root.Umask.mask)); err != nil {
			fmt.Fprintln(stderr, "imgcache: --umask:", err)
			return exitCode(fmt.Errorf("%w: %w", errUsage, err))
		}
	}
	level := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[root.LogLevel]
	if root.Quiet {
		level = slog.LevelError
	}
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, root: &root, sources: src,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	defer func() {
		if e.c != nil {
			e.c.Close()
		}
	}()
	if err := kctx.Run(e); err != nil {
		if !errors.Is(err, errShort) {
			fmt.Fprintln(stderr, "imgcache:", err)
		}
		return exitCode(err)
	}
	return exitOK
}

type exitPanic struct{}

// parseName parses a NAME argument; a bad name is a usage error.
func parseName(s string) (naming.Name, error) { return naming.Parse(s) }

// parseNames parses NAME arguments, failing on the first bad one.
func parseNames(ss []string) ([]naming.Name, error) {
	names := make([]naming.Name, 0, len(ss))
	for _, s := range ss {
		n, err := naming.Parse(s)
		if err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, nil
}

// nameAndCache parses a NAME argument and opens the cache: the start of most commands.
func (e *env) nameAndCache(s string) (naming.Name, *cache.Cache, error) {
	n, err := naming.Parse(s)
	if err != nil {
		return naming.Name{}, nil, err
	}
	c, err := e.open()
	return n, c, err
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// umask is an octal file-mode mask ("002", "0027").
type umask struct {
	mask uint32
	set  bool
}

func (u *umask) UnmarshalText(text []byte) error {
	v, err := strconv.ParseUint(string(text), 8, 32)
	if err != nil || v > 0o777 {
		return fmt.Errorf("umask %q: want an octal mode such as 002 or 027", text)
	}
	u.mask, u.set = uint32(v), true
	return nil
}

func (u umask) String() string {
	if !u.set {
		return "process default"
	}
	return fmt.Sprintf("%03o", u.mask)
}
