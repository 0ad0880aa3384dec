package dockerbridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"

	ourerr "github.com/imgcache/imgcache/errdefs"
)

// BuildOptions describe one image build.
type BuildOptions struct {
	// Dockerfile is the Dockerfile's path inside the context tar
	// (see [ContextTar]); "" means "Dockerfile".
	Dockerfile string
	// Tags to give the result, e.g. a temporary build tag.
	Tags []string
	// BuildArgs are passed as --build-arg; a nil value passes the name
	// without a value (taken from the daemon's environment).
	BuildArgs map[string]*string
	// Labels are set on the result.
	Labels map[string]string
	// NoCache builds every step afresh instead of reusing the daemon's
	// layer cache.
	NoCache bool
}

// Build builds an image with the classic builder (Engine API /build, which
// Docker 20.10 / API 1.41 serves without BuildKit): contextTar is the build
// context as a tar stream. The builder's output ("Step 1/3 : …") is copied
// to progress as it arrives (nil: discarded). Intermediate containers are
// always removed; the base is never pulled (it must be in the daemon).
//
// It returns the new image's ID ("sha256:…"). A failing build returns an
// error wrapping errdefs.ErrRejected that names the failing step, e.g.
// `build failed at step "Step 3/3 : COPY missing.txt /": COPY failed: …`.
// An unreachable daemon wraps errdefs.ErrDaemon. When reading contextTar
// fails, that error is returned.
func (b *Bridge) Build(ctx context.Context, contextTar io.Reader, opts BuildOptions, progress io.Writer) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if progress == nil {
		progress = io.Discard
	}
	var bodyErr error
	resp, err := b.cli.ImageBuild(ctx, &errTrap{r: contextTar, err: &bodyErr}, client.ImageBuildOptions{
		Tags:        opts.Tags,
		Dockerfile:  opts.Dockerfile,
		BuildArgs:   opts.BuildArgs,
		Labels:      opts.Labels,
		NoCache:     opts.NoCache,
		Remove:      true,
		ForceRemove: true,
		PullParent:  false,
		Version:     build.BuilderV1,
	})
	if bodyErr != nil {
		if err == nil {
			resp.Body.Close()
		}
		return "", fmt.Errorf("build context: %w", bodyErr)
	}
	if err != nil {
		return "", b.wrapBuild(err)
	}
	defer resp.Body.Close()
	id, err := decodeBuild(resp.Body, progress)
	if bodyErr != nil {
		return "", fmt.Errorf("build context: %w", bodyErr)
	}
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(id, "sha256:") {
		// No aux message (an old daemon): the ID from "Successfully built".
		img, err := b.Inspect(ctx, id)
		if err != nil {
			return "", fmt.Errorf("build: the daemon reported image %s: %w", id, err)
		}
		id = img.ID
	}
	return id, nil
}

// wrapBuild classifies an error of the /build request itself: the daemon
// answered but refused (a Dockerfile it cannot find or parse, a bad
// option) is ErrRejected.
func (b *Bridge) wrapBuild(err error) error {
	if client.IsErrConnectionFailed(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return b.wrap(err, "build")
	}
	return fmt.Errorf("build: %w: %w", ourerr.ErrRejected, err)
}

// decodeBuild reads the builder's message stream: stream text goes to
// progress, the last "Step N/M : …" line (Podman: "STEP N/M: …") is
// remembered for the error, the
// image ID comes from the aux message {"ID": "sha256:…"} (or, failing that,
// the short ID of "Successfully built <id>").
func decodeBuild(r io.Reader, progress io.Writer) (string, error) {
	dec := json.NewDecoder(r)
	var id, step string
	var line []byte // the current, unfinished line of stream text
	scan := func(text string) {
		for len(text) > 0 {
			i := strings.IndexByte(text, '\n')
			if i < 0 {
				line = append(line, text...)
				return
			}
			line = append(line, text[:i]...)
			text = text[i+1:]
			l := strings.TrimSpace(string(line))
			line = line[:0]
			switch {
			case len(l) > 5 && strings.EqualFold(l[:5], "step "): // Docker "Step 3/5 : …", Podman "STEP 3/5: …"
				step = l
			case strings.HasPrefix(l, "Successfully built ") && id == "":
				id = strings.TrimPrefix(l, "Successfully built ")
			}
		}
	}
	for {
		var m message
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return "", fmt.Errorf("build: reading the daemon's reply: %w", err)
		}
		if m.Stream != "" {
			io.WriteString(progress, m.Stream)
			scan(m.Stream)
		}
		if m.Status != "" {
			s := m.Status
			if m.ID != "" {
				s = m.ID + ": " + s
			}
			fmt.Fprintln(progress, s)
		}
		msg := m.ErrorMessage
		if m.Error != nil && m.Error.Message != "" {
			msg = m.Error.Message
		}
		if msg != "" {
			scan("\n") // a step line still being written
			if step == "" {
				return "", fmt.Errorf("build failed: %w: %s", ourerr.ErrRejected, msg)
			}
			return "", fmt.Errorf("build failed at step %q: %w: %s", step, ourerr.ErrRejected, msg)
		}
		if m.Aux != nil && len(*m.Aux) > 0 && !bytes.Equal(*m.Aux, []byte("null")) {
			var aux struct {
				ID string `json:"ID"`
			}
			if json.Unmarshal(*m.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
		}
	}
	scan("\n")
	if id == "" {
		return "", fmt.Errorf("build: %w: the daemon's reply named no image", ourerr.ErrRejected)
	}
	return id, nil
}
