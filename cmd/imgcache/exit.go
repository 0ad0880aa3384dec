package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/naming"
)

// Exit codes: part of the contract, documented in the README.
const (
	exitOK        = 0
	exitFailure   = 1   // anything not listed below
	exitUsage     = 2   // bad flags, arguments, names or input files
	exitNotFound  = 3   // no such name, blob or image
	exitIntegrity = 4   // content does not match its digest; metadata corrupt
	exitDaemon    = 5   // Docker daemon unreachable or too old
	exitLocked    = 6   // a lock wait timed out (--lock-timeout) or was interrupted
	exitNoSpace   = 7   // the filesystem is full
	exitRejected  = 8   // the daemon refused the image (platform, bad archive, conflict)
	exitShort     = 9   // gc --strict could not reach its target; verify found problems
	exitNewer     = 10  // the cache (or a remote entry) was written by a newer imgcache
	exitRemote    = 11  // the remote registry is unreachable or failing (after retries)
	exitAuth      = 12  // the remote registry refused the credentials
	exitMoved     = 13  // push: another host moved the remote name (pull it, or push --force)
	exitCanceled  = 130 // interrupted (Ctrl-C, SIGTERM), as shells report SIGINT
)

// exitCode maps an error to its exit code. This is the only place that does.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled):
		return exitCanceled
	case errors.Is(err, errdefs.ErrNewerSchema):
		return exitNewer
	case errors.Is(err, errdefs.ErrRemoteAuth):
		return exitAuth
	case errors.Is(err, errdefs.ErrMoved):
		return exitMoved
	case errors.Is(err, errdefs.ErrIntegrity), errors.Is(err, errdefs.ErrCorrupt):
		return exitIntegrity
	case errors.Is(err, errdefs.ErrNoSpace):
		return exitNoSpace
	case errors.Is(err, errdefs.ErrLocked):
		return exitLocked
	case errors.Is(err, errdefs.ErrDaemon):
		return exitDaemon
	case errors.Is(err, errdefs.ErrRejected):
		return exitRejected
	case errors.Is(err, errdefs.ErrNotFound):
		return exitNotFound
	case errors.Is(err, errdefs.ErrRemote):
		return exitRemote
	case errors.Is(err, errdefs.ErrInvalid), errors.Is(err, naming.ErrInvalid), errors.Is(err, naming.ErrInvalidRef), errors.Is(err, errUsage):
		return exitUsage
	case errors.Is(err, errdefs.ErrProblems):
		return exitShort
	}
	return exitFailure
}

var (
	errUsage = errors.New("usage")
	// errShort: the report on stdout says what was missed; no message on stderr.
	errShort = fmt.Errorf("target not reached: %w", errdefs.ErrProblems)
)
