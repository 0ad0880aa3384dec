// Package manifest owns <dir>/manifest.json, the integrity manifest that maps
// each cache name to its blob digest and metadata; <dir>/lock, the flock
// that guards it; and <dir>/uses.log, the log of last uses.
//
// Reads take the lock shared; changes take it exclusively, write a temp file,
// fsync it, rename it over manifest.json and fsync the directory, so a crash
// leaves either the old or the new manifest, never a mix. The lock is held for
// milliseconds: callers never compress, hash or talk to Docker inside Update.
//
// The hot path stays cheap however many entries the cache holds: Lookup
// decodes only the entry asked for (the file is mapped, checked to be
// well-formed JSON, and walked to that entry), and Touch records a use by
// appending one line to uses.log under the shared lock instead of
// rewriting the manifest. Reads apply the log; writes fold it in and empty
// it (see uses.go).
//
// The file carries a schema version. Decode refuses versions it does not know
// (a newer imgcache wrote it) instead of guessing. manifest knows nothing of
// blobs on disk or of Docker.
package manifest
