// Package cache is imgcache's orchestrator: it ties the blob store (cas), the
// manifest, names, archive metadata and the Docker bridge into the operations
// users run — Put, Save, Get, Export, List, Remove, Pin, Verify, GC, Stats,
// and for derived images Build, Resolve, Outdated, Rebuild and GetOrBuild
// (the policy itself lives in builder/).
//
// It reaches its collaborators through interfaces it owns: Engine (the
// container engine; dockerbridge.Bridge in production, a fake in the unit
// tests) and Blobs (BlobProvider, BlobIngester, BlobLocker, BlobManager; the
// cas.Store through CASBlobs, held to the contract suite in blobtest).
//
// It owns <dir>/names/, the human-readable view of the manifest: one relative
// symlink per name, names/<project>/<name>.tar.zst → ../../blobs/sha256/<hex>.tar.zst.
// Links are derived from the manifest; Verify re-derives any that a crash left
// stale. Every change follows the same order: blob published (and held), then
// the manifest updated under its lock, then the link swapped atomically under
// that same lock. It also owns <dir>/recipes/ (how each derived name was
// built, kept beyond rm and gc), the build locks (whose paths cas gives:
// locks/build-<name>.lock) and <dir>/stats.json.
//
// cache holds no state between calls beyond configuration: everything lives
// in the directory, so many processes can share it.
//
// # Using it from Go
//
// An executor written in Go imports this package instead of running the
// imgcache binary: [Open] the host's cache directory once, then [Cache.Get]
// for each job (and [Cache.Hold] for a job longer than the min-age),
// [Cache.Put] or [Cache.Save] to store images, [Cache.GC] to reclaim space.
// The examples run against the real Docker daemon in CI. Names come from
// [naming.Parse]; errors wrap the sentinels of package errdefs
// (errors.Is(err, errdefs.ErrNotFound), ErrIntegrity, ...), which the CLI
// maps to its exit codes.
//
// # What is stable
//
// Stable within a major version, changed only by additions: [Open] and
// [Options]; the methods Put, Save, Get, Hold, Export, ExportFile, List,
// Inspect, Remove, SetPinned, GC, Verify, Stats, Build, Resolve, Outdated,
// Rebuild and GetOrBuild with their option and result types (new fields
// may appear); the errdefs sentinels; naming.Name and naming.Parse;
// lru.Limits. Not stable: the [Engine] and [Blobs] interfaces (they may
// gain methods: implement them only for tests), Migrate, and the layout
// fields of manifest.Entry (Skeleton, Pieces, Layers, Whole), which follow
// the on-disk schema. The directory itself is shared with the imgcache
// binary of the same version: never write into it except through this
// package.
package cache
