package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/imgcache/imgcache/internal/testimage"
)

// unitCommands reads the Exec* command lines of a systemd unit file.
func unitCommands(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmds := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && strings.HasPrefix(k, "Exec") {
			cmds[k] = strings.Fields(v)
		}
	}
	return cmds
}

// TestSystemdUnits: contrib/systemd passes systemd-analyze verify (with
// ExecStart pointing at the binary under test), and the commands the
// service runs work: gc, then the Prometheus file, on a real cache. Fails
// on a unit systemd refuses or a command line imgcache refuses (a typo'd
// flag, a subcommand that does not exist).
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian's systemd package has it): the units are not verified")
	}
	units := t.TempDir()
	for _, name := range []string{"imgcache-gc.service", "imgcache-gc.timer"} {
		data, err := os.ReadFile(filepath.Join("..", "contrib", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		data = []byte(strings.ReplaceAll(string(data), "/usr/bin/imgcache", bin))
		if err := os.WriteFile(filepath.Join(units, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(analyze, "verify", "--man=no", filepath.Join(units, "imgcache-gc.service"), filepath.Join(units, "imgcache-gc.timer")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// Run what the service runs, in its order, on a cache with limits.
	dir := t.TempDir()
	img, _ := genImage(t, testimage.Options{})
	must(t, dir, "put", "capy-ubuntu-25.04-gcc15", img)
	textfiles := t.TempDir()
	cmds := unitCommands(t, filepath.Join(units, "imgcache-gc.service"))
	for _, k := range []string{"ExecStart", "ExecStartPost"} {
		args := cmds[k]
		if len(args) == 0 || args[0] != bin {
			t.Fatalf("%s = %v, want the imgcache binary", k, args)
		}
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "/var/lib/prometheus/node-exporter", textfiles)
		}
		if r := imgcache(t, dir, []string{"IMGCACHE_MAX_SIZE=1G"}, args[1:]...); r.code != 0 {
			t.Fatalf("%s: %s", k, r)
		}
	}
	if _, err := os.Stat(filepath.Join(textfiles, "imgcache.prom")); err != nil {
		t.Fatalf("the service wrote no metrics file: %v", err)
	}
}

// freePort is a free TCP port on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestNodeExporterTextfile: Debian's prometheus-node-exporter, started by
// scripts/node-exporter.sh on 127.0.0.1, serves the imgcache_* series that
// `stats --prometheus` wrote into its textfile directory, with their help
// text, and no textfile scrape error. Fails if the file stops parsing as
// Prometheus text (node_textfile_scrape_error 1, series missing).
func TestNodeExporterTextfile(t *testing.T) {
	if _, err := exec.LookPath("prometheus-node-exporter"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: prometheus-node-exporter is not installed (scripts/test.sh installs it): %v", err)
		}
		t.Skip("prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)")
	}
	// A cache directory whose path (the dir label) needs Prometheus' own
	// escaping: Go's %q made node_exporter refuse the whole file.
	dir := filepath.Join(t.TempDir(), "cache\twith \"tab\"")
	img, _ := genImage(t, testimage.Options{})
	must(t, dir, "put", "capy-ubuntu-25.04-gcc15", img)
	must(t, dir, "export", "capy-ubuntu-25.04-gcc15", "-o", filepath.Join(t.TempDir(), "x.tar"))
	textfiles := t.TempDir()
	must(t, dir, "stats", "--prometheus", filepath.Join(textfiles, "imgcache.prom"))

	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ne := exec.CommandContext(ctx, "../scripts/node-exporter.sh", textfiles, addr)
	var log strings.Builder
	ne.Stdout, ne.Stderr = &log, &log
	if err := ne.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); ne.Wait() }()

	var resp *http.Response
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var err error
		resp, err = http.Get("http://" + addr + "/metrics")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node_exporter did not answer on %s: %v\n%s", addr, err, log.String())
		}
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("node_exporter's /metrics does not parse: %v", err)
	}
	value := func(name string) (float64, string) {
		fam := fams[name]
		if fam == nil || len(fam.Metric) != 1 {
			t.Fatalf("%s missing from node_exporter's /metrics (textfile collector log:\n%s)", name, log.String())
		}
		m := fam.Metric[0]
		if m.Counter != nil {
			return m.Counter.GetValue(), fam.GetHelp()
		}
		return m.Gauge.GetValue(), fam.GetHelp()
	}
	if v, _ := value("node_textfile_scrape_error"); v != 0 {
		t.Fatalf("node_textfile_scrape_error = %v: node_exporter could not read imgcache.prom\n%s", v, log.String())
	}
	for name, want := range map[string]float64{"imgcache_puts_total": 1, "imgcache_exports_total": 1, "imgcache_entries": 1, "imgcache_blobs": 1} {
		if got, help := value(name); got != want || help == "" {
			t.Errorf("%s = %v (help %q), want %v with its help text", name, got, help, want)
		}
	}
	if d := fams["imgcache_entries"].Metric[0].GetLabel(); len(d) != 1 || d[0].GetName() != "dir" || d[0].GetValue() != dir {
		t.Errorf("imgcache_entries labels %v, want dir=%q", d, dir)
	}
}
