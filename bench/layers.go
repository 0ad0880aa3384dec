package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"
)

// The layer benchmark (-layers): two builder images that share a base made
// of this machine's files, as the layer-store issue describes.
var (
	basePaths = flag.String("layer-base", "/usr/bin,/usr/share,/usr/lib/x86_64-linux-gnu,/usr/lib/gcc,/etc", "directories of the shared base image")
	goPaths   = flag.String("layer-go", "/usr/local/go", "what the first variant adds")
	jvmPaths  = flag.String("layer-jvm", "/usr/lib/jvm", "what the second variant adds")
)

const (
	tagBase = "imgcache-bench/base:1"
	tagGo   = "imgcache-bench/go:1"
	tagJVM  = "imgcache-bench/jvm:1"
)

// pairImage is one variant: its tar (docker save), image ID, and a tar of
// the daemon's floor for a partial load (manifest.json, config and the
// variant's own layer only).
type pairImage struct {
	name, tag, tar, floor, id string
	size, ownLayer            int64
}

// layerBench runs the pair benchmark and writes its table, JSON and chart.
func layerBench(ctx context.Context, bin string) error {
	imgs, err := ensurePair(ctx)
	if err != nil {
		return err
	}
	goImg, jvm := imgs[0], imgs[1]
	ic := func(dir string, args ...string) []string { return append([]string{bin, "--dir", dir, "-q"}, args...) }
	s := series{}
	m := func(key string, inputs []string, args ...string) {
		settle(inputs...)
		x := must(measure(args...))
		s.add(key, x)
		log("  %-34s %8.3fs", key, x.secs)
	}

	// Storage: deterministic, measured once.
	layered := filepath.Join(*work, "layers-cache")
	whole := filepath.Join(*work, "layers-whole")
	for _, d := range []string{layered, whole} {
		os.RemoveAll(d)
	}
	if err := mkWholeTar(whole); err != nil {
		return err
	}
	for _, im := range []pairImage{goImg, jvm} {
		must(measure(ic(whole, "put", im.name, im.tar)...))
		must(measure(ic(layered, "put", im.name, im.tar)...))
	}
	storedLayered, storedWhole := dirSize(filepath.Join(layered, "layers", "blobs")), dirSize(filepath.Join(whole, "blobs"))
	alone, err := layersAlone(goImg.tar, jvm.tar)
	if err != nil {
		return err
	}
	log("stored: layered %d, whole-tar %d, distinct layers each zstd -1 alone %d", storedLayered, storedWhole, alone)
	wholeBlob := filepath.Join(whole, "blobs", "sha256", strings.TrimPrefix(fileSHA(jvm.tar), "sha256:")+".tar.zst")
	out := filepath.Join(*work, "export.tar")
	plainOut := filepath.Join(*work, "plain-export.tar")
	layerFiles := func() []string {
		f, _ := filepath.Glob(filepath.Join(layered, "layers", "blobs", "sha256", "*"))
		return f
	}

	for r := 1; r <= *rounds; r++ {
		log("round %d/%d", r, *rounds)
		// put of jvm with go stored: drop jvm's own blobs first (untimed).
		rotate(r,
			func() {
				must(measure(ic(layered, "rm", jvm.name)...))
				must(measure(ic(layered, "gc")...))
				m("put (second image)", []string{jvm.tar}, ic(layered, "put", jvm.name, jvm.tar)...)
			},
			func() {
				m("zstd -1 -T0 (second image)", []string{jvm.tar}, "zstd", "-1", "-T0", "-q", "-f", jvm.tar, "-o", plainOut)
				os.Remove(plainOut)
			})
		// Cold get of jvm with go loaded (and of go with jvm loaded). Every
		// contender starts the same way, by removing want: the first too
		// (it is loaded, untimed, beforehand), since deleting an image's
		// files leaves the disk busy (this VM's ext4 discards what is freed)
		// beyond what settle can see, and a contender that follows a
		// removal is slower than one that does not.
		for _, pair := range [][2]pairImage{{jvm, goImg}, {goImg, jvm}} {
			want, have := pair[0], pair[1]
			resetDaemon(ctx, have, want)
			sfx := " (" + want.name + ", other loaded)"
			rotate(r,
				func() { removeImage(ctx, want.id); m("get"+sfx, layerFiles(), ic(layered, "get", want.name)...) },
				func() {
					removeImage(ctx, want.id)
					m("docker load floor"+sfx, []string{want.floor}, "docker", "load", "-q", "-i", want.floor)
				},
				func() {
					removeImage(ctx, want.id)
					m("docker load -i"+sfx, []string{want.tar}, "docker", "load", "-q", "-i", want.tar)
				})
		}
		// Cold get of jvm into a daemon without any of them; here too each
		// contender begins by removing jvm alone (not jvm and go, as the
		// first did before: it was 1.3x slower, whoever it was).
		resetDaemon(ctx, jvm)
		rotate(r,
			func() {
				resetDaemon(ctx)
				m("get (empty daemon)", layerFiles(), ic(layered, "get", jvm.name)...)
			},
			func() {
				resetDaemon(ctx)
				m("docker load -i (empty daemon)", []string{jvm.tar}, "docker", "load", "-q", "-i", jvm.tar)
			})
		m("get (warm)", nil, ic(layered, "get", jvm.name)...)
		// export -o leaves its file to the kernel's writeback, as zstd
		// does; export -o --sync fsyncs it before it names it.
		rotate(r,
			func() { m("export", layerFiles(), ic(layered, "export", jvm.name, "-o", out)...); os.Remove(out) },
			func() {
				m("zstd -dc of the whole-tar blob", []string{wholeBlob}, "zstd", "-dc", "-q", "-f", wholeBlob, "-o", plainOut)
				os.Remove(plainOut)
			})
		rotate(r,
			func() {
				m("export --sync", layerFiles(), ic(layered, "export", jvm.name, "-o", out, "--sync")...)
				os.Remove(out)
			},
			func() {
				m("zstd -dc, then sync of the file", []string{wholeBlob}, "sh", "-c", `zstd -dc -q -f "$1" -o "$2" && sync "$2"`, "sh", wholeBlob, plainOut)
				os.Remove(plainOut)
			})
	}
	// What the second cold get sent, and that export is the original.
	resetDaemon(ctx, goImg)
	removeImage(ctx, jvm.id)
	sent, err := sentBytes(ic(layered, "get", jvm.name, "--json"))
	if err != nil {
		return err
	}
	must(measure(ic(layered, "export", jvm.name, "-o", out)...))
	identical := fileSHA(out) == fileSHA(jvm.tar)
	os.Remove(out)
	return layerReport(s, layerFacts{
		StoredLayered: storedLayered, StoredWhole: storedWhole, LayersAlone: alone,
		Sent: sent, OwnLayer: jvm.ownLayer, SecondSize: jvm.size, ExportIdentical: identical,
		Images: []pairImage{goImg, jvm},
	})
}

// ensurePair builds (or reuses) the base, the two variants, their tars and
// floors.
func ensurePair(ctx context.Context) ([]pairImage, error) {
	_, errGo := cli.ImageInspect(ctx, tagGo)
	_, errJVM := cli.ImageInspect(ctx, tagJVM)
	_, errBase := cli.ImageInspect(ctx, tagBase)
	if (errGo != nil || errJVM != nil) && errBase != nil { // needed only to build a variant
		log("importing the base from %s", *basePaths)
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeRootfs(pw, strings.Split(*basePaths, ","))) }()
		rc, err := cli.ImageImport(ctx, client.ImageImportSource{Source: pr, SourceName: "-"}, tagBase, client.ImageImportOptions{})
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, rc)
		rc.Close()
	}
	var out []pairImage
	for _, v := range []struct{ name, tag, paths string }{{"bench-linux-1-go", tagGo, *goPaths}, {"bench-linux-1-jvm", tagJVM, *jvmPaths}} {
		im := pairImage{name: v.name, tag: v.tag, tar: filepath.Join(*work, strings.TrimPrefix(v.name, "bench-linux-1-")+".tar")}
		im.floor = strings.TrimSuffix(im.tar, ".tar") + "-floor.tar"
		if _, err := cli.ImageInspect(ctx, v.tag); err != nil {
			if err := buildVariant(ctx, v.tag, strings.Split(v.paths, ",")); err != nil {
				return nil, err
			}
			os.Remove(im.tar)
		}
		info, err := cli.ImageInspect(ctx, v.tag)
		if err != nil {
			return nil, err
		}
		im.id = info.ID
		if _, err := os.Stat(im.tar); err != nil {
			log("saving %s", v.tag)
			if err := saveTo(ctx, v.tag, im.tar); err != nil {
				return nil, err
			}
		}
		own, err := writeFloor(im.tar, im.floor)
		if err != nil {
			return nil, err
		}
		fi, _ := os.Stat(im.tar)
		im.size, im.ownLayer = fi.Size(), own
		out = append(out, im)
	}
	return out, nil
}

// buildVariant builds FROM the base with COPY of paths (the classic
// builder, through the Engine API).
func buildVariant(ctx context.Context, tag string, paths []string) error {
	log("building %s (adds %v)", tag, paths)
	df := "FROM " + tagBase + "\n"
	for _, p := range paths {
		df += fmt.Sprintf("COPY %s /%s\n", strings.TrimPrefix(p, "/"), strings.TrimPrefix(p, "/"))
	}
	pr, pw := io.Pipe()
	go func() {
		var hdr bytes.Buffer
		tw := tar.NewWriter(&hdr)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "Dockerfile", Mode: 0o644, Size: int64(len(df))})
		tw.Write([]byte(df))
		tw.Flush()
		pw.Write(hdr.Bytes()) // no end blocks: the rootfs tar follows and ends the stream
		pw.CloseWithError(writeRootfs(pw, paths))
	}()
	resp, err := cli.ImageBuild(ctx, pr, client.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return jsonmessage.DisplayJSONMessagesStream(resp.Body, io.Discard, 0, false, nil)
}

func saveTo(ctx context.Context, ref, path string) error {
	rc, err := cli.ImageSave(ctx, []string{ref})
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// writeFloor writes the daemon's floor for a partial load of the image in
// src: manifest.json, the config and the top layer's file, nothing else.
// It returns the size of that layer file.
func writeFloor(src, dst string) (int64, error) {
	man, err := tarFile(src, "manifest.json")
	if err != nil {
		return 0, err
	}
	var m []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(man, &m); err != nil || len(m) != 1 || len(m[0].Layers) == 0 {
		return 0, fmt.Errorf("%s: manifest.json: %v", src, err)
	}
	top := m[0].Layers[len(m[0].Layers)-1]
	keep := map[string]bool{"manifest.json": true, m[0].Config: true, top: true}
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	o, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	defer o.Close()
	tr, tw := tar.NewReader(f), tar.NewWriter(o)
	var own int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if !keep[h.Name] {
			continue
		}
		if h.Name == top {
			own = h.Size
		}
		if err := tw.WriteHeader(h); err != nil {
			return 0, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return 0, err
		}
	}
	return own, tw.Close()
}

// tarFile reads one entry of a tar.
func tarFile(path, name string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%s: no %s: %w", path, name, err)
		}
		if h.Name == name {
			return io.ReadAll(tr)
		}
	}
}

// layersAlone is the bytes of every distinct layer file of the tars, each
// compressed alone with zstd -1.
func layersAlone(tars ...string) (int64, error) {
	seen := map[int64]bool{} // layer files by size: distinct layers here differ in size
	var total int64
	for _, t := range tars {
		f, err := os.Open(t)
		if err != nil {
			return 0, err
		}
		tr := tar.NewReader(f)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if !strings.HasSuffix(h.Name, "/layer.tar") || seen[h.Size] {
				continue
			}
			seen[h.Size] = true
			cmd := exec.Command("zstd", "-1", "-T0", "-q", "-c")
			cmd.Stdin = tr
			var n countWriter
			cmd.Stdout = &n
			if err := cmd.Run(); err != nil {
				f.Close()
				return 0, err
			}
			total += n.n
		}
		f.Close()
	}
	return total, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// resetDaemon removes the bench images and loads back the given ones
// (untimed).
func resetDaemon(ctx context.Context, keep ...pairImage) {
	for _, tag := range []string{tagJVM, tagGo, tagBase} {
		if info, err := cli.ImageInspect(ctx, tag); err == nil && !slices.ContainsFunc(keep, func(p pairImage) bool { return p.id == info.ID }) {
			removeImage(ctx, info.ID)
		}
	}
	for _, k := range keep {
		if _, err := cli.ImageInspect(ctx, k.id); err != nil {
			exec.Command("docker", "load", "-q", "-i", k.tar).Run()
		}
	}
}

func mkWholeTar(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"version":1,"entries":{}}`), 0o644)
}

func sentBytes(args []string) (int64, error) {
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	var g struct {
		Sent int64 `json:"sent"`
	}
	return g.Sent, json.Unmarshal(out, &g)
}

func fileSHA(p string) string {
	out, err := exec.Command("sha256sum", p).Output()
	if err != nil {
		return ""
	}
	return "sha256:" + strings.Fields(string(out))[0]
}

type layerFacts struct {
	StoredLayered, StoredWhole, LayersAlone int64
	Sent, OwnLayer, SecondSize              int64
	ExportIdentical                         bool
	Images                                  []pairImage
}

// ratioRow is one line of the table: per-round ratios a/b, their median
// and spread, and the target.
type ratioRow struct {
	Figure string    `json:"figure"`
	A      string    `json:"imgcache"`
	B      string    `json:"alternative"`
	AMed   float64   `json:"imgcache_median_s"`
	BMed   float64   `json:"alternative_median_s"`
	Ratios []float64 `json:"per_round_ratios"`
	Median float64   `json:"ratio_median"`
	Min    float64   `json:"ratio_min"`
	Max    float64   `json:"ratio_max"`
	Target float64   `json:"target"` // <= this; 0: information only
	Met    bool      `json:"met"`
}

func layerReport(s series, f layerFacts) error {
	var rows []ratioRow
	add := func(fig, a, b string, target float64) {
		xa, xb := s[a], s[b]
		if len(xa) == 0 || len(xa) != len(xb) {
			return
		}
		r := ratioRow{Figure: fig, A: a, B: b, AMed: median(xa), BMed: median(xb), Target: target, Min: math.Inf(1)}
		var rs []sample
		for i := range xa {
			q := xa[i].secs / xb[i].secs
			r.Ratios = append(r.Ratios, q)
			rs = append(rs, sample{secs: q})
			r.Min, r.Max = math.Min(r.Min, q), math.Max(r.Max, q)
		}
		r.Median = median(rs)
		r.Met = target == 0 || r.Median <= target
		rows = append(rows, r)
	}
	add("put of the second image, the first stored", "put (second image)", "zstd -1 -T0 (second image)", 0.65)
	add("cold get of jvm, go loaded, vs the daemon's floor", "get (bench-linux-1-jvm, other loaded)", "docker load floor (bench-linux-1-jvm, other loaded)", 1.10)
	add("cold get of jvm, go loaded, vs docker load -i jvm.tar", "get (bench-linux-1-jvm, other loaded)", "docker load -i (bench-linux-1-jvm, other loaded)", 0)
	add("cold get of go, jvm loaded, vs the daemon's floor", "get (bench-linux-1-go, other loaded)", "docker load floor (bench-linux-1-go, other loaded)", 0)
	add("cold get of go, jvm loaded, vs docker load -i go.tar", "get (bench-linux-1-go, other loaded)", "docker load -i (bench-linux-1-go, other loaded)", 0)
	add("cold get into an empty daemon", "get (empty daemon)", "docker load -i (empty daemon)", 1.05)
	add("export", "export", "zstd -dc of the whole-tar blob", 1.2)
	add("export --sync vs a durable zstd -dc (its file synced)", "export --sync", "zstd -dc, then sync of the file", 0)

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\timgcache\talternative\tratio (median of rounds)\tspread\ttarget\tmet")
	for _, r := range rows {
		target := "(info)"
		if r.Target > 0 {
			target = fmt.Sprintf("<= %.2fx", r.Target)
		}
		fmt.Fprintf(tw, "%s\t%.2fs\t%.2fs\t%.2fx\t%.2f–%.2fx\t%s\t%v\n", r.Figure, r.AMed, r.BMed, r.Median, r.Min, r.Max, target, r.Met)
	}
	tw.Flush()
	vsAlone := float64(f.StoredLayered) / float64(f.LayersAlone)
	vsWhole := float64(f.StoredLayered) / float64(f.StoredWhole)
	warm := median(s["get (warm)"])
	fmt.Printf("stored, both images: %.2f GB layered, %.2f GB whole-tar, %.2f GB the distinct layers each zstd -1: %.3fx of those (target <= 1.03), %.3fx of whole-tar (target <= 0.62)\n",
		float64(f.StoredLayered)/1e9, float64(f.StoredWhole)/1e9, float64(f.LayersAlone)/1e9, vsAlone, vsWhole)
	fmt.Printf("sent by the second cold get: %d bytes; its own layer %d, the whole tar %d (target: the variant's layer, manifest and config only)\n", f.Sent, f.OwnLayer, f.SecondSize)
	fmt.Printf("warm get: %.0f ms (target < 100 ms); export byte-identical: %v\n", warm*1000, f.ExportIdentical)
	rss := map[string]int64{}
	for _, k := range []string{"put (second image)", "get (bench-linux-1-jvm, other loaded)", "get (empty daemon)", "export"} {
		rss[k] = maxRSS(s[k])
		fmt.Printf("peak RSS %-40s %6.1f MB (target <= 100 MB)\n", k, float64(rss[k])/1e6)
	}
	dv, _ := cli.ServerVersion(context.Background(), client.ServerVersionOptions{})
	doc := map[string]any{
		"date": time.Now().UTC().Format(time.RFC3339), "rounds": *rounds, "docker": dv.Version, "imgcache": version,
		"rows": rows, "stored_layered": f.StoredLayered, "stored_whole_tar": f.StoredWhole, "distinct_layers_zstd1": f.LayersAlone,
		"stored_vs_layers_alone": vsAlone, "stored_vs_whole_tar": vsWhole, "second_get_sent_bytes": f.Sent,
		"second_image_own_layer_bytes": f.OwnLayer, "second_image_tar_bytes": f.SecondSize, "warm_get_seconds": warm,
		"export_identical": f.ExportIdentical, "peak_rss_bytes": rss, "samples_seconds": samples(s),
	}
	base := strings.TrimSuffix(*jsonOut, filepath.Ext(*jsonOut))
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	if err := os.WriteFile(base+".json", append(b, '\n'), 0o644); err != nil {
		return err
	}
	extra := []ratioRow{
		{Figure: "stored vs the distinct layers alone", Median: vsAlone, Min: vsAlone, Max: vsAlone, Target: 1.03},
		{Figure: "stored vs whole-tar store", Median: vsWhole, Min: vsWhole, Max: vsWhole, Target: 0.62},
	}
	return os.WriteFile(base+".svg", chart(append(extra, rows...)), 0o644)
}

// chart draws the ratios as horizontal bars (median), with the spread of
// the rounds as a whisker and the target as a tick: an SVG of its own, no
// plotting library.
func chart(rows []ratioRow) []byte {
	const left, width, rowH, top = 420, 360, 26, 40
	scale := 0.0
	for _, r := range rows {
		scale = math.Max(scale, math.Max(r.Max, r.Target))
	}
	scale = math.Ceil(scale*4) / 4
	x := func(v float64) float64 { return left + v/scale*width }
	var b strings.Builder
	h := top + rowH*len(rows) + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+80, h)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">imgcache layer store: ratios to the plain alternative (lower is better; tick = target)</text>`+"\n")
	for v := 0.0; v <= scale+1e-9; v += 0.25 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle" fill="#666">%.2f</text>`+"\n",
			x(v), top-5, x(v), h-25, x(v), h-10, v)
	}
	for i, r := range rows {
		y := top + i*rowH
		color := "#4a7"
		if r.Target > 0 && !r.Met && r.Median > r.Target {
			color = "#c54"
		}
		if r.Target == 0 {
			color = "#79b"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+15, xmlEscape(r.Figure))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="16" fill="%s"/>`+"\n", left, y+3, x(r.Median)-left, color)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`+"\n", x(r.Min), y+11, x(r.Max), y+11)
		if r.Target > 0 {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#000" stroke-width="2"/>`+"\n", x(r.Target), y, x(r.Target), y+22)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2fx</text>`+"\n", x(math.Max(r.Max, r.Median))+6, y+15, r.Median)
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
