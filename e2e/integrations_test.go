package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/moby/moby/client"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// busyboxApplets are every applet Debian's busybox-static offers: act
// keeps its job container alive with tail and runs steps with sh.
func busyboxApplets(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatalf("this test needs Debian's busybox-static (/bin/busybox; scripts/test.sh installs it): %v", err)
	}
	return strings.Fields(string(out))
}

// cachedRunnable makes a runnable busybox image holding /marker, saves it,
// removes it from the daemon and puts the tar in dir under name: what a CI
// host's cache holds before a job.
func cachedRunnable(t *testing.T, dir, name, marker string) {
	t.Helper()
	ref := importBusybox(t, "imgcache-e2e/runnable", busyboxApplets(t), map[string][]byte{"marker": []byte(marker)})
	tarPath := saveImage(t, ref)
	removeImage(imageID(t, ref))
	must(t, dir, "put", name, tarPath)
}

// actWorkflow is a one-step workflow printing the marker of the image it
// runs in; sh, because the image has no bash.
const actWorkflow = `on: push
defaults:
  run:
    shell: sh
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo "marker:$(cat /marker)"
`

// runAct runs the pinned act (scripts/act.sh) on a repository holding
// actWorkflow, with ubuntu-latest mapped to ref, never pulling, with no
// cache server and no network: nothing leaves this machine.
func runAct(t *testing.T, repo, ref string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // the first call builds act
	defer cancel()
	script, err := filepath.Abs("../scripts/act.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, script, "push", "-P", "ubuntu-latest="+ref, "--pull=false",
		"--no-cache-server", "--network", "none", "--container-daemon-socket", "-")
	cmd.Dir = repo
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

// gitRepo makes a repository with files committed, as act wants one.
func gitRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	repo := t.TempDir()
	for name, body := range files {
		p := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "commit", "-qm", "ci"}} {
		if out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	return repo
}

// TestActRunsJobInCachedImage: the job prologue with nektos/act, the
// local runner: `ref=$(imgcache get NAME)` then `act -P
// ubuntu-latest=$ref --pull=false` runs the workflow's step inside the
// image the cache loaded (its marker file is printed). Then another
// shell's `gc --docker` with a limit that would evict everything runs
// between the get and a second job: the image survives it (min-age) and
// the second run works too. Fails if the ref does not name the loaded
// image (act cannot pull here), or if gc takes the job's image.
func TestActRunsJobInCachedImage(t *testing.T) {
	needDocker(t)
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("act needs a git repository and git is not installed (scripts/test.sh installs it): %v", err)
	}
	dir := t.TempDir()
	marker := fmt.Sprintf("act-%d", seed.Add(1))
	cachedRunnable(t, dir, "capy-busybox-1-act", marker)
	repo := gitRepo(t, map[string]string{".github/workflows/ci.yml": actWorkflow})

	ref := must(t, dir, "get", "capy-busybox-1-act")
	out, err := runAct(t, repo, ref)
	if err != nil || !strings.Contains(out, "marker:"+marker) || !strings.Contains(out, "Job succeeded") {
		t.Fatalf("act with -P ubuntu-latest=%s: %v\n%s", ref, err, out)
	}

	// Another job's cleanup runs while this job holds its ref.
	cachedRunnable(t, dir, "capy-busybox-1-other", "other")
	r := imgcache(t, dir, nil, "gc", "--docker", "--max-size", "1")
	if r.code != 0 || !inDaemon(t, ref) {
		t.Fatalf("gc --docker --max-size 1 between get and the job: %s (image in daemon: %v)", r, inDaemon(t, ref))
	}
	ref2 := must(t, dir, "get", "capy-busybox-1-act")
	if ref2 != ref {
		t.Fatalf("second get: %s, want %s", ref2, ref)
	}
	if out, err := runAct(t, repo, ref2); err != nil || !strings.Contains(out, "marker:"+marker) {
		t.Fatalf("act after gc --docker: %v\n%s", err, out)
	}
}

// recipeEnv is the environment a CI host's recipe runs in: the binary under
// test first on PATH, the cache in IMGCACHE_DIR, plus extra.
func recipeEnv(dir string, extra ...string) []string {
	return append(append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"), "IMGCACHE_DIR="+dir), extra...)
}

// runRecipe runs a contrib script (or a shell line with -c) and returns
// its combined output and exit code.
func runRecipe(t *testing.T, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	return "", 0
}

// TestGitLabCustomExecutor: GitLab Runner's custom executor drivers
// (contrib/gitlab-runner), called as the runner calls them (the runner is
// not installable here): prepare makes the job's image ready from the
// cache and starts the job container from its ref, run feeds a stage's
// script into it (a failing script is the runner's build failure), a gc in
// the middle of the job keeps its entry (the hold), cleanup removes the
// container; an unknown image is a system failure with imgcache's message.
func TestGitLabCustomExecutor(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	marker := fmt.Sprintf("gitlab-%d", seed.Add(1))
	cachedRunnable(t, dir, "capy-busybox-1-gitlab", marker)
	job := fmt.Sprint(seed.Add(1))
	env := recipeEnv(dir, "CUSTOM_ENV_CI_JOB_ID="+job, "CUSTOM_ENV_CI_RUNNER_ID=e2e", "CUSTOM_ENV_CI_JOB_IMAGE=capy-busybox-1-gitlab",
		"BUILD_FAILURE_EXIT_CODE=11", "SYSTEM_FAILURE_EXIT_CODE=12", "IMGCACHE_JOB_SHELL=sh")
	container := "imgcache-gitlab-e2e-" + job
	t.Cleanup(func() { runRecipe(t, env, "../contrib/gitlab-runner/cleanup.sh") })

	if out, code := runRecipe(t, env, "../contrib/gitlab-runner/prepare.sh"); code != 0 || !strings.Contains(out, "is ready as imgcache/capy-busybox-1-gitlab:") {
		t.Fatalf("prepare: exit %d\n%s", code, out)
	}
	scripts := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(scripts, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if out, code := runRecipe(t, env, "../contrib/gitlab-runner/run.sh", write("build", "set -e\necho \"marker:$(cat /marker)\"\n"), "build_script"); code != 0 || !strings.Contains(out, "marker:"+marker) {
		t.Fatalf("run build_script: exit %d\n%s", code, out)
	}
	// Another job's gc, with the min-age waived: the hold keeps the entry.
	if r := imgcache(t, dir, nil, "gc", "--docker", "--min-age", "0", "--max-size", "1"); r.code != 0 || !strings.Contains(must(t, dir, "ls"), "capy-busybox-1-gitlab") {
		t.Fatalf("gc during the job evicted the held entry: %s", r)
	}
	if out, code := runRecipe(t, env, "../contrib/gitlab-runner/run.sh", write("fail", "exit 3\n"), "build_script"); code != 11 {
		t.Fatalf("a failing script: exit %d, want the build-failure code 11\n%s", code, out)
	}
	if out, code := runRecipe(t, env, "../contrib/gitlab-runner/cleanup.sh"); code != 0 {
		t.Fatalf("cleanup: exit %d\n%s", code, out)
	}
	if _, err := docker.ContainerInspect(context.Background(), container, client.ContainerInspectOptions{}); err == nil {
		t.Fatalf("cleanup left container %s", container)
	}

	bad := recipeEnv(dir, "CUSTOM_ENV_CI_JOB_ID="+job, "CUSTOM_ENV_CI_JOB_IMAGE=capy-busybox-1-gitlb", "BUILD_FAILURE_EXIT_CODE=11", "SYSTEM_FAILURE_EXIT_CODE=12")
	if out, code := runRecipe(t, bad, "../contrib/gitlab-runner/prepare.sh"); code != 12 || !strings.Contains(out, "capy-busybox-1-gitlb") {
		t.Fatalf("prepare of an unknown image: exit %d, want 12 and imgcache's message\n%s", code, out)
	}
}

// TestGitLabPrefetch: for the docker executor, prefetch.sh leaves each
// named image in the daemon as imgcache/NAME:latest (what jobs name with
// pull_policy never), tries every name, and fails if one failed.
func TestGitLabPrefetch(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	cachedRunnable(t, dir, "capy-busybox-1-pre-a", "a")
	cachedRunnable(t, dir, "capy-busybox-1-pre-b", "b")
	out, code := runRecipe(t, recipeEnv(dir), "../contrib/gitlab-runner/prefetch.sh", "capy-busybox-1-pre-a", "capy-busybox-1-nope", "capy-busybox-1-pre-b")
	if code != 1 {
		t.Fatalf("prefetch with an unknown name: exit %d, want 1\n%s", code, out)
	}
	for _, name := range []string{"capy-busybox-1-pre-a", "capy-busybox-1-pre-b"} {
		if !inDaemon(t, "imgcache/"+name+":latest") {
			t.Errorf("after prefetch, imgcache/%s:latest is not in the daemon\n%s", name, out)
		}
	}
}

// TestBuildkiteHook: the agent hook (contrib/buildkite/hooks/pre-command),
// sourced by bash as the agent does, exports IMGCACHE_REF for a step that
// names its image, and the step's command runs it; a step without
// IMGCACHE_IMAGE is left alone; an unknown name fails the hook.
func TestBuildkiteHook(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	marker := fmt.Sprintf("buildkite-%d", seed.Add(1))
	cachedRunnable(t, dir, "capy-busybox-1-bk", marker)
	hook, _ := filepath.Abs("../contrib/buildkite/hooks/pre-command")
	step := `source "$HOOK" && docker run --rm "$IMGCACHE_REF" cat /marker`
	out, code := runRecipe(t, recipeEnv(dir, "HOOK="+hook, "IMGCACHE_IMAGE=capy-busybox-1-bk"), "bash", "-c", step)
	if code != 0 || !strings.Contains(out, marker) {
		t.Fatalf("hook + step: exit %d\n%s", code, out)
	}
	out, code = runRecipe(t, recipeEnv(dir, "HOOK="+hook), "bash", "-c", `source "$HOOK" && echo "ref=[${IMGCACHE_REF:-}]"`)
	if code != 0 || !strings.Contains(out, "ref=[]") {
		t.Fatalf("a step without IMGCACHE_IMAGE: exit %d\n%s", code, out)
	}
	if out, code := runRecipe(t, recipeEnv(dir, "HOOK="+hook, "IMGCACHE_IMAGE=capy-busybox-1-none"), "bash", "-c", `source "$HOOK"; echo still-ran`); code == 0 || strings.Contains(out, "still-ran") {
		t.Fatalf("an unknown image did not fail the hook: exit %d\n%s", code, out)
	}
}

// TestGitHubActionsSelfHosted: the composite action
// (contrib/github-actions/imgcache-get) in a workflow for a self-hosted
// runner, run by act in host mode (-P self-hosted=-self-hosted: steps run
// on this host, as a self-hosted runner runs them; the runner itself is not
// installable here): the action outputs the ref and exports IMGCACHE_REF,
// and the next step's docker run reads the image's marker.
func TestGitHubActionsSelfHosted(t *testing.T) {
	needDocker(t)
	dir := t.TempDir()
	marker := fmt.Sprintf("gha-%d", seed.Add(1))
	cachedRunnable(t, dir, "capy-busybox-1-gha", marker)
	action, err := os.ReadFile("../contrib/github-actions/imgcache-get/action.yml")
	if err != nil {
		t.Fatal(err)
	}
	get, err := os.ReadFile("../contrib/github-actions/imgcache-get/get.sh")
	if err != nil {
		t.Fatal(err)
	}
	repo := gitRepo(t, map[string]string{
		".github/actions/imgcache-get/action.yml": string(action),
		".github/actions/imgcache-get/get.sh":     string(get),
		".github/workflows/ci.yml": `on: push
jobs:
  build:
    runs-on: self-hosted
    steps:
      - uses: actions/checkout@v4
      - id: img
        uses: ./.github/actions/imgcache-get
        with: {name: capy-busybox-1-gha}
      - run: docker run --rm "${{ steps.img.outputs.ref }}" sh -c 'echo "marker:$(cat /marker)"'
      - run: echo "env:$IMGCACHE_REF"
`})
	if out, err := exec.Command("chmod", "+x", filepath.Join(repo, ".github/actions/imgcache-get/get.sh")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	script, _ := filepath.Abs("../scripts/act.sh")
	cmd := exec.CommandContext(ctx, script, "push", "-P", "self-hosted=-self-hosted", "--no-cache-server")
	cmd.Dir, cmd.Env = repo, recipeEnv(dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "marker:"+marker) || !strings.Contains(string(out), "env:imgcache/capy-busybox-1-gha:") {
		t.Fatalf("act (self-hosted) with the imgcache-get action: %v\n%s", err, out)
	}
}
