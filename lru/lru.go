package lru

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Entry is one cache name.
type Entry struct {
	Name     string
	Blob     string    // key of the blob the name points at (a digest string)
	LastUsed time.Time // put, save, get, export, build count as uses
	Pinned   bool
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
	// Freed is the bytes credited: the blob's Size when Blob != "", else 0.
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
	Limit   string // LimitMinFree or LimitMaxSize
	Missing int64  // bytes still missing after the plan
	Why     string // what holds the rest, e.g. "3 pinned blobs hold 12 GiB and 1 in-use blob holds 2 GiB"
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
}

// Deleted reports the keys of the blobs the plan deletes, in plan order.
func (p Plan) Deleted() []string {
	var keys []string
	for _, v := range p.Victims {
		if v.Blob != "" {
			keys = append(keys, v.Blob)
		}
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
	if l.TargetFree > 0 && l.TargetFree < l.MinFree {
		probs = append(probs, fmt.Sprintf("target-free (%s) must be at least min-free (%s)",
			formatBytes(l.TargetFree), formatBytes(l.MinFree)))
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
	deleted bool
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
	}
	if l.MinFree > 0 && s.Free < 0 {
		probs = append(probs, fmt.Sprintf("free space is negative (%d)", s.Free))
	}
	if l.MaxAge > 0 && s.Now.IsZero() {
		probs = append(probs, "max-age needs the current time, and Now is zero")
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
	}
	return blobs, nil
}

// Compute decides what gc removes; see the package documentation for the
// policy. It errors (wrapping [ErrInvalidLimits] or [ErrInconsistentState])
// only for invalid limits or a state that cannot be true.
func Compute(s State, l Limits) (Plan, error) {
	if err := l.Validate(); err != nil {
		return Plan{}, err
	}
	blobs, err := index(s, l)
	if err != nil {
		return Plan{}, err
	}

	var p Plan
	keys := make([]string, 0, len(blobs))
	for k, b := range blobs {
		keys = append(keys, k)
		p.StoredBefore += b.Size
	}
	slices.Sort(keys)

	skipped := make(map[string]bool)
	skip := func(key string) {
		if !skipped[key] {
			skipped[key] = true
			p.Skipped = append(p.Skipped, key)
		}
	}
	// act records v, deleting and crediting b unless it is in use.
	act := func(b *blobInfo, v Victim) {
		if !b.InUse {
			b.deleted = true
			v.Blob, v.Freed = b.Key, b.Size
			p.Freed += b.Size
		}
		p.Victims = append(p.Victims, v)
	}

	// 1. Orphans, by key: they have no use to order them by.
	for _, k := range keys {
		b := blobs[k]
		if len(b.names) > 0 {
			continue
		}
		if b.InUse {
			skip(k)
			continue
		}
		act(b, Victim{Reason: ReasonOrphan})
	}

	// 2. Max age. A name expires when Now-LastUsed > MaxAge; pinned names never drop.
	if l.MaxAge > 0 {
		type expiry struct {
			b       *blobInfo
			names   []string  // expired unpinned names: dropped
			last    time.Time // latest use among names
			order   time.Time // latest use among all expired names, to order by
			all     bool      // every name of the blob expired (pinned ones included)
			blocked bool      // ...but a pinned one keeps the blob
		}
		var exp []expiry
		for _, k := range keys {
			b := blobs[k]
			x := expiry{b: b, all: len(b.names) > 0}
			for _, e := range b.names {
				if s.Now.Sub(e.LastUsed) <= l.MaxAge {
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
			if len(x.names) > 0 || (x.all && x.blocked) {
				exp = append(exp, x)
			}
		}
		slices.SortFunc(exp, func(x, y expiry) int {
			return cmp.Or(x.order.Compare(y.order), strings.Compare(x.b.Key, y.b.Key))
		})
		for _, x := range exp {
			b := x.b
			if x.all && (x.blocked || b.InUse) {
				skip(b.Key)
			}
			if len(x.names) == 0 {
				continue
			}
			b.names = slices.DeleteFunc(b.names, func(e *Entry) bool {
				return !e.Pinned && s.Now.Sub(e.LastUsed) > l.MaxAge
			})
			v := Victim{Names: x.names, LastUsed: x.last, Reason: ReasonMaxAge}
			if x.all && !x.blocked {
				act(b, v) // deletes the blob unless it is in use; then it is an orphan for a later gc
			} else {
				p.Victims = append(p.Victims, v)
			}
		}
	}

	// 3. Size and free space: whole blobs, least recently used first.
	var cands []*blobInfo
	for _, k := range keys {
		b := blobs[k]
		if b.deleted || len(b.names) == 0 {
			continue // gone, or an in-use blob left without names (already skipped)
		}
		for _, e := range b.names {
			b.pinned = b.pinned || e.Pinned
			b.recency = latest(b.recency, e.LastUsed)
		}
		cands = append(cands, b)
	}
	slices.SortFunc(cands, func(x, y *blobInfo) int {
		return cmp.Or(x.recency.Compare(y.recency), strings.Compare(x.Key, y.Key))
	})
	minFreeActive := l.MinFree > 0 && s.Free < l.MinFree
	needSize := func() bool { return l.MaxSize > 0 && p.StoredBefore-p.Freed > l.MaxSize }
	needFree := func() bool { return minFreeActive && s.Free+p.Freed < l.target() }
	for _, b := range cands {
		overSize := needSize()
		if !overSize && !needFree() {
			break
		}
		if b.pinned || b.InUse {
			skip(b.Key)
			continue
		}
		v := Victim{LastUsed: b.recency, Reason: ReasonMinFree}
		if overSize {
			v.Reason = ReasonMaxSize
		}
		for _, e := range b.names {
			v.Names = append(v.Names, e.Name)
		}
		b.names = nil
		act(b, v)
	}

	p.StoredAfter = p.StoredBefore - p.Freed
	p.FreeAfter = s.Free + p.Freed

	// 4. Shortfalls.
	if needSize() {
		missing := p.StoredAfter - l.MaxSize
		p.Shortfalls = append(p.Shortfalls, Shortfall{
			Limit: LimitMaxSize, Missing: missing, Why: why(blobs, keys, missing, false),
		})
	}
	if needFree() {
		missing := l.target() - p.FreeAfter
		p.Shortfalls = append(p.Shortfalls, Shortfall{
			Limit: LimitMinFree, Missing: missing, Why: why(blobs, keys, missing, true),
		})
	}
	return p, nil
}

// why explains a shortfall by what the surviving blobs are.
func why(blobs map[string]*blobInfo, keys []string, missing int64, outside bool) string {
	var nPinned, nInUse, nOther int
	var pinned, inUse, other int64
	for _, k := range keys {
		b := blobs[k]
		switch {
		case b.deleted:
		case slices.ContainsFunc(b.names, func(e *Entry) bool { return e.Pinned }):
			nPinned++
			pinned += b.Size
		case b.InUse:
			nInUse++
			inUse += b.Size
		default: // not expected once everything evictable went; said anyway
			nOther++
			other += b.Size
		}
	}
	var parts []string
	add := func(n int, what string, size int64) {
		if n == 0 {
			return
		}
		if n == 1 {
			parts = append(parts, fmt.Sprintf("1 %s blob holds %s", what, formatBytes(size)))
		} else {
			parts = append(parts, fmt.Sprintf("%d %s blobs hold %s", n, what, formatBytes(size)))
		}
	}
	add(nPinned, "pinned", pinned)
	add(nInUse, "in-use", inUse)
	add(nOther, "other", other)
	held := pinned + inUse + other
	if held == 0 {
		return "the cache holds nothing more to evict; the space is used outside the cache"
	}
	msg := strings.Join(parts, " and ")
	if outside && held < missing {
		msg += fmt.Sprintf("; even without them %s would be missing (used outside the cache)", formatBytes(missing-held))
	}
	return msg
}

// formatBytes renders n in binary units the way people read df -h:
// "512 B", "1.5 GiB", "12 GiB".
func formatBytes(n int64) string {
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n) / 1024
	u := 0
	for (v >= 1024 || v <= -1024) && u < len(units)-1 {
		v /= 1024
		u++
	}
	var s string
	if v < 10 && v > -10 {
		s = strconv.FormatFloat(v, 'f', 1, 64)
		s = strings.TrimSuffix(s, ".0")
	} else {
		s = strconv.FormatFloat(v, 'f', 0, 64)
	}
	return s + " " + units[u]
}
