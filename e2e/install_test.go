package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebianPackage builds the .deb with tools/mkdeb (nfpm) from the binary
// under test and installs it with dpkg into a private root (its own
// --instdir and --admindir: a real dpkg install that leaves the machine
// alone). The installed /usr/bin/imgcache must run, and the package must
// hold the systemd units and the completions. Fails if the package misses a
// file, is not installable by dpkg, or holds a binary that does not run.
func TestDebianPackage(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Skip("dpkg is not installed: not a Debian machine")
	}
	root, _ := filepath.Abs("..")
	deb := filepath.Join(t.TempDir(), "imgcache.deb")
	mk := exec.Command("go", "run", ".", "-bin", bin, "-root", root, "-version", "0.2.0~test", "-o", deb)
	mk.Dir = filepath.Join(root, "tools", "mkdeb")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("tools/mkdeb: %v\n%s", err, out)
	}
	inst := t.TempDir()
	admin := filepath.Join(inst, "var", "lib", "dpkg")
	for _, d := range []string{"info", "updates", "triggers"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(admin, "status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dpkg, "--instdir="+inst, "--admindir="+admin, "--force-not-root", "--force-script-chrootless", "-i", deb)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(inst, "usr", "bin", "imgcache"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "imgcache ") {
		t.Fatalf("installed imgcache --version: %v: %s", err, out)
	}
	for _, f := range []string{
		"lib/systemd/system/imgcache-gc.service", "lib/systemd/system/imgcache-gc.timer",
		"usr/share/bash-completion/completions/imgcache", "usr/share/zsh/vendor-completions/_imgcache",
		"usr/share/fish/vendor_completions.d/imgcache.fish",
		"usr/share/imgcache/contrib/gitlab-runner/config.toml.example", "usr/share/imgcache/contrib/gitlab-runner/base.sh",
		"usr/share/imgcache/contrib/buildkite/hooks/pre-command", "usr/share/imgcache/contrib/github-actions/imgcache-get/action.yml",
	} {
		if fi, err := os.Stat(filepath.Join(inst, f)); err != nil || fi.Size() == 0 {
			t.Errorf("the package does not install %s: %v", f, err)
		}
	}
	// The drivers config.toml.example names must run as installed.
	for _, f := range []string{"gitlab-runner/prepare.sh", "gitlab-runner/run.sh", "gitlab-runner/cleanup.sh", "gitlab-runner/prefetch.sh", "github-actions/imgcache-get/get.sh"} {
		if fi, err := os.Stat(filepath.Join(inst, "usr/share/imgcache/contrib", f)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("the package does not install %s as an executable: %v", f, err)
		}
	}
	status, _ := exec.Command(dpkg, "--admindir="+admin, "-s", "imgcache").CombinedOutput()
	if !strings.Contains(string(status), "Status: install ok installed") {
		t.Errorf("dpkg -s imgcache:\n%s", status)
	}
}

// TestGoInstall: `go install ./cmd/imgcache` into an empty GOBIN gives a
// binary that runs. (`go install <module>/cmd/imgcache@<version>` needs the
// module on a proxy, which this machine's cannot serve: the path form is
// what can be tested here.)
func TestGoInstall(t *testing.T) {
	gobin := t.TempDir()
	cmd := exec.Command("go", "install", "./cmd/imgcache")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "GOBIN="+gobin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(gobin, "imgcache"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "imgcache ") {
		t.Fatalf("installed imgcache --version: %v: %s", err, out)
	}
}
