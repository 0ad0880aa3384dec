package builder

import (
	"cmp"
	"slices"

	"github.com/imgcache/imgcache/naming"
)

// The rules [Resolve] picks a base by, in order of preference.
const (
	// RulePrefix: same project and OS, the longest variant that is a proper
	// prefix of the wanted one by segments (gcc15 for gcc15-asan).
	RulePrefix = "variant-prefix"
	// RuleProjectBase: <project>-<os>-base.
	RuleProjectBase = "project-base"
	// RuleOSBase: another project's <os>-base (the first by name).
	RuleOSBase = "os-base"
)

// Plan is what an executor needs to know about a wanted name.
type Plan struct {
	Name string `json:"name"`
	// BestImage is the exact hit: the wanted name itself when the cache
	// holds it; nil otherwise.
	BestImage *string `json:"best_image"`
	// BestBase is the closest cached ancestor to build the name from; nil
	// when the cache holds none. It is computed whether or not there is an
	// exact hit, and is never the wanted name itself.
	BestBase *string `json:"best_base"`
	// BaseRule is the rule that picked BestBase (RulePrefix,
	// RuleProjectBase, RuleOSBase); "" when BestBase is nil.
	BaseRule string `json:"base_rule"`
	// NeedsBuild is true when there is no exact hit.
	NeedsBuild bool `json:"needs_build"`
}

// Resolve plans name against the names in the cache. Entries that are not
// valid names are ignored. The result does not depend on the order of
// entries.
func Resolve(name naming.Name, entries []string) Plan {
	want := name.String()
	p := Plan{Name: want, NeedsBuild: true}
	var names []naming.Name
	for _, s := range entries {
		n, err := naming.Parse(s)
		if err != nil {
			continue
		}
		if s == want {
			hit := s
			p.BestImage, p.NeedsBuild = &hit, false
			continue
		}
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b naming.Name) int { return cmp.Compare(a.String(), b.String()) })

	pick := func(n naming.Name, rule string) {
		s := n.String()
		p.BestBase, p.BaseRule = &s, rule
	}
	// 1. The longest proper variant prefix, same project and OS.
	segs := name.VariantSegments()
	best := 0
	for _, n := range names {
		if n.Project() != name.Project() || n.OS() != name.OS() {
			continue
		}
		cs := n.VariantSegments()
		if len(cs) < len(segs) && len(cs) > best && slices.Equal(cs, segs[:len(cs)]) {
			best = len(cs)
			pick(n, RulePrefix)
		}
	}
	if p.BestBase != nil {
		return p
	}
	// 2. <project>-<os>-base.
	for _, n := range names {
		if n.Project() == name.Project() && n.OS() == name.OS() && n.IsBase() {
			pick(n, RuleProjectBase)
			return p
		}
	}
	// 3. Any project's <os>-base, the first by name.
	for _, n := range names {
		if n.OS() == name.OS() && n.IsBase() {
			pick(n, RuleOSBase)
			return p
		}
	}
	return p
}
