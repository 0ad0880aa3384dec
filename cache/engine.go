package cache

import (
	"context"
	"io"

	"github.com/imgcache/imgcache/dockerbridge"
)

// Engine is what the cache needs of a container engine's image API: the
// Docker daemon through dockerbridge in production, a fake in tests. All
// methods are safe for concurrent use (rebuild runs builds in parallel).
// Errors wrap the errdefs categories: ErrNotFound for a missing image,
// ErrRejected for a refusal, ErrDaemon for an unreachable engine.
type Engine interface {
	// Platform is the engine's OS and architecture ("linux", "amd64").
	Platform(ctx context.Context) (os, arch string, err error)
	// Inspect reports an image by ID or reference.
	Inspect(ctx context.Context, ref string) (dockerbridge.Image, error)
	// Tag gives the image id the reference ref.
	Tag(ctx context.Context, id, ref string) error
	// Layers says whether the engine loads an archive that leaves out the
	// layer files it holds (Docker's classic store), and which it holds.
	Layers(ctx context.Context) (dockerbridge.Layers, error)
	// Load streams an image archive in. When body fails, the engine must
	// not commit the load: that is how a digest mismatch stops it. It
	// returns the images the engine says it loaded (IDs or references, as
	// it names them; may be empty).
	Load(ctx context.Context, body io.Reader) ([]string, error)
	// Save streams an image out as a docker-archive tar.
	Save(ctx context.Context, ref string) (io.ReadCloser, error)
	// Build builds the context tar and returns the new image's ID.
	Build(ctx context.Context, contextTar io.Reader, opts dockerbridge.BuildOptions, progress io.Writer) (string, error)
	// Remove untags ref, or deletes the image it names, never forced.
	Remove(ctx context.Context, ref string) error
	// CanRun says whether the engine can run images for os/arch (its own
	// platform, or one it emulates), and if not, why.
	CanRun(ctx context.Context, os, arch string) (ok bool, why string, err error)
	// Images lists the engine's tagged images.
	Images(ctx context.Context) ([]dockerbridge.ImageSummary, error)
	// DataRoot is the directory of the engine's images on this host;
	// ErrInvalid when the engine is not local.
	DataRoot(ctx context.Context) (string, error)
	// Close releases the connection.
	Close() error
}

var _ Engine = (*dockerbridge.Bridge)(nil)

// ConnectDocker is the default Options.Engine: the Docker daemon the
// environment names (DOCKER_HOST, …), its API version negotiated.
func ConnectDocker(ctx context.Context) (Engine, error) {
	b, err := dockerbridge.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return b, nil
}
