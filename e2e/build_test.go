package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/imgcache/imgcache/internal/lockfile"
	"github.com/imgcache/imgcache/internal/testimage"
)

const (
	capyBase = "capy-ubuntu-25.04-base"
	capyGCC  = "capy-ubuntu-25.04-gcc15"
	capyASan = "capy-ubuntu-25.04-gcc15-asan"
)

// builtEntry is the part of `inspect --json` these tests look at.
type builtEntry struct {
	Name    string    `json:"name"`
	Digest  string    `json:"digest"`
	ImageID string    `json:"image_id"`
	Added   time.Time `json:"added"`
	Base    *struct {
		Name   string `json:"name"`
		Digest string `json:"digest"`
	} `json:"base"`
	Recipe *struct {
		Dockerfile string            `json:"dockerfile"`
		Context    string            `json:"context"`
		BuildArgs  map[string]string `json:"build_args"`
	} `json:"recipe"`
}

func inspectEntry(t *testing.T, dir, name string) builtEntry {
	t.Helper()
	var e builtEntry
	if err := json.Unmarshal([]byte(must(t, dir, "inspect", "--json", name)), &e); err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return e
}

// putBase puts a generated image (no shell inside: Dockerfiles must be
// COPY-only) under name and returns its digest.
func putBase(t *testing.T, dir, name string) string {
	t.Helper()
	tarPath, _ := genImage(t, testimage.Options{})
	return must(t, dir, "put", name, tarPath)
}

// buildContext makes a context directory with a Dockerfile that copies
// each file onto the base.
func buildContext(t *testing.T, files map[string]string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	df := "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		df += "COPY " + name + " /" + name + "\n"
	}
	df += strings.Join(extra, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// removeBuilt removes, when the test ends, the images this test made
// in the daemon: every image the cache names then, every image genImage
// generated for the test (bases it put, also those put again since, whose
// old children the cache no longer names), every image labelled as built
// from one of those or from an entry of the cache (Podman keeps no parent
// links: a failed build's intermediate image is found by its label), and
// all their descendants, children before parents (Docker: a built image's
// parent is its base; a failed build leaves the images of the steps that
// succeeded). Images of other tests, or of a concurrent run on the same
// daemon, come from other generated images and stay. Register it after
// the test's first genImage and t.TempDir: it runs before they are
// removed.
func removeBuilt(t *testing.T, dir string) {
	t.Helper()
	t.Cleanup(func() {
		ctx := context.Background()
		var ours []string
		bases := map[string]bool{}
		for _, g := range generatedBy(t) {
			ours = append(ours, g.ImageID.String())
			bases[g.Digest.String()] = true
		}
		var m struct {
			Entries map[string]struct {
				Digest  string `json:"digest"`
				ImageID string `json:"image_id"`
			} `json:"entries"`
		}
		if b, err := os.ReadFile(filepath.Join(dir, "manifest.json")); err == nil && json.Unmarshal(b, &m) == nil {
			for _, e := range m.Entries {
				ours = append(ours, e.ImageID)
				bases[e.Digest] = true
			}
		}
		all, err := docker.ImageList(ctx, client.ImageListOptions{All: true})
		if err != nil {
			t.Logf("cleanup: list images: %v", err)
			return
		}
		for _, im := range all.Items {
			if bases[im.Labels["org.imgcache.base.digest"]] {
				ours = append(ours, im.ID)
			}
		}
		kids := map[string][]string{}
		for _, im := range all.Items {
			kids[im.ParentID] = append(kids[im.ParentID], im.ID)
		}
		var order []string // descendants, each after its own descendants
		seen := map[string]bool{}
		var walk func(id string)
		walk = func(id string) {
			for _, k := range kids[id] {
				if !seen[k] {
					seen[k] = true
					walk(k)
					order = append(order, k)
				}
			}
		}
		for _, id := range ours {
			walk(id)
		}
		// Twice: an image listed before its child (Podman: no parent
		// links to order them by) goes on the second pass.
		for range 2 {
			for _, id := range append(order, ours...) {
				docker.ImageRemove(ctx, id, client.ImageRemoveOptions{Force: true, PruneChildren: true})
			}
		}
	})
}

// tagsOf lists the daemon's tags of the repository imgcache/<name>.
func tagsOf(t *testing.T, name string) []string {
	t.Helper()
	imgs, err := docker.ImageList(context.Background(), client.ImageListOptions{Filters: make(client.Filters).Add("reference", "imgcache/"+name)})
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, im := range imgs.Items {
		tags = append(tags, im.RepoTags...)
	}
	return tags
}

func TestBuild(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	baseDigest := putBase(t, dir, capyBase)
	removeBuilt(t, dir)
	ctxDir := buildContext(t, map[string]string{"hello.txt": "hello from gcc15\n"}, "ARG FLAVOUR", "LABEL flavour=${FLAVOUR}")

	r := imgcache(t, dir, nil, "build", capyGCC, "--base", capyBase, "--build-arg", "FLAVOUR=a=b,c", ctxDir)
	if r.code != 0 {
		t.Fatalf("build: %s", r)
	}
	digest := strings.TrimSpace(r.stdout)
	if !strings.Contains(strings.ToLower(r.stderr), "step 3/") || !strings.Contains(r.stderr, "COPY hello.txt /hello.txt") { // Podman: "STEP 3/6:"
		t.Errorf("build output not on stderr: %s", r.stderr)
	}
	e := inspectEntry(t, dir, capyGCC)
	if e.Digest != digest {
		t.Fatalf("build printed %s, inspect says %s", digest, e.Digest)
	}
	if e.Base == nil || e.Base.Name != capyBase || e.Base.Digest != baseDigest {
		t.Fatalf("base recorded as %+v, want %s %s", e.Base, capyBase, baseDigest)
	}
	if e.Recipe == nil || e.Recipe.Dockerfile != filepath.Join(ctxDir, "Dockerfile") || e.Recipe.Context != ctxDir ||
		len(e.Recipe.BuildArgs) != 1 || e.Recipe.BuildArgs["FLAVOUR"] != "a=b,c" {
		t.Fatalf("recipe recorded as %+v", e.Recipe)
	}
	// The image is in the daemon, tagged, labelled; the build tag is gone.
	ref := "imgcache/" + capyGCC + ":" + strings.TrimPrefix(digest, "sha256:")[:12]
	img, err := docker.ImageInspect(context.Background(), ref)
	if err != nil {
		t.Fatalf("built image %s not in the daemon: %v", ref, err)
	}
	if img.ID != e.ImageID {
		t.Errorf("daemon has %s as %s, the entry says %s", ref, img.ID, e.ImageID)
	}
	for k, want := range map[string]string{"org.imgcache.base.name": capyBase, "org.imgcache.base.digest": baseDigest, "flavour": "a=b,c"} {
		if got := img.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	for _, tag := range tagsOf(t, capyGCC) {
		if strings.Contains(tag, ":build-") {
			t.Errorf("temporary build tag %s left in the daemon", tag)
		}
	}
	// get is warm (the build left the image in the daemon), and prints the same ref.
	var got struct {
		Ref    string `json:"ref"`
		Loaded bool   `json:"loaded"`
	}
	if err := json.Unmarshal([]byte(must(t, dir, "get", "--json", capyGCC)), &got); err != nil || got.Ref != ref || got.Loaded {
		t.Errorf("get after build: %+v (%v), want ref %s, not loaded", got, err, ref)
	}
	// The exported tar is what the digest says.
	out := filepath.Join(t.TempDir(), "gcc15.tar")
	must(t, dir, "export", capyGCC, "-o", out)
	if got := "sha256:" + sha256File(t, out); got != digest {
		t.Errorf("export hashes to %s, entry says %s", got, digest)
	}

	// A Dockerfile outside the context, on a built base.
	dfDir := t.TempDir()
	df := filepath.Join(dfDir, "asan.Dockerfile")
	os.WriteFile(df, []byte("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY asan.txt /asan.txt\n"), 0o644)
	asanCtx := t.TempDir()
	os.WriteFile(filepath.Join(asanCtx, "asan.txt"), []byte("asan\n"), 0o644)
	must(t, dir, "build", capyASan, "--base", capyGCC, "-f", df, asanCtx)
	a := inspectEntry(t, dir, capyASan)
	if a.Base == nil || a.Base.Name != capyGCC || a.Base.Digest != digest || a.Recipe.Dockerfile != df || a.Recipe.Context != asanCtx {
		t.Fatalf("asan: base %+v recipe %+v", a.Base, a.Recipe)
	}

	// Bad requests: exit 2 or 3, nothing stored.
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"build", "capy-ubuntu-25.04-x", "--base", "capy-ubuntu-25.04-nope", ctxDir}, 3},
		{[]string{"build", "capy-ubuntu-25.04-x", "--base", capyBase, filepath.Join(ctxDir, "nope")}, 2},
		{[]string{"build", "capy-ubuntu-25.04-x", "--base", capyBase, "--build-arg", "BASE_IMAGE=alpine", ctxDir}, 2},
		{[]string{"build", "capy-ubuntu-25.04-x", "--base", capyBase, "--build-arg", "NOVALUE", ctxDir}, 2},
		{[]string{"build", capyBase, "--base", capyBase, ctxDir}, 2},
	} {
		if r := imgcache(t, dir, nil, tc.args...); r.code != tc.code {
			t.Errorf("%v: want exit %d, got %s", tc.args, tc.code, r)
		}
	}
	if r := imgcache(t, dir, nil, "inspect", "capy-ubuntu-25.04-x"); r.code != 3 {
		t.Errorf("a refused build left an entry: %s", r)
	}
}

func TestBuildFailingDockerfile(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	putBase(t, dir, capyBase)
	const name = "capy-ubuntu-25.04-broken"
	removeBuilt(t, dir)
	ctxDir := buildContext(t, map[string]string{"hello.txt": "hi\n"}, "COPY missing.txt /missing.txt")
	r := imgcache(t, dir, nil, "build", name, "--base", capyBase, ctxDir)
	if r.code != 8 {
		t.Fatalf("a failing build: want exit 8, got %s", r)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	// The error names the failing step.
	if !regexp.MustCompile(`imgcache: .*failed at step "(?i:step) \d+/\d+ ?: COPY missing.txt /missing.txt".*missing.txt`).MatchString(r.stderr) { // Docker "Step 4/5 : …", Podman "STEP 3/5: …"
		t.Errorf("stderr does not name the failing step:\n%s", r.stderr)
	}
	if r := imgcache(t, dir, nil, "inspect", name); r.code != 3 {
		t.Errorf("a failed build left an entry: %s", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "recipes", "capy", name+".json")); err == nil {
		t.Error("a failed build recorded a recipe")
	}
	if tags := tagsOf(t, name); len(tags) != 0 {
		t.Errorf("a failed build left tags in the daemon: %v", tags)
	}
	if r := imgcache(t, dir, nil, "verify"); r.code != 0 {
		t.Errorf("verify after a failed build: %s", r)
	}
}

func TestResolve(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	tarPath, _ := genImage(t, testimage.Options{})
	for _, n := range []string{capyBase, capyGCC, "acme-debian-12-base", "zeta-debian-12-base"} {
		must(t, dir, "put", n, tarPath)
	}
	type plan struct {
		Name       string  `json:"name"`
		BestImage  *string `json:"best_image"`
		BestBase   *string `json:"best_base"`
		BaseRule   string  `json:"base_rule"`
		NeedsBuild bool    `json:"needs_build"`
	}
	str := func(s *string) string {
		if s == nil {
			return "null"
		}
		return *s
	}
	for _, tc := range []struct {
		what, name, image, base, rule string
		needsBuild                    bool
	}{
		{"exact", capyGCC, capyGCC, capyBase, "project-base", false},
		{"prefix", capyASan, "null", capyGCC, "variant-prefix", true},
		{"base", "capy-ubuntu-25.04-clang20-asan", "null", capyBase, "project-base", true},
		{"other project's os-base", "capy-debian-12-gcc15", "null", "acme-debian-12-base", "os-base", true},
		{"none", "capy-fedora-41-gcc15", "null", "null", "", true},
	} {
		t.Run(tc.what, func(t *testing.T) {
			var p plan
			if err := json.Unmarshal([]byte(must(t, dir, "resolve", "--json", tc.name)), &p); err != nil {
				t.Fatal(err)
			}
			if p.Name != tc.name || str(p.BestImage) != tc.image || str(p.BestBase) != tc.base || p.BaseRule != tc.rule || p.NeedsBuild != tc.needsBuild {
				t.Fatalf("resolve %s: %+v (image %s, base %s); want image %s, base %s (%s), needs_build %v",
					tc.name, p, str(p.BestImage), str(p.BestBase), tc.image, tc.base, tc.rule, tc.needsBuild)
			}
		})
	}
	out := must(t, dir, "resolve", capyASan)
	for _, want := range []string{"best_image:", "best_base:", capyGCC + " (variant-prefix)", "needs_build:", "true"} {
		if !strings.Contains(out, want) {
			t.Errorf("resolve text output lacks %q:\n%s", want, out)
		}
	}
	if r := imgcache(t, dir, nil, "resolve", "Capy-ubuntu-25.04-gcc15"); r.code != 2 {
		t.Errorf("resolve of a bad name: %s", r)
	}
}

type staleEntry struct {
	Name    string `json:"name"`
	Base    string `json:"base"`
	Reasons []struct {
		Kind   string `json:"kind"`
		Detail string `json:"detail"`
	} `json:"reasons"`
}

func outdated(t *testing.T, dir string, args ...string) map[string]string {
	t.Helper()
	var ss []staleEntry
	out := must(t, dir, append([]string{"outdated", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &ss); err != nil {
		t.Fatalf("outdated --json: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, s := range ss {
		var kinds []string
		for _, r := range s.Reasons {
			kinds = append(kinds, r.Kind)
		}
		m[s.Name] = strings.Join(kinds, ",")
	}
	return m
}

func TestOutdatedAfterBasePut(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	putBase(t, dir, capyBase)
	removeBuilt(t, dir)
	must(t, dir, "build", capyGCC, "--base", capyBase, buildContext(t, map[string]string{"gcc.txt": "gcc15\n"}))
	if got := outdated(t, dir); len(got) != 0 {
		t.Fatalf("right after the build: outdated %v", got)
	}
	if r := imgcache(t, dir, nil, "outdated"); r.code != 0 || r.stdout != "" {
		t.Fatalf("outdated with nothing outdated: %s", r)
	}
	// Built longer ago than --max-age; IMGCACHE_MAX_AGE is gc's and does not count.
	// The build finished before outdated starts: more than 1ms ago once the
	// clock has moved that far past the recorded build time.
	for built := inspectEntry(t, dir, capyGCC).Added; time.Since(built) <= time.Millisecond; {
		time.Sleep(time.Millisecond)
	}
	if got := outdated(t, dir, "--older-than", "1ms"); got[capyGCC] != "too-old" {
		t.Fatalf("--older-than 1ms: outdated %v", got)
	}
	// The first round's spelling still works, deprecated.
	if got := outdated(t, dir, "--max-age", "1ms"); got[capyGCC] != "too-old" {
		t.Fatalf("--max-age 1ms: outdated %v", got)
	}
	if r := imgcache(t, dir, []string{"IMGCACHE_MAX_AGE=1ms"}, "outdated", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("IMGCACHE_MAX_AGE applied to outdated: %s", r)
	}

	newBase := putBase(t, dir, capyBase) // the base changes
	got := outdated(t, dir)
	if len(got) != 1 || got[capyGCC] != "base-changed" {
		t.Fatalf("after the base was re-put: outdated %v, want %s base-changed", got, capyGCC)
	}
	out := must(t, dir, "outdated")
	if !strings.Contains(out, capyGCC) || !strings.Contains(out, "base-changed") || !strings.Contains(out, strings.TrimPrefix(newBase, "sha256:")[:12]) {
		t.Fatalf("outdated table:\n%s", out)
	}
}

// rebuiltLines parses rebuild's stdout: NAME DIGEST per line.
func rebuiltLines(t *testing.T, stdout string) [][2]string {
	t.Helper()
	var out [][2]string
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if l == "" {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 2 || !strings.HasPrefix(f[1], "sha256:") {
			t.Fatalf("rebuild stdout line %q: want NAME DIGEST", l)
		}
		out = append(out, [2]string{f[0], f[1]})
	}
	return out
}

func TestRebuildThreeLevelChain(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	putBase(t, dir, capyBase)
	const clang = "capy-ubuntu-25.04-clang20" // a sibling of gcc15: built alongside it
	removeBuilt(t, dir)
	must(t, dir, "build", capyGCC, "--base", capyBase, buildContext(t, map[string]string{"gcc.txt": "gcc15\n"}))
	must(t, dir, "build", capyASan, "--base", capyGCC, buildContext(t, map[string]string{"asan.txt": "asan\n"}))
	must(t, dir, "build", clang, "--base", capyBase, buildContext(t, map[string]string{"clang.txt": "clang20\n"}))
	before := map[string]string{}
	for _, n := range []string{capyGCC, capyASan, clang} {
		before[n] = inspectEntry(t, dir, n).Digest
	}

	newBase := putBase(t, dir, capyBase)
	if got := outdated(t, dir); got[capyGCC] != "base-changed" || got[capyASan] != "base-outdated" || got[clang] != "base-changed" || len(got) != 3 {
		t.Fatalf("outdated %v, want gcc15 and clang20 base-changed, gcc15-asan base-outdated", got)
	}

	args := []string{"rebuild", "--jobs", "4"}
	r := imgcache(t, dir, nil, args...)
	t.Logf("$ imgcache %s\n%s\nstderr:\n%s", strings.Join(args, " "), r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("rebuild: %s", r)
	}
	all := rebuiltLines(t, r.stdout)
	var lines [][2]string // the chain: gcc15, gcc15-asan
	for _, l := range all {
		if l[0] == clang {
			if e := inspectEntry(t, dir, clang); e.Digest != l[1] || e.Base.Digest != newBase {
				t.Errorf("%s: printed %s, entry %s built from %s", clang, l[1], e.Digest, e.Base.Digest)
			}
			continue
		}
		lines = append(lines, l)
	}
	if len(all) != 3 || len(lines) != 2 || lines[0][0] != capyGCC || lines[1][0] != capyASan {
		t.Fatalf("rebuild order %v, want %s then %s (and %s)", all, capyGCC, capyASan, clang)
	}
	if !strings.Contains(r.stderr, capyGCC+" building (2 of at most 4)") && !strings.Contains(r.stderr, clang+" building (2 of at most 4)") {
		t.Errorf("gcc15 and clang20 did not build at once:\n%s", r.stderr)
	}
	// Each level now records its base's current digest, and is new.
	baseDigest := newBase
	for _, l := range lines {
		e := inspectEntry(t, dir, l[0])
		if e.Digest != l[1] {
			t.Errorf("%s: rebuild printed %s, inspect says %s", l[0], l[1], e.Digest)
		}
		if e.Digest == before[l[0]] {
			t.Errorf("%s: digest unchanged by the rebuild", l[0])
		}
		if e.Base.Digest != baseDigest {
			t.Errorf("%s: built from %s, its base is now %s", l[0], e.Base.Digest, baseDigest)
		}
		img, err := docker.ImageInspect(context.Background(), "imgcache/"+l[0]+":"+strings.TrimPrefix(e.Digest, "sha256:")[:12])
		if err != nil || img.Config.Labels["org.imgcache.base.digest"] != baseDigest {
			t.Errorf("%s: image in the daemon %v, labels %v", l[0], err, img.Config)
		}
		baseDigest = e.Digest
	}
	if got := outdated(t, dir); len(got) != 0 {
		t.Fatalf("after rebuild: outdated %v", got)
	}

	// Nothing left: an empty plan.
	var rep struct {
		Order   [][]string        `json:"order"`
		Results []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal([]byte(must(t, dir, "rebuild", "--json")), &rep); err != nil || len(rep.Order) != 0 || len(rep.Results) != 0 {
		t.Fatalf("rebuild with nothing outdated: %+v %v", rep, err)
	}
	// A named, fresh entry: skipped without --force; --force rebuilds it alone.
	if r := imgcache(t, dir, nil, "rebuild", capyASan); r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "up to date") {
		t.Fatalf("rebuild of a fresh entry: %s", r)
	}
	r = imgcache(t, dir, nil, "rebuild", "--force", "--json", capyASan)
	if r.code != 0 {
		t.Fatalf("rebuild --force: %s", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Order) != 1 || len(rep.Order[0]) != 1 || rep.Order[0][0] != capyASan {
		t.Fatalf("rebuild --force %s: %s", capyASan, r.stdout)
	}
	// Entries that were put cannot be rebuilt.
	if r := imgcache(t, dir, nil, "rebuild", capyBase); r.code != 2 {
		t.Fatalf("rebuild of a put entry: %s", r)
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestConcurrentRebuildBuildsOnce(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	putBase(t, dir, capyBase)
	removeBuilt(t, dir)
	must(t, dir, "build", capyGCC, "--base", capyBase, buildContext(t, map[string]string{"gcc.txt": "gcc15\n"}))
	putBase(t, dir, capyBase) // gcc15 is outdated

	// Hold gcc15's build lock, as a build in progress would, until both
	// processes wait for it: then one builds and the other waits for that.
	lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lock, err := lockfile.Acquire(lctx, filepath.Join(dir, "locks", "build-"+capyGCC+".lock"), true)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2
	type proc struct {
		cmd            *exec.Cmd
		stdout, stderr syncBuffer
	}
	procs := make([]*proc, n)
	for i := range procs {
		p := &proc{}
		p.cmd = exec.Command(bin, "--dir", dir, "rebuild", capyGCC)
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = p
	}
	deadline := time.Now().Add(time.Minute)
	for _, p := range procs {
		for !strings.Contains(p.stderr.String(), "another process is building "+capyGCC) {
			if time.Now().After(deadline) {
				t.Fatalf("a rebuild did not wait for the held build lock: %s", p.stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	lock.Release()
	built, waited := 0, 0
	for i, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("rebuild %d: %v\n%s", i, err, p.stderr.String())
		}
		t.Logf("rebuild %d:\nstdout: %sstderr:\n%s", i, p.stdout.String(), p.stderr.String())
		lines := rebuiltLines(t, p.stdout.String())
		switch {
		case len(lines) == 1 && lines[0][0] == capyGCC:
			built++
			if n := buildsStarted(p.stderr.String()); n != 1 {
				t.Errorf("the building process ran %d builds", n)
			}
		case len(lines) == 0 && strings.Contains(p.stderr.String(), "built by another process"):
			waited++
			if buildsStarted(p.stderr.String()) > 0 {
				t.Errorf("the waiting process built too")
			}
		default:
			t.Errorf("rebuild %d: neither built nor waited", i)
		}
	}
	if built != 1 || waited != 1 {
		t.Fatalf("%d processes built, %d waited; want exactly 1 and 1", built, waited)
	}
	if got := outdated(t, dir); len(got) != 0 {
		t.Fatalf("outdated after the rebuilds: %v", got)
	}
}

func TestGetBuildOnMiss(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	putBase(t, dir, capyBase)
	removeBuilt(t, dir)
	ctxDir := buildContext(t, map[string]string{"gcc.txt": "gcc15\n"})

	// A miss: no recipe, no flags.
	if r := imgcache(t, dir, nil, "get", "--build", capyGCC); r.code != 3 {
		t.Fatalf("get --build with no recipe: %s", r)
	}
	// Recipe flags go with --build only.
	if r := imgcache(t, dir, nil, "get", capyGCC, ctxDir); r.code != 2 {
		t.Fatalf("get CONTEXT without --build: %s", r)
	}
	// A miss with a given recipe: the base comes from resolve.
	r := imgcache(t, dir, nil, "get", "--build", capyGCC, ctxDir)
	if r.code != 0 || !strings.Contains(strings.ToLower(r.stderr), "step 1/") {
		t.Fatalf("get --build: %s", r)
	}
	e := inspectEntry(t, dir, capyGCC)
	if ref := "imgcache/" + capyGCC + ":" + strings.TrimPrefix(e.Digest, "sha256:")[:12]; strings.TrimSpace(r.stdout) != ref || !inDaemon(t, ref) {
		t.Fatalf("get --build printed %q, want %s (in the daemon)", r.stdout, ref)
	}
	if e.Base == nil || e.Base.Name != capyBase {
		t.Fatalf("built from %+v, want %s", e.Base, capyBase)
	}
	// A hit: no build.
	r2 := imgcache(t, dir, nil, "get", "--build", capyGCC, ctxDir)
	if r2.code != 0 || r2.stdout != r.stdout || buildsStarted(r2.stderr) > 0 {
		t.Fatalf("get --build on a hit: %s", r2)
	}
	// Gone (rm, gc): rebuilt from the recorded recipe, with no flags.
	must(t, dir, "rm", capyGCC)
	r3 := imgcache(t, dir, nil, "get", "--build", capyGCC)
	if r3.code != 0 || buildsStarted(r3.stderr) == 0 {
		t.Fatalf("get --build from the recorded recipe: %s", r3)
	}
	if e := inspectEntry(t, dir, capyGCC); e.Recipe == nil || e.Recipe.Context != ctxDir {
		t.Fatalf("rebuilt entry's recipe %+v", e.Recipe)
	}
}

func TestGetBuildConcurrentMissBuildsOnce(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	putBase(t, dir, capyBase)
	removeBuilt(t, dir)
	ctxDir := buildContext(t, map[string]string{"gcc.txt": "gcc15\n"})
	const n = 4
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = imgcache(t, dir, nil, "get", "--build", "--base", capyBase, capyGCC, ctxDir)
		}()
	}
	wg.Wait()
	builds := 0
	for i, r := range results {
		if r.code != 0 || r.stdout != results[0].stdout {
			t.Fatalf("get --build %d: %s", i, r)
		}
		builds += buildsStarted(r.stderr)
	}
	if builds != 1 {
		t.Fatalf("%d concurrent get --build of one missing name built %d times, want 1", n, builds)
	}
}

func TestGetBuildLostBlob(t *testing.T) {
	needDocker(t)
	dir := wholeTarDir(t)
	putBase(t, dir, capyBase)
	removeBuilt(t, dir)
	must(t, dir, "build", capyGCC, "--base", capyBase, buildContext(t, map[string]string{"gcc.txt": "gcc15\n"}))
	e := inspectEntry(t, dir, capyGCC)
	// The blob is lost and the image is not in the daemon: plain get fails…
	if err := os.Remove(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(e.Digest, "sha256:")+".tar.zst")); err != nil {
		t.Fatal(err)
	}
	if _, err := docker.ImageRemove(context.Background(), e.ImageID, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
		t.Fatal(err)
	}
	if r := imgcache(t, dir, nil, "get", capyGCC); r.code != 3 {
		t.Fatalf("get of a lost blob: %s", r)
	}
	// …get --build builds it again from its recipe.
	r := imgcache(t, dir, nil, "get", "--build", capyGCC)
	if r.code != 0 || buildsStarted(r.stderr) == 0 {
		t.Fatalf("get --build of a lost blob: %s", r)
	}
	if got := inspectEntry(t, dir, capyGCC); !inDaemon(t, strings.TrimSpace(r.stdout)) || got.Base == nil {
		t.Fatalf("after get --build: %s, entry %+v", r.stdout, got)
	}
	must(t, dir, "verify")
}

// buildsStarted counts the builds an output shows starting: Docker's
// "Step 1/N :" and Podman's "STEP 1/N:" lines.
func buildsStarted(out string) int { return strings.Count(strings.ToLower(out), "step 1/") }
