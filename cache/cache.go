package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// Encoder names the zstd encoder new blobs are written with (see cas.Encoder).
var Encoder = cas.Encoder

// Options configure a Cache. The zero value is usable.
type Options struct {
	// LockTimeout bounds every wait for a lock (the manifest's, or a blob's
	// while another process loads it). Default 15 minutes.
	LockTimeout time.Duration
	// Level is the zstd level for new blobs (1–22). Default 1.
	Level int
	// HoldBackLimit is the most memory a verified load may use to hold back
	// the archive's tail; larger tails are verified in a first pass. Default 64 MiB.
	HoldBackLimit int64
	// Engine connects to the container engine, on first use; default
	// ConnectDocker.
	Engine func(context.Context) (Engine, error)
	// Log receives progress and warnings; default discards.
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Progress wraps long streams (ingest, load, export) for progress display; may be nil.
	Progress func(label string, total int64, r io.Reader) io.Reader
	// Remote connects to the fleet tier (an OCI registry repository), on
	// first use; nil: no remote, nothing leaves this host.
	Remote func(context.Context) (Remote, error)
	// Push: put, save and build push the entry after publishing it
	// (write-back); a failure is a warning (PutResult.PushErr).
	Push bool
	// RemoteRefresh: a get whose local entry was last checked against the
	// remote longer ago than this checks the remote tag first (one
	// request) and pulls the name if it moved. 0: only when asked
	// (GetOptions.Refresh, Pull).
	RemoteRefresh time.Duration
}

// Cache is one cache directory.
type Cache struct {
	dir   string
	blobs Blobs
	// layers is the layer store (layers/), nil in a cache of the
	// whole-tar schema: there every tar is one blob of blobs.
	layers Blobs
	man    *manifest.Store
	opt    Options

	engineMu sync.Mutex // guards engine: parallel builds share the Cache
	engine   Engine

	remoteMu sync.Mutex // guards rem
	rem      Remote

	readOnly sync.Once // said once: uses cannot be recorded

	hooks testHooks
	// freeBytes measures free space (fsutil.FreeBytes; tests replace it).
	freeBytes func(path string) (int64, error)
}

// testHooks let tests act at chosen points of an operation (export_test.go).
type testHooks struct {
	verifySnapshot func() // between Verify's snapshot and its hashing
	gcPlanned      func() // between gc's plan and its commit
}

// Open opens (creating if needed) the cache directory dir.
func Open(dir string, opt Options) (*Cache, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: no cache directory given", errdefs.ErrInvalid)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("cache directory %s: %w", dir, err)
	}
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = 15 * time.Minute
	}
	if opt.Level == 0 {
		opt.Level = 1
	}
	if opt.HoldBackLimit <= 0 {
		opt.HoldBackLimit = 64 << 20
	}
	if opt.Engine == nil {
		opt.Engine = ConnectDocker
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if err := fsutil.MkdirAll(abs); err != nil {
		return nil, fmt.Errorf("create cache directory %s: %w (choose another with --dir or IMGCACHE_DIR)", abs, err)
	}
	man := manifest.Open(abs)
	fresh := false
	if _, err := os.Lstat(filepath.Join(abs, "blobs")); errors.Is(err, os.ErrNotExist) {
		// A new cache: schema 2 from the start, its manifest written
		// before any directory an older imgcache would take for its own.
		ctx, cancel := context.WithTimeout(context.Background(), opt.LockTimeout)
		created, err := man.Create(ctx)
		cancel()
		if err != nil {
			return nil, err
		}
		fresh = created
	}
	c := &Cache{dir: abs, man: man, opt: opt, freeBytes: fsutil.FreeBytes}
	if fresh {
		if err := c.mkLayers(); err != nil {
			return nil, err
		}
	} else if c.layers, err = openLayers(abs, opt.Level); err != nil {
		return nil, err
	}
	blobs, err := cas.Open(abs, cas.WithLevel(opt.Level))
	if err != nil {
		return nil, err
	}
	c.blobs = CASBlobs(blobs)
	if err := fsutil.MkdirAll(filepath.Join(abs, "names")); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Join(abs, "names"), err)
	}
	return c, nil
}

// Dir is the cache directory (absolute).
func (c *Cache) Dir() string { return c.dir }

// Close releases the engine connection, if one was made.
func (c *Cache) Close() error {
	c.engineMu.Lock()
	defer c.engineMu.Unlock()
	if c.engine != nil {
		return c.engine.Close()
	}
	return nil
}

// docker returns the engine connection, connecting on first use.
func (c *Cache) docker(ctx context.Context) (Engine, error) {
	c.engineMu.Lock()
	defer c.engineMu.Unlock()
	if c.engine == nil {
		e, err := c.opt.Engine(ctx)
		if err != nil {
			return nil, err
		}
		c.engine = e
	}
	return c.engine, nil
}

// lockCtx bounds a lock wait by the configured timeout.
func (c *Cache) lockCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opt.LockTimeout)
}

func (c *Cache) load(ctx context.Context) (*manifest.Manifest, error) {
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	return c.man.Load(lctx)
}

func (c *Cache) update(ctx context.Context, fn func(*manifest.Manifest) error) error {
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	return c.man.Update(lctx, fn)
}

// updateThen is update with the links (or other derived state) changed in
// then, under the same lock, right after the manifest was written.
func (c *Cache) updateThen(ctx context.Context, fn func(*manifest.Manifest) error, then func(*manifest.Manifest)) error {
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	return c.man.UpdateThen(lctx, fn, then)
}

// notFound is the error for a name the manifest does not hold, with the
// nearest of the known names as suggestions.
func notFound(n naming.Name, known []string) error {
	if near := naming.Nearest(n.String(), known, 3); len(near) > 0 {
		return fmt.Errorf("no entry named %q: %w (did you mean %s? imgcache ls lists the cache)", n, errdefs.ErrNotFound, strings.Join(near, ", "))
	}
	return fmt.Errorf("no entry named %q: %w (imgcache ls lists the cache)", n, errdefs.ErrNotFound)
}

// entry returns a copy of n's entry (decoding only that one).
func (c *Cache) entry(ctx context.Context, n naming.Name) (manifest.Entry, error) {
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	e, ok, err := c.man.Lookup(lctx, n.String())
	if err != nil {
		return manifest.Entry{}, err
	}
	if !ok {
		var known []string
		if m, err := c.man.Load(lctx); err == nil { // a miss only: the names to suggest from
			known = m.Names()
		}
		return manifest.Entry{}, notFound(n, known)
	}
	return e, nil
}

// touch records a use of n, if n still names d: one line appended to the
// use log, not a manifest rewrite. A user who may read the cache but not
// write it (or a read-only mount) records no use: said once, at info level,
// and not an error.
func (c *Cache) touch(ctx context.Context, n naming.Name, d digest.Digest) error {
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	err := c.man.Touch(lctx, n.String(), d, c.opt.Now().UTC())
	if err != nil && fsutil.NotWritable(err) {
		c.readOnly.Do(func() {
			c.opt.Log.Info("the cache is read-only for this user: uses are not recorded (gc's LRU order and min-age do not see them)", "dir", c.dir, "err", err)
		})
		return nil
	}
	return err
}

// Hold keeps n's entry, while it holds d, and its daemon image from
// eviction until until (get --hold): for a job that needs its image
// longer than the min-age. It is a time, not a lock: a hold whose holder
// died expires all the same.
func (c *Cache) Hold(ctx context.Context, n naming.Name, d digest.Digest, until time.Time) error {
	if err := checkName(n); err != nil {
		return err
	}
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	if err := c.man.Hold(lctx, n.String(), d, until.UTC()); err != nil {
		return fmt.Errorf("hold %s: %w", n, err)
	}
	return nil
}

// linkPath is the one place a name becomes a path under names/.
func (c *Cache) linkPath(n naming.Name) string {
	return filepath.Join(c.dir, "names", n.Project(), n.String()+".tar.zst")
}

// linkTarget is the relative symlink target for a whole-tar blob.
func linkTarget(d digest.Digest) string {
	return filepath.Join("..", "..", cas.RelPath(d))
}

// linkTargetOf is the link target of an entry: its whole-tar blob, or the
// skeleton of a split entry (which names the tar's digest and size in its
// end record).
func linkTargetOf(e *manifest.Entry) string {
	if e.Split() {
		return layerLinkTarget(e.Skeleton.Digest)
	}
	return linkTarget(e.Digest)
}

// checkName refuses the zero Name: the only Name naming.Parse does not
// make (its fields are unexported, so no hand-built name can lead a link out
// of the cache).
func checkName(n naming.Name) error {
	if n.IsZero() {
		return fmt.Errorf("%w: no name given", errdefs.ErrInvalid)
	}
	return nil
}

// checkLinkDir refuses a names/<project> that exists but is no directory:
// a planted symlink there would lead link changes out of the cache.
func checkLinkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil || fi.IsDir() {
		return nil // missing (created later) or a real directory
	}
	what := "not a directory"
	if fi.Mode()&os.ModeSymlink != 0 {
		what = "a symlink, not a directory"
	}
	return fmt.Errorf("%s is %s; left alone (remove it by hand)", dir, what)
}

// setLink points n's link at target, atomically (new link, then rename over).
func (c *Cache) setLink(n naming.Name, target string) error {
	p := c.linkPath(n)
	if err := checkName(n); err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	if err := checkLinkDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	if err := fsutil.MkdirAll(filepath.Dir(p)); err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	if cur, err := os.Readlink(p); err == nil && cur == target {
		return nil
	}
	// Unique per call: goroutines of one process (or hosts sharing the
	// directory) must not share a temp link.
	tmp := fmt.Sprintf("%s.tmp-%d-%016x", p, os.Getpid(), rand.Uint64())
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link %s: %w", p, err)
	}
	return fsutil.SyncDir(filepath.Dir(p))
}

// dropLink removes n's link if it is a symlink (never follows it).
func (c *Cache) dropLink(n naming.Name) error {
	p := c.linkPath(n)
	if err := checkName(n); err != nil {
		return err
	}
	if err := checkLinkDir(filepath.Dir(p)); err != nil {
		return err
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("%s is not a symlink; left alone", p)
	}
	if err := os.Remove(p); err != nil {
		return err
	}
	os.Remove(filepath.Dir(p)) // the project directory, if now empty
	return nil
}

func (c *Cache) progress(label string, total int64, r io.Reader) io.Reader {
	if c.opt.Progress == nil {
		return r
	}
	return c.opt.Progress(label, total, r)
}
