package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	units "github.com/docker/go-units"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
)

type putCmd struct {
	Name string `arg:"" help:"Cache name, <project>-<distro>-<version>-<variant>, e.g. capy-ubuntu-25.04-gcc15."`
	File string `arg:"" help:"docker save tarball to ingest; - reads standard input."`
	JSON bool   `help:"Print the entry as JSON instead of the digest."`
}

func (c *putCmd) Help() string {
	return "Example:\n  docker save capy:gcc15 -o capy.tar && imgcache put capy-ubuntu-25.04-gcc15 capy.tar"
}

func (c *putCmd) Run(e *env) error {
	n, err := parseName(c.Name)
	if err != nil {
		return err
	}
	var r io.Reader = e.stdin
	var size int64 = -1
	if c.File != "-" {
		f, err := os.Open(c.File)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("put %s: %w: no file %s", n, errdefs.ErrInvalid, c.File)
			}
			return fmt.Errorf("put %s: %w: %w", n, errdefs.ErrInvalid, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() && fi.Mode()&fs.ModeNamedPipe == 0 {
			return fmt.Errorf("put %s: %w: %s is not a regular file", n, errdefs.ErrInvalid, c.File)
		}
		r, size = f, fi.Size()
	}
	ca, err := e.open()
	if err != nil {
		return err
	}
	res, err := ca.Put(e.ctx, n, r, size)
	if err != nil {
		return gcAfterNoSpace(e, ca, err)
	}
	if res.Deduplicated {
		e.log.Info("content already stored; name points at the existing blob", "name", n.String(), "digest", res.Entry.Digest.String())
	}
	if res.Replaced != "" {
		e.log.Info("name moved to new content; the old blob waits for gc", "name", n.String(), "old", res.Replaced)
	}
	if res.Entry.Split() {
		e.log.Info("stored split", "name", n.String(), "new_blobs", res.New, "reused_layers", res.Reused)
	}
	if err := autoGC(e, ca); err != nil {
		return err
	}
	return printPut(e, res, c.JSON)
}

type saveCmd struct {
	Image string `arg:"" help:"Image in the daemon: a reference (alpine, docker.io/library/alpine:3.20) or an image ID."`
	Name  string `arg:"" help:"Cache name to store it under."`
	JSON  bool   `help:"Print the entry as JSON instead of the digest."`
}

func (c *saveCmd) Help() string {
	return "Example:\n  imgcache save capy:gcc15 capy-ubuntu-25.04-gcc15"
}

func (c *saveCmd) Run(e *env) error {
	n, ca, err := e.nameAndCache(c.Name)
	if err != nil {
		return err
	}
	res, err := ca.Save(e.ctx, c.Image, n)
	if err != nil {
		return gcAfterNoSpace(e, ca, err)
	}
	if err := autoGC(e, ca); err != nil {
		return err
	}
	return printPut(e, res, c.JSON)
}

// printPut prints what put and save stored (the digest, or --json), then
// reports a failed write-back push under --strict-remote.
func printPut(e *env, res *cache.PutResult, asJSON bool) error {
	var err error
	if asJSON {
		err = printJSON(e.stdout, putJSON(res))
	} else {
		_, err = fmt.Fprintln(e.stdout, res.Entry.Digest)
	}
	if err != nil {
		return err
	}
	return e.strictRemote(res.PushErr)
}

// putOutput is put and save --json: the entry, and what the ingest stored.
type putOutput struct {
	entryOutput
	NewBlobs     int `json:"new_blobs"`     // blobs this put stored (split entries)
	ReusedLayers int `json:"reused_layers"` // layers found stored: hashed, not compressed
}

func putJSON(res *cache.PutResult) putOutput {
	return putOutput{entryOutput: entryJSON(res.Entry), NewBlobs: res.New, ReusedLayers: res.Reused}
}

// autoGC runs a gc after an ingest when limits are configured, so a host
// never fills up between cron runs. Its failure is a warning, not the
// ingest's failure.
func autoGC(e *env, ca *cache.Cache) error {
	if !e.root.limitFlags.set() {
		return nil
	}
	rep, err := ca.GC(e.ctx, cache.GCOptions{Limits: e.root.limitFlags.limits()})
	if err != nil {
		e.log.Warn("automatic gc failed", "err", err)
		return nil
	}
	if len(rep.Victims) > 0 {
		e.log.Info("automatic gc", "freed", rep.Freed, "steps", len(rep.Victims))
	}
	for _, s := range rep.Shortfalls {
		e.log.Warn("automatic gc could not reach the "+s.Limit+" limit", "missing", units.BytesSize(float64(s.Missing)), "why", shortfallWhy(s))
	}
	return nil
}

// gcAfterNoSpace runs the automatic gc when an ingest failed for lack of
// space (the limits, min-age included, as ever; it says what it could not
// free), then returns the ingest's error: the put is not retried.
func gcAfterNoSpace(e *env, ca *cache.Cache, err error) error {
	if errors.Is(err, errdefs.ErrNoSpace) {
		autoGC(e, ca)
	}
	return err
}
