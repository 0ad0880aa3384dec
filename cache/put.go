package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/imgcache/imgcache/archive"
	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

// PutResult reports one ingest.
type PutResult struct {
	Entry        manifest.Entry
	Deduplicated bool   // the content was already stored
	Replaced     string // the digest the name pointed at before, if it changed
}

// Put ingests the docker-archive or OCI tar read from r under name n. The tar
// is read once: hashed, compressed and parsed for its metadata in one pass.
// r that is not an image archive leaves nothing behind.
func (c *Cache) Put(ctx context.Context, n naming.Name, r io.Reader, size int64) (*PutResult, error) {
	return c.ingest(ctx, n, c.progress("put "+n.String(), size, r), nil)
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
	res, err := c.ingest(ctx, n, c.progress("save "+n.String(), img.Size, rc), func(e *manifest.Entry) {
		if len(e.RepoTags) == 0 {
			e.RepoTags = img.RepoTags
		}
	})
	if err != nil {
		return nil, fmt.Errorf("save %s: %w", image, err)
	}
	return res, nil
}

// ingest is the one ingest path: r → (sha256 + zstd → blob) and (tar parser
// → metadata) concurrently, then publish: blob, manifest entry, link.
func (c *Cache) ingest(ctx context.Context, n naming.Name, r io.Reader, amend func(*manifest.Entry)) (*PutResult, error) {
	if err := checkName(n); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	in, info, err := c.storeBlob(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("put %s: %w", n, err)
	}
	defer in.Release()
	e := c.newEntry(n, in, info)
	if amend != nil {
		amend(&e)
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
	type parsed struct {
		info *archive.Info
		err  error
	}
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

// newEntry is the manifest entry for a blob just stored under n.
func (c *Cache) newEntry(n naming.Name, in *cas.Ingested, info *archive.Info) manifest.Entry {
	img := info.Images[0]
	now := c.opt.Now().UTC()
	return manifest.Entry{
		Name:           n.String(),
		Digest:         in.Digest,
		Size:           in.Size,
		StoredSize:     in.Stored,
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
		if old, ok := m.Entries[e.Name]; ok {
			e.Pinned = old.Pinned
			if old.Digest != e.Digest {
				res.Replaced = old.Digest.String()
			} else {
				e.Added = old.Added
			}
		}
		res.Entry = e
		m.Entries[e.Name] = &e
		return nil
	}, func(*manifest.Manifest) {
		if err := c.setLink(n, e.Digest); err != nil {
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
