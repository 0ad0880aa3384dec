package dockerbridge

import (
	"context"
	"strings"
	"sync"

	"github.com/moby/moby/client"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
)

// Stores an engine can have, as Layers.Store names them.
const (
	StoreClassic    = "docker (classic image store)"
	StoreContainerd = "docker (containerd image store)"
	StorePodman     = "podman"
)

// Layers is what an engine holds of image layers, and whether it loads an
// archive that leaves out the layer files it holds.
type Layers struct {
	// Partial is true for Docker's classic (graphdriver) image store only:
	// its loader looks each layer up by chain ID before it opens the
	// layer's file (moby image/tarexport/load.go). Podman's docker-archive
	// reader and Docker's containerd store need every file.
	Partial bool
	// Store names the engine's image store (StoreClassic, …).
	Store string
	// Chains are the chain IDs of every layer of every image the engine
	// holds (set only when Partial).
	Chains map[digest.Digest]bool
	// Version is the engine's version ("20.10.24+dfsg1", "4.3.1").
	Version string
	// Zstd says whether the engine loads zstd-compressed layers: Docker 23
	// and newer (either image store), and Podman.
	Zstd bool
}

// Layers detects the image store, from the engine itself (never assumed),
// and, for the classic store, lists the chain IDs it holds: every image's
// RootFS layers.
func (b *Bridge) Layers(ctx context.Context) (Layers, error) {
	store, err := b.store(ctx)
	if err != nil {
		return Layers{}, err
	}
	b.mu.Lock()
	version := b.version
	b.mu.Unlock()
	l := Layers{Store: store, Partial: store == StoreClassic, Version: version}
	l.Zstd = store == StorePodman || majorAtLeast(version, 23)
	if !l.Partial {
		return l, nil
	}
	imgs, err := b.cli.ImageList(ctx, client.ImageListOptions{All: true})
	if err != nil {
		return Layers{}, b.wrap(err, "list images")
	}
	// One inspect per image: a host with hundreds of images would wait on
	// them in turn (~1 ms each here), so a few go at once.
	l.Chains = map[digest.Digest]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ids := make(chan string)
	for range min(inspectWorkers, len(imgs.Items)) {
		wg.Go(func() {
			for id := range ids {
				chains := b.chainsOf(ctx, id)
				mu.Lock()
				for _, c := range chains {
					l.Chains[c] = true
				}
				mu.Unlock()
			}
		})
	}
	for _, s := range imgs.Items {
		ids <- s.ID
	}
	close(ids)
	wg.Wait()
	return l, nil
}

// inspectWorkers bounds the image inspects Layers has in flight.
const inspectWorkers = 8

// chainsOf is the chain ID of each layer of image id, from its first up to
// its first unreadable diffID; none when the image is gone.
func (b *Bridge) chainsOf(ctx context.Context, id string) []digest.Digest {
	r, err := b.cli.ImageInspect(ctx, id)
	if err != nil {
		return nil // removed meanwhile: it holds nothing now
	}
	var diffIDs []digest.Digest
	for _, d := range r.RootFS.Layers {
		dd, err := digest.Parse(d)
		if err != nil {
			break // a chain is only as good as its first bad link
		}
		diffIDs = append(diffIDs, dd)
	}
	return identity.ChainIDs(diffIDs)
}

// store names the engine's image store, asked once.
func (b *Bridge) store(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.storeKind != "" {
		return b.storeKind, nil
	}
	v, err := b.cli.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return "", b.wrap(err, "docker version")
	}
	b.version = v.Version
	for _, c := range v.Components {
		if strings.Contains(strings.ToLower(c.Name), "podman") {
			b.storeKind = StorePodman
			return b.storeKind, nil
		}
	}
	res, err := b.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return "", b.wrap(err, "docker info")
	}
	b.storeKind = StoreClassic
	for _, kv := range res.Info.DriverStatus {
		if kv[0] == "driver-type" && strings.Contains(kv[1], "containerd.snapshotter") {
			b.storeKind = StoreContainerd
		}
	}
	return b.storeKind, nil
}

// majorAtLeast reports whether version ("23.0.1", "20.10.24+dfsg1") has a
// major number of at least major.
func majorAtLeast(version string, major int) bool {
	n := 0
	for _, c := range version {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n >= major
}
