// Package testimage generates small, valid image archives for tests: a
// docker-archive (`docker save` layout, loadable by Docker 20.10's `docker
// load`) or an OCI image layout tarball with a docker-style manifest.json, as
// Docker 25 and later write. No registry, no docker CLI, no network.
//
// Output is a pure function of [Options]: equal options give byte-identical
// archives, and a different Seed changes every file's content, hence every
// layer diff ID and the image ID. Archives are streamed: a layer is generated
// twice (once to learn its digest and size, once into the archive) rather
// than held in memory, so large test images cost no memory.
//
// Test support only: production code must never import it.
package testimage
