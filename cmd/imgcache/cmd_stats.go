package main

import (
	"fmt"
	"text/tabwriter"

	units "github.com/docker/go-units"

	"github.com/imgcache/imgcache/cache"
)

type statsCmd struct {
	JSON       bool   `help:"Print the report as JSON."`
	Daemon     bool   `help:"Also ask the Docker daemon what imgcache's images hold there (--no-daemon: do not)." default:"true" negatable:""`
	Prometheus string `help:"Also write the metrics, atomically, in the Prometheus text format to FILE (for node_exporter's textfile collector)." placeholder:"FILE" type:"path"`
}

func (c *statsCmd) Help() string {
	return "Example:\n  imgcache stats --prometheus /var/lib/node_exporter/textfile/imgcache.prom"
}

func (c *statsCmd) Run(e *env) error {
	ca, err := e.open()
	if err != nil {
		return err
	}
	rep, err := ca.Stats(e.ctx)
	if err != nil {
		return err
	}
	// What imgcache's images hold in the daemon, if one answers: stats
	// does not fail without one (a cron job on a host whose daemon is down).
	if c.Daemon {
		if rep.Daemon, err = ca.DaemonUsage(e.ctx); err != nil {
			e.log.Info("daemon usage unknown", "err", err)
		}
	}
	if c.Prometheus != "" {
		if err := cache.WritePrometheusFile(c.Prometheus, rep); err != nil {
			return err
		}
	}
	if c.JSON {
		return printJSON(e.stdout, rep)
	}
	n := rep.Counters
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	size := func(b int64) string { return units.BytesSize(float64(b)) }
	row("Directory", rep.Dir)
	row("Entries", fmt.Sprintf("%d (%d pinned)", rep.Entries, rep.Pinned))
	row("Blobs", rep.Blobs)
	row("Stored", size(rep.StoredBytes))
	row("Raw (named)", size(rep.RawBytes))
	row("Compression", fmt.Sprintf("%.3fx", rep.Ratio))
	row("Counting since", stamp(n.Since))
	row("Warm hits", n.WarmHits)
	row("Loads", fmt.Sprintf("%d (%s)", n.Loads, size(n.BytesLoaded)))
	hit := 0.0
	if n.WarmHits+n.Loads > 0 {
		hit = float64(n.WarmHits) / float64(n.WarmHits+n.Loads)
	}
	row("Hit rate", fmt.Sprintf("%.1f%%", 100*hit))
	row("Puts", fmt.Sprintf("%d (%s)", n.Puts, size(n.BytesIngested)))
	row("Exports", n.Exports)
	row("Evictions", fmt.Sprintf("%d (%s reclaimed)", n.Evictions, size(n.BytesReclaimed)))
	row("Integrity failures", n.IntegrityFailures)
	if rep.Daemon.Reachable {
		row("In the daemon", fmt.Sprintf("%d images, %s (shared layers counted per image)", rep.Daemon.Images, size(rep.Daemon.Bytes)))
	}
	return tw.Flush()
}
