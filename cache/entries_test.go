package cache_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
	"github.com/imgcache/imgcache/naming"
)

func TestExportIsByteIdentical(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opt  testimage.Options
	}{
		{"docker", testimage.Options{Tag: "t/x:1", Seed: 1}},
		{"oci", testimage.Options{Tag: "t/x:1", Seed: 2, Format: "oci-archive"}},
		{"bigger, several zstd blocks", testimage.Options{Tag: "t/x:1", Seed: 3, Layers: 3, FilesPerLayer: 4, FileSize: 300 << 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newCache(t)
			data, _ := imageOpts(t, tt.opt)
			const name = "capy-ubuntu-25.04-gcc15"
			put(t, c, name, data)
			if got := export(t, c, name); !bytes.Equal(got, data) {
				t.Fatalf("Export: %d bytes, not identical to the %d put", len(got), len(data))
			}
			// Durable or not, the file appears whole and alone.
			for _, durable := range []bool{false, true} {
				dst := filepath.Join(t.TempDir(), "out.tar")
				e, err := c.ExportFile(context.Background(), mustName(t, name), dst, durable)
				if err != nil {
					t.Fatalf("ExportFile (durable %v): %v", durable, err)
				}
				if e.Digest != sha(data) {
					t.Errorf("ExportFile returned entry %s", e.Digest)
				}
				if got := readFile(t, dst); !bytes.Equal(got, data) {
					t.Fatalf("ExportFile (durable %v): %d bytes, not identical to the %d put", durable, len(got), len(data))
				}
				if left := dirNames(t, filepath.Dir(dst)); !slices.Equal(left, []string{"out.tar"}) {
					t.Errorf("ExportFile (durable %v) left %v next to the output", durable, left)
				}
			}
		})
	}
}

// TestExportFileRefusesABadPath: a directory, or a path whose directory is
// missing or a file, is bad input, said before anything is read or made.
func TestExportFileRefusesABadPath(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t)
	data, _ := image(t, "t/x:1", 1)
	const name = "capy-ubuntu-25.04-gcc15"
	put(t, c, name, data)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		dir:                                    "is a directory",
		filepath.Join(dir, "missing", "x.tar"): "does not exist",
		filepath.Join(file, "x.tar"):           "is not a directory",
	} {
		_, err := c.ExportFile(context.Background(), mustName(t, name), path, false)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("ExportFile to %s = %v, want bad input saying %q", path, err, want)
		}
	}
	if left := dirNames(t, dir); !slices.Equal(left, []string{"file"}) {
		t.Errorf("left behind: %v", left)
	}
}

func TestExportFileFailures(t *testing.T) {
	t.Parallel()
	const name = "capy-ubuntu-25.04-gcc15"
	tests := []struct {
		name  string
		setup func(t *testing.T, c *cache.Cache, d digest.Digest) // damages the cache
		want  error
	}{
		{"unknown name", func(t *testing.T, c *cache.Cache, d digest.Digest) {
			if err := c.Remove(context.Background(), mustName(t, name)); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrNotFound},
		{"flipped byte in the blob", func(t *testing.T, c *cache.Cache, d digest.Digest) {
			flipByte(t, blobPath(c, d))
		}, errdefs.ErrIntegrity},
		{"blob truncated", func(t *testing.T, c *cache.Cache, d digest.Digest) {
			p := blobPath(c, d)
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()-20); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrIntegrity},
		{"blob replaced by another valid blob", func(t *testing.T, c *cache.Cache, d digest.Digest) {
			other, _ := image(t, "t/x:1", 99)
			put(t, c, "other-a-b-c", other)
			p := blobPath(c, d)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(blobPath(c, sha(other)), p); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrIntegrity},
		{"blob missing", func(t *testing.T, c *cache.Cache, d digest.Digest) {
			if err := os.Remove(blobPath(c, d)); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newCache(t)
			data, img := image(t, "t/x:1", 1)
			put(t, c, name, data)
			tt.setup(t, c, img.Digest)

			outDir := t.TempDir()
			dst := filepath.Join(outDir, "out.tar")
			_, err := c.ExportFile(context.Background(), mustName(t, name), dst, false)
			if err == nil {
				t.Fatal("ExportFile succeeded")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, tt.want) {
				t.Errorf("error does not wrap %v", tt.want)
			}
			if exists(t, dst) {
				t.Error("ExportFile created the destination although it failed")
			}
			if left := dirNames(t, outDir); len(left) > 0 {
				t.Errorf("ExportFile left %v behind", left)
			}

			// An existing destination is not clobbered by a failed export
			// (a durable one, this time).
			if err := os.WriteFile(dst, []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := c.ExportFile(context.Background(), mustName(t, name), dst, true); err == nil {
				t.Fatal("second ExportFile succeeded")
			}
			if got := readFile(t, dst); string(got) != "precious" {
				t.Errorf("failed ExportFile overwrote the destination with %d bytes", len(got))
			}
		})
	}
}

func TestListInspectAreNotUsesExportIs(t *testing.T) {
	t.Parallel()
	c, clk := newCache(t)
	data, _ := image(t, "t/x:1", 1)
	const name = "capy-ubuntu-25.04-gcc15"
	put(t, c, name, data)
	n := mustName(t, name)
	ctx := context.Background()

	steps := []struct {
		name    string
		op      func() error
		isAUse  bool
		advance time.Duration
	}{
		{"List", func() error { _, err := c.List(ctx); return err }, false, time.Hour},
		{"Inspect", func() error { _, err := c.Inspect(ctx, n); return err }, false, time.Hour},
		{"Verify", func() error { _, err := c.Verify(ctx, nil, false); return err }, false, time.Hour},
		{"Verify name", func() error { _, err := c.Verify(ctx, []naming.Name{n}, false); return err }, false, time.Hour},
		{"GC", func() error { _, err := c.GC(ctx, cache.GCOptions{}); return err }, false, time.Hour},
		{"GC dry run", func() error { _, err := c.GC(ctx, cache.GCOptions{DryRun: true}); return err }, false, time.Hour},
		{"SetPinned", func() error { return c.SetPinned(ctx, n, true) }, false, time.Hour},
		{"Export", func() error { _, err := c.Export(ctx, n, &bytes.Buffer{}); return err }, true, time.Hour},
		{"ExportFile", func() error {
			_, err := c.ExportFile(ctx, n, filepath.Join(t.TempDir(), "x.tar"), false)
			return err
		}, true, time.Hour},
		{"Put again", func() error {
			_, err := c.Put(ctx, n, bytes.NewReader(data), int64(len(data)))
			return err
		}, true, time.Hour},
	}
	for _, s := range steps {
		before := inspect(t, c, name)
		clk.Advance(s.advance)
		if err := s.op(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		after := inspect(t, c, name)
		if s.isAUse {
			if !after.LastUsed.Equal(clk.Now()) {
				t.Errorf("%s: LastUsed = %v, want now (%v): it is a use", s.name, after.LastUsed, clk.Now())
			}
		} else if !after.LastUsed.Equal(before.LastUsed) {
			t.Errorf("%s: LastUsed changed %v → %v, but it is not a use", s.name, before.LastUsed, after.LastUsed)
		}
		if !after.Added.Equal(t0) {
			t.Errorf("%s: Added changed to %v", s.name, after.Added)
		}
	}
}

func TestRemove(t *testing.T) {
	t.Parallel()
	a, imgA := image(t, "t/a:1", 1)
	b, imgB := image(t, "t/b:1", 2)
	all := []string{"capy-ubuntu-25.04-gcc15", "capy-ubuntu-25.04-clang20-asan", "other-debian-13-base"}
	content := map[string][]byte{all[0]: a, all[1]: a, all[2]: b}

	tests := []struct {
		name    string
		remove  []string
		wantErr error
		left    []string
	}{
		{"one name", []string{all[0]}, nil, []string{all[1], all[2]}},
		{"two names", []string{all[0], all[2]}, nil, []string{all[1]}},
		{"every name", all, nil, nil},
		{"unknown name", []string{"nope-ubuntu-25.04-gcc15"}, errdefs.ErrNotFound, all},
		{"known and unknown", []string{all[0], "nope-ubuntu-25.04-gcc15", all[2]}, errdefs.ErrNotFound, all},
		{"two unknown", []string{"nope-a-b-c", "nope-a-b-d"}, errdefs.ErrNotFound, all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newCache(t)
			for _, n := range all {
				put(t, c, n, content[n])
			}
			manBefore := readFile(t, filepath.Join(c.Dir(), "manifest.json"))
			var ns []naming.Name
			for _, n := range tt.remove {
				ns = append(ns, mustName(t, n))
			}
			err := c.Remove(context.Background(), ns...)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if tt.wantErr != nil {
				t.Logf("error: %v", err)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Remove = %v, want %v", err, tt.wantErr)
				}
				if got := readFile(t, filepath.Join(c.Dir(), "manifest.json")); !bytes.Equal(got, manBefore) {
					t.Error("a failed Remove rewrote the manifest")
				}
			}
			if got := listNames(t, c); !slices.Equal(got, sortedCopy(tt.left)) {
				t.Errorf("names left = %v, want %v", got, sortedCopy(tt.left))
			}
			for _, n := range all {
				if slices.Contains(tt.left, n) {
					assertLink(t, c, n, sha(content[n]))
				} else if exists(t, linkPath(c, n)) {
					t.Errorf("link of removed %s still there", n)
				}
			}
			// Blobs stay until gc.
			if !hasBlob(t, c, imgA.Digest) || !hasBlob(t, c, imgB.Digest) {
				t.Error("Remove deleted a blob; only gc may")
			}
			rep := gc(t, c, cache.GCOptions{})
			for _, img := range []testimage.Result{imgA, imgB} {
				named := false
				for _, n := range tt.left {
					named = named || sha(content[n]) == img.Digest
				}
				if hasBlob(t, c, img.Digest) != named {
					t.Errorf("after gc: blob %s present=%v, named=%v (victims %s)", img.Digest, !named, named, toJSON(rep.Victims))
				}
			}
			if !verify(t, c, false).OK() {
				t.Error("verify after remove + gc is not OK")
			}
		})
	}
}

func sortedCopy[S ~[]E, E cmp.Ordered](s S) S {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
