package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/dockerbridge"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/bufpipe"
	"github.com/imgcache/imgcache/internal/lockfile"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
	"github.com/imgcache/imgcache/skeleton"
)

// lockPieces takes the shared lock of every piece of a split entry, so
// that no gc deletes one while it is read (the caller holds the
// skeleton's lock).
func (c *Cache) lockPieces(ctx context.Context, e manifest.Entry) (func(), error) {
	var locks []*lockfile.Lock
	unlock := func() {
		for _, l := range locks {
			l.Release()
		}
	}
	for _, p := range e.Pieces {
		lctx, cancel := c.lockCtx(ctx)
		l, err := c.layers.Lock(lctx, p.Digest, false)
		cancel()
		if err != nil {
			unlock()
			return nil, err
		}
		locks = append(locks, l)
	}
	return unlock, nil
}

// loadSplit loads a split entry: only the layers the engine lacks when it
// is Docker's classic store and holds some of them, else the whole tar,
// reassembled (for the classic store, an OCI archive without manifest.json
// goes with one made from the entry, since that store loads nothing
// without it). It returns the bytes sent. The caller holds the skeleton's
// exclusive lock.
func (c *Cache) loadSplit(ctx context.Context, b Engine, n naming.Name, e manifest.Entry) (int64, error) {
	unlock, err := c.lockPieces(ctx, e)
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", n, err)
	}
	sent, err := c.loadSplitLocked(ctx, b, n, e, nil)
	unlock() // before a quarantine, which takes the piece's exclusive lock
	var bad *blobError
	if errors.As(err, &bad) {
		return sent, c.splitFailure(n, e, bad.d, bad.err, nothingLoaded)
	}
	return sent, err
}

// blobError is a failure reading blob d of a split entry.
type blobError struct {
	d   digest.Digest
	err error
}

func (b *blobError) Error() string { return b.err.Error() }
func (b *blobError) Unwrap() error { return b.err }

// loadSplitLocked is loadSplit with the pieces locked by the caller; fetch,
// when not nil, opens the pieces instead of the layer store (a get that
// pulls streams them from the registry).
func (c *Cache) loadSplitLocked(ctx context.Context, b Engine, n naming.Name, e manifest.Entry, fetch skeleton.Open) (int64, error) {
	skel, err := c.readSkeleton(e)
	if err != nil {
		return 0, &blobError{e.Skeleton.Digest, err}
	}
	plan, err := c.loadPlan(ctx, b, e)
	if err != nil {
		return 0, err
	}
	if len(plan.skip) == 0 && plan.manifest == nil {
		return c.loadJoined(ctx, b, n, e, skel, fetch)
	}
	sent, err := c.loadPartial(ctx, b, n, e, skel, plan, fetch)
	if err == nil || !missingLayer(err, plan.skip) {
		return sent, err
	}
	c.opt.Log.Warn("the daemon lost a layer it held; loading the whole image", "name", n.String(), "err", err)
	if plan.manifest != nil {
		return c.loadPartial(ctx, b, n, e, skel, loadPlan{manifest: plan.manifest}, fetch)
	}
	return c.loadJoined(ctx, b, n, e, skel, fetch)
}

// loadPlan is how a load of a split entry differs from the original tar;
// the zero plan sends that tar.
type loadPlan struct {
	// skip are the layer files left out: those of the layers the engine
	// holds (by chain ID), when it is Docker's classic store.
	skip map[string]bool
	// manifest, when not nil, is a manifest.json to add at the end: the
	// classic store loads an archive only through one, and an OCI archive
	// written by skopeo, Podman or buildah has none.
	manifest []byte
}

// loadPlan finds what a load of e into the engine can leave out, and
// whether it needs a manifest.json.
func (c *Cache) loadPlan(ctx context.Context, b Engine, e manifest.Entry) (loadPlan, error) {
	if len(e.Layers) == 0 {
		return loadPlan{}, nil
	}
	ls, err := b.Layers(ctx)
	if err != nil || !ls.Partial {
		return loadPlan{}, err
	}
	var plan loadPlan
	if e.Format == string(archive.FormatOCI) {
		if plan.manifest, err = dockerManifest(e); err != nil {
			return loadPlan{}, err
		}
	}
	diffIDs := make([]digest.Digest, len(e.Layers))
	for i, l := range e.Layers {
		diffIDs[i] = l.DiffID
	}
	skip, need := map[string]bool{}, map[string]bool{}
	for i, chain := range identity.ChainIDs(diffIDs) {
		if ls.Chains[chain] {
			skip[e.Layers[i].Path] = true
		} else {
			need[e.Layers[i].Path] = true
		}
	}
	for p := range need {
		delete(skip, p) // a file one missing layer needs goes, whoever else has it
	}
	plan.skip = skip
	return plan, nil
}

// dockerManifest is the manifest.json of the docker-archive format for a
// split entry of an OCI archive: its config and layer files, as the
// archive holds them (blobs/sha256/<hex>; the classic store decompresses
// gzip layers itself and checks each against the config's diff_ids). No
// RepoTags: get tags the image itself.
func dockerManifest(e manifest.Entry) ([]byte, error) {
	id, err := digest.Parse(e.ImageID)
	if err != nil {
		return nil, fmt.Errorf("%s: image ID %q: %w", e.Name, e.ImageID, err)
	}
	item := struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{Config: "blobs/" + id.Algorithm().String() + "/" + id.Encoded()}
	for _, l := range e.Layers {
		item.Layers = append(item.Layers, l.Path)
	}
	return json.Marshal([]any{item})
}

// missingLayer reports whether err is the classic store's refusal of an
// archive that lacks a layer file it needs (the layer was removed between
// the plan and the load): a file of skip not found.
func missingLayer(err error, skip map[string]bool) bool {
	if !errors.Is(err, errdefs.ErrRejected) || !strings.Contains(err.Error(), "no such file or directory") {
		return false
	}
	for p := range skip {
		if strings.Contains(err.Error(), p) {
			return true
		}
	}
	return false
}

// loadPartial streams a tar of e's entries without the files in the
// plan's skip, manifest.json and index.json last (or the plan's
// manifest.json), every byte verified before them.
func (c *Cache) loadPartial(ctx context.Context, b Engine, n naming.Name, e manifest.Entry, skel []byte, plan loadPlan, fetch skeleton.Open) (int64, error) {
	op := &pieceOpener{c: c, fetch: fetch}
	sent, err, werr := c.pipeLoad(ctx, b, n, e.Size, func(w io.Writer) error {
		return writePartial(w, e, skel, plan, op.open)
	}, nil)
	if werr != nil {
		return sent, &blobError{op.last, werr}
	}
	if err != nil {
		return sent, fmt.Errorf("get %s: %w", n, err)
	}
	return sent, nil
}

// pipeLoad is one load through a loadPipe: produce writes the body on a
// goroutine of its own, the engine reads it (through wrap, if not nil:
// the hold-back). It returns the bytes the engine read, the engine's error,
// and produce's (nil when it only stopped because the load had ended).
func (c *Cache) pipeLoad(ctx context.Context, b Engine, n naming.Name, size int64, produce func(io.Writer) error, wrap func(io.Reader) io.Reader) (sent int64, loadErr, prodErr error) {
	pr, pw := loadPipe()
	done := make(chan error, 1)
	go func() {
		err := produce(pw)
		pw.CloseWithError(err)
		done <- err
	}()
	var body io.Reader = c.progress("load "+n.String(), size, pr)
	if wrap != nil {
		body = wrap(body)
	}
	counted := &countingReader{r: body}
	_, loadErr = b.Load(ctx, counted)
	pr.CloseWithError(errLoadEnded)
	if prodErr = <-done; errors.Is(prodErr, errLoadEnded) {
		prodErr = nil
	}
	return counted.n, loadErr, prodErr
}

// holdBack is the pipeLoad wrap that holds back an archive's tail from
// offset from (at most limit bytes) until the rest was read without error.
func holdBack(from, limit int64) func(io.Reader) io.Reader {
	return func(r io.Reader) io.Reader { return dockerbridge.NewHoldBack(r, from, limit) }
}

// loadPipe carries a load's body from the goroutine that reads and checks
// the blobs to the engine's request: 16 MiB of room, so that decompressing
// and hashing go on while the request waits for the daemon to read (a
// synchronous io.Pipe makes them take turns).
func loadPipe() (*bufpipe.Reader, *bufpipe.Writer) { return bufpipe.New(1<<20, 16) }

// errLoadEnded stops a writer whose reader, the engine's load, is done.
var errLoadEnded = errors.New("load ended")

// writePartial writes the partial archive: each entry of the original but
// those in the plan's skip (seeked over: their blobs are never opened), as
// archive/tar rewrites it, and the top-level manifest.json and index.json
// held back to the end, followed by the plan's manifest.json when the
// archive has none. Each payload is checked as it is read (View); the
// literals came with the verified skeleton; the config is checked against
// the image ID as well.
func writePartial(w io.Writer, e manifest.Entry, skel []byte, plan loadPlan, open skeleton.Open) error {
	skip := plan.skip
	v, err := skeleton.NewView(skel, open, skeleton.TrustOpen())
	if err != nil {
		return err
	}
	defer v.Close()
	id, _ := digest.Parse(e.ImageID)
	tr := tar.NewReader(v)
	tw := tar.NewWriter(w)
	type heldEntry struct {
		hdr  *tar.Header
		data []byte
	}
	var last []heldEntry
	var sawConfig, sawManifest bool
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name, err := archive.CleanName(hdr.Name)
		if err != nil {
			return err
		}
		if skip[name] {
			continue
		}
		sawConfig = sawConfig || isConfig(name, id)
		sawManifest = sawManifest || name == "manifest.json"
		if name == "manifest.json" || name == "index.json" || isConfig(name, id) {
			data, err := io.ReadAll(io.LimitReader(tr, 64<<20))
			if err != nil {
				return err
			}
			if isConfig(name, id) && digest.FromBytes(data) != id {
				return fmt.Errorf("%w: the config %s does not hash to the image ID %s", skeleton.ErrMismatch, name, id)
			}
			if !isConfig(name, id) {
				last = append(last, heldEntry{hdr, data})
				continue
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := tw.Write(data); err != nil {
				return err
			}
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	if plan.manifest != nil && !sawManifest {
		if !sawConfig {
			return fmt.Errorf("%w: the archive holds no config blobs/sha256/%s for the manifest.json Docker's classic store needs", errdefs.ErrRejected, id.Encoded())
		}
		last = append(last, heldEntry{&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(plan.manifest)),
			Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}, plan.manifest})
	}
	for _, h := range last {
		if err := tw.WriteHeader(h.hdr); err != nil {
			return err
		}
		if _, err := tw.Write(h.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// isConfig reports whether an archive path is the config of image id:
// "<hex>.json" (docker-archive) or "blobs/sha256/<hex>" (OCI).
func isConfig(name string, id digest.Digest) bool {
	if id.Validate() != nil {
		return false
	}
	return name == id.Encoded()+".json" || name == "blobs/sha256/"+id.Encoded()
}

// loadJoined streams e's original tar, reassembled from skeleton and
// pieces, holding back its metadata until every piece before it matched
// (the skeleton was verified when read: with its pieces it determines the
// tar, so the whole tar is not hashed again; export does that).
func (c *Cache) loadJoined(ctx context.Context, b Engine, n naming.Name, e manifest.Entry, skel []byte, fetch skeleton.Open) (int64, error) {
	from := e.MetadataOffset
	if e.Size-e.MetadataOffset > c.opt.HoldBackLimit {
		// The metadata is far from the end: prove the pieces first.
		op := &pieceOpener{c: c, fetch: fetch}
		if _, err := skeleton.Join(io.Discard, bytes.NewReader(skel), op.open, skeleton.TrustOpen(), skeleton.SkipWholeDigest()); err != nil {
			return 0, &blobError{op.last, err}
		}
		from = max(e.Size-c.opt.HoldBackLimit, 0)
	}
	op := &pieceOpener{c: c, fetch: fetch}
	sent, err, jerr := c.pipeLoad(ctx, b, n, e.Size, func(w io.Writer) error {
		_, err := skeleton.Join(w, bytes.NewReader(skel), op.open, skeleton.TrustOpen(), skeleton.SkipWholeDigest())
		return err
	}, holdBack(from, c.opt.HoldBackLimit))
	if jerr != nil {
		return sent, &blobError{op.last, jerr}
	}
	if err != nil {
		return sent, fmt.Errorf("get %s: %w", n, err)
	}
	return sent, nil
}

// splitFailure explains a failed read of a split entry's blob d (a piece,
// or the skeleton), quarantining it when its content is wrong. The caller
// may hold the skeleton's lock, but no piece's: quarantine takes the
// piece's exclusive lock if nobody else holds it.
func (c *Cache) splitFailure(n naming.Name, e manifest.Entry, d digest.Digest, err error, outcome string) error {
	if d == "" {
		d = e.Skeleton.Digest
	}
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		if q := c.layers.Quarantined(d); q != "" {
			return fmt.Errorf("%s: its blob %s failed verification earlier and is in quarantine (%s): %w (put or save the image again)", n, d, q, errdefs.ErrIntegrity)
		}
		return fmt.Errorf("%s: its blob %s is missing: %w (imgcache verify --repair, then put the image again)", n, d, errdefs.ErrNotFound)
	case errors.Is(err, skeleton.ErrMismatch), errors.Is(err, skeleton.ErrCorrupt), errors.Is(err, errdefs.ErrIntegrity):
	default:
		return fmt.Errorf("%s: %w", n, err)
	}
	c.count(func(s *Counters) { s.IntegrityFailures++ })
	where := "could not be quarantined: another process holds it"
	if d == e.Skeleton.Digest { // we hold its exclusive lock already, or nobody does
		if dst, qerr := c.layers.Quarantine(d); qerr == nil {
			where = "moved to " + dst
		}
	} else if l, ok, lerr := c.layers.TryLock(d, true); lerr == nil && ok {
		if dst, qerr := c.layers.Quarantine(d); qerr == nil {
			where = "moved to " + dst
		}
		l.Release()
	}
	c.opt.Log.Error("integrity failure", "name", n.String(), "blob", d.String(), "where", where)
	return fmt.Errorf("%s: blob %s: %w: %w; %sthe blob %s (put or save the image again)", n, d, errdefs.ErrIntegrity, err, outcome, where)
}

// countingReader counts the bytes read through it: what a load sent.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// exportSplit writes a split entry's original tar, reassembled; every
// piece and the whole tar are checked on the way (an error means w got
// unverified bytes). The caller holds the skeleton's shared lock.
func (c *Cache) exportSplit(ctx context.Context, n naming.Name, e manifest.Entry, w io.Writer) error {
	unlock, err := c.lockPieces(ctx, e)
	if err != nil {
		return fmt.Errorf("export %s: %w", n, err)
	}
	err = c.joinTo(e, w, "export "+n.String())
	unlock()
	var bad *blobError
	if errors.As(err, &bad) {
		return c.splitFailure(n, e, bad.d, bad.err, "")
	}
	return err
}

// joinTo reassembles e's tar into w (pieces locked by the caller). Each
// byte is hashed once, as part of the whole tar (the pieces are
// decompressed on all cores, not hashed one by one); on a mismatch each
// piece is checked to name the one at fault.
func (c *Cache) joinTo(e manifest.Entry, w io.Writer, label string) error {
	err := c.joinOnce(e, w, label)
	if !errors.Is(err, skeleton.ErrTarDigest) {
		return err
	}
	var bad *blobError
	errors.As(err, &bad)
	for _, p := range e.Pieces {
		r, oerr := c.layers.Open(p.Digest, cas.Parallel())
		if oerr != nil {
			return &blobError{p.Digest, oerr}
		}
		_, herr := r.WriteTo(io.Discard)
		r.Close()
		if herr != nil {
			return &blobError{p.Digest, herr}
		}
	}
	return &blobError{e.Skeleton.Digest, bad.err} // the pieces are right: the skeleton is not
}

func (c *Cache) joinOnce(e manifest.Entry, w io.Writer, label string) error {
	skel, err := c.readSkeleton(e)
	if err != nil {
		return &blobError{e.Skeleton.Digest, err}
	}
	op := &pieceOpener{c: c, opts: []cas.ReadOption{cas.Parallel(), cas.SkipHash()}}
	if c.opt.Progress == nil {
		if _, err := skeleton.Join(w, bytes.NewReader(skel), op.open, skeleton.TrustOpen()); err != nil {
			return &blobError{op.last, err}
		}
		return nil
	}
	// Through the progress display: Join → pipe → progress → w, in large
	// writes (w is often a file).
	pr, pw := loadPipe()
	copied := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(struct{ io.Writer }{w}, c.progress(label, e.Size, pr), make([]byte, 1<<20))
		pr.CloseWithError(err)
		copied <- err
	}()
	_, err = skeleton.Join(pw, bytes.NewReader(skel), op.open, skeleton.TrustOpen())
	pw.CloseWithError(err)
	cerr := <-copied
	if err != nil {
		return &blobError{op.last, err}
	}
	return cerr
}
