//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/moby/moby/client"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// levelSweep puts the image at each level and compresses it with the zstd
// CLI at the same level, alternating within each round, and reports time and
// size for both: the data the default level is chosen from.
func levelSweep(bin, raw string, rawBytes int64) error {
	var lv []int
	for _, f := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 22 {
			return fmt.Errorf("-levels: %q is not a level from 1 to 22", f)
		}
		lv = append(lv, n)
	}
	type result struct {
		Level        int     `json:"level"`
		PutSeconds   float64 `json:"put_seconds"`
		ZstdSeconds  float64 `json:"zstd_seconds"`
		Ratio        float64 `json:"time_ratio"`
		PutMBps      float64 `json:"put_mb_per_s"`
		StoredRatio  float64 `json:"stored_ratio"`
		ZstdRatio    float64 `json:"zstd_size_ratio"`
		PeakRSSBytes int64   `json:"put_peak_rss_bytes"`
	}
	s := series{}
	stored := map[int]int64{}
	plain := map[int]int64{}
	d := filepath.Join(*work, "cache-levels")
	out := filepath.Join(*work, "plain.zst")
	for r := 1; r <= *rounds; r++ {
		log("levels: round %d/%d", r, *rounds)
		for _, l := range lv {
			os.RemoveAll(d)
			settle(raw)
			s.add(fmt.Sprint("put ", l), must(measure(bin, "--dir", d, "-q", "--level", fmt.Sprint(l), "put", "bench-linux-1-usr", raw)))
			stored[l] = dirSize(filepath.Join(d, "blobs"))
			os.RemoveAll(d)
			settle(raw)
			s.add(fmt.Sprint("zstd ", l), must(measure("zstd", fmt.Sprint("-", l), "-T0", "-q", "-f", raw, "-o", out)))
			if fi, err := os.Stat(out); err == nil {
				plain[l] = fi.Size()
			}
			os.Remove(out)
		}
	}
	var res []result
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "level\tput\tzstd -N -T0\tratio\tput MB/s\tstored/raw\tzstd/raw\tput peak RSS")
	for _, l := range lv {
		p, z := s[fmt.Sprint("put ", l)], s[fmt.Sprint("zstd ", l)]
		x := result{Level: l, PutSeconds: median(p), ZstdSeconds: median(z), PeakRSSBytes: maxRSS(p),
			StoredRatio: float64(stored[l]) / float64(rawBytes), ZstdRatio: float64(plain[l]) / float64(rawBytes)}
		x.Ratio = x.PutSeconds / x.ZstdSeconds
		x.PutMBps = float64(rawBytes) / 1e6 / x.PutSeconds
		res = append(res, x)
		fmt.Fprintf(tw, "%d\t%.2fs\t%.2fs\t%.2fx\t%.0f\t%.3f\t%.3f\t%.0f MB\n", l, x.PutSeconds, x.ZstdSeconds, x.Ratio, x.PutMBps, x.StoredRatio, x.ZstdRatio, float64(x.PeakRSSBytes)/1e6)
	}
	tw.Flush()
	if *jsonOut == "" {
		return nil
	}
	host, _ := os.Hostname()
	dv, _ := cli.ServerVersion(context.Background(), client.ServerVersionOptions{})
	doc := map[string]any{
		"date": time.Now().UTC().Format(time.RFC3339), "host": host, "cpus": runtime.NumCPU(), "go": runtime.Version(),
		"docker": dv.Version, "imgcache": version, "raw_bytes": rawBytes, "rounds": *rounds, "levels": res,
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	p := filepath.Join(filepath.Dir(*jsonOut), "levels.json")
	return os.WriteFile(p, append(b, '\n'), 0o644)
}
