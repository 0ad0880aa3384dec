package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/internal/testimage"
)

var update = flag.Bool("update", false, "rewrite the golden JSON shapes")

// run calls the CLI in-process.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func image(t *testing.T, seed int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.tar")
	if _, err := testimage.WriteFile(p, testimage.Options{Seed: seed, Tag: "cli-test/img:1"}); err != nil {
		t.Fatal(err)
	}
	return p
}

func isolate(t *testing.T) string {
	t.Helper()
	t.Setenv("IMGCACHE_CONFIG", "")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, k := range []string{"IMGCACHE_DIR", "IMGCACHE_LEVEL", "IMGCACHE_MIN_FREE", "IMGCACHE_MAX_SIZE", "IMGCACHE_MAX_AGE", "IMGCACHE_TARGET_FREE", "IMGCACHE_LOCK_TIMEOUT", "IMGCACHE_LOG_LEVEL"} {
		os.Unsetenv(k)
	}
	return t.TempDir()
}

func TestExitCodes(t *testing.T) {
	dir := isolate(t)
	img := image(t, 1)
	notTar := filepath.Join(t.TempDir(), "x.txt")
	os.WriteFile(notTar, []byte("hello, not a tar\n"), 0o644)
	if _, e, c := run(t, "--dir", dir, "put", "capy-ubuntu-25.04-gcc15", img); c != 0 {
		t.Fatalf("put: %d %s", c, e)
	}
	corrupt := t.TempDir()
	os.WriteFile(filepath.Join(corrupt, "manifest.json"), []byte(`{"version": 1, "entries": {`), 0o644)

	newer := t.TempDir()
	os.WriteFile(filepath.Join(newer, "manifest.json"), []byte(`{"version": 3, "entries": {}}`), 0o644)

	locked := t.TempDir()
	run(t, "--dir", locked, "ls")
	f, _ := os.OpenFile(filepath.Join(locked, "lock"), os.O_RDWR, 0)
	syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
	defer f.Close()

	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown flag", []string{"--dir", dir, "ls", "--bogus"}, 2, "unknown flag"},
		{"missing argument", []string{"--dir", dir, "put"}, 2, "expected"},
		{"bad name", []string{"--dir", dir, "inspect", "Capy-ubuntu-25.04-gcc15"}, 2, "project \"Capy\" must be lowercase"},
		{"short name", []string{"--dir", dir, "inspect", "capy-ubuntu"}, 2, "version and variant missing"},
		{"traversal", []string{"--dir", dir, "put", "../etc-a-b-c", img}, 2, "invalid name"},
		{"bad size", []string{"--dir", dir, "gc", "--max-size", "lots"}, 2, "want e.g."},
		{"bad age", []string{"--dir", dir, "gc", "--max-age", "3 weeks"}, 2, "want e.g."},
		{"docker target without min", []string{"--dir", dir, "gc", "--docker-target-free", "5G"}, 2, "docker-target-free needs docker-min-free"},
		{"docker target below min", []string{"--dir", dir, "gc", "--docker-min-free", "10G", "--docker-target-free", "5G"}, 2, "docker-target-free (5GiB) must be at least docker-min-free (10GiB)"},
		{"bad umask", []string{"--dir", dir, "--umask", "8", "ls"}, 2, "octal"},
		{"bad hold", []string{"--dir", dir, "get", "--hold", "2x", "capy-ubuntu-25.04-a"}, 2, "want e.g."},
		{"platform with build", []string{"--dir", dir, "get", "--build", "--platform", "linux/arm64", "capy-ubuntu-25.04-a"}, 2, "--platform does not go with --build"},
		{"sync without a file", []string{"--dir", dir, "export", "--sync", "capy-ubuntu-25.04-a"}, 2, "it makes -o FILE durable"},
		{"unknown name", []string{"--dir", dir, "inspect", "capy-ubuntu-25.04-none"}, 3, "no entry named"},
		{"rm unknown", []string{"--dir", dir, "rm", "capy-ubuntu-25.04-none"}, 3, "no entry named"},
		{"not a tar", []string{"--dir", dir, "put", "capy-ubuntu-25.04-x", notTar}, 2, "not a tar"},
		{"missing file", []string{"--dir", dir, "put", "capy-ubuntu-25.04-x", "/nonexistent/file.tar"}, 2, "no file"},
		{"corrupt manifest", []string{"--dir", corrupt, "ls"}, 4, "verify --repair"},
		{"newer schema", []string{"--dir", newer, "ls"}, 10, "upgrade imgcache"},
		{"newer schema, repair", []string{"--dir", newer, "verify", "--repair"}, 10, "upgrade imgcache"},
		{"lock timeout", []string{"--dir", locked, "--lock-timeout", "200ms", "ls"}, 6, "lock"},
		{"no daemon", []string{"--dir", dir, "get", "capy-ubuntu-25.04-gcc15"}, 5, "DOCKER_HOST"},
		{"ok", []string{"--dir", dir, "ls"}, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "no daemon" {
				t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
			}
			out, errs, code := run(t, tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.msg) {
				t.Fatalf("imgcache %s: got exit %d, stderr %q; want exit %d containing %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.msg)
			}
			if code != 0 && out != "" {
				t.Errorf("stdout must be empty on failure, got %q", out)
			}
		})
	}
}

// keyPaths flattens a JSON document into its sorted set of key paths: the
// document's shape, independent of its values.
func keyPaths(v any, prefix string, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			keyPaths(val, prefix+"."+k, out)
		}
	case []any:
		if len(x) == 0 {
			out[prefix+"[]"] = true
		}
		for _, val := range x {
			keyPaths(val, prefix+"[]", out)
		}
	default:
		out[prefix] = true
	}
}

func TestJSONShapes(t *testing.T) {
	dir := isolate(t)
	img := image(t, 2)
	name := "capy-ubuntu-25.04-gcc15"
	cmds := map[string][]string{
		"put":     {"put", "--json", name, img},
		"ls":      {"ls", "--json"},
		"inspect": {"inspect", "--json", name},
		"verify":  {"verify", "--json"},
		"gc":      {"gc", "--json", "--dry-run", "--max-size", "1K", "--min-age", "0"},
		"stats":   {"stats", "--json"},
		"config":  {"config", "--json"},
	}
	order := []string{"put", "ls", "inspect", "verify", "gc", "stats", "config"}
	for _, k := range order {
		t.Run(k, func(t *testing.T) {
			out, errs, code := run(t, append([]string{"--dir", dir}, cmds[k]...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			var doc any
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			paths := map[string]bool{}
			keyPaths(doc, "", paths)
			var got []string
			for p := range paths {
				got = append(got, p)
			}
			sort.Strings(got)
			golden := filepath.Join("testdata", "golden", k+".shape")
			if *update {
				os.WriteFile(golden, []byte(strings.Join(got, "\n")+"\n"), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if g := strings.Join(got, "\n") + "\n"; g != string(want) {
				t.Fatalf("JSON shape of %s changed (a contract):\ngot:\n%s\nwant:\n%s", k, g, want)
			}
		})
	}
}

func TestConfigPrecedence(t *testing.T) {
	dir := isolate(t)
	cfg := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfg, []byte(`{"level": 3, "max-size": "10G", "lock-timeout": "1m", "min-free": "5G"}`), 0o644)
	t.Setenv("IMGCACHE_CONFIG", cfg)
	t.Setenv("IMGCACHE_LEVEL", "5")
	t.Setenv("IMGCACHE_MIN_FREE", "7G")
	out, errs, code := run(t, "--dir", dir, "--min-free", "9G", "config", "--json")
	if code != 0 {
		t.Fatalf("config: %d %s", code, errs)
	}
	var rows []setting
	json.Unmarshal([]byte(out), &rows)
	got := map[string]setting{}
	for _, r := range rows {
		got[r.Name] = r
	}
	want := map[string]setting{
		"min-free":     {"min-free", "9GiB", "flag"},              // flag beats env and config
		"level":        {"level", "5", "env IMGCACHE_LEVEL"},      // env beats config
		"max-size":     {"max-size", "10GiB", "config " + cfg},    // config beats default
		"lock-timeout": {"lock-timeout", "1m0s", "config " + cfg}, // config beats default
		"max-age":      {"max-age", "none", "default"},            // default
		"dir":          {"dir", dir, "flag"},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %+v, want %+v", k, got[k], w)
		}
	}
	// A typo in a config file is an error, not silently ignored.
	os.WriteFile(cfg, []byte(`{"min_free": "5G"}`), 0o644)
	if _, errs, code := run(t, "--dir", dir, "ls"); code != 2 || !strings.Contains(errs, `unknown setting "min_free"`) {
		t.Fatalf("unknown config key: exit %d, %s", code, errs)
	}
}

// TestPrometheusFile: the file parses with Prometheus' own parser, also for
// a cache directory whose path holds a tab, a quote and a byte that is not
// UTF-8 (fails with the label formatted by %q, which is Go's escaping).
func TestPrometheusFile(t *testing.T) {
	for _, sub := range []string{"plain", "tab\there \"quoted\" \xff"} {
		t.Run(sub, func(t *testing.T) { testPrometheusFile(t, sub) })
	}
}

func testPrometheusFile(t *testing.T, sub string) {
	dir := filepath.Join(isolate(t), sub)
	img := image(t, 3)
	for i, n := range []string{"capy-ubuntu-25.04-a", "capy-ubuntu-25.04-b"} {
		if _, e, c := run(t, "--dir", dir, "put", n, img); c != 0 {
			t.Fatalf("put %d: %s", i, e)
		}
	}
	run(t, "--dir", dir, "export", "capy-ubuntu-25.04-a", "-o", filepath.Join(t.TempDir(), "out.tar"))
	prom := filepath.Join(t.TempDir(), "imgcache.prom")
	if _, e, c := run(t, "--dir", dir, "stats", "--prometheus", prom); c != 0 {
		t.Fatalf("stats: %s", e)
	}
	f, err := os.Open(prom)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("the Prometheus parser rejects the file: %v", err)
	}
	value := func(name string) float64 {
		fam, ok := fams[name]
		if !ok || len(fam.Metric) != 1 {
			t.Fatalf("metric %s missing", name)
		}
		m := fam.Metric[0]
		if m.Counter != nil {
			return m.Counter.GetValue()
		}
		return m.Gauge.GetValue()
	}
	for name, want := range map[string]float64{
		"imgcache_puts_total": 2, "imgcache_entries": 2, "imgcache_blobs": 1, "imgcache_exports_total": 1,
		"imgcache_loads_total": 0, "imgcache_integrity_failures_total": 0,
	} {
		if got := value(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if r := value("imgcache_compression_ratio"); r <= 0 || r >= 1 {
		t.Errorf("compression ratio %v", r)
	}
	if len(fams) < 15 {
		t.Errorf("only %d metric families", len(fams))
	}
	_ = fmt.Sprint
}

func TestVersionNamesEncoder(t *testing.T) {
	isolate(t)
	out, _, code := run(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "imgcache ") || !strings.Contains(out, "zstd encoder: "+cache.Encoder) {
		t.Fatalf("--version = %q (exit %d); want the version and the zstd encoder %q", out, code, cache.Encoder)
	}
}

// TestGCShortfall: a target gc cannot reach is said in the CLI's words (the
// same units as the rest of its output), in text and JSON, and --strict
// exits 9.
func TestGCShortfall(t *testing.T) {
	dir := isolate(t)
	img := image(t, 4)
	if _, e, c := run(t, "--dir", dir, "put", "capy-ubuntu-25.04-a", img); c != 0 {
		t.Fatal(e)
	}
	run(t, "--dir", dir, "pin", "capy-ubuntu-25.04-a")
	_, errs, code := run(t, "--dir", dir, "gc", "--strict", "--max-size", "1")
	if code != 9 || !strings.Contains(errs, "max-size target missed by") || !strings.Contains(errs, "1 pinned blob holds ") || strings.Contains(errs, " KiB") {
		t.Fatalf("gc --strict: exit %d, stderr %q", code, errs)
	}
	out, _, code := run(t, "--dir", dir, "gc", "--json", "--max-size", "1")
	var rep struct {
		Shortfalls []struct {
			Limit   string
			Missing int64
			Why     string
			Pinned  struct{ Blobs int } `json:"pinned"`
		} `json:"shortfalls"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || len(rep.Shortfalls) != 1 {
		t.Fatalf("gc --json: %v, exit %d: %s", err, code, out)
	}
	if s := rep.Shortfalls[0]; s.Limit != "max-size" || s.Missing <= 0 || s.Pinned.Blobs != 1 || !strings.Contains(s.Why, "pinned") {
		t.Errorf("shortfall %+v", s)
	}
}

// TestGCMinAge: an entry just put is used within the default min-age: a
// tight limit keeps it and says why (exit 9 with --strict, "protected" in
// the JSON); --min-age 0 is the operator's override; a min-age over the
// max-age is refused.
func TestGCMinAge(t *testing.T) {
	dir := isolate(t)
	if _, e, c := run(t, "--dir", dir, "put", "capy-ubuntu-25.04-a", image(t, 4)); c != 0 {
		t.Fatal(e)
	}
	_, errs, code := run(t, "--dir", dir, "gc", "--strict", "--max-size", "1")
	if code != 9 || !strings.Contains(errs, "recently used or held blob") || !strings.Contains(errs, "--min-age") {
		t.Fatalf("gc --strict --max-size 1 right after a put: exit %d, stderr %q", code, errs)
	}
	out, _, code := run(t, "--dir", dir, "gc", "--json", "--max-size", "1")
	var rep struct {
		Protected  []string `json:"protected"`
		Victims    []any    `json:"victims"`
		Shortfalls []struct {
			Recent struct{ Blobs int } `json:"recent"`
		} `json:"shortfalls"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("gc --json: %v, exit %d: %s", err, code, out)
	}
	if len(rep.Victims) != 0 || len(rep.Protected) != 1 || rep.Protected[0] != "capy-ubuntu-25.04-a" || len(rep.Shortfalls) != 1 || rep.Shortfalls[0].Recent.Blobs != 1 {
		t.Fatalf("gc --json within min-age: %s", out)
	}
	if _, errs, code := run(t, "--dir", dir, "gc", "--max-age", "1h", "--min-age", "2h"); code != 2 || !strings.Contains(errs, "min-age (2h0m0s) must not exceed max-age (1h0m0s)") {
		t.Fatalf("min-age over max-age: exit %d, %q", code, errs)
	}
	out, _, code = run(t, "--dir", dir, "gc", "--json", "--max-size", "1", "--min-age", "0")
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || len(rep.Victims) != 1 || len(rep.Protected) != 0 {
		t.Fatalf("gc --min-age 0: %v, exit %d: %s", err, code, out)
	}
	if out, _, _ := run(t, "--dir", dir, "ls"); strings.Contains(out, "capy-ubuntu-25.04-a") {
		t.Fatalf("--min-age 0 kept the entry: %s", out)
	}
}

// TestPushNothing: push of an empty cache contacts no registry (the one
// named answers nothing), says so on stderr, and prints [] with --json.
func TestPushNothing(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	if out, errs, code := run(t, "--dir", dir, "--remote", "127.0.0.1:1/ci/imgcache", "push"); code != 0 || out != "" || !strings.Contains(errs, "nothing to push") {
		t.Fatalf("push of an empty cache: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if out, errs, code := run(t, "--dir", dir, "--remote", "127.0.0.1:1/ci/imgcache", "push", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("push --json of an empty cache: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}
