//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/internal/testimage"
	"github.com/imgcache/imgcache/manifest"
)

// gcBench builds a synthetic cache of n entries (small blobs written
// directly, one manifest write) and times the real binary's gc, ls and
// verify on it.
func gcBench(bin string, n int) error {
	dir := filepath.Join(*work, fmt.Sprintf("cache-gc-%d", n))
	os.RemoveAll(dir)
	for _, d := range []string{"blobs/sha256", "names", "tmp", "locks", "quarantine"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	m := manifest.New()
	base := time.Now().Add(-time.Duration(n) * time.Minute).UTC()
	var stored int64
	for i := range n {
		content := []byte(fmt.Sprintf("synthetic blob %d %s", i, make([]byte, 2048)))
		d := digest.FromBytes(content)
		blob := enc.EncodeAll(content, nil)
		if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()+".tar.zst"), blob, 0o444); err != nil {
			return err
		}
		stored += int64(len(blob))
		project := fmt.Sprintf("p%d", i%50)
		name := fmt.Sprintf("%s-linux-1-v%d", project, i)
		os.MkdirAll(filepath.Join(dir, "names", project), 0o755)
		os.Symlink(filepath.Join("..", "..", "blobs", "sha256", d.Encoded()+".tar.zst"), filepath.Join(dir, "names", project, name+".tar.zst"))
		t := base.Add(time.Duration(i) * time.Minute)
		m.Entries[name] = &manifest.Entry{Name: name, Digest: d, Size: int64(len(content)), StoredSize: int64(len(blob)),
			Format: "docker-archive", OS: "linux", Arch: "amd64", Added: t, LastUsed: t}
	}
	if err := manifest.Open(dir).Replace(context.Background(), m); err != nil {
		return err
	}
	log("synthetic cache: %d entries, %d bytes stored", n, stored)
	timeIt := func(label string, args ...string) (float64, error) {
		cmd := exec.Command(bin, append([]string{"--dir", dir, "-q"}, args...)...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start).Seconds()
		if err != nil {
			return 0, fmt.Errorf("%s: %v: %s", label, err, out)
		}
		fmt.Printf("%-40s %8.3fs\n", label, d)
		return d, nil
	}
	if os.Getenv("BENCH_KEEP") != "" {
		return nil
	}
	if _, err := timeIt(fmt.Sprintf("ls (%d entries)", n), "ls"); err != nil {
		return err
	}
	// The hot path among n entries: a small real image, loaded once, then
	// warm gets (inspect, no tag needed, record the use).
	img := filepath.Join(dir, "tmp", "warm.tar")
	if _, err := testimage.WriteFile(img, testimage.Options{Seed: time.Now().UnixNano(), Tag: "imgcache-bench/warm:1"}); err != nil {
		return err
	}
	if _, err := timeIt("put (small image)", "put", "bench-linux-1-warm", img); err != nil {
		return err
	}
	os.Remove(img)
	if _, err := timeIt("get (cold, small image)", "get", "bench-linux-1-warm"); err != nil {
		return err
	}
	for i := range 3 {
		if _, err := timeIt(fmt.Sprintf("get (warm) #%d", i+1), "get", "bench-linux-1-warm"); err != nil {
			return err
		}
	}
	if _, err := timeIt("gc, nothing to evict", "gc"); err != nil {
		return err
	}
	if _, err := timeIt("gc --dry-run --max-size half", "gc", "--dry-run", "--max-size", fmt.Sprint(stored/2)); err != nil {
		return err
	}
	if _, err := timeIt(fmt.Sprintf("gc --max-size half (evicts ~%d)", n/2), "gc", "--max-size", fmt.Sprint(stored/2)); err != nil {
		return err
	}
	if _, err := timeIt(fmt.Sprintf("verify (%d entries)", n/2), "verify"); err != nil {
		return err
	}
	if os.Getenv("BENCH_KEEP") != "" {
		return nil
	}
	return os.RemoveAll(dir)
}
