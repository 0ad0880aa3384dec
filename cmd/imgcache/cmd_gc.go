package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/lru"
)

// limitFlags are the cache's limits. gc enforces them; put and save run a gc
// afterwards when any is set (e.g. through IMGCACHE_MIN_FREE).
type limitFlags struct {
	MinFree          byteSize `help:"Keep at least this much free on the cache's filesystem (20G = 20 GiB)." env:"IMGCACHE_MIN_FREE" placeholder:"SIZE"`
	TargetFree       byteSize `help:"Once below --min-free, free up to this much (hysteresis)." env:"IMGCACHE_TARGET_FREE" placeholder:"SIZE"`
	MaxSize          byteSize `help:"Keep the cache's stored bytes at most this." env:"IMGCACHE_MAX_SIZE" placeholder:"SIZE"`
	MaxAge           age      `help:"Drop entries unused for longer than this (30d, 12h)." env:"IMGCACHE_MAX_AGE" placeholder:"DURATION"`
	DockerMinFree    byteSize `help:"gc also removes imgcache's images from the Docker daemon, least recently used first (their blobs stay), while its data root's filesystem has less than this free (a daemon on this host)." env:"IMGCACHE_DOCKER_MIN_FREE" placeholder:"SIZE"`
	DockerTargetFree byteSize `help:"Once below --docker-min-free, free the data root up to this much (hysteresis)." env:"IMGCACHE_DOCKER_TARGET_FREE" placeholder:"SIZE"`
	MinAge           age      `help:"Never evict an entry (nor remove its daemon image) used within this long: a job between its get and its docker run; 0 opts out." env:"IMGCACHE_MIN_AGE" default:"10m" placeholder:"DURATION"`
}

func (l limitFlags) limits() lru.Limits {
	return lru.Limits{MinFree: int64(l.MinFree), TargetFree: int64(l.TargetFree), MaxSize: int64(l.MaxSize), MaxAge: time.Duration(l.MaxAge), MinAge: time.Duration(l.MinAge)}
}

// set reports whether a limit that evicts is set (min-age only protects).
func (l limitFlags) set() bool {
	lim := l.limits()
	lim.MinAge = 0
	return lim != lru.Limits{}
}

// byteSize parses sizes as df -h and docker do: 20G = 20 GiB.
type byteSize int64

func (b *byteSize) UnmarshalText(text []byte) error {
	n, err := units.RAMInBytes(string(text))
	if err != nil || n < 0 {
		return fmt.Errorf("size %q: want e.g. 500M, 20G, 1T", text)
	}
	*b = byteSize(n)
	return nil
}

func (b byteSize) String() string {
	if b == 0 {
		return "none"
	}
	return units.BytesSize(float64(b))
}

func (a age) String() string {
	if a == 0 {
		return "none"
	}
	d := time.Duration(a)
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// age parses Go durations plus whole days ("30d", "1d12h").
type age time.Duration

func (a *age) UnmarshalText(text []byte) error {
	s := string(text)
	var days int64
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil {
			return fmt.Errorf("duration %q: want e.g. 30d, 12h, 1d12h", s)
		}
		days, s = n, s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: want e.g. 30d, 12h, 1d12h", text)
		}
		rest = d
	}
	total := time.Duration(days)*24*time.Hour + rest
	if total < 0 {
		return fmt.Errorf("duration %q is negative", text)
	}
	*a = age(total)
	return nil
}

type gcCmd struct {
	DryRun bool `help:"Print the plan (victims, sizes, last use, reason) and change nothing."`
	Docker bool `help:"Also remove evicted names' imgcache/ tags from the daemon (never forced: images in use are reported and kept)."`
	Strict bool `help:"Exit non-zero (9) when a target cannot be reached."`
	JSON   bool `help:"Print the report as JSON."`
}

func (c *gcCmd) Help() string {
	return "Entries used within --min-age (default 10m) or held by get --hold are never evicted; what they keep over a limit is a shortfall.\n\nExamples:\n  imgcache gc --min-free 20G --target-free 30G\n  imgcache gc --max-size 100G --max-age 30d --dry-run\n  imgcache gc --min-free 20G --min-age 0   # the operator's override: evict even what a job just got\n  imgcache gc --docker --docker-min-free 50G --docker-target-free 80G   # the daemon's disk too"
}

func (c *gcCmd) Run(e *env) error {
	ca, err := e.open()
	if err != nil {
		return err
	}
	rep, err := ca.GC(e.ctx, cache.GCOptions{Limits: e.root.limitFlags.limits(), DryRun: c.DryRun, Docker: c.Docker,
		DockerMinFree: int64(e.root.DockerMinFree), DockerTargetFree: int64(e.root.DockerTargetFree)})
	if err != nil {
		return err
	}
	if c.JSON {
		if err := printJSON(e.stdout, gcJSON(rep)); err != nil {
			return err
		}
	} else {
		printGC(e, rep)
	}
	if c.Strict && rep.Short() {
		return fmt.Errorf("gc: target not reached: %w", errShort)
	}
	return nil
}

func printGC(e *env, rep *cache.GCReport) {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	verb := "EVICTED"
	if rep.DryRun {
		verb = "WOULD EVICT"
	}
	if len(rep.Victims) > 0 {
		fmt.Fprintf(tw, "%s\tBLOB\tFREES\tLAST USED\tREASON\n", verb)
	}
	now := time.Now()
	for _, v := range rep.Victims {
		names := strings.Join(v.Names, ",")
		if names == "" {
			names = "-"
		}
		blob := "-"
		if v.Blob != "" {
			blob = strings.TrimPrefix(v.Blob, "sha256:")[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", names, blob, units.BytesSize(float64(v.Freed)), ago(now, v.LastUsed), v.Reason)
	}
	tw.Flush()
	freed := "freed"
	if rep.DryRun {
		freed = "would free"
	}
	fmt.Fprintf(e.stderr, "gc: %s %s in %d steps; %s of dead ingests; %s free on the filesystem (was %s); cache holds %s\n",
		freed, units.BytesSize(float64(rep.Freed)), len(rep.Victims), units.BytesSize(float64(rep.TmpFreed)),
		units.BytesSize(float64(rep.FreeAfter)), units.BytesSize(float64(rep.Free)), units.BytesSize(float64(rep.StoredAfter)))
	for _, s := range rep.Shortfalls {
		fmt.Fprintf(e.stderr, "gc: %s target missed by %s: %s\n", s.Limit, units.BytesSize(float64(s.Missing)), shortfallWhy(s))
	}
	for _, d := range rep.DockerErrors {
		fmt.Fprintf(e.stderr, "gc: docker: %s\n", d)
	}
	removed := "removed"
	if rep.DryRun {
		removed = "would remove"
	}
	if len(rep.Docker) > 0 {
		fmt.Fprintf(e.stderr, "gc: docker: %s %s\n", removed, strings.Join(rep.Docker, ", "))
	}
	if len(rep.DockerProtected) > 0 {
		fmt.Fprintf(e.stderr, "gc: docker: kept %s (used within --min-age or held)\n", strings.Join(rep.DockerProtected, ", "))
	}
	if rep.DockerFree > 0 {
		fmt.Fprintf(e.stderr, "gc: docker: %s free on the daemon's data root (was %s)\n", units.BytesSize(float64(rep.DockerFreeAfter)), units.BytesSize(float64(rep.DockerFree)))
	}
	if rep.DockerMissing > 0 {
		fmt.Fprintf(e.stderr, "gc: docker-min-free target missed by %s: what is left is pinned, in use by containers, used within --min-age or held, or not imgcache's\n", units.BytesSize(float64(rep.DockerMissing)))
	}
}
