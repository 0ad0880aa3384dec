package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/dockerbridge"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/internal/lockfile"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
	"github.com/imgcache/imgcache/skeleton"
)

// GetResult reports a Get.
type GetResult struct {
	Ref    string // imgcache/<name>:<12 hex of the digest>: what to run
	Latest string // imgcache/<name>:latest
	Loaded bool   // this call loaded the image (false: it was in the daemon already)
	// Sent is the bytes of the archive this call sent the daemon: for a
	// split entry in Docker's classic store, only the layers it lacked.
	Sent  int64
	Entry manifest.Entry
}

// Get makes sure n's image is in the daemon, loaded from a verified stream,
// tagged with its content-pinned ref, and returns that ref.
//
// Warm path: the image ID is in the daemon; tag it, nothing is decompressed.
// Cold path: under the blob's exclusive lock (so concurrent Gets of one cold
// image load it once), stream blob → zstd → sha256 → ImageLoad, holding back
// the archive's metadata until the digest matched. A mismatch aborts the load,
// quarantines the blob and returns an error wrapping errdefs.ErrIntegrity.
func (c *Cache) Get(ctx context.Context, n naming.Name) (*GetResult, error) {
	return c.GetWith(ctx, n, GetOptions{})
}

// GetOptions change what Get accepts.
type GetOptions struct {
	// Platform ("os/arch", as the image's config says it) lets a get load
	// an image built for another platform than the engine's: it must be
	// the image's own, and the engine must be able to run it (emulation
	// registered on its host: binfmt_misc and qemu); otherwise the get is
	// refused. Empty: the engine's platform only.
	Platform string
	// Refresh checks the remote's tag for n first (with a remote
	// configured) and pulls it if it moved.
	Refresh bool
}

// GetWith is Get with options.
func (c *Cache) GetWith(ctx context.Context, n naming.Name, opt GetOptions) (*GetResult, error) {
	var streamed *pulledLoad
	e, err := c.remoteEntry(ctx, n, opt.Refresh, func(e manifest.Entry, open skeleton.Open) error {
		var err error
		streamed, err = c.loadPulled(ctx, n, e, opt, open)
		return err
	})
	if err != nil {
		return nil, err
	}
	b, err := c.docker(ctx)
	if err != nil {
		return nil, err
	}
	res := &GetResult{Ref: naming.PinnedRef(n, e.Digest.Encoded()), Latest: naming.LatestRef(n), Entry: e}
	if streamed != nil {
		res.Sent, res.Loaded = streamed.sent, true
		c.count(func(s *Counters) { s.Loads++; s.BytesLoaded += res.Sent })
		return res, c.tagAndTouch(ctx, b, n, e, streamed.img, res)
	}
	if ok, err := c.warm(ctx, b, e, res); ok || err != nil {
		return res, err
	}
	if err := c.loadable(ctx, b, n, e, opt); err != nil {
		return nil, err
	}
	lock, err := c.headLock(ctx, e, true)
	if err != nil {
		return nil, fmt.Errorf("get %s: waiting for another process loading %s: %w", n, e.Digest, err)
	}
	defer lock.Release()
	// Whoever held the lock before us may have loaded it.
	if ok, err := c.warm(ctx, b, e, res); ok || err != nil {
		return res, err
	}
	rec := &loadRecorder{Engine: b}
	if e.Split() {
		res.Sent, err = c.loadSplit(ctx, rec, n, e)
	} else {
		res.Sent, err = c.verifiedLoad(ctx, rec, n, e)
	}
	if err != nil {
		return nil, err
	}
	img, err := c.loadedImage(ctx, b, n, e, rec.loaded)
	if err != nil {
		return nil, err
	}
	res.Loaded = true
	c.count(func(s *Counters) { s.Loads++; s.BytesLoaded += res.Sent })
	return res, c.tagAndTouch(ctx, b, n, e, img, res)
}

// loadable refuses, before anything is sent, an image the engine cannot
// run (another platform, unless opt allows it) or load (zstd layers).
func (c *Cache) loadable(ctx context.Context, b Engine, n naming.Name, e manifest.Entry, opt GetOptions) error {
	dos, darch, err := b.Platform(ctx)
	if err != nil {
		return err
	}
	if (e.OS != "" && e.OS != dos) || (e.Arch != "" && e.Arch != darch) {
		if err := c.foreignPlatform(ctx, b, n, e, dos+"/"+darch, opt.Platform); err != nil {
			return err
		}
	}
	if err := zstdRefused(ctx, b, n, e); err != nil {
		return err
	}
	return ociRefused(ctx, b, n, e)
}

// ociRefused refuses, before anything is sent, an OCI archive without
// manifest.json for Docker's classic store (which loads nothing without
// one) when imgcache cannot make one: its layers were not identified.
func ociRefused(ctx context.Context, b Engine, n naming.Name, e manifest.Entry) error {
	if e.Format != string(archive.FormatOCI) || len(e.Layers) > 0 {
		return nil
	}
	l, err := b.Layers(ctx)
	if err != nil || !l.Partial {
		return err
	}
	why := "put identified none (imgcache inspect " + n.String() + " says why)"
	switch {
	case !e.Split() && e.Whole != "":
		why = "it is stored whole: " + e.Whole
	case !e.Split():
		why = "it is stored as one whole tar (imgcache migrate splits the tars of a cache written before the layer store)"
	}
	return fmt.Errorf("get %s: %w: it is an OCI archive without manifest.json (as skopeo, Podman and buildah write them) and %s %s loads only archives with one; imgcache makes one from the image's layers as put identified them, but %s; nothing was sent (convert it: skopeo copy oci-archive:FILE docker-archive:OUT, and put that; or use Podman or Docker's containerd image store)", n, errdefs.ErrRejected, l.Store, l.Version, why)
}

// pulledLoad is a load made while its entry was pulled.
type pulledLoad struct {
	sent int64
	img  dockerbridge.Image
}

// loadPulled loads the entry e that a get is pulling, its pieces read
// through open (from the layer store, or streamed from the registry as
// they are stored). It loads nothing (nil, nil) when the image is in the
// engine already or cannot be loaded there: the get goes on, once the
// pull is recorded, as for a local entry (a tag, or the refusal).
func (c *Cache) loadPulled(ctx context.Context, n naming.Name, e manifest.Entry, opt GetOptions, open skeleton.Open) (*pulledLoad, error) {
	b, err := c.docker(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok, err := c.inEngine(ctx, b, e, naming.PinnedRef(n, e.Digest.Encoded())); ok || err != nil {
		return nil, err
	}
	if c.loadable(ctx, b, n, e, opt) != nil {
		return nil, nil
	}
	rec := &loadRecorder{Engine: b}
	sent, err := c.loadSplitLocked(ctx, rec, n, e, open)
	var bad *blobError
	if errors.As(err, &bad) {
		return nil, fmt.Errorf("get %s: %w; nothing was loaded", n, bad.err)
	}
	if err != nil {
		return nil, err
	}
	img, err := c.loadedImage(ctx, b, n, e, rec.loaded)
	if err != nil {
		return nil, err
	}
	return &pulledLoad{sent, img}, nil
}

// zstdRefused refuses, before anything is sent, an image with
// zstd-compressed layers for an engine that cannot load them (Docker
// before 23).
func zstdRefused(ctx context.Context, b Engine, n naming.Name, e manifest.Entry) error {
	if !slices.ContainsFunc(e.Layers, func(l manifest.Layer) bool {
		return strings.HasSuffix(l.MediaType, "+zstd") || strings.HasSuffix(l.MediaType, ".zstd")
	}) {
		return nil
	}
	l, err := b.Layers(ctx)
	if err != nil {
		return err
	}
	if !l.Zstd {
		return fmt.Errorf("get %s: %w: its layers are zstd-compressed, which %s %s cannot load (Docker 23 or newer, and Podman, can); nothing was sent", n, errdefs.ErrRejected, l.Store, l.Version)
	}
	return nil
}

// loadRecorder keeps what the engine said it loaded.
type loadRecorder struct {
	Engine
	loaded []string
}

func (l *loadRecorder) Load(ctx context.Context, body io.Reader) ([]string, error) {
	got, err := l.Engine.Load(ctx, body)
	l.loaded = append(l.loaded, got...)
	return got, err
}

// loadedImage finds e's image after a load: by its image ID (the config
// digest: Docker's classic store, Podman), else among the images the
// engine said it loaded, the one whose layers are e's (Docker's
// containerd store names an image by its manifest digest).
// An engine that accepted the archive and holds no such image rejected it.
func (c *Cache) loadedImage(ctx context.Context, b Engine, n naming.Name, e manifest.Entry, loaded []string) (dockerbridge.Image, error) {
	img, err := b.Inspect(ctx, e.ImageID)
	if !errors.Is(err, errdefs.ErrNotFound) {
		return img, err
	}
	for _, ref := range loaded {
		cand, cerr := b.Inspect(ctx, ref)
		if cerr == nil && sameLayers(cand, e, len(loaded)) {
			return cand, nil
		}
	}
	return img, fmt.Errorf("get %s: the daemon accepted the archive but holds no image %s (it reported %q): %w", n, e.ImageID, loaded, errdefs.ErrRejected)
}

// sameLayers says whether img is e's image as far as the engine shows it:
// its diff IDs are e's layers' (when e records them); an entry without
// layer records accepts the only image a load reported.
func sameLayers(img dockerbridge.Image, e manifest.Entry, reported int) bool {
	if len(e.Layers) == 0 {
		return reported == 1
	}
	if len(img.Layers) != len(e.Layers) {
		return false
	}
	for i, l := range e.Layers {
		if img.Layers[i] != l.DiffID.String() {
			return false
		}
	}
	return true
}

// warm tags and returns true when the image is in the daemon already:
// found by its image ID, or, where the engine names images otherwise
// (Docker's containerd store: by manifest digest), by the content-pinned
// tag a verified load gave it, when its layers are the entry's.
func (c *Cache) warm(ctx context.Context, b Engine, e manifest.Entry, res *GetResult) (bool, error) {
	img, ok, err := c.inEngine(ctx, b, e, res.Ref)
	if !ok || err != nil {
		return false, err
	}
	n := naming.MustParse(e.Name)
	c.count(func(s *Counters) { s.WarmHits++ })
	return true, c.tagAndTouch(ctx, b, n, e, img, res)
}

// inEngine finds e's image in the engine: by its image ID, or by ref
// (the content-pinned tag) when its layers are e's.
func (c *Cache) inEngine(ctx context.Context, b Engine, e manifest.Entry, ref string) (dockerbridge.Image, bool, error) {
	if e.ImageID == "" {
		return dockerbridge.Image{}, false, nil
	}
	img, err := b.Inspect(ctx, e.ImageID)
	if errors.Is(err, errdefs.ErrNotFound) && len(e.Layers) > 0 {
		img, err = b.Inspect(ctx, ref)
		if err == nil && !sameLayers(img, e, 0) {
			err = fmt.Errorf("%s holds other layers: %w", ref, errdefs.ErrNotFound)
		}
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		return img, false, nil
	}
	return img, err == nil, err
}

// tagAndTouch makes sure both refs name the image (tagging only what is
// missing) and records the use.
func (c *Cache) tagAndTouch(ctx context.Context, b Engine, n naming.Name, e manifest.Entry, img dockerbridge.Image, res *GetResult) error {
	for _, ref := range []string{res.Ref, res.Latest} {
		if slices.Contains(img.RepoTags, ref) || slices.Contains(img.RepoTags, "docker.io/"+ref) {
			continue
		}
		if err := b.Tag(ctx, img.ID, ref); err != nil {
			return fmt.Errorf("get %s: %w", n, err)
		}
	}
	return c.touch(ctx, n, e.Digest)
}

// verifiedLoad streams the blob into the daemon. The caller holds the blob's
// exclusive lock.
func (c *Cache) verifiedLoad(ctx context.Context, b Engine, n naming.Name, e manifest.Entry) (int64, error) {
	tail := e.Size - e.MetadataOffset
	from := e.MetadataOffset
	if tail > c.opt.HoldBackLimit {
		// The archive's metadata is far from its end: prove the blob first,
		// then load it (still verified, still holding back the tail we can).
		if err := c.verifyBlob(ctx, n, e); err != nil {
			return 0, err
		}
		from = max(e.Size-c.opt.HoldBackLimit, 0)
	}
	r, err := c.blobs.Open(e.Digest)
	if err != nil {
		return 0, c.blobMissing(n, e, err)
	}
	defer r.Close()
	sent, err, rerr := c.pipeLoad(ctx, b, n, e.Size, func(w io.Writer) error {
		_, err := io.Copy(w, r) // the blob reader's WriteTo: its frames as they come
		return err
	}, holdBack(from, c.opt.HoldBackLimit))
	if errors.Is(rerr, errdefs.ErrIntegrity) {
		err = rerr // the blob's verdict, whatever the engine said
	}
	if errors.Is(err, errdefs.ErrIntegrity) {
		return sent, c.quarantine(n, e, err, nothingLoaded)
	}
	if err != nil {
		return sent, fmt.Errorf("get %s: %w", n, err)
	}
	return sent, nil
}

// headLock takes the lock that guards loading and reading e: its blob's,
// or, for a split entry, its skeleton's (the pieces are locked apart).
func (c *Cache) headLock(ctx context.Context, e manifest.Entry, exclusive bool) (*lockfile.Lock, error) {
	lctx, cancel := c.lockCtx(ctx)
	defer cancel()
	if e.Split() {
		if c.layers == nil {
			return nil, fmt.Errorf("%s is split but the cache has no layer store (%s): %w (imgcache verify --repair)", e.Name, layerDir, errdefs.ErrNotFound)
		}
		return c.layers.Lock(lctx, e.Skeleton.Digest, exclusive)
	}
	return c.blobs.Lock(lctx, e.Digest, exclusive)
}

// verifyBlob re-hashes the blob; on mismatch it quarantines it.
func (c *Cache) verifyBlob(ctx context.Context, n naming.Name, e manifest.Entry) error {
	r, err := c.blobs.Open(e.Digest, cas.Parallel())
	if err != nil {
		return c.blobMissing(n, e, err)
	}
	defer r.Close()
	if _, err := r.WriteTo(io.Discard); err != nil {
		if errors.Is(err, errdefs.ErrIntegrity) {
			return c.quarantine(n, e, err, nothingLoaded)
		}
		return err
	}
	if r.Size() != e.Size {
		return c.quarantine(n, e, fmt.Errorf("%w: %d bytes, manifest says %d", errdefs.ErrIntegrity, r.Size(), e.Size), nothingLoaded)
	}
	return nil
}

// nothingLoaded is what a failed get says of its outcome.
const nothingLoaded = "nothing was loaded; "

// quarantine moves a failed blob aside (the caller holds its exclusive
// lock). outcome ("" or ending in "; ") says what the failure left behind.
func (c *Cache) quarantine(n naming.Name, e manifest.Entry, cause error, outcome string) error {
	c.count(func(s *Counters) { s.IntegrityFailures++ })
	dst, qerr := c.blobs.Quarantine(e.Digest)
	where := "moved to " + dst
	if qerr != nil {
		where = "could not be quarantined: " + qerr.Error()
	}
	c.opt.Log.Error("integrity failure", "name", n.String(), "digest", e.Digest.String(), "blob", where)
	return fmt.Errorf("%s: expected %s: %w; %sthe blob was %s (put or save the image again)", n, e.Digest, cause, outcome, where)
}

// blobMissing explains a name whose blob is gone.
func (c *Cache) blobMissing(n naming.Name, e manifest.Entry, err error) error {
	if !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if q := c.blobs.Quarantined(e.Digest); q != "" {
		return fmt.Errorf("%s: its blob %s failed verification earlier and is in quarantine (%s): %w (put or save the image again)", n, e.Digest, q, errdefs.ErrIntegrity)
	}
	return fmt.Errorf("%s: its blob %s is missing: %w (imgcache verify --repair, then put the image again)", n, e.Digest, errdefs.ErrNotFound)
}

// Export writes n's original tar to w, verified as it is written. A blob
// found damaged on the way is quarantined, as get and verify do, and the
// error (wrapping errdefs.ErrIntegrity) says that what w received is
// unverified. ExportFile writes nothing at its path unless it verified.
func (c *Cache) Export(ctx context.Context, n naming.Name, w io.Writer) (manifest.Entry, error) {
	e, err := c.export(ctx, n, w)
	if errors.Is(err, errdefs.ErrIntegrity) {
		err = fmt.Errorf("export %s: %w; the bytes written before the failure are unverified: discard them", n, err)
	}
	return e, err
}

// export is Export without the word on what w received.
func (c *Cache) export(ctx context.Context, n naming.Name, w io.Writer) (manifest.Entry, error) {
	e, err := c.entry(ctx, n)
	if err != nil {
		return e, err
	}
	lock, err := c.headLock(ctx, e, false)
	if err != nil {
		return e, err
	}
	defer lock.Release()
	if e.Split() {
		if err := c.exportSplit(ctx, n, e, w); err != nil {
			return e, err
		}
		c.count(func(s *Counters) { s.Exports++ })
		return e, c.touch(ctx, n, e.Digest)
	}
	r, err := c.blobs.Open(e.Digest, cas.Parallel())
	if err != nil {
		return e, c.blobMissing(n, e, err)
	}
	_, err = io.Copy(w, c.progress("export "+n.String(), e.Size, r))
	r.Close()
	if errors.Is(err, errdefs.ErrIntegrity) {
		// Quarantine needs the exclusive lock: taken only if nobody else
		// reads the blob now (they will find it bad themselves).
		lock.Release()
		if x, ok, lerr := c.blobs.TryLock(e.Digest, true); lerr == nil && ok {
			defer x.Release()
			return e, c.quarantine(n, e, err, "")
		}
		c.count(func(s *Counters) { s.IntegrityFailures++ })
		return e, fmt.Errorf("%s: expected %s: %w; the blob is in use by another process, not quarantined (imgcache verify %s)", n, e.Digest, err, n)
	}
	if err != nil {
		return e, fmt.Errorf("export %s: %w", n, err)
	}
	c.count(func(s *Counters) { s.Exports++ })
	return e, c.touch(ctx, n, e.Digest)
}

// ExportFile exports to path through a temp file renamed into place once
// verified: nothing appears at path unless it verified. With durable, the
// file and its directory are fsynced before it returns (the file survives a
// power cut); without, the file is written as docker save -o and cp write
// theirs, left to the kernel's writeback.
func (c *Cache) ExportFile(ctx context.Context, n naming.Name, path string, durable bool) (manifest.Entry, error) {
	e, err := c.entry(ctx, n)
	if err != nil {
		return e, err
	}
	if err := outputFile(path); err != nil {
		return e, fmt.Errorf("export %s: %w", n, err)
	}
	export := func(w io.Writer) error {
		var err error
		e, err = c.export(ctx, n, w)
		return err
	}
	err = fsutil.WriteOutput(path, durable, export)
	if errors.Is(err, errdefs.ErrIntegrity) {
		return e, fmt.Errorf("export %s: %w; nothing was written to %s", n, err, path)
	}
	return e, err // the file's errors name it, the export's name the entry
}

// outputFile refuses, before anything is read, a path a file cannot be
// written at: a directory, or one in a directory that does not exist.
func outputFile(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%w: -o %s is a directory: name the file to write", errdefs.ErrInvalid, path)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: -o %s: the directory %s does not exist", errdefs.ErrInvalid, path, dir)
	case err != nil:
		return fmt.Errorf("-o %s: %w", path, err)
	case !fi.IsDir():
		return fmt.Errorf("%w: -o %s: %s is not a directory", errdefs.ErrInvalid, path, dir)
	}
	return nil
}

// foreignPlatform decides whether n's image, built for another platform
// than the engine's (engine), may be loaded: only when the user asked for
// that very platform and the engine can run it.
func (c *Cache) foreignPlatform(ctx context.Context, b Engine, n naming.Name, e manifest.Entry, engine, want string) error {
	img := e.OS + "/" + e.Arch
	if want == "" {
		return fmt.Errorf("%s is an image for %s, the Docker daemon runs %s: %w (put an image built for %s under this name; or, if this host runs %s images through emulation, get --platform %s)", n, img, engine, errdefs.ErrRejected, engine, img, img)
	}
	parts := strings.Split(want, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return fmt.Errorf("--platform %q: %w: want os/arch[/variant], e.g. linux/arm64", want, errdefs.ErrInvalid)
	}
	if parts[0] != e.OS || parts[1] != e.Arch || (len(parts) == 3 && parts[2] != e.Variant) {
		return fmt.Errorf("%s is an image for %s, not %s: %w", n, strings.TrimSuffix(img+"/"+e.Variant, "/"), want, errdefs.ErrRejected)
	}
	ok, why, err := b.CanRun(ctx, e.OS, e.Arch)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is an image for %s and the engine cannot run it: %s: %w", n, img, why, errdefs.ErrRejected)
	}
	c.opt.Log.Info("loading an image of another platform: the engine emulates it", "name", n.String(), "image", img, "engine", engine)
	return nil
}
