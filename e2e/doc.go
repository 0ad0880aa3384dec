// Package e2e holds the end-to-end tests: they build the real imgcache binary,
// run it as separate processes against one cache directory and a real Docker
// daemon, and check the daemon's state through the Engine API.
//
// With CI=true a missing daemon fails the suite; elsewhere it skips it.
// scripts/dockerd.sh starts a daemon.
package e2e
