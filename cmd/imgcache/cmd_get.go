package main

import (
	"context"
	"fmt"
	"time"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/naming"
)

type getCmd struct {
	Name     string `arg:"" help:"Cache name." predictor:"name"`
	JSON     bool   `help:"Print {ref, latest, loaded, entry} as JSON instead of the ref."`
	Platform string `help:"Load an image built for this os/arch (its own) though the engine runs another: only where the engine emulates it (binfmt_misc and qemu on its host); refused otherwise." placeholder:"OS/ARCH"`
	Refresh  bool   `help:"With a remote: check the remote's tag first and pull the name if another host moved it (a failing remote is a warning)."`
	Hold     age    `help:"Keep the entry and its daemon image from gc for this long (a job longer than --min-age), across processes; a hold expires even if its holder dies." placeholder:"DURATION"`

	getBuildFlags `embed:""` // --build and its recipe flags: cmd_build.go
}

func (c *getCmd) Help() string {
	return "Examples:\n  ref=$(imgcache get capy-ubuntu-25.04-gcc15) && docker run --rm \"$ref\" gcc --version\n  ref=$(imgcache get --hold 2h capy-ubuntu-25.04-gcc15)   # a two-hour job"
}

func (c *getCmd) Run(e *env) error {
	n, ca, err := e.nameAndCache(c.Name)
	if err != nil {
		return err
	}
	get := func(ctx context.Context, n naming.Name) (*cache.GetResult, error) {
		return ca.GetWith(ctx, n, cache.GetOptions{Platform: c.Platform, Refresh: c.Refresh})
	}
	if c.Build {
		if c.Platform != "" {
			return fmt.Errorf("--platform does not go with --build: a build makes an image for the engine's own platform: %w", errUsage)
		}
		get = c.buildOnMiss(e, ca) // on a miss, build from the recorded or given recipe
	} else if err := c.noBuildFlags(); err != nil {
		return err
	}
	res, err := get(e.ctx, n)
	if err != nil {
		return err
	}
	if res.Loaded {
		e.log.Info("loaded into the daemon (verified)", "name", n.String(), "digest", res.Entry.Digest.String(), "sent", res.Sent, "of", res.Entry.Size)
	}
	var heldUntil time.Time
	if c.Hold > 0 {
		// The image is ready: a hold that cannot be recorded (a read-only
		// cache) is said, not a failed job; min-age still protects it.
		until := time.Now().Add(time.Duration(c.Hold)).UTC()
		if err := ca.Hold(e.ctx, n, res.Entry.Digest, until); err != nil {
			e.log.Warn("the hold was not recorded: gc protects the image only for --min-age", "err", err)
		} else {
			heldUntil = until
		}
	}
	if c.JSON {
		out := map[string]any{"ref": res.Ref, "latest": res.Latest, "loaded": res.Loaded, "sent": res.Sent, "entry": entryJSON(res.Entry)}
		if !heldUntil.IsZero() {
			out["held_until"] = heldUntil
		}
		return printJSON(e.stdout, out)
	}
	_, err = fmt.Fprintln(e.stdout, res.Ref)
	return err
}

type exportCmd struct {
	Name   string `arg:"" help:"Cache name."`
	Output string `short:"o" help:"Write to this file (created only once verified) instead of standard output." placeholder:"FILE"`
	Sync   bool   `help:"With -o: fsync FILE and its directory before returning, so that it survives a power cut (slower: the disk sets the pace)."`
}

func (c *exportCmd) Help() string {
	return "Example:\n  imgcache export capy-ubuntu-25.04-gcc15 -o capy.tar && sha256sum capy.tar"
}

func (c *exportCmd) Run(e *env) error {
	n, ca, err := e.nameAndCache(c.Name)
	if err != nil {
		return err
	}
	if c.Output == "" || c.Output == "-" {
		if c.Sync {
			return fmt.Errorf("export --sync: %w: it makes -o FILE durable; standard output is not a file imgcache names", errdefs.ErrInvalid)
		}
		_, err = ca.Export(e.ctx, n, e.stdout)
		return err
	}
	_, err = ca.ExportFile(e.ctx, n, c.Output, c.Sync)
	return err
}
