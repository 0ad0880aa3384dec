package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/naming"
	"github.com/imgcache/imgcache/remote"
)

// remoteFlags configure the fleet tier (global).
type remoteFlags struct {
	Remote         string `help:"OCI registry repository shared by the fleet, e.g. 127.0.0.1:5000/ci/imgcache: a get that misses locally pulls from it; push, pull, ls --remote, rm --remote use it. Unset: nothing leaves this host." env:"IMGCACHE_REMOTE" placeholder:"REPO"`
	RemoteInsecure bool   `help:"Allow plain HTTP to a remote that is not on a loopback address (a loopback remote gets HTTPS when it answers a TLS handshake, else plain HTTP)." env:"IMGCACHE_REMOTE_INSECURE"`
	RemoteCA       string `help:"PEM file of CA certificates trusted for the remote, besides the system's." env:"IMGCACHE_REMOTE_CA" placeholder:"FILE" type:"existingfile"`
	RemoteTimeout  age    `help:"Longest wait for a connection or a response's headers from the remote; transient failures are retried with backoff." env:"IMGCACHE_REMOTE_TIMEOUT" default:"30s" placeholder:"DURATION"`
	RemoteRefresh  age    `help:"A get whose entry was last checked against the remote longer ago than this checks the remote's tag first (one request) and pulls the name if another host moved it; 0: only with get --refresh or pull." env:"IMGCACHE_REMOTE_REFRESH" default:"0" placeholder:"DURATION"`
	WriteBack      bool   `name:"push" help:"put, save and build push the entry to the remote after storing it (write-back); a failed push is a warning." env:"IMGCACHE_PUSH"`
	StrictRemote   bool   `help:"A failed write-back push fails the command (its exit code) after the local operation succeeded." env:"IMGCACHE_STRICT_REMOTE"`
}

// remoteOption is cache.Options.Remote for the flags, nil without --remote.
func (f remoteFlags) remoteOption(e *env) func(context.Context) (cache.Remote, error) {
	if f.Remote == "" {
		return nil
	}
	return func(context.Context) (cache.Remote, error) {
		r, err := remote.Open(remote.Options{
			Repo:      f.Remote,
			Insecure:  f.RemoteInsecure,
			CAFile:    f.RemoteCA,
			Timeout:   time.Duration(f.RemoteTimeout),
			UserAgent: "imgcache/" + version,
			Log:       e.log,
		})
		if err != nil {
			return nil, err
		}
		return r, nil
	}
}

// strictRemote is a write-back failure as the command's result with
// --strict-remote, else nil (the warning was logged).
func (e *env) strictRemote(err error) error {
	if err != nil && e.root.StrictRemote {
		return err
	}
	return nil
}

type pushCmd struct {
	Names []string `arg:"" optional:"" help:"Cache names to push; all entries when none is given." predictor:"name"`
	Force bool     `help:"Replace a remote name that another host moved since this one last saw it."`
	JSON  bool     `help:"Print one JSON object per pushed entry (an array)."`
}

func (c *pushCmd) Help() string {
	return "Uploads the blobs the registry lacks (found by content, whatever another host's compression), then the entry's manifest, tagged with its name and its digest.\n\nExample:\n  imgcache --remote 127.0.0.1:5000/ci/imgcache push capy-ubuntu-25.04-gcc15"
}

func (c *pushCmd) Run(e *env) error {
	ca, err := e.open()
	if err != nil {
		return err
	}
	if !ca.HasRemote() {
		return fmt.Errorf("push: %w", errNoRemoteFlag)
	}
	names, err := parseNames(c.Names)
	if err != nil {
		return err
	}
	if len(c.Names) == 0 {
		entries, err := ca.List(e.ctx)
		if err != nil {
			return err
		}
		for _, en := range entries {
			names = append(names, naming.MustParse(en.Name))
		}
		if len(names) == 0 && !c.JSON {
			fmt.Fprintln(e.stderr, "push: the cache holds no entries: nothing to push")
		}
	}
	out := []*cache.PushResult{} // [] in JSON, not null, when there is nothing
	var first error
	for _, n := range names {
		res, err := ca.Push(e.ctx, n, cache.PushOptions{Force: c.Force})
		if err != nil {
			if len(names) > 1 { // one name: the error says it all
				e.log.Error("push failed", "name", n.String(), "err", err)
			}
			if first == nil {
				first = err
			}
			if errors.Is(err, context.Canceled) {
				break
			}
			continue
		}
		out = append(out, res)
		if !c.JSON {
			state := fmt.Sprintf("pushed, %d of %d blobs uploaded (%s)", res.Uploaded, res.Blobs, units.BytesSize(float64(res.Bytes)))
			if res.UpToDate {
				state = "up to date"
			}
			fmt.Fprintf(e.stdout, "%s\t%s\t%s\n", n, res.Digest, state)
		}
	}
	if c.JSON {
		if err := printJSON(e.stdout, out); err != nil {
			return err
		}
	}
	return first
}

type pullCmd struct {
	Names []string `arg:"" help:"Cache names to fetch from the remote." predictor:"name"`
	JSON  bool     `help:"Print the entries as a JSON array."`
}

func (c *pullCmd) Help() string {
	return "Fetches the entry's manifest and only the blobs this cache lacks, verifies every digest while streaming, and publishes the entry as put does. A name the remote moved replaces the local one.\n\nExample:\n  imgcache --remote 127.0.0.1:5000/ci/imgcache pull capy-ubuntu-25.04-gcc15"
}

func (c *pullCmd) Run(e *env) error {
	names, err := parseNames(c.Names)
	if err != nil {
		return err
	}
	ca, err := e.open()
	if err != nil {
		return err
	}
	if !ca.HasRemote() {
		return fmt.Errorf("pull: %w", errNoRemoteFlag)
	}
	out := []any{}
	var first error
	for _, n := range names {
		res, err := ca.Pull(e.ctx, n)
		if err != nil {
			if len(names) > 1 {
				e.log.Error("pull failed", "name", n.String(), "err", err)
			}
			if first == nil {
				first = err
			}
			if errors.Is(err, context.Canceled) {
				break
			}
			continue
		}
		if c.JSON {
			out = append(out, map[string]any{"entry": entryJSON(res.Entry), "up_to_date": res.UpToDate, "fetched": res.Fetched, "bytes": res.Bytes, "remote": res.Remote})
			continue
		}
		state := fmt.Sprintf("pulled, %d blobs fetched (%s)", res.Fetched, units.BytesSize(float64(res.Bytes)))
		if res.UpToDate {
			state = "up to date"
		}
		fmt.Fprintf(e.stdout, "%s\t%s\t%s\n", n, res.Entry.Digest, state)
	}
	if c.JSON {
		if err := printJSON(e.stdout, out); err != nil {
			return err
		}
	}
	return first
}

var errNoRemoteFlag = fmt.Errorf("no remote configured: give --remote REPO (or IMGCACHE_REMOTE, or the config key remote), e.g. 127.0.0.1:5000/ci/imgcache: %w", errUsage)

// lsRemote is ls --remote.
func lsRemote(e *env, ca *cache.Cache, asJSON bool) error {
	if !ca.HasRemote() {
		return fmt.Errorf("ls --remote: %w", errNoRemoteFlag)
	}
	list, repo, err := ca.ListRemote(e.ctx)
	if err != nil {
		return err
	}
	if asJSON {
		if list == nil {
			list = []remote.Listed{}
		}
		return printJSON(e.stdout, list)
	}
	e.log.Info("remote", "repo", repo)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE\tSTORED")
	for _, l := range list {
		short := l.Digest.String()
		if l.Digest.Validate() == nil {
			short = l.Digest.Encoded()[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Name, short, units.BytesSize(float64(l.Size)), units.BytesSize(float64(l.Stored)))
	}
	return tw.Flush()
}

// remoteSwitch rewrites the switch form of --remote: `ls --remote` and
// `rm --remote NAME…` act on the remote, whose repository comes from
// --remote REPO (always with a '/'), IMGCACHE_REMOTE or the config. After
// ls or rm, a --remote that is not followed by a repository is that
// switch (--remote-list, --remote-names); everywhere else --remote takes
// its repository.
func remoteSwitch(args []string) []string {
	out := slices.Clone(args)
	sw := ""
	for i, a := range out {
		if a == "--" {
			break
		}
		switch {
		case sw == "" && a == "ls":
			sw = "--remote-list"
		case sw == "" && a == "rm":
			sw = "--remote-names"
		case sw != "" && a == "--remote" && (i+1 == len(out) || !strings.Contains(out[i+1], "/")):
			out[i] = sw
		}
	}
	return out
}
