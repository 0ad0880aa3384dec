// Package manifest owns <dir>/manifest.json, the integrity manifest that maps
// each cache name to its blob digest and metadata, and <dir>/lock, the flock
// that guards it.
//
// Reads take the lock shared; changes take it exclusively, write a temp file,
// fsync it, rename it over manifest.json and fsync the directory, so a crash
// leaves either the old or the new manifest, never a mix. The lock is held for
// milliseconds: callers never compress, hash or talk to Docker inside Update.
//
// The file carries a schema version. Decode refuses versions it does not know
// (a newer imgcache wrote it) instead of guessing. manifest knows nothing of
// blobs on disk or of Docker.
package manifest
