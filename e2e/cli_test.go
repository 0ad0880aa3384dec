package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/internal/testimage"
)

// TestProgressOnTerminalOnly: progress goes to stderr on a terminal (a
// pseudo-terminal made by script(1)), never to a pipe, never with --quiet.
func TestProgressOnTerminalOnly(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Fatalf("script(1) (bsdutils) is needed to make a pseudo-terminal: %v", err)
	}
	img, _ := genImage(t, testimage.Options{Layers: 2, FilesPerLayer: 8, FileSize: 1 << 20})
	onTTY := func(args string) string {
		t.Helper()
		out, err := exec.Command("script", "-qec", bin+" "+args, "/dev/null").CombinedOutput()
		if err != nil {
			t.Fatalf("script %s: %v: %s", args, err, out)
		}
		return string(out)
	}
	dir := t.TempDir()
	tty := onTTY("--dir " + dir + " put capy-ubuntu-25.04-tty " + img)
	if !strings.Contains(tty, "put capy-ubuntu-25.04-tty") || !strings.Contains(tty, "MB") {
		t.Fatalf("no progress line on a terminal:\n%q", tty)
	}
	quiet := onTTY("--dir " + dir + " -q put capy-ubuntu-25.04-quiet " + img)
	if strings.Contains(quiet, "put capy-ubuntu-25.04-quiet") {
		t.Fatalf("progress despite --quiet:\n%q", quiet)
	}
	r := imgcache(t, dir, nil, "put", "capy-ubuntu-25.04-pipe", img)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("put into a pipe: stderr must stay empty: %s", r)
	}
	if !strings.HasPrefix(r.stdout, "sha256:") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("stdout carries only the digest: %q", r.stdout)
	}
}
