package fuzz

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/internal/testimage"
	"github.com/imgcache/imgcache/naming"
)

// FuzzPut feeds arbitrary bytes to cache.Put. Either the put succeeds, the
// digest is the sha256 of the input and Export gives the input back, or it
// fails and leaves no blob, no entry and no temp file behind.
func FuzzPut(f *testing.F) {
	for i, o := range []testimage.Options{{Seed: 1}, {Seed: 2, Format: "oci-archive"}, {Seed: 3, Layers: 1, FilesPerLayer: 1, FileSize: 10}} {
		b, _, err := testimage.Bytes(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(append(bytes.Clone(b[:len(b)-1024]), byte(i)))
	}
	f.Add([]byte{})
	f.Add([]byte("not a tar"))
	name := naming.MustParse("fuzz-linux-1-x")
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		c, err := cache.Open(dir, cache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		res, err := c.Put(ctx, name, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			blobs, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
			tmp, _ := os.ReadDir(filepath.Join(dir, "tmp"))
			entries, lerr := c.List(ctx)
			if len(blobs) != 0 || len(tmp) != 0 || lerr != nil || len(entries) != 0 {
				t.Fatalf("failed put (%v) left blobs=%d tmp=%d entries=%d (%v)", err, len(blobs), len(tmp), len(entries), lerr)
			}
			return
		}
		sum := sha256.Sum256(data)
		if got, want := res.Entry.Digest.Encoded(), hex.EncodeToString(sum[:]); got != want {
			t.Fatalf("digest %s, sha256 %s", got, want)
		}
		var out bytes.Buffer
		if _, err := c.Export(ctx, name, &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatal("export differs from the input")
		}
	})
}
