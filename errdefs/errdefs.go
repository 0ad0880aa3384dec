package errdefs

import "errors"

var (
	// ErrNotFound: no such name, blob or image.
	ErrNotFound = errors.New("not found")
	// ErrIntegrity: stored content does not match its recorded digest.
	ErrIntegrity = errors.New("integrity failure")
	// ErrLocked: a lock could not be taken in time (or, for non-blocking takes, at all).
	ErrLocked = errors.New("locked")
	// ErrDaemon: the Docker daemon is unreachable or its API is unusable.
	ErrDaemon = errors.New("docker daemon unavailable")
	// ErrRejected: the Docker daemon refused the request (bad archive, wrong platform, conflict).
	ErrRejected = errors.New("rejected by docker daemon")
	// ErrNoSpace: the filesystem holding the cache is full.
	ErrNoSpace = errors.New("no space left")
	// ErrInvalid: bad input (a file that is no image archive, a bad flag value).
	ErrInvalid = errors.New("invalid input")
	// ErrCorrupt: cache metadata (manifest.json) cannot be read; `verify --repair` rebuilds it.
	ErrCorrupt = errors.New("cache metadata corrupt")
	// ErrNewerSchema: the cache was written by a newer imgcache; upgrading
	// imgcache is the fix, and nothing may overwrite it. Not an ErrCorrupt.
	ErrNewerSchema = errors.New("cache written by a newer imgcache")
	// ErrProblems: a check (verify) found problems that are not integrity
	// failures, or gc --strict missed a target.
	ErrProblems = errors.New("problems found")
	// ErrRemote: the remote registry (--remote) cannot be reached, or
	// failed (5xx, timeouts) after retries.
	ErrRemote = errors.New("remote registry unavailable")
	// ErrRemoteAuth: the remote registry refused the credentials (or has
	// none for this host): `docker login` it.
	ErrRemoteAuth = errors.New("remote registry refused the credentials")
	// ErrMoved: a push would replace a remote name that another host moved
	// since this one last saw it; pull it, or push --force.
	ErrMoved = errors.New("remote name moved")
)
