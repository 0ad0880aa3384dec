// Package naming owns the grammar of imgcache cache names and the
// normalization of user-typed Docker image references.
//
// A cache name is
//
//	name     = project "-" distro "-" version "-" variant
//	variant  = segment *( "-" segment )
//
// where every token (project, distro, version and each variant segment) is
// lowercase [a-z0-9] with '.' and '_' allowed inside a token: never as its
// first or last character and never two in a row. A whole name is at most
// [MaxLen] characters. For example "capy-ubuntu-25.04-gcc15" is project
// "capy", distro "ubuntu", version "25.04", variant "gcc15", and
// "capy-ubuntu-25.04-clang20-asan" has variant "clang20-asan".
//
// A [Name] that parsed is safe to use as a single file-name component (it
// never contains '/', '\\', "..", or NUL) and always yields a valid Docker
// repository ("imgcache/<name>", see [ImageRepo]).
//
// Image references typed by users are normalized the way Docker does it with
// github.com/distribution/reference (see [NormalizeImage]).
//
// This package is a leaf: it must never import other packages of this module
// and must never touch the disk, the network or the Docker daemon. It is pure
// string handling.
package naming
