package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/manifest"
	"github.com/imgcache/imgcache/naming"
)

type lsCmd struct {
	JSON   bool `help:"Print the entries as a JSON array."`
	Remote bool `name:"remote-list" help:"List what the remote holds (names, digests, sizes): written ls --remote; the repository comes from --remote REPO, IMGCACHE_REMOTE or the config."`
}

func (c *lsCmd) Run(e *env) error {
	ca, err := e.open()
	if err != nil {
		return err
	}
	if c.Remote {
		return lsRemote(e, ca, c.JSON)
	}
	entries, err := ca.List(e.ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(e.stdout, entriesJSON(entries))
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE\tOWN\tSHARED\tLAST USED\tPINNED")
	now := time.Now()
	usage := cache.Usages(entries)
	for _, en := range entries {
		pinned := ""
		if en.Pinned {
			pinned = "yes"
		}
		u := usage[en.Name]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", en.Name, en.Digest.Encoded()[:12],
			units.BytesSize(float64(en.Size)), units.BytesSize(float64(u.Own)), units.BytesSize(float64(u.Shared)), ago(now, en.LastUsed), pinned)
	}
	return tw.Flush()
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return units.HumanDuration(now.Sub(t)) + " ago"
}

type inspectCmd struct {
	Name string `arg:"" help:"Cache name." predictor:"name"`
	JSON bool   `help:"Print the entry as JSON."`
}

func (c *inspectCmd) Run(e *env) error {
	n, ca, err := e.nameAndCache(c.Name)
	if err != nil {
		return err
	}
	en, err := ca.Inspect(e.ctx, n)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(e.stdout, entryJSON(en))
	}
	printEntry(e, n, en)
	return nil
}

func printEntry(e *env, n naming.Name, en manifest.Entry) {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Name", en.Name)
	row("Ref", naming.PinnedRef(n, en.Digest.Encoded()))
	row("Digest", en.Digest.String())
	row("Size", fmt.Sprintf("%s (%d bytes)", units.BytesSize(float64(en.Size)), en.Size))
	ratio := 0.0
	if en.Size > 0 {
		ratio = float64(en.StoredSize) / float64(en.Size)
	}
	row("Stored", fmt.Sprintf("%s (%d bytes, %.2fx)", units.BytesSize(float64(en.StoredSize)), en.StoredSize, ratio))
	row("Image ID", en.ImageID)
	row("Repo tags", fmt.Sprint(en.RepoTags))
	plat := en.OS + "/" + en.Arch
	if en.Variant != "" {
		plat += "/" + en.Variant
	}
	row("Platform", plat)
	row("Format", en.Format)
	switch {
	case en.Split():
		loads := fmt.Sprintf("%d layers identified (partial loads)", len(en.Layers))
		if len(en.Layers) == 0 {
			loads = "layers not identified: always loaded whole"
		}
		row("Layout", fmt.Sprintf("split: skeleton %s (%s), %d pieces, %s", en.Skeleton.Digest, units.BytesSize(float64(en.Skeleton.Size)), len(en.Pieces), loads))
		for i, l := range en.Layers {
			row(fmt.Sprintf("Layer %d", i), fmt.Sprintf("%s %s (%s stored) %s", l.DiffID, units.BytesSize(float64(l.Size)), units.BytesSize(float64(storedOf(en, l.Digest))), l.Path))
		}
	case en.Whole != "":
		row("Layout", "whole: "+en.Whole)
	default:
		row("Layout", "whole")
	}
	row("Created", stamp(en.Created))
	row("Added", stamp(en.Added))
	row("Last used", stamp(en.LastUsed))
	row("Pinned", fmt.Sprint(en.Pinned))
	if en.Base != nil {
		row("Base", en.Base.Name+" "+en.Base.Digest.String())
	}
	tw.Flush()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

type rmCmd struct {
	Names  []string `arg:"" help:"Cache names to drop." predictor:"name"`
	Remote bool     `name:"remote-names" help:"Remove the names from the remote instead: written rm --remote NAME; its tags go, the blobs stay until the registry's own garbage collection."`
}

func (c *rmCmd) Run(e *env) error {
	names, err := parseNames(c.Names)
	if err != nil {
		return err
	}
	ca, err := e.open()
	if err != nil {
		return err
	}
	if !c.Remote {
		return ca.Remove(e.ctx, names...)
	}
	if !ca.HasRemote() {
		return fmt.Errorf("rm --remote: %w", errNoRemoteFlag)
	}
	for _, n := range names {
		if err := ca.RemoveRemote(e.ctx, n); err != nil {
			return err
		}
	}
	return nil
}

type pinCmd struct {
	Name string `arg:"" help:"Cache name." predictor:"name"`
}

func (c *pinCmd) Run(e *env) error { return setPinned(e, c.Name, true) }

type unpinCmd struct {
	Name string `arg:"" help:"Cache name." predictor:"name"`
}

func (c *unpinCmd) Run(e *env) error { return setPinned(e, c.Name, false) }

func setPinned(e *env, name string, pinned bool) error {
	n, err := parseName(name)
	if err != nil {
		return err
	}
	ca, err := e.open()
	if err != nil {
		return err
	}
	return ca.SetPinned(e.ctx, n, pinned)
}

type verifyCmd struct {
	Names  []string `arg:"" optional:"" help:"Cache names to verify (default: all)."`
	Repair bool     `help:"Rebuild a corrupt manifest from names/ and blobs/; drop entries whose blob is gone or bad."`
	JSON   bool     `help:"Print the report as JSON."`
}

func (c *verifyCmd) Run(e *env) error {
	names, err := parseNames(c.Names)
	if err != nil {
		return err
	}
	ca, err := e.open()
	if err != nil {
		return err
	}
	rep, err := ca.Verify(e.ctx, names, c.Repair)
	if err != nil {
		return err
	}
	if c.JSON {
		if err := printJSON(e.stdout, map[string]any{"ok": rep.OK(), "report": rep}); err != nil {
			return err
		}
	} else {
		for _, p := range rep.Problems {
			what := p.Name
			if what == "" {
				what = p.Digest
			}
			if what == "" {
				what = p.Path
			}
			state := "FAIL"
			if p.Fixed {
				state = "fixed"
			} else if !p.Failure() {
				state = "note"
			}
			fmt.Fprintf(e.stdout, "%s\t%s\t%s\t%s\n", state, p.Kind, what, p.Detail)
		}
		fmt.Fprintf(e.stderr, "verified %d entries, %d blobs (%s): %d problems\n", rep.Entries, rep.Blobs, units.BytesSize(float64(rep.Bytes)), rep.Failures())
	}
	return rep.Err()
}

// storedOf is the stored size of piece d of a split entry.
func storedOf(en manifest.Entry, d digest.Digest) int64 {
	for _, p := range en.Pieces {
		if p.Digest == d {
			return p.StoredSize
		}
	}
	return 0
}
