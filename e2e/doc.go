// Package e2e holds the end-to-end tests: they build the real imgcache binary,
// run it as separate processes against one cache directory and a real Docker
// daemon, and check the daemon's state through the Engine API.
//
// The suite runs only when IMGCACHE_E2E is set (scripts/test.sh sets it);
// with CI=true, a run without it fails instead of skipping, and so does a
// missing daemon. scripts/dockerd.sh starts a daemon.
package e2e
