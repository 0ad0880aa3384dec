package main

import (
	"fmt"
)

type getCmd struct {
	Name string `arg:"" help:"Cache name." predictor:"name"`
	JSON bool   `help:"Print {ref, latest, loaded, entry} as JSON instead of the ref."`

	getBuildFlags `embed:""` // --build and its recipe flags: cmd_build.go
}

func (c *getCmd) Help() string {
	return "Example:\n  ref=$(imgcache get capy-ubuntu-25.04-gcc15) && docker run --rm \"$ref\" gcc --version"
}

func (c *getCmd) Run(e *env) error {
	n, ca, err := e.nameAndCache(c.Name)
	if err != nil {
		return err
	}
	get := ca.Get
	if c.Build {
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
	if c.JSON {
		return printJSON(e.stdout, map[string]any{"ref": res.Ref, "latest": res.Latest, "loaded": res.Loaded, "sent": res.Sent, "entry": entryJSON(res.Entry)})
	}
	_, err = fmt.Fprintln(e.stdout, res.Ref)
	return err
}

type exportCmd struct {
	Name   string `arg:"" help:"Cache name."`
	Output string `short:"o" help:"Write to this file (created only once verified) instead of standard output." placeholder:"FILE"`
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
		_, err = ca.Export(e.ctx, n, e.stdout)
		return err
	}
	_, err = ca.ExportFile(e.ctx, n, c.Output)
	return err
}
