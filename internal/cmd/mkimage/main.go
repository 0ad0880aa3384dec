// Command mkimage writes a small, valid docker-archive image tarball
// (internal/testimage), so the demo and benchmarks need no registry.
//
//	go run ./internal/cmd/mkimage -o demo.tar -tag demo/hello:1
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/imgcache/imgcache/internal/testimage"
)

func main() {
	out := flag.String("o", "image.tar", "output file")
	tag := flag.String("tag", "imgcache-demo/hello:latest", "repo tag recorded in the archive")
	layers := flag.Int("layers", 2, "number of layers")
	files := flag.Int("files", 3, "files per layer")
	size := flag.Int("size", 1024, "bytes per file")
	seed := flag.Int64("seed", time.Now().UnixNano(), "content seed (a new seed makes a new image)")
	flag.Parse()
	res, err := testimage.WriteFile(*out, testimage.Options{
		Tag: *tag, Seed: *seed, Layers: *layers, FilesPerLayer: *files, FileSize: *size, Compressible: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "mkimage: wrote %s (%d bytes), image %s, tar %s\n", *out, res.Size, res.ImageID, res.Digest)
}
