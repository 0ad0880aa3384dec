package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/internal/testimage"
)

// compressWith runs a compressor CLI (gzip, bzip2, xz, zstd) over src
// and returns the compressed file's path.
func compressWith(t *testing.T, src string, tool ...string) string {
	t.Helper()
	if _, err := exec.LookPath(tool[0]); err != nil {
		t.Fatalf("%s is not installed (scripts/test.sh installs it): %v", tool[0], err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), filepath.Base(src)+"."+tool[0])
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(tool[0], tool[1:]...)
	var errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v: %s", tool, err, errb.String())
	}
	return dst
}

// putStdin runs `imgcache put NAME -` with stdin from a file.
func putStdin(t *testing.T, dir, name, file string) result {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--dir", dir, "put", name, "-")
	cmd.Stdin = f
	return runCmd(t, cmd)
}

// TestPutCompressedInput: a `docker save` tar compressed by the gzip,
// bzip2, xz and zstd CLIs, put from the file and from standard input, is
// stored as the tar inside: its digest is what `zcat | sha256sum` prints,
// export writes the tar back, and get loads it. Before, put refused them.
func TestPutCompressedInput(t *testing.T) {
	withoutRace(t)
	needDocker(t)
	ref := importBusybox(t, "imgcache-e2e/compressed", []string{"sh"}, map[string][]byte{"data": randomBytes(seed.Add(1), 3<<20)})
	tarPath := saveImage(t, ref)
	want := hashFile(t, tarPath)
	for i, tool := range [][]string{{"gzip", "-c"}, {"bzip2", "-c"}, {"xz", "-c", "-T2"}, {"zstd", "-q", "-c", "-T0"}} {
		t.Run(tool[0], func(t *testing.T) {
			dir := t.TempDir()
			z := compressWith(t, tarPath, tool...)
			if got := must(t, dir, "put", "capy-busybox-1-file", z); got != want {
				t.Fatalf("put %s: digest %s, want the tar's %s", filepath.Base(z), got, want)
			}
			if r := putStdin(t, dir, "capy-busybox-1-stdin", z); r.code != 0 || strings.TrimSpace(r.stdout) != want {
				t.Fatalf("put - < %s: %s", filepath.Base(z), r)
			}
			if got := hashFile(t, exportTo(t, dir, "capy-busybox-1-stdin")); got != want {
				t.Fatalf("export after a %s put: %s, want %s", tool[0], got, want)
			}
			if i == 0 {
				removeImage(imageID(t, ref))
				if ref := must(t, dir, "get", "capy-busybox-1-file"); !inDaemon(t, ref) {
					t.Fatalf("get of a gzip-put entry: %s not in the daemon", ref)
				}
			}
		})
	}
}

// TestPutTruncatedCompressedInput: a .tar.gz cut short is refused as bad
// input (exit 2) with a message naming the compression, from a file and
// from standard input, and leaves nothing in the cache.
func TestPutTruncatedCompressedInput(t *testing.T) {
	img, _ := genImage(t, testimage.Options{Layers: 2, FilesPerLayer: 2, FileSize: 1 << 20}) // ~4 MiB incompressible
	z := compressWith(t, img, "gzip", "-c")
	data, err := os.ReadFile(z)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.tar.gz")
	if err := os.WriteFile(cut, data[:len(data)*2/3], 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, r := range []result{imgcache(t, dir, nil, "put", "capy-ubuntu-25.04-cut", cut), putStdin(t, dir, "capy-ubuntu-25.04-cut", cut)} {
		if r.code != 2 || !strings.Contains(r.stderr, "gzip-compressed input is truncated") {
			t.Fatalf("put of a truncated .tar.gz: %s", r)
		}
	}
	if out := must(t, dir, "ls"); strings.Contains(out, "capy-ubuntu-25.04-cut") {
		t.Fatalf("ls after the refused put: %s", out)
	}
	for _, sub := range []string{"tmp", "blobs/sha256", "layers/tmp", "layers/blobs/sha256"} {
		if ents, _ := os.ReadDir(filepath.Join(dir, sub)); len(ents) > 0 {
			t.Errorf("%s holds %d files after the refused put", sub, len(ents))
		}
	}
}
