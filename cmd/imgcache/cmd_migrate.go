package main

import (
	"fmt"
	"strings"

	units "github.com/docker/go-units"

	"github.com/imgcache/imgcache/errdefs"
)

type migrateCmd struct {
	JSON bool `help:"Print the report as JSON."`
}

func (c *migrateCmd) Help() string {
	return "Splits every whole-tar entry into its layers and a skeleton (export stays byte-identical). " +
		"From its first step, imgcache releases without the layer store refuse this cache (exit 10): upgrade them first on a shared host. " +
		"Interrupted, it loses nothing; run it again to carry on.\n\nExample:\n  imgcache migrate && imgcache stats"
}

func (c *migrateCmd) Run(e *env) error {
	ca, err := e.open()
	if err != nil {
		return err
	}
	rep, err := ca.Migrate(e.ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w (run imgcache migrate again to carry on; nothing was lost)", err)
	}
	if c.JSON {
		if err := printJSON(e.stdout, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "converted %d entries; the cache stores %s, was %s\n",
			len(rep.Converted), units.BytesSize(float64(rep.StoredAfter)), units.BytesSize(float64(rep.StoredBefore)))
		for _, msg := range rep.Errors {
			fmt.Fprintln(e.stdout, "not converted: "+msg)
		}
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("migrate: %d entries not converted (%s): %w", len(rep.Left), strings.Join(rep.Left, ", "), errdefs.ErrProblems)
	}
	return nil
}
