package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/naming"
)

// An executor opens the host's cache directory once and shares the *Cache
// between its goroutines; other processes may use the same directory at the
// same time. The Docker daemon is reached on first use (DOCKER_HOST, as the
// docker CLI does).
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "imgcache-example-") // a CI host's: /var/cache/imgcache
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	c, err := cache.Open(dir, cache.Options{LockTimeout: 5 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	entries, err := c.List(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(entries), "entries")
	// Output: 0 entries
}

// Put stores a `docker save` archive under a name; the entry's digest is
// the sha256 of the archive (what sha256sum prints), and putting the same
// bytes again stores nothing new.
func ExampleCache_Put() {
	dir, _ := os.MkdirTemp("", "imgcache-example-")
	defer os.RemoveAll(dir)
	c, err := cache.Open(dir, cache.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	name, err := naming.Parse("capy-ubuntu-25.04-gcc15")
	if err != nil {
		log.Fatal(err) // names are <project>-<os>-<variant>; the error says which part is wrong
	}
	f, err := os.Open(exampleTar(dir)) // docker save -o image.tar capy/gcc15
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	res, err := c.Put(ctx, name, f, -1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Entry.Name, res.Entry.Format, strings.HasPrefix(res.Entry.Digest.String(), "sha256:"))

	_, err = c.Inspect(ctx, naming.MustParse("capy-ubuntu-25.04-gcc14"))
	fmt.Println(errors.Is(err, errdefs.ErrNotFound))
	// Output:
	// capy-ubuntu-25.04-gcc15 docker-archive true
	// true
}

// Get is the job prologue: it makes sure the image is in the daemon, loaded
// from a verified stream the first time (cold), only tagged afterwards
// (warm), and returns the content-pinned ref to run. Hold keeps it from gc
// for a job longer than the min-age.
func ExampleCache_Get() {
	dir, _ := os.MkdirTemp("", "imgcache-example-")
	defer os.RemoveAll(dir)
	c, err := cache.Open(dir, cache.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	name := naming.MustParse("capy-ubuntu-25.04-gcc15")
	f, _ := os.Open(exampleTar(dir))
	defer f.Close()
	if _, err := c.Put(ctx, name, f, -1); err != nil {
		log.Fatal(err)
	}

	res, err := c.Get(ctx, name)
	if err != nil {
		log.Fatal(err) // errdefs.ErrIntegrity: the stored bytes were damaged; nothing was loaded
	}
	fmt.Println("cold:", res.Loaded, strings.HasPrefix(res.Ref, "imgcache/capy-ubuntu-25.04-gcc15:"))
	if err := c.Hold(ctx, name, res.Entry.Digest, time.Now().Add(2*time.Hour)); err != nil {
		log.Fatal(err)
	}

	again, err := c.Get(ctx, name)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("warm:", again.Loaded, again.Ref == res.Ref) // then: docker run --rm <ref> …
	// Output:
	// cold: true true
	// warm: false true
}

// GC reclaims space least recently used first. Entries used within
// MinAge (a job between its get and its docker run) are protected from
// every limit; what they keep over a limit is a shortfall. With Docker set,
// the evicted entries' images leave the daemon too.
func ExampleCache_GC() {
	dir, _ := os.MkdirTemp("", "imgcache-example-")
	defer os.RemoveAll(dir)
	c, err := cache.Open(dir, cache.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	name := naming.MustParse("capy-ubuntu-25.04-gcc15")
	f, _ := os.Open(exampleTar(dir))
	defer f.Close()
	if _, err := c.Put(ctx, name, f, -1); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Get(ctx, name); err != nil {
		log.Fatal(err)
	}

	rep, err := c.GC(ctx, cache.GCOptions{Limits: lru.Limits{MaxSize: 1, MinAge: 10 * time.Minute}, Docker: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("protected:", rep.Protected, "short:", rep.Short())

	rep, err = c.GC(ctx, cache.GCOptions{Limits: lru.Limits{MaxSize: 1}, Docker: true}) // MinAge 0: the operator's override
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("evicted:", rep.Victims[0].Names, "untagged:", len(rep.Docker))
	// Output:
	// protected: [capy-ubuntu-25.04-gcc15] short: true
	// evicted: [capy-ubuntu-25.04-gcc15] untagged: 2
}
