package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgcache/imgcache/internal/testimage"
)

// TestGetPlatformEmulated: an image built for riscv64 (a Go program
// cross-compiled for it) is refused by a plain get (exit 8, saying how to
// ask), and by get --platform naming another platform; with --platform
// linux/riscv64 on this host, where qemu's binfmt_misc handler emulates
// riscv64 (scripts/test.sh installs qemu-user-static), it loads, and the
// program runs in a container under emulation.
func TestGetPlatformEmulated(t *testing.T) {
	needDocker(t)
	if _, err := os.Stat("/proc/sys/fs/binfmt_misc/qemu-riscv64"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: no qemu-riscv64 binfmt_misc handler (scripts/test.sh installs qemu-user-static): %v", err)
		}
		t.Skipf("no qemu-riscv64 binfmt_misc handler: %v", err)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module hello\n\ngo 1.21\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nimport (\n\t\"fmt\"\n\t\"runtime\"\n)\n\nfunc main() { fmt.Println(\"hello from\", runtime.GOOS+\"/\"+runtime.GOARCH) }\n"), 0o644)
	build := exec.Command("go", "build", "-o", "hello", ".")
	build.Dir, build.Env = src, append(os.Environ(), "GOOS=linux", "GOARCH=riscv64", "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cross-compiling for riscv64: %v\n%s", err, out)
	}
	hello, err := os.ReadFile(filepath.Join(src, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	img, res := genImage(t, testimage.Options{Layers: 1, FilesPerLayer: 1, Architecture: "riscv64", Executables: map[string][]byte{"hello": hello}})
	dir := t.TempDir()
	must(t, dir, "put", "capy-debian-13-riscv64", img)

	if r := imgcache(t, dir, nil, "get", "capy-debian-13-riscv64"); r.code != 8 || !strings.Contains(r.stderr, "get --platform linux/riscv64") {
		t.Fatalf("plain get of a riscv64 image: %s", r)
	}
	if r := imgcache(t, dir, nil, "get", "--platform", "linux/arm64", "capy-debian-13-riscv64"); r.code != 8 || !strings.Contains(r.stderr, "not linux/arm64") {
		t.Fatalf("get --platform linux/arm64 of a riscv64 image: %s", r)
	}
	if inDaemon(t, res.ImageID.String()) {
		t.Fatal("a refused get loaded the image")
	}
	ref := must(t, dir, "get", "--platform", "linux/riscv64", "capy-debian-13-riscv64")
	out, err := runPlatform(ref, &ocispec.Platform{OS: "linux", Architecture: "riscv64"}, "/hello")
	if err != nil || strings.TrimSpace(out) != "hello from linux/riscv64" {
		t.Fatalf("running %s under emulation: %q, %v", ref, out, err)
	}
}

// runPlatform runs args in a fresh container of ref for platform p and
// returns its output.
func runPlatform(ref string, p *ocispec.Platform, args ...string) (string, error) {
	ctx := context.Background()
	c, err := docker.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: ref, Cmd: args}, Platform: p})
	if err != nil {
		return "", err
	}
	defer docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
	if _, err := docker.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		return "", err
	}
	wait := docker.ContainerWait(ctx, c.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-wait.Result:
	case err := <-wait.Error:
		return "", err
	}
	logs, err := docker.ContainerLogs(ctx, c.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return "", err
	}
	defer logs.Close()
	var stdout, stderr strings.Builder
	_, err = stdcopy.StdCopy(&stdout, &stderr, logs)
	return stdout.String() + stderr.String(), err
}
