package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/decompress"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
	"github.com/imgcache/imgcache/skeleton"
)

// PutResult reports one ingest.
type PutResult struct {
	Entry        manifest.Entry
	Deduplicated bool   // the content was already stored
	Replaced     string // the digest the name pointed at before, if it changed
	// Split entries: blobs this put stored (pieces and skeleton), and
	// pieces it found stored already, which cost a hash, not a compression.
	New, Reused int
	// PushErr is why the write-back push failed (Options.Push); the
	// local entry stands.
	PushErr error
}

// Put ingests the docker-archive or OCI tar read from r under name n. The tar
// is read once: hashed, compressed and parsed for its metadata in one pass.
// r may be compressed as `docker load` accepts (gzip, bzip2, xz, zstd,
// told by its magic bytes): the entry is then the uncompressed tar, its
// digest that tar's sha256 (what `zcat x.tar.gz | sha256sum` prints), and
// size is ignored. r that is not an image archive, or a compressed stream
// that is truncated or corrupt, leaves nothing behind.
func (c *Cache) Put(ctx context.Context, n naming.Name, r io.Reader, size int64) (*PutResult, error) {
	dr, err := decompress.Open(r)
	if err != nil {
		return nil, fmt.Errorf("put %s: %w", n, err)
	}
	defer dr.Close()
	if dr.Format != decompress.None {
		c.opt.Log.Info("the input is compressed: storing the tar inside it", "name", n.String(), "compression", string(dr.Format))
		size = -1
	}
	res, err := c.ingest(ctx, n, dr.Reader, "put", size, nil)
	if err != nil {
		return nil, err
	}
	res.PushErr = c.writeBack(ctx, n)
	return res, nil
}

// Save streams image (a reference or ID, normalized as Docker does) out of
// the daemon straight into the cache under n: no temporary tar on disk.
func (c *Cache) Save(ctx context.Context, image string, n naming.Name) (*PutResult, error) {
	ref, err := naming.NormalizeImage(image)
	if err != nil {
		// An image ID is not a reference; let the daemon resolve it.
		ref = image
	}
	b, err := c.docker(ctx)
	if err != nil {
		return nil, err
	}
	img, err := b.Inspect(ctx, ref)
	if errors.Is(err, errdefs.ErrNotFound) && ref != image && looksLikeID(image) {
		// "sha256:<hex>" and short hex IDs parse as references too
		// (docker.io/library/sha256:<hex>): no such image, so an ID.
		img, err = b.Inspect(ctx, image)
	}
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("image %s is not in the Docker daemon: %w (docker images lists them)", image, errdefs.ErrNotFound)
		}
		return nil, err
	}
	rc, err := b.Save(ctx, img.ID)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	res, err := c.ingest(ctx, n, rc, "save", img.Size, func(e *manifest.Entry) error {
		if len(e.RepoTags) == 0 {
			e.RepoTags = img.RepoTags
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("save %s: %w", image, err)
	}
	res.PushErr = c.writeBack(ctx, n)
	return res, nil
}

// looksLikeID reports whether s is an image ID rather than a reference.
func looksLikeID(s string) bool {
	if d, err := digest.Parse(s); err == nil && d.Algorithm() == digest.SHA256 {
		return true
	}
	if len(s) < 12 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// ingest is the one ingest path. With a layer store, the tar is split
// (ingestSplit); else, or when it cannot be split and src can be read
// again, it is stored whole: src → (sha256 + zstd → blob) and (tar parser
// → metadata) concurrently, then publish: blob, manifest entry, link.
func (c *Cache) ingest(ctx context.Context, n naming.Name, src io.Reader, label string, size int64, amend func(*manifest.Entry) error) (*PutResult, error) {
	if err := checkName(n); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	why := ""
	if c.layers != nil {
		res, dedup, err := c.ingestSplit(ctx, n, c.progress(label+" "+n.String(), size, src), prescan(src), amend)
		if !errors.Is(err, skeleton.ErrNotSplittable) {
			if res != nil {
				res.Deduplicated = dedup
			}
			return res, err
		}
		s, ok := src.(io.Seeker)
		if !ok {
			return nil, fmt.Errorf("put %s: %w: %w; it can be stored whole from a file, not from a stream (imgcache put %s FILE)", n, errdefs.ErrInvalid, err, n)
		}
		if _, serr := s.Seek(0, io.SeekStart); serr != nil {
			return nil, fmt.Errorf("put %s: %w; rewinding to store it whole: %w", n, err, serr)
		}
		why = err.Error()
	}
	in, info, err := c.storeBlob(ctx, c.progress(label+" "+n.String(), size, src))
	if err != nil {
		return nil, fmt.Errorf("put %s: %w", n, err)
	}
	defer in.Release()
	e := c.newEntry(n, info, in.Digest, in.Size, in.Stored)
	e.Whole = why
	if amend != nil {
		if err := amend(&e); err != nil {
			return nil, fmt.Errorf("put %s: %w", n, err)
		}
	}
	res, err := c.record(ctx, n, e)
	if err != nil {
		return nil, fmt.Errorf("put %s: %w", n, err)
	}
	res.Deduplicated = in.Deduplicated
	c.count(func(s *Counters) { s.Puts++; s.BytesIngested += e.Size })
	return res, nil
}

// storeBlob streams r into the blob store and, at the same time, through
// the archive parser; the blob is published only if the parser accepted
// the archive. The caller releases the blob's lock.
func (c *Cache) storeBlob(ctx context.Context, r io.Reader) (*cas.Ingested, *archive.Info, error) {
	pr, pw := io.Pipe()
	done := parse(pr)
	var p parsed
	in, err := c.blobs.Ingest(ctx, io.TeeReader(r, pw), func(cas.Info) error {
		pw.Close()
		p = <-done
		if p.err != nil {
			return asInvalid(p.err)
		}
		return nil
	})
	if err != nil {
		pw.CloseWithError(err)
		if p.info == nil && p.err == nil {
			p = <-done // the parser stopped the copy, or the copy failed
			if p.err != nil && !errors.Is(p.err, io.ErrClosedPipe) && !errors.Is(err, errdefs.ErrNoSpace) && !errors.Is(err, context.Canceled) && !errors.Is(p.err, err) {
				err = asInvalid(p.err) // the archive's fault explains more than the broken pipe
			}
		}
		return nil, nil, err
	}
	return in, p.info, nil
}

// parsed is the archive parser's verdict.
type parsed struct {
	info *archive.Info
	err  error
}

// parse runs the archive parser on pr (fed by a tee of the ingest) and
// delivers its verdict once pr is drained.
func parse(pr *io.PipeReader) <-chan parsed {
	done := make(chan parsed, 1)
	go func() {
		// Large reads: the parser skips layer data in small chunks, and every
		// read of an io.Pipe is a goroutine handoff.
		br := bufio.NewReaderSize(pr, 1<<20)
		info, err := archive.Read(br)
		if err == nil {
			_, err = io.Copy(io.Discard, br) // padding after the end-of-archive marker
		}
		pr.CloseWithError(err)
		done <- parsed{info, err}
	}()
	return done
}

// newEntry is the manifest entry for a tar of digest d and size bytes,
// stored in stored bytes, under n.
func (c *Cache) newEntry(n naming.Name, info *archive.Info, d digest.Digest, size, stored int64) manifest.Entry {
	img := info.Images[0]
	now := c.opt.Now().UTC()
	return manifest.Entry{
		Name:           n.String(),
		Digest:         d,
		Size:           size,
		StoredSize:     stored,
		Format:         string(info.Format),
		ImageID:        img.ID.String(),
		RepoTags:       img.RepoTags,
		OS:             img.OS,
		Arch:           img.Architecture,
		Variant:        img.Variant,
		MetadataOffset: info.MetadataOffset,
		Created:        img.Created,
		Added:          now,
		LastUsed:       now,
	}
}

// record puts e in the manifest under its lock (keeping the pin, and the
// time it was added when the content is the same) and swaps n's link.
func (c *Cache) record(ctx context.Context, n naming.Name, e manifest.Entry) (*PutResult, error) {
	res := &PutResult{Entry: e}
	err := c.updateThen(ctx, func(m *manifest.Manifest) error {
		if e.Split() && !m.Layered() {
			return fmt.Errorf("the manifest is of schema %d, which holds whole tars only, but this cache has a layer store: %w (imgcache migrate converts it)", m.Version, errdefs.ErrCorrupt)
		}
		if old, ok := m.Entries[e.Name]; ok {
			e.Pinned = old.Pinned
			if old.Digest != e.Digest {
				res.Replaced = old.Digest.String()
				// Its daemon image may be what a job just got: gc --docker
				// keeps it until this last use is older than the min-age.
				m.Retire(e.Name, old.Digest, old.LastUsed)
			} else {
				e.Added = old.Added
			}
		}
		res.Entry = e
		m.Entries[e.Name] = &e
		return nil
	}, func(*manifest.Manifest) {
		if err := c.setLink(n, linkTargetOf(&e)); err != nil {
			c.opt.Log.Warn("name link not updated; imgcache verify will fix it", "name", n.String(), "err", err)
		}
	})
	return res, err
}

// asInvalid marks archive errors as bad input.
func asInvalid(err error) error {
	if errors.Is(err, errdefs.ErrInvalid) {
		return err
	}
	return fmt.Errorf("%w: %w", errdefs.ErrInvalid, err)
}
