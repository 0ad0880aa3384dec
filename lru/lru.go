package lru

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	units "github.com/docker/go-units"
)

// Entry is one cache name.
type Entry struct {
	Name     string
	Blob     string    // key of the blob the name points at (a digest string): its head
	LastUsed time.Time // put, save, get, export, build count as uses
	Pinned   bool
	// HeldUntil keeps the name from eviction until then: a job said it
	// needs the image that long (get --hold). Zero: no hold.
	HeldUntil time.Time
	// Parts are further blobs the name needs besides its head (the layers
	// of a split entry), which other heads may share. A part is deleted
	// when no head that keeps a name needs it any more.
	Parts []string
}

// Blob is one stored blob.
type Blob struct {
	Key   string
	Size  int64 // stored (compressed) bytes on disk
	InUse bool  // another process holds it (read/load in progress): must not be deleted this round
}

// Limits are the gc limits. The zero value sets none: only orphans go.
type Limits struct {
	MinFree    int64         // evict only when Free < MinFree, then until Free >= TargetFree; 0 = no free-space limit
	TargetFree int64         // hysteresis target; 0 means MinFree; must be >= MinFree (else Validate errors)
	MaxSize    int64         // evict until the sum of stored blob sizes <= MaxSize; 0 = none
	MaxAge     time.Duration // drop names unused for longer than this; 0 = none
	// MinAge protects names used within it: no limit evicts them (a job
	// between its get and its docker run); 0 = none. At most MaxAge.
	MinAge time.Duration
}

// State is everything the policy looks at.
type State struct {
	Entries []Entry
	Blobs   []Blob    // every blob on disk, including ones no entry names (orphans)
	Free    int64     // bytes free on the filesystem (statfs); ignored when MinFree == 0
	Now     time.Time // the caller's clock; required when MaxAge is set
}

// Reason says which rule chose a victim.
type Reason string

// The reasons, as printed in gc reports.
const (
	ReasonOrphan  Reason = "unreferenced" // no name points at the blob
	ReasonMaxAge  Reason = "max-age"
	ReasonMaxSize Reason = "max-size"
	ReasonMinFree Reason = "min-free"
)

// Victim is one step of a plan: names to drop, a blob to delete, or both.
type Victim struct {
	// Names dropped by this step, sorted: all remaining names of the blob for
	// size/free evictions, the expired unpinned ones for max-age, none for
	// orphans.
	Names []string
	// Blob deleted by this step, "" when the blob survives (other names still
	// point at it, or it is in use).
	Blob string
	// Parts are the part blobs this step deletes: those no remaining
	// name needs once Names are dropped (and not in use).
	Parts []string
	// Freed is the bytes credited: the sizes of Blob (when not "") and
	// Parts.
	Freed int64
	// LastUsed is the latest use among Names (for a whole-blob eviction, the
	// blob's recency); zero for orphans.
	LastUsed time.Time
	Reason   Reason
}

// Limit names used in [Shortfall.Limit].
const (
	LimitMinFree = "min-free"
	LimitMaxSize = "max-size"
)

// Shortfall is a target the plan cannot reach.
type Shortfall struct {
	Limit   string `json:"limit"`   // LimitMinFree or LimitMaxSize
	Missing int64  `json:"missing"` // bytes still missing after the plan
	// What holds the rest: blobs kept because a name is pinned, blobs in
	// use, and (not expected) any others.
	Pinned Held `json:"pinned"`
	InUse  Held `json:"in_use"`
	// Recent is what names used within MinAge, or held, keep.
	Recent Held `json:"recent"`
	// Shared is what entries hold whose eviction would free none of their
	// parts (every one is needed by another entry too): evicting them
	// would lose an image and gain next to nothing.
	Shared Held `json:"shared"`
	Other  Held `json:"other"`
	// Outside is what would still be missing with every kept blob gone:
	// space used outside the cache (min-free only).
	Outside int64 `json:"outside"`
}

// Held is a count of blobs and their bytes.
type Held struct {
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
}

// Plan is the outcome of [Compute].
type Plan struct {
	Victims      []Victim // in the order to act on them
	Freed        int64    // sum of Victims' Freed
	StoredBefore int64    // sum of all blob sizes
	StoredAfter  int64    // StoredBefore - Freed
	FreeAfter    int64    // Free + Freed (only meaningful with MinFree)
	Shortfalls   []Shortfall
	Skipped      []string // blob keys that would have gone but are in use or pinned, for the report
	// Shared are the names kept because evicting them would free none of
	// their parts (see [Shortfall.Shared]), sorted.
	Shared []string
	// Protected are the names a limit would have evicted but that were
	// used within MinAge or are held, sorted.
	Protected []string
}

// Deleted reports the keys of the blobs the plan deletes, in plan order.
func (p Plan) Deleted() []string {
	var keys []string
	for _, v := range p.Victims {
		if v.Blob != "" {
			keys = append(keys, v.Blob)
		}
		keys = append(keys, v.Parts...)
	}
	return keys
}

// ErrInvalidLimits is wrapped by errors about [Limits] values.
var ErrInvalidLimits = errors.New("invalid gc limits")

// ErrInconsistentState is wrapped by errors about a [State] that cannot be
// true (a name pointing at a blob that is not there, duplicates...).
var ErrInconsistentState = errors.New("inconsistent cache state")

// Validate reports every bad value: negative limits, a TargetFree below
// MinFree, or a TargetFree without MinFree. The error wraps
// [ErrInvalidLimits].
func (l Limits) Validate() error {
	var probs []string
	neg := func(name string, v int64) {
		if v < 0 {
			probs = append(probs, fmt.Sprintf("%s must not be negative (got %d)", name, v))
		}
	}
	neg("min-free", l.MinFree)
	neg("target-free", l.TargetFree)
	neg("max-size", l.MaxSize)
	if l.MaxAge < 0 {
		probs = append(probs, fmt.Sprintf("max-age must not be negative (got %s)", l.MaxAge))
	}
	if l.MinAge < 0 {
		probs = append(probs, fmt.Sprintf("min-age must not be negative (got %s)", l.MinAge))
	}
	if l.MaxAge > 0 && l.MinAge > l.MaxAge {
		probs = append(probs, fmt.Sprintf("min-age (%s) must not exceed max-age (%s): an entry would expire while still protected (lower min-age or raise max-age)", l.MinAge, l.MaxAge))
	}
	if l.TargetFree > 0 && l.TargetFree < l.MinFree {
		probs = append(probs, fmt.Sprintf("target-free (%s) must be at least min-free (%s)",
			units.BytesSize(float64(l.TargetFree)), units.BytesSize(float64(l.MinFree))))
	}
	if l.TargetFree > 0 && l.MinFree == 0 {
		probs = append(probs, "target-free needs min-free: it is where eviction stops once free space fell below min-free")
	}
	if len(probs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidLimits, strings.Join(probs, "; "))
}

// target is the free space to reach once the min-free limit triggered.
func (l Limits) target() int64 {
	if l.TargetFree > 0 {
		return l.TargetFree
	}
	return l.MinFree
}

type blobInfo struct {
	Blob
	names   []*Entry // sorted by name
	parts   []string // union of the names' parts, sorted (heads)
	users   int      // heads with names that need this blob as a part
	deleted bool
	shared  bool      // kept: its eviction would free none of its parts (step 3)
	recent  bool      // kept: a remaining name is used within MinAge or held (step 3)
	pinned  bool      // some remaining name is pinned (set in step 3)
	recency time.Time // latest use among remaining names (set in step 3)
}

// latest is the later of a and t, treating a zero a as unset.
func latest(a, t time.Time) time.Time {
	if a.IsZero() || t.After(a) {
		return t
	}
	return a
}

// maxProblems caps how many state problems one error lists.
const maxProblems = 5

func index(s State, l Limits) (map[string]*blobInfo, error) {
	var probs []string
	blobs := make(map[string]*blobInfo, len(s.Blobs))
	for _, b := range s.Blobs {
		switch {
		case b.Key == "":
			probs = append(probs, "a blob has an empty key")
			continue
		case b.Size < 0:
			probs = append(probs, fmt.Sprintf("blob %s has a negative size (%d)", b.Key, b.Size))
		}
		if _, dup := blobs[b.Key]; dup {
			probs = append(probs, fmt.Sprintf("blob %s is listed twice", b.Key))
			continue
		}
		blobs[b.Key] = &blobInfo{Blob: b}
	}
	names := make(map[string]bool, len(s.Entries))
	for i := range s.Entries {
		e := &s.Entries[i]
		if e.Name == "" {
			probs = append(probs, fmt.Sprintf("a name with an empty name points at blob %q", e.Blob))
			continue
		}
		if names[e.Name] {
			probs = append(probs, fmt.Sprintf("name %s is listed twice", e.Name))
			continue
		}
		names[e.Name] = true
		b := blobs[e.Blob]
		if b == nil {
			probs = append(probs, fmt.Sprintf("name %s points at blob %q, which is not on disk", e.Name, e.Blob))
			continue
		}
		b.names = append(b.names, e)
		for _, p := range e.Parts {
			if blobs[p] == nil {
				probs = append(probs, fmt.Sprintf("name %s needs part %q, which is not on disk", e.Name, p))
			}
		}
	}
	if l.MinFree > 0 && s.Free < 0 {
		probs = append(probs, fmt.Sprintf("free space is negative (%d)", s.Free))
	}
	if l.MaxAge > 0 && s.Now.IsZero() {
		probs = append(probs, "max-age needs the current time, and Now is zero")
	}
	if l.MinAge > 0 && s.Now.IsZero() {
		probs = append(probs, "min-age needs the current time, and Now is zero")
	}
	if len(probs) > 0 {
		// Sorted so that the error, like the plan, does not depend on input order.
		slices.Sort(probs)
		probs = slices.Compact(probs)
		if n := len(probs); n > maxProblems {
			probs = append(probs[:maxProblems], fmt.Sprintf("and %d more", n-maxProblems))
		}
		return nil, fmt.Errorf("%w: %s", ErrInconsistentState, strings.Join(probs, "; "))
	}
	for _, b := range blobs {
		slices.SortFunc(b.names, func(x, y *Entry) int { return strings.Compare(x.Name, y.Name) })
		for _, e := range b.names {
			b.parts = append(b.parts, e.Parts...)
		}
		slices.Sort(b.parts)
		b.parts = slices.Compact(b.parts)
	}
	for _, b := range blobs {
		if len(b.names) > 0 {
			for _, p := range b.parts {
				blobs[p].users++
			}
		}
	}
	return blobs, nil
}

// Compute decides what gc removes; see the package documentation for the
// policy. It errors (wrapping [ErrInvalidLimits] or [ErrInconsistentState])
// only for invalid limits or a state that cannot be true.
//
// The plan is made in four steps, each a method of planner: orphans, names
// past max-age, whole blobs for size and free space (least recently used
// first), and the shortfalls left.
func Compute(s State, l Limits) (Plan, error) {
	if err := l.Validate(); err != nil {
		return Plan{}, err
	}
	blobs, err := index(s, l)
	if err != nil {
		return Plan{}, err
	}
	pl := &planner{s: s, l: l, blobs: blobs, skipped: map[string]bool{}}
	for k, b := range blobs {
		pl.keys = append(pl.keys, k)
		pl.p.StoredBefore += b.Size
	}
	slices.Sort(pl.keys)
	pl.orphans()
	if l.MaxAge > 0 {
		pl.maxAge()
	}
	pl.sizeAndFree()
	pl.p.StoredAfter = pl.p.StoredBefore - pl.p.Freed
	pl.p.FreeAfter = s.Free + pl.p.Freed
	pl.shortfalls()
	return pl.p, nil
}

// planner is one Compute in progress.
type planner struct {
	s       State
	l       Limits
	blobs   map[string]*blobInfo
	keys    []string // sorted
	p       Plan
	skipped map[string]bool
}

// skip reports the blob as kept (pinned or in use), once.
func (pl *planner) skip(key string) {
	if !pl.skipped[key] {
		pl.skipped[key] = true
		pl.p.Skipped = append(pl.p.Skipped, key)
	}
}

// act records v, which drops b's last names: b is deleted and credited
// unless it is in use, and so is each of its parts no other head needs.
func (pl *planner) act(b *blobInfo, v Victim) {
	if !b.InUse {
		b.deleted = true
		v.Blob, v.Freed = b.Key, b.Size
	}
	v.Parts, v.Freed = pl.release(b, v.Parts, v.Freed)
	pl.p.Freed += v.Freed
	pl.p.Victims = append(pl.p.Victims, v)
}

// release drops head b's claim on its parts, deleting those nobody else
// needs (unless in use: those are orphans for a later gc).
func (pl *planner) release(b *blobInfo, parts []string, freed int64) ([]string, int64) {
	for _, k := range b.parts {
		p := pl.blobs[k]
		p.users--
		if p.users > 0 || p.deleted || len(p.names) > 0 {
			continue
		}
		if p.InUse {
			pl.skip(k)
			continue
		}
		p.deleted = true
		parts = append(parts, k)
		freed += p.Size
	}
	b.parts = nil
	return parts, freed
}

// frees is what evicting head b would free now: its own size unless in
// use, and its parts nobody else needs and nobody uses.
func (pl *planner) frees(b *blobInfo) (head, parts int64) {
	if !b.InUse {
		head = b.Size
	}
	for _, k := range b.parts {
		if p := pl.blobs[k]; p.users == 1 && !p.deleted && !p.InUse && len(p.names) == 0 {
			parts += p.Size
		}
	}
	return head, parts
}

// orphans: step 1, blobs no name points at, by key (they have no use to
// order them by).
func (pl *planner) orphans() {
	for _, k := range pl.keys {
		b := pl.blobs[k]
		if len(b.names) > 0 || b.users > 0 {
			continue // named, or a part some named head needs
		}
		if b.InUse {
			pl.skip(k)
			continue
		}
		pl.act(b, Victim{Reason: ReasonOrphan})
	}
}

// expiry is what max-age does to one blob's names.
type expiry struct {
	b       *blobInfo
	names   []string  // expired unpinned names: dropped
	last    time.Time // latest use among names
	order   time.Time // latest use among all expired names, to order by
	all     bool      // every name of the blob expired (pinned ones included)
	blocked bool      // ...but a pinned one keeps the blob
}

// expired is max-age's verdict on blob b's names.
func (pl *planner) expired(b *blobInfo) expiry {
	x := expiry{b: b, all: len(b.names) > 0}
	for _, e := range b.names {
		if !pl.expires(e) {
			x.all = false
			continue
		}
		x.order = latest(x.order, e.LastUsed)
		if e.Pinned {
			x.blocked = true
			continue
		}
		x.names = append(x.names, e.Name)
		x.last = latest(x.last, e.LastUsed)
	}
	return x
}

// expires: e is unused for longer than MaxAge and not held.
func (pl *planner) expires(e *Entry) bool {
	return pl.s.Now.Sub(e.LastUsed) > pl.l.MaxAge && !pl.held(e)
}

// held: a job holds e (get --hold) beyond now.
func (pl *planner) held(e *Entry) bool { return e.HeldUntil.After(pl.s.Now) }

// protected: e was used within MinAge, or is held.
func (pl *planner) protected(e *Entry) bool {
	return pl.held(e) || (pl.l.MinAge > 0 && pl.s.Now.Sub(e.LastUsed) < pl.l.MinAge)
}

// maxAge: step 2. A name expires when Now-LastUsed > MaxAge; pinned names
// never drop. A blob all of whose names expired goes with them.
func (pl *planner) maxAge() {
	var exp []expiry
	for _, k := range pl.keys {
		if x := pl.expired(pl.blobs[k]); len(x.names) > 0 || (x.all && x.blocked) {
			exp = append(exp, x)
		}
	}
	slices.SortFunc(exp, func(x, y expiry) int {
		return cmp.Or(x.order.Compare(y.order), strings.Compare(x.b.Key, y.b.Key))
	})
	for _, x := range exp {
		b := x.b
		if x.all && (x.blocked || b.InUse) {
			pl.skip(b.Key)
		}
		if len(x.names) == 0 {
			continue
		}
		b.names = slices.DeleteFunc(b.names, func(e *Entry) bool { return !e.Pinned && pl.expires(e) })
		v := Victim{Names: x.names, LastUsed: x.last, Reason: ReasonMaxAge}
		if x.all && !x.blocked {
			pl.act(b, v) // deletes the blob unless it is in use; then it is an orphan for a later gc
		} else {
			pl.p.Victims = append(pl.p.Victims, v)
		}
	}
}

func (pl *planner) needSize() bool {
	return pl.l.MaxSize > 0 && pl.p.StoredBefore-pl.p.Freed > pl.l.MaxSize
}

func (pl *planner) needFree() bool {
	return pl.l.MinFree > 0 && pl.s.Free < pl.l.MinFree && pl.s.Free+pl.p.Freed < pl.l.target()
}

// sizeAndFree: step 3, whole blobs, least recently used first, until
// max-size and min-free hold.
func (pl *planner) sizeAndFree() {
	var cands []*blobInfo
	for _, k := range pl.keys {
		b := pl.blobs[k]
		if b.deleted || len(b.names) == 0 {
			continue // gone, or an in-use blob left without names (already skipped)
		}
		for _, e := range b.names {
			b.pinned = b.pinned || e.Pinned
			b.recent = b.recent || pl.protected(e)
			b.recency = latest(b.recency, e.LastUsed)
		}
		cands = append(cands, b)
	}
	slices.SortFunc(cands, func(x, y *blobInfo) int {
		return cmp.Or(x.recency.Compare(y.recency), strings.Compare(x.Key, y.Key))
	})
	// An entry with parts whose eviction would free none of them is put
	// off (shared): each eviction may free its parts, so the put-off are
	// tried again, least recent first, before the next candidate.
	var deferred []*blobInfo
	for _, b := range cands {
		if !pl.needSize() && !pl.needFree() {
			break
		}
		if b.pinned || b.InUse {
			pl.skip(b.Key)
			continue
		}
		if b.recent {
			for _, e := range b.names {
				pl.p.Protected = append(pl.p.Protected, e.Name)
			}
			continue
		}
		if _, parts := pl.frees(b); len(b.parts) > 0 && parts == 0 {
			deferred = append(deferred, b)
			continue
		}
		pl.evict(b)
		deferred = pl.retry(deferred)
	}
	slices.Sort(pl.p.Protected)
	if !pl.needSize() && !pl.needFree() {
		return // the put-off held nothing back
	}
	for _, b := range deferred {
		b.shared = true
		for _, e := range b.names {
			pl.p.Shared = append(pl.p.Shared, e.Name)
		}
	}
	slices.Sort(pl.p.Shared)
}

// retry evicts put-off candidates that free parts now, while a limit is
// unmet, and returns those still put off.
func (pl *planner) retry(deferred []*blobInfo) []*blobInfo {
	for again := true; again; {
		again = false
		for i, b := range deferred {
			if !pl.needSize() && !pl.needFree() {
				return deferred
			}
			if _, parts := pl.frees(b); parts > 0 {
				deferred = slices.Delete(deferred, i, i+1)
				pl.evict(b)
				again = true
				break
			}
		}
	}
	return deferred
}

// evict drops all of head b's names for size or free space.
func (pl *planner) evict(b *blobInfo) {
	v := Victim{LastUsed: b.recency, Reason: ReasonMinFree}
	if pl.needSize() {
		v.Reason = ReasonMaxSize
	}
	for _, e := range b.names {
		v.Names = append(v.Names, e.Name)
	}
	b.names = nil
	pl.act(b, v)
}

// shortfalls: step 4, the limits the plan cannot reach, and what holds the
// rest.
func (pl *planner) shortfalls() {
	if pl.needSize() {
		missing := pl.p.StoredAfter - pl.l.MaxSize
		pl.p.Shortfalls = append(pl.p.Shortfalls, shortfall(LimitMaxSize, pl.blobs, pl.keys, missing, false))
	}
	if pl.needFree() {
		missing := pl.l.target() - pl.p.FreeAfter
		pl.p.Shortfalls = append(pl.p.Shortfalls, shortfall(LimitMinFree, pl.blobs, pl.keys, missing, true))
	}
}

// rank orders the reasons a part is held by, strongest first.
func rank(sf *Shortfall, h *Held) int {
	switch h {
	case &sf.Pinned:
		return 0
	case &sf.InUse:
		return 1
	case &sf.Recent:
		return 2
	case &sf.Shared:
		return 3
	}
	return 4
}

// shortfall says what holds the bytes still missing for limit: the kept
// blobs, by why they were kept.
func shortfall(limit string, blobs map[string]*blobInfo, keys []string, missing int64, outside bool) Shortfall {
	sf := Shortfall{Limit: limit, Missing: missing}
	// Parts are held by why their heads are kept.
	why := map[string]*Held{}
	for _, k := range keys {
		b := blobs[k]
		var h *Held
		switch {
		case b.deleted:
			continue
		case slices.ContainsFunc(b.names, func(e *Entry) bool { return e.Pinned }):
			h = &sf.Pinned
		case b.InUse:
			h = &sf.InUse
		case b.recent:
			h = &sf.Recent
		case b.shared:
			h = &sf.Shared
		case len(b.names) == 0 && b.users > 0:
			continue // a part: counted below
		default: // not expected once everything evictable went; said anyway
			h = &sf.Other
		}
		h.Blobs++
		h.Bytes += b.Size
		for _, p := range b.parts {
			if why[p] == nil || rank(&sf, h) < rank(&sf, why[p]) {
				why[p] = h
			}
		}
	}
	for _, k := range keys {
		b := blobs[k]
		if b.deleted || len(b.names) > 0 || b.users == 0 {
			continue
		}
		h := why[k]
		if b.InUse {
			h = &sf.InUse
		} else if h == nil {
			h = &sf.Other
		}
		h.Blobs++
		h.Bytes += b.Size
	}
	if held := sf.Pinned.Bytes + sf.InUse.Bytes + sf.Recent.Bytes + sf.Shared.Bytes + sf.Other.Bytes; outside && held < missing {
		sf.Outside = missing - held
	}
	return sf
}
