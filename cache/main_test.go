package cache_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/imgcache/imgcache/internal/testimage"
)

// e2eSwitch runs the package's examples, which talk to the real Docker
// daemon (the unit tests use the fake engine and need none); scripts/test.sh
// sets it, and with CI set its absence is a failure, as for the e2e suite.
const e2eSwitch = "IMGCACHE_E2E"

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(e2eSwitch) == "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "cache: CI=%s but %s is not set: the examples against the Docker daemon would be skipped (scripts/test.sh sets it)\n", os.Getenv("CI"), e2eSwitch)
			os.Exit(1)
		}
		if f := flag.Lookup("test.skip"); f != nil && f.Value.String() == "" {
			flag.Set("test.skip", "^Example")
			fmt.Fprintf(os.Stderr, "cache: examples skipped: set %s=1 to run them against the Docker daemon\n", e2eSwitch)
		}
	}
	code := m.Run()
	removeExampleImages()
	os.Exit(code)
}

var (
	exampleMu     sync.Mutex
	exampleImages []string // image IDs the examples may have loaded
	exampleSeed   = time.Now().UnixNano()
)

// exampleTar writes a small image archive, as `docker save` writes one,
// unique to this run (so every example starts cold) and tagged with
// nothing of its own (so removing imgcache's tags removes it); its image
// is removed from the daemon when the package's tests end.
func exampleTar(dir string) string {
	exampleMu.Lock()
	exampleSeed++
	seed := exampleSeed
	exampleMu.Unlock()
	p := filepath.Join(dir, fmt.Sprintf("image-%d.tar", seed))
	res, err := testimage.WriteFile(p, testimage.Options{Seed: seed})
	if err != nil {
		panic(err)
	}
	exampleMu.Lock()
	exampleImages = append(exampleImages, res.ImageID.String())
	exampleMu.Unlock()
	return p
}

func removeExampleImages() {
	exampleMu.Lock()
	defer exampleMu.Unlock()
	if len(exampleImages) == 0 {
		return
	}
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, id := range exampleImages {
		cli.ImageRemove(ctx, id, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	}
}
