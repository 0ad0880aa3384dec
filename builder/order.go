package builder

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrCycle is wrapped by [Order]'s error when the base relation has a cycle.
var ErrCycle = errors.New("dependency cycle")

// Order returns targets in build order, bases first, as levels: every
// target's base chain (base maps a name to the name it is built from; ""
// or absent: none) holds targets only from earlier levels, so the names of
// one level can be built at once. Each level is sorted; duplicate targets
// count once. A cycle on any target's base chain is an error wrapping
// ErrCycle that names it ("a → b → a").
func Order(targets []string, base map[string]string) ([][]string, error) {
	set := map[string]bool{}
	for _, t := range targets {
		set[t] = true
	}
	uniq := make([]string, 0, len(set))
	for t := range set {
		uniq = append(uniq, t)
	}
	slices.Sort(uniq)
	var levels [][]string
	for _, t := range uniq {
		chain, err := chain(t, base)
		if err != nil {
			return nil, err
		}
		// A target's level is the number of targets above it: its nearest
		// target ancestor has exactly one fewer, hence sits a level earlier.
		d := 0
		for _, a := range chain[1:] {
			if set[a] {
				d++
			}
		}
		for len(levels) <= d {
			levels = append(levels, nil)
		}
		levels[d] = append(levels[d], t)
	}
	return levels, nil // each level sorted: filled in sorted order
}

// Deps maps each target to the nearest of its ancestors that is also a
// target: the build it must wait for ("" when none). base must have no
// cycle on the targets' chains (call [Order] first).
func Deps(targets []string, base map[string]string) map[string]string {
	set := map[string]bool{}
	for _, t := range targets {
		set[t] = true
	}
	deps := map[string]string{}
	for t := range set {
		deps[t] = ""
		c, _ := chain(t, base)
		for _, a := range c[1:] {
			if set[a] {
				deps[t] = a
				break
			}
		}
	}
	return deps
}

// chain returns name, its base, the base's base… up to a name without a
// base, or an error naming the cycle it ran into.
func chain(name string, base map[string]string) ([]string, error) {
	path := []string{name}
	at := map[string]int{name: 0}
	for cur := name; ; {
		b := base[cur]
		if b == "" {
			return path, nil
		}
		if i, seen := at[b]; seen {
			cycle := append(slices.Clone(path[i:]), b)
			return path, fmt.Errorf("%w: %s", ErrCycle, strings.Join(cycle, " → "))
		}
		at[b] = len(path)
		path = append(path, b)
		cur = b
	}
}
