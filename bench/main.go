//go:build linux

// Command bench measures imgcache against the plain alternatives in one run:
// put vs `zstd -1 -T0` and `sha256sum`, save vs `docker save -o`, cold get vs
// `docker load -i` and `zstd -dc | docker load`, warm get vs `docker load -i`
// of an image already present, stored vs raw bytes, peak RSS, and 8
// processes getting one cold image. Contenders alternate within each round;
// the table reports medians and ratios. Run it with `just bench`.
package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/moby/moby/client"
)

const benchTag = "imgcache-bench/usr:latest"

var (
	work       = flag.String("work", filepath.Join(os.TempDir(), "imgcache-bench"), "work directory (the image tar is kept here between runs)")
	paths      = flag.String("paths", "/usr/bin,/usr/share,/usr/local/go", "directories that make up the image")
	rounds     = flag.Int("rounds", 3, "rounds; medians are reported")
	procs      = flag.Int("procs", 8, "processes in the contention test")
	level      = flag.Int("level", 0, "zstd level for imgcache (0: its default)")
	jsonOut    = flag.String("json", "bench/results/latest.json", "where to write the JSON results")
	only       = flag.String("only", "", "comma-separated subset: put,save,cold,warm,contention")
	gcN        = flag.Int("gc-entries", 0, "instead: time gc, ls and verify on a synthetic cache of this many entries")
	levels     = flag.String("levels", "", "instead: sweep these zstd levels (e.g. 1,2,3,5), put against `zstd -N -T0` at each")
	remoteF    = flag.Bool("remote", false, "instead: the fleet tier with the layer pair through a loopback docker-registry: push vs docker push, get on an empty host vs docker load and docker pull, registry storage; writes bench/results/remote.json")
	dropCaches = flag.Bool("drop-caches", true, "drop the page cache before each contender (needs root): every one starts with free memory")
	layers     = flag.Bool("layers", false, "instead: the layer-store pair (a base of this machine's files, two variants): stored bytes, put, partial and empty cold get, export; writes <json>.json and .svg")
)

func main() {
	flag.Parse()
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type sample struct {
	secs float64
	rss  int64 // peak RSS in bytes of the measured process
}

type series map[string][]sample

func (s series) add(k string, x sample) { s[k] = append(s[k], x) }

// median is the median of the samples' seconds.
func median(xs []sample) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = x.secs
	}
	slices.Sort(v)
	switch n := len(v); {
	case n == 0:
		return 0
	case n%2 == 0:
		// Of an even number (the 6 balanced rounds), the mean of the two
		// middle ones; until 2026-12-06 this took the upper of them.
		return (v[n/2-1] + v[n/2]) / 2
	default:
		return v[n/2]
	}
}

func maxRSS(xs []sample) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x.rss)
	}
	return m
}

var (
	cli     *client.Client
	version string // imgcache --version: names the zstd encoder
)

func run(ctx context.Context) error {
	var err error
	cli, err = client.New(client.FromEnv)
	if err != nil {
		return err
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return err
	}
	if err := os.MkdirAll(*work, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(*work, "imgcache")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/imgcache").CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v: %s", err, out)
	}
	// The same binary without cgo: the pure-Go zstd encoder, for comparison.
	binGo := filepath.Join(*work, "imgcache-purego")
	build := exec.Command("go", "build", "-o", binGo, "./cmd/imgcache")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build without cgo: %v: %s", err, out)
	}
	if v, err := exec.Command(bin, "--version").Output(); err == nil {
		version = strings.TrimSpace(string(v))
		log("%s", version)
	}
	if *gcN > 0 {
		return gcBench(bin, *gcN)
	}
	if *layers {
		if !flagSet("rounds") {
			*rounds = 6 // every order of two and of three contenders, equally often
		}
		if *rounds%6 != 0 {
			log("warning: %d rounds do not balance who goes first (the pair's comparisons have 2 and 3 contenders: use a multiple of 6)", *rounds)
		}
		return layerBench(ctx, bin)
	}
	if *remoteF {
		return remoteBench(ctx, bin)
	}
	raw := filepath.Join(*work, "image.tar")
	if err := ensureImage(ctx, raw); err != nil {
		return err
	}
	fi, _ := os.Stat(raw)
	info, _ := cli.ImageInspect(ctx, benchTag)
	imageID := info.ID
	log("image %s: %.2f GB tar, id %s", benchTag, float64(fi.Size())/1e9, imageID[:19])

	if *levels != "" {
		return levelSweep(bin, raw, fi.Size())
	}
	want := func(k string) bool { return *only == "" || slices.Contains(strings.Split(*only, ","), k) }
	s := series{}
	var stored int64
	ic := func(dir string, args ...string) []string {
		a := []string{bin, "--dir", dir, "-q"}
		if *level > 0 {
			a = append(a, "--level", fmt.Sprint(*level))
		}
		return append(a, args...)
	}
	name := "bench-linux-1-usr"
	warmDir := filepath.Join(*work, "cache-get")
	os.RemoveAll(warmDir)
	if _, err := measure(ic(warmDir, "put", name, raw)...); err != nil {
		return err
	}
	// The cache stores the tar split (layers and a skeleton): the zstd pipe
	// baseline gets a whole-tar zstd file of its own.
	blob := filepath.Join(*work, "image.tar.zst")
	if _, err := os.Stat(blob); err != nil {
		if out, err := exec.Command("zstd", "-1", "-T0", "-q", "-f", raw, "-o", blob).CombinedOutput(); err != nil {
			return fmt.Errorf("zstd: %v: %s", err, out)
		}
	}
	stored0 := storeFiles(warmDir)

	// m settles (inputs in the page cache, a quiet disk), then measures.
	m := func(key string, inputs []string, args ...string) {
		settle(inputs...)
		x := must(measure(args...))
		s.add(key, x)
		log("  %-26s %8.3fs", key, x.secs)
	}
	rawIn, blobIn, storeIn := []string{raw}, []string{blob}, stored0
	for r := 1; r <= *rounds; r++ {
		log("round %d/%d", r, *rounds)
		if want("put") {
			d := filepath.Join(*work, "cache-put")
			plain := filepath.Join(*work, "plain.zst")
			goPut := ic(d, "put", name, raw)
			goPut[0] = binGo
			rotate(r,
				func() {
					os.RemoveAll(d)
					m("put", rawIn, ic(d, "put", name, raw)...)
					stored = dirSize(filepath.Join(d, "blobs")) + dirSize(filepath.Join(d, "layers", "blobs"))
					os.RemoveAll(d)
				},
				func() { m("zstd -1 -T0", rawIn, "zstd", "-1", "-T0", "-q", "-f", raw, "-o", plain); os.Remove(plain) },
				func() { os.RemoveAll(d); m("put (pure-Go zstd)", rawIn, goPut...); os.RemoveAll(d) },
				func() { m("sha256sum", rawIn, "sha256sum", raw) })
		}
		if want("save") {
			d := filepath.Join(*work, "cache-save")
			out := filepath.Join(*work, "saved.tar")
			rotate(r,
				func() { os.RemoveAll(d); m("save", nil, ic(d, "save", benchTag, name)...); os.RemoveAll(d) },
				func() { m("docker save -o", nil, "docker", "save", "-o", out, benchTag); os.Remove(out) })
		}
		if want("cold") {
			rotate(r,
				func() { removeImage(ctx, imageID); m("get (cold)", storeIn, ic(warmDir, "get", name)...) },
				func() { removeImage(ctx, imageID); m("docker load -i", rawIn, "docker", "load", "-q", "-i", raw) },
				func() {
					removeImage(ctx, imageID)
					m("zstd -dc | docker load", blobIn, "sh", "-c", fmt.Sprintf("zstd -dc -q %s | docker load -q", blob))
				})
			retag(ctx, imageID)
		}
		if want("warm") {
			m("get (warm)", nil, ic(warmDir, "get", name)...)
			m("docker load -i (present)", rawIn, "docker", "load", "-q", "-i", raw)
		}
		if want("contention") {
			// Its own baseline, measured in the same round under the same conditions.
			rotate(r,
				func() { removeImage(ctx, imageID); m("get (cold, alone)", storeIn, ic(warmDir, "get", name)...) },
				func() {
					removeImage(ctx, imageID)
					settle(storeIn...)
					start := time.Now()
					var wg sync.WaitGroup
					var mu sync.Mutex
					var worst sample
					for range *procs {
						wg.Add(1)
						go func() {
							defer wg.Done()
							x := must(measure(ic(warmDir, "get", name)...))
							mu.Lock()
							worst.rss = max(worst.rss, x.rss)
							mu.Unlock()
						}()
					}
					wg.Wait()
					worst.secs = time.Since(start).Seconds()
					loads := countLoads(ctx, start, time.Now().Add(time.Second))
					s.add("get x procs", worst)
					log("  %-26s %8.3fs, %d load(s)", "get x procs", worst.secs, loads)
					s.add("loads in contention", []sample{{secs: float64(loads)}}[0])
				})
			retag(ctx, imageID)
		}
	}
	report(s, fi.Size(), stored)
	return nil
}

// rotate runs the contenders of one round, starting with a different one
// each round: on this VM a run is often slower the later it comes in a
// sequence (the disk catches up on the previous one's deletes), so every
// contender takes every position in turn.
// With a number of rounds that is a multiple of the number of contenders,
// each leads equally often.
func rotate(round int, contenders ...func()) {
	for i := range contenders {
		contenders[(round-1+i)%len(contenders)]()
	}
}

// flagSet reports whether the flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func must(x sample, err error) sample {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	return x
}

func log(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }

// measure runs a command, returning its wall time and peak RSS.
func measure(args ...string) (sample, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = io.Discard
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss * 1024
	}
	return sample{secs: d.Seconds(), rss: rss}, nil
}

func removeImage(ctx context.Context, id string) {
	cli.ImageRemove(ctx, id, client.ImageRemoveOptions{Force: true, PruneChildren: true})
}

func retag(ctx context.Context, id string) {
	cli.ImageTag(ctx, client.ImageTagOptions{Source: id, Target: benchTag})
}

func countLoads(ctx context.Context, since, until time.Time) int {
	res := cli.Events(ctx, client.EventsListOptions{
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Until:   fmt.Sprintf("%d.%09d", until.Unix(), until.Nanosecond()),
		Filters: make(client.Filters).Add("type", "image").Add("event", "load"),
	})
	msgs, errs := res.Messages, res.Err
	n := 0
	for {
		select {
		case _, ok := <-msgs:
			if !ok {
				return n
			}
			n++
		case <-errs:
			return n
		}
	}
}

// storeFiles lists the blob files of a cache (whole tars, skeletons, layers).
func storeFiles(dir string) []string {
	a, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*.tar.zst"))
	b, _ := filepath.Glob(filepath.Join(dir, "layers", "blobs", "sha256", "*.tar.zst"))
	return append(a, b...)
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// ensureImage imports a rootfs of the configured paths through the Engine
// API and saves it to raw, unless raw exists and the image is present.
func ensureImage(ctx context.Context, raw string) error {
	if _, err := os.Stat(raw); err == nil {
		if _, err := cli.ImageInspect(ctx, benchTag); err == nil {
			return nil
		}
		// Tar present, image gone: load it back.
		f, err := os.Open(raw)
		if err != nil {
			return err
		}
		defer f.Close()
		resp, err := cli.ImageLoad(ctx, f)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp)
		return resp.Close()
	}
	log("building the benchmark image from %s", *paths)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeRootfs(pw, strings.Split(*paths, ","))) }()
	rc, err := cli.ImageImport(ctx, client.ImageImportSource{Source: pr, SourceName: "-"}, benchTag, client.ImageImportOptions{})
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	out, err := cli.ImageSave(ctx, []string{benchTag})
	if err != nil {
		return err
	}
	defer out.Close()
	f, err := os.Create(raw + ".tmp")
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, out); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(raw+".tmp", raw)
}

// writeRootfs tars regular files, directories and symlinks under roots.
func writeRootfs(w io.Writer, roots []string) error {
	tw := tar.NewWriter(w)
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			link := ""
			if fi.Mode()&fs.ModeSymlink != 0 {
				link, _ = os.Readlink(p)
			} else if !fi.Mode().IsRegular() && !fi.IsDir() {
				return nil
			}
			h, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return nil
			}
			h.Name = strings.TrimPrefix(p, "/")
			if fi.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return nil
				}
				defer f.Close()
				if err := tw.WriteHeader(h); err != nil {
					return err
				}
				if _, err := io.CopyN(tw, f, h.Size); err != nil {
					return err
				}
				return nil
			}
			return tw.WriteHeader(h)
		})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

type row struct {
	Operation   string  `json:"operation"`
	Imgcache    string  `json:"imgcache"`
	ImgcacheS   float64 `json:"imgcache_seconds"`
	Alternative string  `json:"alternative"`
	AltS        float64 `json:"alternative_seconds"`
	Ratio       float64 `json:"ratio"`
	Paired      float64 `json:"paired_ratio_median"`
	Target      string  `json:"target"`
	Met         bool    `json:"met"`
}

func report(s series, rawBytes, stored int64) {
	var rows []row
	add := func(op, ic, alt, target string, ok func(r float64, ics float64) bool) {
		if len(s[ic]) == 0 || len(s[alt]) == 0 {
			return
		}
		a, b := median(s[ic]), median(s[alt])
		r := row{Operation: op, Imgcache: ic, ImgcacheS: a, Alternative: alt, AltS: b, Ratio: a / b, Target: target, Paired: pairedMedian(s[ic], s[alt])}
		r.Met = ok(r.Ratio, a)
		rows = append(rows, r)
	}
	add("ingest a tar", "put", "zstd -1 -T0", "<= 1.3x", func(r, _ float64) bool { return r <= 1.3 })
	add("ingest vs hashing", "put", "sha256sum", "(info)", func(float64, float64) bool { return true })
	add("ingest, pure-Go zstd", "put (pure-Go zstd)", "zstd -1 -T0", "(info)", func(float64, float64) bool { return true })
	add("daemon -> cache", "save", "docker save -o", "<= 1.10x", func(r, _ float64) bool { return r <= 1.10 })
	add("cold load", "get (cold)", "docker load -i", "<= 1.05x", func(r, _ float64) bool { return r <= 1.05 })
	add("cold load vs zstd pipe", "get (cold)", "zstd -dc | docker load", "(info)", func(float64, float64) bool { return true })
	add("warm load", "get (warm)", "docker load -i (present)", "< 100 ms, >= 20x faster", func(r, a float64) bool { return a < 0.1 && r <= 0.05 })
	add("contention", "get x procs", "get (cold, alone)", "one load; wall <= 1.2x", func(r, _ float64) bool {
		return r <= 1.2 && median(s["loads in contention"]) == 1
	})

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "operation\timgcache\tmedian\talternative\tmedian\tratio\tper-round ratio, median\ttarget\tmet")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.3fs\t%s\t%.3fs\t%.2fx\t%.2fx\t%s\t%v\n", r.Operation, r.Imgcache, r.ImgcacheS, r.Alternative, r.AltS, r.Ratio, r.Paired, r.Target, r.Met)
	}
	tw.Flush()
	ratio := 0.0
	if rawBytes > 0 && stored > 0 {
		ratio = float64(stored) / float64(rawBytes)
		fmt.Printf("storage: %.2f GB stored for %.2f GB raw: %.3fx (target <= 0.40x)\n", float64(stored)/1e9, float64(rawBytes)/1e9, ratio)
	}
	rss := map[string]int64{}
	for _, k := range []string{"put", "save", "get (cold)", "get (warm)", "get x procs"} {
		if len(s[k]) > 0 {
			rss[k] = maxRSS(s[k])
			fmt.Printf("peak RSS %-12s %6.1f MB\n", k, float64(rss[k])/1e6)
		}
	}
	if l := s["loads in contention"]; len(l) > 0 {
		fmt.Printf("contention: %d processes, loads per round: %v\n", *procs, loadsList(l))
	}
	if ips := s["put"]; len(ips) > 0 {
		fmt.Printf("put throughput: %.0f MB/s (zstd -1 -T0 %.0f MB/s, sha256sum %.0f MB/s)\n",
			float64(rawBytes)/1e6/median(ips), float64(rawBytes)/1e6/median(s["zstd -1 -T0"]), float64(rawBytes)/1e6/median(s["sha256sum"]))
	}
	host, _ := os.Hostname()
	dv, _ := cli.ServerVersion(context.Background(), client.ServerVersionOptions{})
	doc := map[string]any{
		"date": time.Now().UTC().Format(time.RFC3339), "host": host, "cpus": runtime.NumCPU(), "go": runtime.Version(),
		"docker": dv.Version, "docker_api": dv.APIVersion, "raw_bytes": rawBytes, "stored_bytes": stored, "storage_ratio": ratio,
		"rounds": *rounds, "rows": rows, "peak_rss_bytes": rss, "imgcache": version, "samples_seconds": samples(s),
	}
	if *jsonOut != "" {
		os.MkdirAll(filepath.Dir(*jsonOut), 0o755)
		b, _ := json.MarshalIndent(doc, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log("write %s: %v", *jsonOut, err)
		}
	}
}

// pairedMedian is the median of the per-round ratios a[i]/b[i]: on a VM
// whose speed drifts between rounds it is steadier than the ratio of the
// medians ("met" is still judged on the latter).
func pairedMedian(a, b []sample) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	r := make([]sample, len(a))
	for i := range a {
		r[i].secs = a[i].secs / b[i].secs
	}
	return median(r)
}

// samples lists every measurement, in round order, for the JSON file.
func samples(s series) map[string][]float64 {
	out := map[string][]float64{}
	for k, xs := range s {
		for _, x := range xs {
			out[k] = append(out[k], x.secs)
		}
	}
	return out
}

func loadsList(l []sample) []int {
	var out []int
	for _, x := range l {
		out = append(out, int(x.secs))
	}
	return out
}
