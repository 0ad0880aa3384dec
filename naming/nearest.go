package naming

import (
	"cmp"
	"slices"
)

// Nearest returns up to n names of known closest to name, for "did you
// mean …?": those within an edit distance (insertions, deletions,
// substitutions of bytes) of a quarter of name's length, at least 2,
// nearest first, ties in name order. name itself is never suggested.
func Nearest(name string, known []string, n int) []string {
	limit := max(2, len(name)/4)
	type cand struct {
		name string
		dist int
	}
	var cands []cand
	for _, k := range known {
		if k == name {
			continue
		}
		if d := distance(name, k, limit); d <= limit {
			cands = append(cands, cand{k, d})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int { return cmp.Or(cmp.Compare(a.dist, b.dist), cmp.Compare(a.name, b.name)) })
	var out []string
	for _, c := range cands[:min(n, len(cands))] {
		out = append(out, c.name)
	}
	return out
}

// distance is the Levenshtein distance of a and b, or limit+1 as soon as
// it is known to exceed limit.
func distance(a, b string, limit int) int {
	if d := len(a) - len(b); d > limit || -d > limit {
		return limit + 1
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		best := cur[0]
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
			best = min(best, cur[j])
		}
		if best > limit {
			return limit + 1
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
