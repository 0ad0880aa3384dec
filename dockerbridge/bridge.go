package dockerbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/versions"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	ourerr "github.com/imgcache/imgcache/errdefs"
)

// MinAPIVersion is the oldest Engine API imgcache works with (Docker 20.10).
const MinAPIVersion = "1.41"

// Bridge is a connection to one Docker daemon.
// A Bridge is safe for concurrent use (rebuild runs builds in parallel).
type Bridge struct {
	cli  *client.Client
	host string
	api  string

	mu        sync.Mutex // guards os, arch and storeKind, asked once
	os        string
	arch      string
	storeKind string
	version   string // the engine's, learnt with storeKind
}

// untraced turns off the client's OpenTelemetry instrumentation, which
// imgcache does not export anywhere: it wraps every request body in a reader
// without WriteTo, so that a load's body went out in 32 KiB chunks of the
// chunked encoding, three system calls each, whatever errTrap offers.
var untraced = client.WithTraceOptions(otelhttp.WithFilter(func(*http.Request) bool { return false }))

// Connect makes a client from the environment (DOCKER_HOST, DOCKER_CERT_PATH,
// …), negotiates the API version and checks that the daemon answers. The
// error wraps errdefs.ErrDaemon and says how to fix it.
func Connect(ctx context.Context) (*Bridge, error) {
	cli, err := client.New(client.FromEnv, untraced)
	if err != nil {
		return nil, fmt.Errorf("%w: %w (check DOCKER_HOST)", ourerr.ErrDaemon, err)
	}
	b := &Bridge{cli: cli, host: cli.DaemonHost()}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// One round trip: the ping negotiates the API version.
	p, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true})
	if err != nil {
		cli.Close()
		if p.APIVersion != "" && versions.LessThan(p.APIVersion, MinAPIVersion) {
			return nil, fmt.Errorf("%w: the Docker daemon at %s speaks API %q; imgcache needs API %s (Docker 20.10) or newer: upgrade Docker", ourerr.ErrDaemon, b.host, p.APIVersion, MinAPIVersion)
		}
		return nil, fmt.Errorf("%w: %s (%s)", ourerr.ErrDaemon, daemonCause(err, b.host), startHint)
	}
	b.api = cli.ClientVersion()
	if p.APIVersion == "" || versions.LessThan(p.APIVersion, MinAPIVersion) {
		cli.Close()
		return nil, fmt.Errorf("%w: the Docker daemon at %s speaks API %q; imgcache needs API %s (Docker 20.10) or newer: upgrade Docker", ourerr.ErrDaemon, b.host, p.APIVersion, MinAPIVersion)
	}
	return b, nil
}

// Close releases the client.
func (b *Bridge) Close() error { return b.cli.Close() }

// APIVersion is the negotiated API version.
func (b *Bridge) APIVersion() string { return b.api }

// Platform is the daemon's OS and architecture in Go/OCI terms ("linux",
// "amd64"), asked on first use (the warm path never needs it).
func (b *Bridge) Platform(ctx context.Context) (os, arch string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.arch == "" {
		v, err := b.cli.ServerVersion(ctx, client.ServerVersionOptions{})
		if err != nil {
			return "", "", b.wrap(err, "docker version")
		}
		b.os, b.arch = v.Os, v.Arch
	}
	return b.os, b.arch, nil
}

// Image is what the daemon reports about one image.
type Image struct {
	ID       string
	RepoTags []string
	OS       string
	Arch     string
	Size     int64
	// Layers are the image's diff IDs (RootFS.Layers), bottom first.
	Layers []string
}

// Inspect returns the image id or reference, or an error wrapping
// errdefs.ErrNotFound.
func (b *Bridge) Inspect(ctx context.Context, ref string) (Image, error) {
	r, err := b.cli.ImageInspect(ctx, ref)
	if err != nil {
		return Image{}, b.wrap(err, "inspect image "+ref)
	}
	return Image{ID: r.ID, RepoTags: r.RepoTags, OS: r.Os, Arch: r.Architecture, Size: r.Size, Layers: r.RootFS.Layers}, nil
}

// Has reports whether the daemon holds the image.
func (b *Bridge) Has(ctx context.Context, id string) (bool, error) {
	_, err := b.Inspect(ctx, id)
	if errors.Is(err, ourerr.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Tag tags the image id as ref.
func (b *Bridge) Tag(ctx context.Context, id, ref string) error {
	_, err := b.cli.ImageTag(ctx, client.ImageTagOptions{Source: id, Target: ref})
	return b.wrap(err, "tag "+id+" as "+ref)
}

// Load streams a docker-archive or OCI tar into the daemon. body should be a
// HoldBack over a verifying reader: when body fails, the request is aborted
// and the daemon does not commit the load. Progress messages are drained;
// an error message from the daemon is returned wrapping errdefs.ErrRejected.
func (b *Bridge) Load(ctx context.Context, body io.Reader) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bodyErr error
	resp, err := b.cli.ImageLoad(ctx, &errTrap{r: body, err: &bodyErr}, client.ImageLoadWithQuiet(true))
	if bodyErr != nil {
		if err == nil && resp != nil {
			resp.Close()
		}
		return nil, bodyErr
	}
	if err != nil {
		if cerrdefs.IsInternal(err) || cerrdefs.IsUnknown(err) {
			// The whole verified body went out and the engine answered
			// with an error: it refused the image. (Podman answers 500
			// where Docker answers 400 for an archive it cannot read.)
			return nil, fmt.Errorf("load image: %w: %w", ourerr.ErrRejected, err)
		}
		return nil, b.wrap(err, "load image")
	}
	defer resp.Close()
	loaded, err := drainMessages(resp)
	if err != nil {
		if bodyErr != nil {
			return nil, bodyErr
		}
		return nil, fmt.Errorf("%w: docker load: %w", ourerr.ErrRejected, err)
	}
	if bodyErr != nil {
		return nil, bodyErr
	}
	return loaded, nil
}

// errTrap remembers the first error the body returned, so that the cause of
// an aborted request (an integrity failure) is reported rather than the
// transport's view of it.
type errTrap struct {
	r   io.Reader
	err *error
}

func (e *errTrap) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && *e.err == nil {
		*e.err = err
	}
	return n, err
}

// bodyWrite is the size of the writes WriteTo hands the transport.
const bodyWrite = 1 << 20

// WriteTo hands the body to the transport in writes of up to 1 MiB. Without
// it net/http copies through a 32 KiB buffer, and each 32 KiB becomes a chunk
// of the request's chunked encoding: three system calls and a wakeup of the
// daemon's reader (75,000 chunks for a 2.4 GB image). A failed read is
// returned without writing what came with it.
func (e *errTrap) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, bodyWrite)
	var written int64
	for {
		n, err := 0, error(nil)
		for n < len(buf) && err == nil {
			var k int
			k, err = e.Read(buf[n:])
			n += k
		}
		if err != nil && err != io.EOF {
			return written, err
		}
		if n > 0 {
			k, werr := w.Write(buf[:n])
			written += int64(k)
			if werr != nil {
				return written, werr
			}
		}
		if err == io.EOF {
			return written, nil
		}
	}
}

// drainMessages reads a load's reply to its end and returns the images it
// names ("Loaded image: REF", "Loaded image ID: ID": what Docker, with
// either image store, and Podman print), or the daemon's error.
func drainMessages(r io.Reader) ([]string, error) {
	dec := json.NewDecoder(r)
	var loaded []string
	for {
		var m message
		if err := dec.Decode(&m); err == io.EOF {
			return loaded, nil
		} else if err != nil {
			return nil, fmt.Errorf("reading the daemon's reply: %w", err)
		}
		if m.Error != nil && m.Error.Message != "" {
			return nil, errors.New(m.Error.Message)
		}
		if m.ErrorMessage != "" {
			return nil, errors.New(m.ErrorMessage)
		}
		for _, line := range strings.Split(m.Stream, "\n") {
			if id, ok := strings.CutPrefix(line, "Loaded image ID: "); ok {
				loaded = append(loaded, strings.TrimSpace(id))
			} else if ref, ok := strings.CutPrefix(line, "Loaded image: "); ok {
				loaded = append(loaded, strings.TrimSpace(ref))
			}
		}
	}
}

// message is one line of the Engine API's JSON message stream (load,
// build): what jsonmessage decoded, with the "error" field older daemons
// send alone.
type message struct {
	Stream string `json:"stream"`
	Status string `json:"status"`
	ID     string `json:"id"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
	ErrorMessage string           `json:"error"`
	Aux          *json.RawMessage `json:"aux"`
}

// Save streams the image ref out of the daemon as a tar.
func (b *Bridge) Save(ctx context.Context, ref string) (io.ReadCloser, error) {
	rc, err := b.cli.ImageSave(ctx, []string{ref})
	if err != nil {
		return nil, b.wrap(err, "save image "+ref)
	}
	return rc, nil
}

// Remove untags or deletes ref without force: an image a container uses is a
// conflict (errdefs.ErrRejected), never removed.
func (b *Bridge) Remove(ctx context.Context, ref string) error {
	_, err := b.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true})
	return b.wrap(err, "remove image "+ref)
}

// wrap maps Engine errors to imgcache's categories.
func (b *Bridge) wrap(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", what, ourerr.ErrNotFound, err)
	case cerrdefs.IsConflict(err), cerrdefs.IsInvalidArgument(err), cerrdefs.IsPermissionDenied(err):
		return fmt.Errorf("%s: %w: %w", what, ourerr.ErrRejected, err)
	case client.IsErrConnectionFailed(err), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w: %s (%s)", what, ourerr.ErrDaemon, daemonCause(err, b.host), startHint)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// startHint says how to get a daemon, for users of an installed binary.
const startHint = "start the Docker daemon (e.g. systemctl start docker), or point DOCKER_HOST at one"

// daemonCause says once that the daemon at host cannot be reached, and why:
// the client's own message already names the host ("Cannot connect to the
// Docker daemon at …"), so it is used as is when it does.
func daemonCause(err error, host string) string {
	if strings.Contains(err.Error(), host) {
		return err.Error()
	}
	return fmt.Sprintf("cannot reach the Docker daemon at %s: %v", host, err)
}

// ImageSummary is one image the engine holds, as its image list says.
type ImageSummary struct {
	ID       string
	RepoTags []string
	Size     int64 // bytes of all its layers (shared ones included)
}

// Images lists the engine's tagged images (not intermediate ones).
func (b *Bridge) Images(ctx context.Context) ([]ImageSummary, error) {
	list, err := b.cli.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return nil, b.wrap(err, "list images")
	}
	out := make([]ImageSummary, 0, len(list.Items))
	for _, s := range list.Items {
		out = append(out, ImageSummary{ID: s.ID, RepoTags: s.RepoTags, Size: s.Size})
	}
	return out, nil
}

// DataRoot is the directory holding the daemon's images (docker info's
// DockerRootDir), when the daemon runs on this host: reached through a
// local socket. Otherwise the error wraps errdefs.ErrInvalid: its disk is
// not this host's to measure.
func (b *Bridge) DataRoot(ctx context.Context) (string, error) {
	if !strings.HasPrefix(b.host, "unix://") {
		return "", fmt.Errorf("%w: the Docker daemon is at %s, not on a local socket: its data root is not on this host, so its free space cannot be measured here (run imgcache on the daemon's host)", ourerr.ErrInvalid, b.host)
	}
	res, err := b.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return "", b.wrap(err, "docker info")
	}
	if res.Info.DockerRootDir == "" {
		return "", fmt.Errorf("%w: the engine at %s does not report its data root (docker info: DockerRootDir)", ourerr.ErrInvalid, b.host)
	}
	return res.Info.DockerRootDir, nil
}
