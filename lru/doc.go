// Package lru owns the eviction decision of imgcache: given every cache name
// (with its last use and pin), every blob on disk (with its stored size and
// whether another process holds it), the free space of the filesystem, the
// current time and the gc limits, [Compute] says which names to drop and which
// blobs to delete, in which order, and why. It is the whole of the policy; the
// caller (package cache) only carries the plan out.
//
// # Policy
//
// [Compute] applies four steps in order:
//
//  1. Orphans. Every blob that no name points at is deleted
//     ([ReasonOrphan]), whatever the limits, unless it is in use.
//  2. Max age. Names unused for longer than [Limits.MaxAge] are dropped
//     ([ReasonMaxAge]); pinned names never are. A blob is deleted only when
//     all its names are dropped and it is not in use. When it is in use its
//     names still drop but the blob stays: it is then an orphan, which the
//     next gc reclaims once nobody holds it. Dropping the names at once is
//     safe (the process holding the blob already has it open) and keeps
//     max-age a statement about names, independent of who reads what.
//     A held name ([Entry.HeldUntil] after Now) does not expire.
//  3. Size and free space. The names left are grouped by blob; a blob's
//     recency is the latest use of its remaining names. Blobs with a pinned
//     name or in use are never evicted, nor blobs with a protected name:
//     one used within [Limits.MinAge] or held ([Entry.HeldUntil]), so that a
//     job's image is not taken between its get and its docker run (kubelet's
//     minimum image age); such names are listed in [Plan.Protected]. The others are evicted whole (all
//     their names at once), least recently used first, ties broken by blob
//     key, until the stored total is at most [Limits.MaxSize] and, when the
//     free space was below [Limits.MinFree] at the start, until free space
//     plus the bytes freed reaches [Limits.TargetFree] (or MinFree). When the
//     free space is at or above MinFree, that limit does nothing
//     (kubelet-style hysteresis: gc after every job stays cheap). A victim's
//     reason is [ReasonMaxSize] when the max-size limit was still unmet when
//     it was chosen, else [ReasonMinFree].
//  4. Shortfalls. A target still unmet once nothing evictable is left is
//     reported as a [Shortfall] with the exact bytes missing and what holds
//     the rest (pinned, in-use and protected blobs).
//
// # Parts
//
// A name may need blobs besides its head ([Entry.Parts]: the layers of a
// split entry, which entries built on one base share). A part is never an
// orphan while a head that keeps a name needs it; it is deleted, and
// credited, in the step that drops the last such head (unless it is in
// use: then it is an orphan for a later gc). In step 3 an entry with parts
// whose eviction would free none of them (every one is needed by another
// entry) is put off: evicting it would lose an image for its skeleton's
// few bytes. After each eviction the put-off are tried again, least
// recently used first, since that eviction may have left them the only
// users of a layer. Those still put off when a limit is left unmet are
// listed in [Plan.Shared] and counted in [Shortfall.Shared].
//
// Space is credited only when a blob is deleted: dropping a name of a shared
// blob frees nothing. Blobs that the policy would have deleted but could not,
// because they are pinned or in use, are listed in [Plan.Skipped]. Plans are
// deterministic: the same input in any slice order gives the same plan.
//
// # What it must never do
//
// This package does no I/O: no files, no statfs, no locks, no logging, no
// clock (the caller passes [State.Now]). It imports only the standard library
// and nothing of this module, in particular no cache, cas or manifest package:
// dependencies point at it, never from it. That keeps the decision testable
// exhaustively and lets `gc --dry-run` show exactly what gc would do.
package lru
