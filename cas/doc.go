// Package cas is imgcache's content-addressed blob store.
//
// It owns <dir>/blobs/sha256/<hex>.tar.zst (zstd of a tar whose uncompressed
// sha256 is <hex>), the per-blob lock files <dir>/locks/<hex>.lock, ingests in
// progress under <dir>/tmp/ and failed blobs under <dir>/quarantine/.
//
// Ingest is a transaction: bytes are hashed while they are compressed into a
// locked temp file, which is fsynced and renamed into place only when complete,
// then the directory is fsynced. No partial blob is ever visible. Every read
// (Open) re-hashes the decompressed stream and fails with errdefs.ErrIntegrity
// instead of reporting a clean end when the digest does not match.
//
// Ingest reads its input straight into 4 MiB frame buffers, hashes each read,
// and compresses the frames as independent zstd frames on all cores (their
// concatenation is one valid zstd stream). With cgo the frames are compressed
// by libzstd (github.com/DataDog/zstd), else by klauspost/compress; see
// Encoder. Writeback of the new file starts every 32 MiB, so the closing
// fsync waits only for the tail.
//
// cas knows nothing of names, manifests or Docker. It is the only package
// that joins paths under blobs/, locks/, tmp/ and quarantine/: BlobPath,
// RelPath (what links under names/ point at), Quarantined and KeyLockPath
// are exported for the cache, and each validates its digest or key first.
package cas
