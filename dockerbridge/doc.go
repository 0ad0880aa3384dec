// Package dockerbridge owns every conversation with the Docker Engine: a
// client from the environment with API version negotiation, image inspect,
// tag, save, remove, and the verified load. Bridge implements cache.Engine.
//
// The verified load streams a blob's tar into the Engine's ImageLoad while a
// HoldBack reader keeps every byte from the archive's own manifest.json /
// index.json onwards until the stream's sha256 has matched. On a mismatch the
// request body fails with an error, so the HTTP connection aborts instead of
// ending cleanly, and the daemon never holds the archive's manifest: it cannot
// commit the load. Build runs the classic builder on a context tar made in Go,
// .dockerignore applied by the docker CLI's own matcher (moby/patternmatcher).
// It never runs the docker CLI and knows nothing of names.
package dockerbridge
