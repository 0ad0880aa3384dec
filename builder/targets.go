package builder

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// ReasonForced is a target's reason when it is rebuilt though up to date.
const ReasonForced = "forced"

// Skip is a name a rebuild leaves alone, and why.
type Skip struct {
	Name   string
	Base   string
	Digest string // set for entries skipped as up to date
	Detail string
}

// Selection is what a rebuild does: the targets with their reasons, the
// names it skips.
type Selection struct {
	Targets map[string][]string // name → reason kinds (or ReasonForced)
	Skipped []Skip              // in name order
}

// Target selection errors; the messages name the entry.
var (
	// ErrUnknown: a named entry is not in the cache.
	ErrUnknown = errors.New("no such entry")
	// ErrNoRecipe: a named entry was not built by imgcache build.
	ErrNoRecipe = errors.New("no recipe to rebuild it from")
	// ErrBaseMissing: a named, outdated entry's base is gone.
	ErrBaseMissing = errors.New("its base is not in the cache")
)

// Select chooses what a rebuild of names does (every outdated entry when
// names is empty), given the entries and what Outdated says of them at now
// (maxAge as there):
//
//   - with no names: every outdated entry that can be rebuilt (its base is
//     in the cache and it has a recipe); the others are skipped, saying why;
//   - named entries: rebuilt when outdated, or when force (reason
//     ReasonForced); else skipped as up to date. A named entry without a
//     recipe, or whose base is gone, is an error. Its outdated, rebuildable
//     ancestors become targets too, or it would be built on a stale base.
func Select(entries map[string]Info, names []string, now time.Time, maxAge time.Duration, force bool) (Selection, error) {
	stale := map[string]Stale{}
	for _, s := range Outdated(entries, now, maxAge) {
		stale[s.Name] = s
	}
	sel := Selection{Targets: map[string][]string{}}
	if len(names) == 0 {
		for _, name := range slices.Sorted(maps.Keys(stale)) {
			s := stale[name]
			switch {
			case !s.Rebuildable():
				sel.Skipped = append(sel.Skipped, Skip{Name: name, Base: s.Base, Detail: "its base " + s.Base + " is not in the cache"})
			case !entries[name].Recipe:
				sel.Skipped = append(sel.Skipped, Skip{Name: name, Base: s.Base, Detail: "no recorded recipe"})
			default:
				sel.Targets[name] = reasonKinds(s)
			}
		}
		return sel, nil
	}
	var upToDate []Skip
	for _, name := range names {
		e, ok := entries[name]
		switch {
		case !ok:
			return Selection{}, fmt.Errorf("%s: %w", name, ErrUnknown)
		case e.Base == "" || !e.Recipe:
			return Selection{}, fmt.Errorf("%s: %w: it was not built by imgcache build", name, ErrNoRecipe)
		}
		s, isStale := stale[name]
		switch {
		case isStale && !s.Rebuildable():
			return Selection{}, fmt.Errorf("%s: %w: %s (put it back first)", name, ErrBaseMissing, e.Base)
		case isStale:
			sel.Targets[name] = reasonKinds(s)
		case force:
			sel.Targets[name] = []string{ReasonForced}
		default:
			upToDate = append(upToDate, Skip{Name: name, Base: e.Base, Digest: e.Digest, Detail: "up to date"})
			continue
		}
		sel.addAncestors(name, entries, stale)
	}
	// A name first skipped as up to date may have become an ancestor target.
	for _, s := range upToDate {
		if _, target := sel.Targets[s.Name]; !target && !slices.ContainsFunc(sel.Skipped, func(k Skip) bool { return k.Name == s.Name }) {
			sel.Skipped = append(sel.Skipped, s)
		}
	}
	return sel, nil
}

// addAncestors makes name's outdated, rebuildable ancestors targets.
func (sel *Selection) addAncestors(name string, entries map[string]Info, stale map[string]Stale) {
	seen := map[string]bool{name: true}
	for a := entries[name].Base; a != "" && !seen[a]; a = entries[a].Base {
		seen[a] = true
		if s, ok := stale[a]; ok && s.Rebuildable() && entries[a].Recipe {
			if _, dup := sel.Targets[a]; !dup {
				sel.Targets[a] = reasonKinds(s)
			}
		}
	}
}

func reasonKinds(s Stale) []string {
	ks := make([]string, len(s.Reasons))
	for i, r := range s.Reasons {
		ks[i] = r.Kind
	}
	return ks
}
