// Package builder owns the decisions about derived images — images that
// `imgcache build` makes from a cached base with a Dockerfile — without doing
// any of the work:
//
//   - [Resolve]: for a wanted name and the names in the cache, the plan an
//     executor needs: the exact hit, if any, and the closest cached ancestor
//     to build from, with the rule that picked it (same project and OS with
//     the longest variant prefix, then <project>-<os>-base, then any
//     project's <os>-base).
//   - [Outdated]: which built entries are stale and why — their base's
//     digest changed, their base is itself stale (transitively), their base
//     is gone, or they were built longer ago than a maximum age.
//   - [Order]: the order in which to rebuild a set of names, bases first, as
//     levels; a cycle in the base relation is an error naming the cycle.
//   - [Queue]: an in-process build queue: at most N builds at once, first
//     come first served, never the same name twice at once (a second
//     request for a name that is queued or building waits for that build and
//     shares its result), reporting each request's position.
//
// Like lru, it does no I/O: no files, no Docker, no clock (callers pass the
// time), no logging. It imports only the standard library and naming, so
// package cache carries out what it decides and its rules are tested
// exhaustively in tables.
package builder
