package cas_test

import (
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/cache/blobtest"
	"github.com/imgcache/imgcache/cas"
)

// TestContract: cas.Store, with either encoder, keeps the blob-store
// contract that every backend behind cache.Blobs keeps.
func TestContract(t *testing.T) {
	for name, opts := range map[string][]cas.Option{
		"default encoder": nil,
		"pure-Go encoder": {cas.WithGoEncoder()},
	} {
		t.Run(name, func(t *testing.T) {
			var newStore func(t *testing.T) blobtest.Store
			newStore = func(t *testing.T) blobtest.Store {
				s, err := cas.Open(t.TempDir(), opts...)
				if err != nil {
					t.Fatal(err)
				}
				return blobtest.Store{Blobs: cache.CASBlobs(s), Fresh: newStore, Corrupt: func(t *testing.T, d digest.Digest) {
					// Valid zstd of other bytes: only the digest can tell.
					p, err := s.BlobPath(d)
					if err != nil {
						t.Fatal(err)
					}
					enc, _ := zstd.NewWriter(nil)
					os.Chmod(p, 0o644)
					if err := os.WriteFile(p, enc.EncodeAll([]byte("other content"), nil), 0o444); err != nil {
						t.Fatal(err)
					}
				}}
			}
			blobtest.Run(t, newStore)
		})
	}
}
