package cache_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/naming"
)

// TestUnknownNameSuggests: a name the cache does not hold is not found,
// with the nearest names it does hold suggested (get, rm, pin, verify).
func TestUnknownNameSuggests(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t)
	data, _ := image(t, "t/x:1", 1)
	put(t, c, "capy-ubuntu-25.04-gcc15", data)
	put(t, c, "capy-debian-12-a", data)
	ctx := context.Background()
	const hint = `did you mean capy-ubuntu-25.04-gcc15?`
	_, getErr := c.Get(ctx, mustName(t, "capy-ubuntu-25.04-gcc16"))
	_, verifyErr := c.Verify(ctx, nameList(t, "capy-ubuntu-25.04-gcc16"), false)
	for what, err := range map[string]error{
		"get":    getErr,
		"rm":     c.Remove(ctx, mustName(t, "capy-ubuntu-25.04-gcc16")),
		"pin":    c.SetPinned(ctx, mustName(t, "capy-ubuntu-25.04-gcc16"), true),
		"verify": verifyErr,
	} {
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), hint) {
			t.Errorf("%s of a near miss: %v, want ErrNotFound saying %q", what, err, hint)
		}
	}
	if _, err := c.Inspect(ctx, mustName(t, "other-fedora-41-rust")); !errors.Is(err, errdefs.ErrNotFound) || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("a name like none: %v", err)
	}
}

// TestExportOfDamagedBlob: export finds a damaged blob, quarantines it as
// get and verify do, and says what its output holds: with a path, that
// nothing was written there (and nothing is); to a stream, that the bytes
// it got are unverified. Before, export left the blob in place and said
// "the output is incomplete" even when no output file was written.
func TestExportOfDamagedBlob(t *testing.T) {
	t.Parallel()
	data, _ := image(t, "t/x:1", 5)
	for _, toFile := range []bool{true, false} {
		c, _ := newCache(t)
		d := put(t, c, "capy-ubuntu-25.04-gcc15", data).Entry.Digest
		flipByte(t, blobPath(c, d))
		ctx := context.Background()
		out := filepath.Join(t.TempDir(), "out.tar")
		var err error
		var want string
		if toFile {
			_, err = c.ExportFile(ctx, mustName(t, "capy-ubuntu-25.04-gcc15"), out, false)
			want = "nothing was written to " + out
			if _, serr := os.Lstat(out); serr == nil {
				t.Errorf("export -o of a damaged blob left %s", out)
			}
		} else {
			_, err = c.Export(ctx, mustName(t, "capy-ubuntu-25.04-gcc15"), &bytes.Buffer{})
			want = "unverified: discard them"
		}
		if !errors.Is(err, errdefs.ErrIntegrity) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "nothing was loaded") {
			t.Errorf("export (file %v): %v, want ErrIntegrity saying %q", toFile, err, want)
		}
		if exists(t, blobPath(c, d)) || len(dirNames(t, filepath.Join(c.Dir(), "quarantine"))) != 1 {
			t.Errorf("export (file %v): the damaged blob was not quarantined", toFile)
		}
		if _, err := c.Export(ctx, mustName(t, "capy-ubuntu-25.04-gcc15"), &bytes.Buffer{}); !errors.Is(err, errdefs.ErrIntegrity) || !strings.Contains(err.Error(), "in quarantine") {
			t.Errorf("export after an export found it damaged: %v", err)
		}
	}
}

func nameList(t *testing.T, names ...string) []naming.Name {
	t.Helper()
	var out []naming.Name
	for _, n := range names {
		out = append(out, mustName(t, n))
	}
	return out
}
