package builder

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Info is what [Outdated] needs to know about one cache entry.
type Info struct {
	Digest     string    // the entry's current digest
	Base       string    // the name it was built from; "" when it was not built (put, save)
	BaseDigest string    // the base's digest when it was built
	Built      time.Time // when it was built
	Recipe     bool      // a recipe is recorded: the entry can be rebuilt
}

// The reasons an entry is outdated.
const (
	// ReasonBaseChanged: the base's current digest is not the one the entry
	// was built from (the base was put, saved or rebuilt since).
	ReasonBaseChanged = "base-changed"
	// ReasonBaseOutdated: the base is itself outdated (and can be rebuilt),
	// so rebuilding it will change it: transitively, everything built on
	// an outdated image is outdated.
	ReasonBaseOutdated = "base-outdated"
	// ReasonBaseMissing: the base is no longer in the cache. Rebuilding
	// cannot help until it is put back; it does not make the entry's
	// dependents outdated.
	ReasonBaseMissing = "base-missing"
	// ReasonTooOld: the entry was built longer ago than the maximum age.
	ReasonTooOld = "too-old"
)

// Reason is one reason an entry is outdated.
type Reason struct {
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// Stale is an outdated entry.
type Stale struct {
	Name    string    `json:"name"`
	Base    string    `json:"base"`
	Built   time.Time `json:"built"`
	Reasons []Reason  `json:"reasons"`
}

// Rebuildable reports whether rebuilding the entry can make it fresh: its
// base is in the cache.
func (s Stale) Rebuildable() bool { return !s.Has(ReasonBaseMissing) }

// Has reports whether kind is among the reasons.
func (s Stale) Has(kind string) bool {
	return slices.ContainsFunc(s.Reasons, func(r Reason) bool { return r.Kind == kind })
}

// Kinds lists the reasons' kinds, comma-separated.
func (s Stale) Kinds() string {
	ks := make([]string, len(s.Reasons))
	for i, r := range s.Reasons {
		ks[i] = r.Kind
	}
	return strings.Join(ks, ",")
}

// Outdated returns the built entries (those with a Base) that are stale,
// sorted by name:
//
//   - the base's current digest differs from the one recorded at build
//     time (ReasonBaseChanged), or the base is not in entries
//     (ReasonBaseMissing);
//   - the base is itself outdated and rebuildable (ReasonBaseOutdated),
//     transitively: in base → gcc15 → gcc15-asan, a changed base makes both
//     gcc15 and gcc15-asan outdated;
//   - maxAge > 0 and the entry was built more than maxAge before now
//     (ReasonTooOld).
//
// Entries that were not built are never outdated. A cycle in the base
// relation does not loop: [Order] reports it.
func Outdated(entries map[string]Info, now time.Time, maxAge time.Duration) []Stale {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	stale := map[string]*Stale{}
	var visit func(name string) *Stale
	visit = func(name string) *Stale {
		switch state[name] {
		case visiting:
			return nil // a cycle; Order names it
		case done:
			return stale[name]
		}
		state[name] = visiting
		e := entries[name]
		var rs []Reason
		if e.Base != "" {
			b, ok := entries[e.Base]
			switch {
			case !ok:
				rs = append(rs, Reason{ReasonBaseMissing, fmt.Sprintf("base %s is not in the cache", e.Base)})
			case b.Digest != e.BaseDigest:
				rs = append(rs, Reason{ReasonBaseChanged, fmt.Sprintf("base %s is now %s; built from %s", e.Base, short(b.Digest), short(e.BaseDigest))})
			}
			if ok {
				if bs := visit(e.Base); bs != nil && bs.Rebuildable() {
					rs = append(rs, Reason{ReasonBaseOutdated, fmt.Sprintf("base %s is outdated (%s)", e.Base, bs.Kinds())})
				}
			}
			if maxAge > 0 && now.Sub(e.Built) > maxAge {
				rs = append(rs, Reason{ReasonTooOld, fmt.Sprintf("built %s ago, more than %s", now.Sub(e.Built).Round(time.Second), maxAge)})
			}
		}
		state[name] = done
		if len(rs) > 0 {
			stale[name] = &Stale{Name: name, Base: e.Base, Built: e.Built, Reasons: rs}
		}
		return stale[name]
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	slices.Sort(names)
	out := []Stale{}
	for _, n := range names {
		if s := visit(n); s != nil {
			out = append(out, *s)
		}
	}
	return out
}

// short abbreviates "sha256:<hex>" to "sha256:<12 hex>".
func short(d string) string {
	if d == "" {
		return "(none)"
	}
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}
