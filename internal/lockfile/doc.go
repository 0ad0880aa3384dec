// Package lockfile takes advisory flocks (github.com/gofrs/flock) on lock files
// that may be removed by a cleaner while others wait on them.
//
// A flock belongs to an open file. If a cleaner unlinks a lock file between
// another process opening it and locking it, that process would hold a lock
// nobody else can see. Acquire therefore checks, once it holds the lock, that
// the path still names the very file it locked, and retries otherwise. The
// cleaner (Remove) unlinks only while holding the lock exclusively.
package lockfile
