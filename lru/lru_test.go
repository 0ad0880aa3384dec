package lru

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const (
	hour = time.Hour
	day  = 24 * time.Hour
	GiB  = int64(1) << 30
)

func ago(d time.Duration) time.Time { return now.Add(-d) }

// name is an unpinned entry used d ago.
func name(n, blob string, d time.Duration) Entry {
	return Entry{Name: n, Blob: blob, LastUsed: ago(d)}
}

// pin is a pinned entry used d ago.
func pin(n, blob string, d time.Duration) Entry {
	return Entry{Name: n, Blob: blob, LastUsed: ago(d), Pinned: true}
}

func blob(key string, size int64) Blob { return Blob{Key: key, Size: size} }
func busy(key string, size int64) Blob { return Blob{Key: key, Size: size, InUse: true} }

func st(free int64, blobs []Blob, entries ...Entry) State {
	return State{Entries: entries, Blobs: blobs, Free: free, Now: now}
}

func blobs(bs ...Blob) []Blob { return bs }

// render writes a victim as "reason [names] blob freed @age", with "-" for no
// blob and "@-" for a zero LastUsed, so tables read at a glance.
func render(v Victim) string {
	b := v.Blob
	if b == "" {
		b = "-"
	}
	age := "-"
	if !v.LastUsed.IsZero() {
		age = now.Sub(v.LastUsed).String()
	}
	return fmt.Sprintf("%s %v %s %d @%s", v.Reason, v.Names, b, v.Freed, age)
}

func renderAll(vs []Victim) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, render(v))
	}
	return out
}

type planCase struct {
	name  string
	state State
	lim   Limits

	victims    []string // rendered, in order
	freed      int64    // Plan.Freed
	shortfalls []Shortfall
	skipped    []string
}

var planCases = []planCase{
	// --- no limits: only orphans go ---
	{
		name:    "empty state",
		state:   st(0, nil),
		victims: []string{},
	},
	{
		name:    "no limits keeps every named blob",
		state:   st(0, blobs(blob("A", 10), blob("B", 20)), name("a", "A", 900*day), name("b", "B", 0)),
		victims: []string{},
	},
	{
		name: "no limits: only orphans go, by key",
		state: st(0, blobs(blob("O2", 7), blob("A", 10), blob("O1", 5)),
			name("a", "A", 900*day)),
		victims: []string{"unreferenced [] O1 5 @-", "unreferenced [] O2 7 @-"},
		freed:   12,
	},
	{
		name:    "orphan of size zero is still deleted",
		state:   st(0, blobs(blob("O", 0))),
		victims: []string{"unreferenced [] O 0 @-"},
	},
	{
		name:    "orphan in use is kept and reported",
		state:   st(0, blobs(busy("O1", 5), blob("O2", 7))),
		victims: []string{"unreferenced [] O2 7 @-"},
		freed:   7,
		skipped: []string{"O1"},
	},
	{
		name:    "orphans go even when the free-space limit is met",
		state:   st(100*GiB, blobs(blob("O", 3))),
		lim:     Limits{MinFree: 10 * GiB},
		victims: []string{"unreferenced [] O 3 @-"},
		freed:   3,
	},

	// --- max-age ---
	{
		name: "max-age shared blob: old name dropped, blob kept, nothing freed",
		state: st(0, blobs(blob("S", 100)),
			name("old", "S", 40*day), name("new", "S", hour)),
		lim:     Limits{MaxAge: 30 * day},
		victims: []string{"max-age [old] - 0 @960h0m0s"},
	},
	{
		name: "max-age all names of a blob expired: blob deleted, LastUsed is their latest",
		state: st(0, blobs(blob("S", 100), blob("K", 1)),
			name("y", "S", 40*day), name("x", "S", 35*day), name("k", "K", day)),
		lim:     Limits{MaxAge: 30 * day},
		victims: []string{"max-age [x y] S 100 @840h0m0s"},
		freed:   100,
	},
	{
		name:    "max-age boundary: exactly MaxAge old is kept",
		state:   st(0, blobs(blob("A", 1), blob("B", 2)), name("a", "A", 30*day), name("b", "B", 30*day+time.Nanosecond)),
		lim:     Limits{MaxAge: 30 * day},
		victims: []string{"max-age [b] B 2 @720h0m0.000000001s"},
		freed:   2,
	},
	{
		name: "max-age victims ordered oldest first, ties by blob key",
		state: st(0, blobs(blob("A", 1), blob("B", 2), blob("C", 4)),
			name("c", "C", 50*day), name("b", "B", 40*day), name("a", "A", 50*day)),
		lim:     Limits{MaxAge: 30 * day},
		victims: []string{"max-age [a] A 1 @1200h0m0s", "max-age [c] C 4 @1200h0m0s", "max-age [b] B 2 @960h0m0s"},
		freed:   7,
	},
	{
		name:    "max-age never-used name (zero LastUsed) expires",
		state:   st(0, blobs(blob("A", 1)), Entry{Name: "a", Blob: "A"}),
		lim:     Limits{MaxAge: 30 * day},
		victims: []string{"max-age [a] A 1 @-"},
		freed:   1,
	},
	{
		name:    "max-age use in the future (clock skew) does not expire",
		state:   st(0, blobs(blob("A", 1)), name("a", "A", -day)),
		lim:     Limits{MaxAge: hour},
		victims: []string{},
	},
	{
		name:    "max-age in-use blob: names drop, blob stays and is reported",
		state:   st(0, blobs(busy("A", 10)), name("a2", "A", 40*day), name("a1", "A", 41*day)),
		lim:     Limits{MaxAge: 30 * day},
		victims: []string{"max-age [a1 a2] - 0 @960h0m0s"},
		skipped: []string{"A"},
	},
	{
		name:    "max-age pinned old name is never dropped; the unpinned old one is",
		state:   st(0, blobs(blob("A", 10)), pin("p", "A", 90*day), name("u", "A", 40*day)),
		lim:     Limits{MaxAge: 30 * day},
		victims: []string{"max-age [u] - 0 @960h0m0s"},
		skipped: []string{"A"},
	},
	{
		name:    "max-age only pinned names expired: no victim, blob reported",
		state:   st(0, blobs(blob("A", 10)), pin("p", "A", 90*day)),
		lim:     Limits{MaxAge: 30 * day},
		victims: []string{},
		skipped: []string{"A"},
	},
	{
		name:    "max-age pinned old name and a fresh name: not skipped (would stay anyway)",
		state:   st(0, blobs(blob("A", 10)), pin("p", "A", 90*day), name("u", "A", 40*day), name("f", "A", hour)),
		lim:     Limits{MaxAge: 30 * day},
		victims: []string{"max-age [u] - 0 @960h0m0s"},
	},
	{
		name: "max-age deletions count toward max-size",
		state: st(0, blobs(blob("A", 50), blob("B", 50), blob("C", 50)),
			name("a", "A", 40*day), name("b", "B", 2*day), name("c", "C", day)),
		lim:     Limits{MaxAge: 30 * day, MaxSize: 100},
		victims: []string{"max-age [a] A 50 @960h0m0s"},
		freed:   50,
	},
	{
		name: "max-age partial drop leaves the blob's recency to its fresh name",
		state: st(0, blobs(blob("S", 50), blob("T", 50)),
			name("s-old", "S", 40*day), name("s-new", "S", hour), name("t", "T", 2*hour)),
		lim:     Limits{MaxAge: 30 * day, MaxSize: 60},
		victims: []string{"max-age [s-old] - 0 @960h0m0s", "max-size [t] T 50 @2h0m0s"},
		freed:   50,
	},

	// --- size / free ---
	{
		name: "max-size evicts least recently used first",
		state: st(0, blobs(blob("A", 10), blob("B", 10), blob("C", 10)),
			name("a", "A", 3*hour), name("b", "B", 1*hour), name("c", "C", 2*hour)),
		lim:     Limits{MaxSize: 15},
		victims: []string{"max-size [a] A 10 @3h0m0s", "max-size [c] C 10 @2h0m0s"},
		freed:   20,
	},
	{
		name: "ties in LastUsed are broken by blob key",
		state: st(0, blobs(blob("B", 10), blob("A", 10), blob("C", 10)),
			name("x", "B", hour), name("y", "A", hour), name("z", "C", hour)),
		lim:     Limits{MaxSize: 15},
		victims: []string{"max-size [y] A 10 @1h0m0s", "max-size [x] B 10 @1h0m0s"},
		freed:   20,
	},
	{
		name: "max-size exact boundary: stored == MaxSize evicts nothing",
		state: st(0, blobs(blob("A", 10), blob("B", 20)),
			name("a", "A", day), name("b", "B", hour)),
		lim:     Limits{MaxSize: 30},
		victims: []string{},
	},
	{
		name: "max-size one byte over evicts the oldest",
		state: st(0, blobs(blob("A", 10), blob("B", 20)),
			name("a", "A", day), name("b", "B", hour)),
		lim:     Limits{MaxSize: 29},
		victims: []string{"max-size [a] A 10 @24h0m0s"},
		freed:   10,
	},
	{
		name: "orphans count toward max-size first",
		state: st(0, blobs(blob("A", 10), blob("O", 20)),
			name("a", "A", day)),
		lim:     Limits{MaxSize: 10},
		victims: []string{"unreferenced [] O 20 @-"},
		freed:   20,
	},
	{
		name: "shared blob is evicted as a unit, aged by its most recent use",
		state: st(0, blobs(blob("S", 10), blob("T", 10)),
			name("s-old", "S", 10*day), name("s-new", "S", hour), name("t", "T", 5*hour)),
		lim:     Limits{MaxSize: 10},
		victims: []string{"max-size [t] T 10 @5h0m0s"},
		freed:   10,
	},
	{
		name: "shared blob evicted drops all its names at once",
		state: st(0, blobs(blob("S", 10), blob("T", 10)),
			name("s2", "S", 10*day), name("s1", "S", 6*hour), name("t", "T", 5*hour)),
		lim:     Limits{MaxSize: 10},
		victims: []string{"max-size [s1 s2] S 10 @6h0m0s"},
		freed:   10,
	},
	{
		name: "pinned blob is never evicted, the next one goes",
		state: st(0, blobs(blob("P", 10), blob("B", 10), blob("C", 10)),
			pin("p", "P", 90*day), name("b", "B", 2*hour), name("c", "C", hour)),
		lim:     Limits{MaxSize: 20},
		victims: []string{"max-size [b] B 10 @2h0m0s"},
		freed:   10,
		skipped: []string{"P"},
	},
	{
		name: "one pinned name protects a shared blob",
		state: st(0, blobs(blob("S", 10), blob("B", 10)),
			name("s", "S", 90*day), pin("sp", "S", 80*day), name("b", "B", hour)),
		lim:     Limits{MaxSize: 10},
		victims: []string{"max-size [b] B 10 @1h0m0s"},
		freed:   10,
		skipped: []string{"S"},
	},
	{
		name: "in-use blob is skipped and reported, the next one goes",
		state: st(0, blobs(busy("A", 10), blob("B", 10), blob("C", 10)),
			name("a", "A", 3*hour), name("b", "B", 2*hour), name("c", "C", hour)),
		lim:     Limits{MaxSize: 20},
		victims: []string{"max-size [b] B 10 @2h0m0s"},
		freed:   10,
		skipped: []string{"A"},
	},
	{
		name: "pinned or in-use blobs newer than what is needed are not reported",
		state: st(0, blobs(blob("A", 10), busy("B", 10), blob("P", 10)),
			name("a", "A", 3*hour), name("b", "B", 2*hour), pin("p", "P", hour)),
		lim:     Limits{MaxSize: 20},
		victims: []string{"max-size [a] A 10 @3h0m0s"},
		freed:   10,
	},
	{
		name: "hysteresis: free above min-free evicts nothing",
		state: st(25*GiB, blobs(blob("A", 10*GiB), blob("B", 10*GiB)),
			name("a", "A", day), name("b", "B", hour)),
		lim:     Limits{MinFree: 20 * GiB, TargetFree: 30 * GiB},
		victims: []string{},
	},
	{
		name: "hysteresis: free exactly min-free evicts nothing",
		state: st(20*GiB, blobs(blob("A", 10*GiB), blob("B", 10*GiB)),
			name("a", "A", day), name("b", "B", hour)),
		lim:     Limits{MinFree: 20 * GiB, TargetFree: 30 * GiB},
		victims: []string{},
	},
	{
		name: "hysteresis: free below min-free evicts up to target-free",
		state: st(19*GiB, blobs(blob("A", 5*GiB), blob("B", 5*GiB), blob("C", 5*GiB)),
			name("a", "A", 3*day), name("b", "B", 2*day), name("c", "C", day)),
		lim: Limits{MinFree: 20 * GiB, TargetFree: 29 * GiB},
		victims: []string{
			fmt.Sprintf("min-free [a] A %d @72h0m0s", 5*GiB),
			fmt.Sprintf("min-free [b] B %d @48h0m0s", 5*GiB),
		},
		freed: 10 * GiB,
	},
	{
		name: "target-free 0 means min-free",
		state: st(19*GiB, blobs(blob("A", 5*GiB), blob("B", 5*GiB), blob("C", 5*GiB)),
			name("a", "A", 3*day), name("b", "B", 2*day), name("c", "C", day)),
		lim:     Limits{MinFree: 20 * GiB},
		victims: []string{fmt.Sprintf("min-free [a] A %d @72h0m0s", 5*GiB)},
		freed:   5 * GiB,
	},
	{
		name: "orphans alone can satisfy min-free",
		state: st(19*GiB, blobs(blob("A", 5*GiB), blob("O", 2*GiB)),
			name("a", "A", 3*day)),
		lim:     Limits{MinFree: 20 * GiB},
		victims: []string{fmt.Sprintf("unreferenced [] O %d @-", 2*GiB)},
		freed:   2 * GiB,
	},
	{
		name:    "free is ignored without min-free (even negative)",
		state:   st(-1, blobs(blob("A", 5)), name("a", "A", 3*day)),
		victims: []string{},
	},
	{
		name: "both limits: max-size first, then min-free, reasons follow the unmet limit",
		state: st(0, blobs(blob("A", 10), blob("B", 10), blob("C", 10), blob("D", 10)),
			name("a", "A", 4*hour), name("b", "B", 3*hour), name("c", "C", 2*hour), name("d", "D", hour)),
		lim:     Limits{MaxSize: 30, MinFree: 25},
		victims: []string{"max-size [a] A 10 @4h0m0s", "min-free [b] B 10 @3h0m0s", "min-free [c] C 10 @2h0m0s"},
		freed:   30,
	},
	{
		name: "both limits: max-size alone binds when free space is fine",
		state: st(100, blobs(blob("A", 10), blob("B", 10), blob("C", 10), blob("D", 10)),
			name("a", "A", 4*hour), name("b", "B", 3*hour), name("c", "C", 2*hour), name("d", "D", hour)),
		lim:     Limits{MaxSize: 20, MinFree: 50},
		victims: []string{"max-size [a] A 10 @4h0m0s", "max-size [b] B 10 @3h0m0s"},
		freed:   20,
	},
	{
		name: "both limits: min-free met first, max-size still unmet",
		state: st(5, blobs(blob("A", 10), blob("B", 10), blob("C", 10)),
			name("a", "A", 3*hour), name("b", "B", 2*hour), name("c", "C", hour)),
		lim:     Limits{MaxSize: 10, MinFree: 10},
		victims: []string{"max-size [a] A 10 @3h0m0s", "max-size [b] B 10 @2h0m0s"},
		freed:   20,
	},
	{
		name: "all four rules at once",
		state: st(0, blobs(blob("O", 1), blob("OLD", 2), blob("A", 4), blob("B", 8), blob("P", 16)),
			name("old", "OLD", 60*day), name("a", "A", 2*day), name("b", "B", day), pin("p", "P", 100*day)),
		lim: Limits{MaxAge: 30 * day, MaxSize: 25, MinFree: 10, TargetFree: 12},
		victims: []string{
			"unreferenced [] O 1 @-",
			"max-age [old] OLD 2 @1440h0m0s",
			"max-size [a] A 4 @48h0m0s",
			"min-free [b] B 8 @24h0m0s",
		},
		freed:   15,
		skipped: []string{"P"},
	},

	// --- shortfalls ---
	{
		name: "max-size unreachable: pinned and in-use bytes reported, Missing exact",
		state: st(0, blobs(blob("P1", 3*GiB), blob("P2", 9*GiB), busy("U", GiB/2), blob("A", GiB)),
			pin("p1", "P1", day), pin("p2", "P2", 2*day), name("u", "U", 3*day), name("a", "A", hour)),
		lim:     Limits{MaxSize: 10 * GiB},
		victims: []string{fmt.Sprintf("max-size [a] A %d @1h0m0s", GiB)},
		freed:   GiB,
		shortfalls: []Shortfall{{
			Limit: LimitMaxSize, Missing: 2*GiB + GiB/2,
			Pinned: Held{2, 12 * GiB}, InUse: Held{1, GiB / 2},
		}},
		skipped: []string{"U", "P2", "P1"},
	},
	{
		name: "min-free unreachable: Missing is to target-free",
		state: st(GiB, blobs(busy("U", 2*GiB), blob("A", GiB)),
			name("u", "U", day), name("a", "A", 2*day)),
		lim:     Limits{MinFree: 5 * GiB, TargetFree: 8 * GiB},
		victims: []string{fmt.Sprintf("min-free [a] A %d @48h0m0s", GiB)},
		freed:   GiB,
		shortfalls: []Shortfall{{
			Limit: LimitMinFree, Missing: 6 * GiB,
			InUse: Held{1, 2 * GiB}, Outside: 4 * GiB, // used outside the cache
		}},
		skipped: []string{"U"},
	},
	{
		name:    "min-free unreachable with an empty cache: the space is used outside",
		state:   st(GiB, nil),
		lim:     Limits{MinFree: 5 * GiB},
		victims: []string{},
		shortfalls: []Shortfall{{
			Limit: LimitMinFree, Missing: 4 * GiB,
			Outside: 4 * GiB, // nothing more to evict: used outside the cache
		}},
	},
	{
		name: "both limits unreachable: two shortfalls, max-size first",
		state: st(0, blobs(blob("P", 100)),
			pin("p", "P", day)),
		lim:     Limits{MaxSize: 40, MinFree: 30, TargetFree: 50},
		victims: []string{},
		shortfalls: []Shortfall{
			{Limit: LimitMaxSize, Missing: 60, Pinned: Held{1, 100}},
			{Limit: LimitMinFree, Missing: 50, Pinned: Held{1, 100}},
		},
		skipped: []string{"P"},
	},
	{
		name: "in-use orphan and in-use expired blob hold the shortfall",
		state: st(0, blobs(busy("O", 10), busy("E", 20), blob("A", 5)),
			name("e", "E", 40*day), name("a", "A", hour)),
		lim:     Limits{MaxAge: 30 * day, MaxSize: 10},
		victims: []string{"max-age [e] - 0 @960h0m0s", "max-size [a] A 5 @1h0m0s"},
		freed:   5,
		shortfalls: []Shortfall{{
			Limit: LimitMaxSize, Missing: 20, InUse: Held{2, 30},
		}},
		skipped: []string{"O", "E"},
	},
	{
		name: "pinned and in-use blob is counted once, as pinned",
		state: st(0, blobs(busy("P", 100)),
			pin("p", "P", day)),
		lim:     Limits{MaxSize: 1},
		victims: []string{},
		shortfalls: []Shortfall{{
			Limit: LimitMaxSize, Missing: 99, Pinned: Held{1, 100},
		}},
		skipped: []string{"P"},
	},
}

func TestCompute(t *testing.T) {
	for _, tc := range planCases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compute(tc.state, tc.lim)
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			if got := renderAll(p.Victims); !slices.Equal(got, tc.victims) {
				t.Errorf("victims:\n got %q\nwant %q", got, tc.victims)
			}
			if p.Freed != tc.freed {
				t.Errorf("Freed = %d, want %d", p.Freed, tc.freed)
			}
			var stored int64
			for _, b := range tc.state.Blobs {
				stored += b.Size
			}
			if p.StoredBefore != stored || p.StoredAfter != stored-tc.freed {
				t.Errorf("StoredBefore/After = %d/%d, want %d/%d", p.StoredBefore, p.StoredAfter, stored, stored-tc.freed)
			}
			if p.FreeAfter != tc.state.Free+tc.freed {
				t.Errorf("FreeAfter = %d, want %d", p.FreeAfter, tc.state.Free+tc.freed)
			}
			if len(p.Shortfalls) != len(tc.shortfalls) {
				t.Fatalf("shortfalls = %+v, want %+v", p.Shortfalls, tc.shortfalls)
			}
			for i, want := range tc.shortfalls {
				got := p.Shortfalls[i]
				if got != want {
					t.Errorf("shortfall %d = %+v, want %+v", i, got, want)
				}
			}
			if !slices.Equal(p.Skipped, tc.skipped) {
				t.Errorf("Skipped = %q, want %q", p.Skipped, tc.skipped)
			}
			checkPlan(t, tc.state, tc.lim, p)
		})
	}
}

// held is an unpinned entry used d ago and held until now+until.
func held(n, blob string, d, until time.Duration) Entry {
	return Entry{Name: n, Blob: blob, LastUsed: ago(d), HeldUntil: now.Add(until)}
}

// TestMinAgeAndHolds: what min-age and holds keep, what they do not.
func TestMinAgeAndHolds(t *testing.T) {
	cases := []struct {
		name       string
		state      State
		lim        Limits
		victims    []string
		protected  []string
		shortfalls []Shortfall
	}{{
		name: "used within min-age: kept, the older one goes instead",
		state: st(0, blobs(blob("A", 100), blob("B", 100)),
			name("old", "A", 2*hour), name("job", "B", time.Minute)),
		lim:       Limits{MaxSize: 100, MinAge: 10 * time.Minute},
		victims:   []string{"max-size [old] A 100 @2h0m0s"},
		protected: []string{},
	}, {
		name: "only protected entries left: shortfall says recent",
		state: st(0, blobs(blob("A", 100), blob("B", 50)),
			name("a", "A", time.Minute), name("b", "B", 5*time.Minute)),
		lim:        Limits{MaxSize: 1, MinAge: 10 * time.Minute},
		victims:    []string{},
		protected:  []string{"a", "b"},
		shortfalls: []Shortfall{{Limit: LimitMaxSize, Missing: 149, Recent: Held{2, 150}}},
	}, {
		name: "min-age 0 opts out",
		state: st(0, blobs(blob("A", 100)),
			name("a", "A", time.Second)),
		lim:       Limits{MaxSize: 1},
		victims:   []string{"max-size [a] A 100 @1s"},
		protected: []string{},
	}, {
		name: "one protected name keeps its blob's other names too",
		state: st(0, blobs(blob("S", 100)),
			name("stale", "S", 3*day), name("fresh", "S", time.Minute)),
		lim:        Limits{MaxSize: 1, MinAge: time.Hour},
		victims:    []string{},
		protected:  []string{"fresh", "stale"},
		shortfalls: []Shortfall{{Limit: LimitMaxSize, Missing: 99, Recent: Held{1, 100}}},
	}, {
		name: "a hold outlives min-age",
		state: st(0, blobs(blob("A", 100)),
			held("a", "A", 3*hour, time.Hour)),
		lim:        Limits{MinFree: 1000, MinAge: 10 * time.Minute},
		victims:    []string{},
		protected:  []string{"a"},
		shortfalls: []Shortfall{{Limit: LimitMinFree, Missing: 1000, Recent: Held{1, 100}, Outside: 900}},
	}, {
		name: "an expired hold protects nothing",
		state: st(0, blobs(blob("A", 100)),
			held("a", "A", 3*hour, -time.Minute)),
		lim:       Limits{MaxSize: 1, MinAge: 10 * time.Minute},
		victims:   []string{"max-size [a] A 100 @3h0m0s"},
		protected: []string{},
	}, {
		name: "a held name does not expire by max-age",
		state: st(0, blobs(blob("A", 100), blob("B", 100)),
			held("a", "A", 40*day, time.Hour), name("b", "B", 40*day)),
		lim:       Limits{MaxAge: 30 * day},
		victims:   []string{"max-age [b] B 100 @960h0m0s"},
		protected: []string{},
	}, {
		name: "pinned wins the attribution over recent",
		state: st(0, blobs(blob("P", 100)),
			Entry{Name: "p", Blob: "P", LastUsed: ago(time.Minute), Pinned: true}),
		lim:        Limits{MaxSize: 1, MinAge: time.Hour},
		victims:    []string{},
		protected:  []string{},
		shortfalls: []Shortfall{{Limit: LimitMaxSize, Missing: 99, Pinned: Held{1, 100}}},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compute(tc.state, tc.lim)
			if err != nil {
				t.Fatal(err)
			}
			if got := renderAll(p.Victims); !slices.Equal(got, tc.victims) {
				t.Errorf("victims:\n got %q\nwant %q", got, tc.victims)
			}
			if got := append([]string{}, p.Protected...); !slices.Equal(got, tc.protected) {
				t.Errorf("Protected = %q, want %q", got, tc.protected)
			}
			if !slices.Equal(p.Shortfalls, tc.shortfalls) {
				t.Errorf("shortfalls = %+v, want %+v", p.Shortfalls, tc.shortfalls)
			}
			checkPlan(t, tc.state, tc.lim, p)
		})
	}
	if _, err := Compute(State{}, Limits{MinAge: time.Minute}); !errors.Is(err, ErrInconsistentState) {
		t.Errorf("min-age without Now = %v, want ErrInconsistentState", err)
	}
}

func TestVictimLastUsedAndDeleted(t *testing.T) {
	s := st(0, blobs(blob("S", 10), blob("O", 1)),
		name("s1", "S", 5*hour), name("s2", "S", 2*hour))
	p, err := Compute(s, Limits{MaxSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Victims) != 2 || !p.Victims[1].LastUsed.Equal(ago(2*hour)) || !p.Victims[0].LastUsed.IsZero() {
		t.Fatalf("victims %+v: want the orphan with zero LastUsed, then S at its latest use", p.Victims)
	}
	if got := p.Deleted(); !slices.Equal(got, []string{"O", "S"}) {
		t.Fatalf("Deleted() = %q", got)
	}
}

func TestLimitsValidate(t *testing.T) {
	cases := []struct {
		name string
		lim  Limits
		want []string // substrings of the error; nil = valid
	}{
		{name: "zero", lim: Limits{}},
		{name: "all set", lim: Limits{MinFree: 10, TargetFree: 20, MaxSize: 30, MaxAge: day}},
		{name: "target equals min", lim: Limits{MinFree: 10, TargetFree: 10}},
		{name: "min-free without target", lim: Limits{MinFree: 10}},
		{name: "negative min-free", lim: Limits{MinFree: -1}, want: []string{"min-free must not be negative (got -1)"}},
		{name: "negative target-free", lim: Limits{MinFree: 1, TargetFree: -5}, want: []string{"target-free must not be negative (got -5)"}},
		{name: "negative max-size", lim: Limits{MaxSize: -3}, want: []string{"max-size must not be negative (got -3)"}},
		{name: "negative max-age", lim: Limits{MaxAge: -time.Second}, want: []string{"max-age must not be negative (got -1s)"}},
		{name: "target below min", lim: Limits{MinFree: 20 * GiB, TargetFree: 10 * GiB},
			want: []string{"target-free (10GiB) must be at least min-free (20GiB)"}},
		{name: "target without min", lim: Limits{TargetFree: 10}, want: []string{"target-free needs min-free"}},
		{name: "min-age within max-age", lim: Limits{MinAge: 10 * time.Minute, MaxAge: day}},
		{name: "min-age equal to max-age", lim: Limits{MinAge: day, MaxAge: day}},
		{name: "min-age without max-age", lim: Limits{MinAge: day}},
		{name: "negative min-age", lim: Limits{MinAge: -time.Second}, want: []string{"min-age must not be negative (got -1s)"}},
		{name: "min-age over max-age", lim: Limits{MinAge: 2 * hour, MaxAge: hour},
			want: []string{"min-age (2h0m0s) must not exceed max-age (1h0m0s)"}},
		{name: "several at once", lim: Limits{MaxSize: -1, MaxAge: -1},
			want: []string{"max-size must not be negative", "max-age must not be negative"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.lim.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidLimits) {
				t.Fatalf("Validate() = %v, want an ErrInvalidLimits", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to say %q", err, w)
				}
			}
			if _, cerr := Compute(State{Now: now}, tc.lim); !errors.Is(cerr, ErrInvalidLimits) {
				t.Errorf("Compute with these limits = %v, want an ErrInvalidLimits", cerr)
			}
		})
	}
}

func TestComputeInconsistentState(t *testing.T) {
	cases := []struct {
		name  string
		state State
		lim   Limits
		want  []string
	}{
		{name: "name points at a missing blob",
			state: st(0, blobs(blob("A", 1)), name("a", "A", 0), name("x", "X", 0)),
			want:  []string{`name x points at blob "X", which is not on disk`}},
		{name: "duplicate name",
			state: st(0, blobs(blob("A", 1), blob("B", 1)), name("a", "A", 0), name("a", "B", 0)),
			want:  []string{"name a is listed twice"}},
		{name: "duplicate blob",
			state: st(0, blobs(blob("A", 1), blob("A", 2))),
			want:  []string{"blob A is listed twice"}},
		{name: "empty blob key",
			state: st(0, blobs(blob("", 1))),
			want:  []string{"a blob has an empty key"}},
		{name: "empty name",
			state: st(0, blobs(blob("A", 1)), name("", "A", 0)),
			want:  []string{"empty name"}},
		{name: "negative size",
			state: st(0, blobs(blob("A", -1))),
			want:  []string{"blob A has a negative size (-1)"}},
		{name: "negative free with min-free",
			state: st(-5, nil), lim: Limits{MinFree: 1},
			want: []string{"free space is negative (-5)"}},
		{name: "zero Now with max-age",
			state: State{Blobs: blobs(blob("A", 1))}, lim: Limits{MaxAge: day},
			want: []string{"Now is zero"}},
		{name: "several problems, capped",
			state: st(0, nil, name("a", "1", 0), name("b", "2", 0), name("c", "3", 0),
				name("d", "4", 0), name("e", "5", 0), name("f", "6", 0), name("g", "7", 0)),
			want: []string{"name a points", "name e points", "and 2 more"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compute(tc.state, tc.lim)
			if !errors.Is(err, ErrInconsistentState) {
				t.Fatalf("Compute() = %v, want an ErrInconsistentState", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			// The error too must not depend on input order.
			rng := rand.New(rand.NewPCG(7, 7))
			for range 10 {
				_, err2 := Compute(shuffled(rng, tc.state), tc.lim)
				if err2 == nil || err2.Error() != err.Error() {
					t.Fatalf("shuffled input gave %v, want %v", err2, err)
				}
			}
		})
	}
}

func shuffled(rng *rand.Rand, s State) State {
	s.Entries = slices.Clone(s.Entries)
	s.Blobs = slices.Clone(s.Blobs)
	rng.Shuffle(len(s.Entries), func(i, j int) { s.Entries[i], s.Entries[j] = s.Entries[j], s.Entries[i] })
	rng.Shuffle(len(s.Blobs), func(i, j int) { s.Blobs[i], s.Blobs[j] = s.Blobs[j], s.Blobs[i] })
	return s
}

func TestPermutationInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range planCases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := Compute(tc.state, tc.lim)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 50 {
				got, err := Compute(shuffled(rng, tc.state), tc.lim)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("shuffle %d:\n got %+v\nwant %+v", i, got, want)
				}
			}
		})
	}
	t.Run("random states", func(t *testing.T) {
		for i := range 500 {
			s, l := randomCase(rng)
			want, err := Compute(s, l)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Compute(shuffled(rng, s), l)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("case %d:\n got %+v\nwant %+v", i, got, want)
			}
		}
	})
}

func TestComputeDoesNotModifyInput(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		s, l := randomCase(rng)
		before := State{Entries: slices.Clone(s.Entries), Blobs: slices.Clone(s.Blobs)}
		if _, err := Compute(s, l); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(s.Entries, before.Entries) || !slices.Equal(s.Blobs, before.Blobs) {
			t.Fatal("Compute changed its input slices")
		}
	}
}

// randomCase makes a consistent state with many ties, shared blobs, orphans,
// pins and in-use blobs, and random valid limits.
func randomCase(rng *rand.Rand) (State, Limits) {
	var s State
	s.Now = now
	nb := rng.IntN(25)
	for i := range nb {
		b := Blob{Key: fmt.Sprintf("sha256:%02d", i), Size: rng.Int64N(1000)}
		b.InUse = rng.IntN(8) == 0
		s.Blobs = append(s.Blobs, b)
	}
	if nb > 0 {
		for i := range rng.IntN(40) {
			e := Entry{
				Name:     fmt.Sprintf("n%02d", i),
				Blob:     s.Blobs[rng.IntN(nb)].Key,
				LastUsed: ago(time.Duration(rng.IntN(60)) * day / 2), // coarse: many ties
				Pinned:   rng.IntN(10) == 0,
			}
			if rng.IntN(20) == 0 {
				e.LastUsed = time.Time{}
			}
			s.Entries = append(s.Entries, e)
		}
	}
	s.Free = rng.Int64N(5000)
	var l Limits
	if rng.IntN(2) == 0 {
		l.MaxSize = 1 + rng.Int64N(12000)
	}
	if rng.IntN(2) == 0 {
		l.MinFree = 1 + rng.Int64N(6000)
		if rng.IntN(2) == 0 {
			l.TargetFree = l.MinFree + rng.Int64N(3000)
		}
	}
	if rng.IntN(2) == 0 {
		l.MaxAge = time.Duration(1+rng.IntN(30)) * day
	}
	if rng.IntN(3) == 0 {
		l.MinAge = time.Duration(1+rng.IntN(8)) * day / 2
		if l.MaxAge > 0 && l.MinAge > l.MaxAge {
			l.MinAge = l.MaxAge
		}
	}
	for i := range s.Entries {
		if rng.IntN(8) == 0 { // a hold, live or expired
			s.Entries[i].HeldUntil = now.Add(time.Duration(rng.IntN(5)-2) * hour)
		}
	}
	return s, l
}

// loosen returns limits no stricter than l: a larger max-size or max-age
// (or none), a smaller min-free / target-free (or none).
func loosen(rng *rand.Rand, l Limits) Limits {
	switch rng.IntN(3) {
	case 0:
		if l.MaxSize > 0 {
			l.MaxSize += rng.Int64N(3000)
		}
	case 1:
		l.MaxSize = 0
	}
	switch rng.IntN(3) {
	case 0:
		if l.MaxAge > 0 {
			l.MaxAge += time.Duration(rng.IntN(10)) * day
		}
	case 1:
		l.MaxAge = 0
	}
	switch rng.IntN(4) {
	case 0:
		l.MinFree, l.TargetFree = 0, 0
	case 1: // lower the target only
		if l.TargetFree > l.MinFree {
			l.TargetFree -= rng.Int64N(l.TargetFree - l.MinFree + 1)
		}
	case 2: // lower both
		if l.MinFree > 1 {
			d := rng.Int64N(l.MinFree)
			l.MinFree -= d
			if l.TargetFree > 0 {
				l.TargetFree -= d + rng.Int64N(l.TargetFree-l.MinFree-d+1)
				l.TargetFree = max(l.TargetFree, l.MinFree)
			}
		}
	}
	return l
}

func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 1729))
	for i := range 5000 {
		s, l := randomCase(rng)
		p, err := Compute(s, l)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		t.Run("", func(t *testing.T) {
			checkPlan(t, s, l, p)
			if t.Failed() {
				t.Fatalf("case %d: state %+v limits %+v plan %+v", i, s, l, p)
			}
		})

		loose := loosen(rng, l)
		if err := loose.Validate(); err != nil {
			t.Fatalf("case %d: loosen made bad limits %+v from %+v: %v", i, loose, l, err)
		}
		lp, err := Compute(s, loose)
		if err != nil {
			t.Fatal(err)
		}
		if lp.Freed > p.Freed {
			t.Fatalf("case %d: looser limits %+v free %d > %d freed by %+v", i, loose, lp.Freed, p.Freed, l)
		}
		strict := p.Deleted()
		for _, k := range lp.Deleted() {
			if !slices.Contains(strict, k) {
				t.Fatalf("case %d: looser limits %+v delete %s, which %+v keeps", i, loose, k, l)
			}
		}
	}
}

// checkPlan asserts the invariants every plan must hold.
func checkPlan(t *testing.T, s State, l Limits, p Plan) {
	t.Helper()
	entries := map[string]Entry{}
	namesOf := map[string][]string{}
	for _, e := range s.Entries {
		entries[e.Name] = e
		namesOf[e.Blob] = append(namesOf[e.Blob], e.Name)
	}
	blobOf := map[string]Blob{}
	var stored int64
	for _, b := range s.Blobs {
		blobOf[b.Key] = b
		stored += b.Size
	}

	dropped := map[string]bool{}
	deleted := map[string]bool{}
	var credited, sumDeleted int64
	for _, v := range p.Victims {
		for _, n := range v.Names {
			e, ok := entries[n]
			switch {
			case !ok:
				t.Errorf("victim drops unknown name %s", n)
			case e.Pinned:
				t.Errorf("pinned name %s is a victim", n)
			case dropped[n]:
				t.Errorf("name %s dropped twice", n)
			}
			dropped[n] = true
			if v.Reason == ReasonMaxAge && s.Now.Sub(e.LastUsed) <= l.MaxAge {
				t.Errorf("name %s dropped for max-age but only %s old", n, s.Now.Sub(e.LastUsed))
			}
			if e.HeldUntil.After(s.Now) {
				t.Errorf("name %s dropped (%s) while held until %s", n, v.Reason, e.HeldUntil)
			}
			if (v.Reason == ReasonMaxSize || v.Reason == ReasonMinFree) && l.MinAge > 0 && s.Now.Sub(e.LastUsed) < l.MinAge {
				t.Errorf("name %s evicted (%s) though used %s ago, within min-age %s", n, v.Reason, s.Now.Sub(e.LastUsed), l.MinAge)
			}
		}
		if !slices.IsSorted(v.Names) {
			t.Errorf("victim names not sorted: %v", v.Names)
		}
		credited += v.Freed
		if v.Blob == "" {
			if v.Freed != 0 {
				t.Errorf("victim without blob credits %d", v.Freed)
			}
			if len(v.Names) == 0 {
				t.Errorf("empty victim %+v", v)
			}
			continue
		}
		b, ok := blobOf[v.Blob]
		switch {
		case !ok:
			t.Errorf("victim deletes unknown blob %s", v.Blob)
		case b.InUse:
			t.Errorf("in-use blob %s deleted", v.Blob)
		case deleted[v.Blob]:
			t.Errorf("blob %s deleted twice", v.Blob)
		case v.Freed != b.Size:
			t.Errorf("blob %s credits %d, size %d", v.Blob, v.Freed, b.Size)
		}
		if (v.Reason == ReasonOrphan) != (len(namesOf[v.Blob]) == 0) {
			t.Errorf("blob %s: reason %s but %d names", v.Blob, v.Reason, len(namesOf[v.Blob]))
		}
		deleted[v.Blob] = true
		sumDeleted += b.Size
	}
	for k := range deleted {
		for _, n := range namesOf[k] {
			if !dropped[n] {
				t.Errorf("blob %s deleted but its name %s is kept", k, n)
			}
		}
	}
	if p.Freed != credited || p.Freed != sumDeleted {
		t.Errorf("Freed %d, victims credit %d, deleted blobs sum %d", p.Freed, credited, sumDeleted)
	}
	if p.StoredBefore != stored || p.StoredAfter != stored-p.Freed || p.FreeAfter != s.Free+p.Freed {
		t.Errorf("Stored %d→%d FreeAfter %d, want %d→%d %d", p.StoredBefore, p.StoredAfter, p.FreeAfter, stored, stored-p.Freed, s.Free+p.Freed)
	}
	for _, k := range p.Skipped {
		b := blobOf[k]
		pinned := slices.ContainsFunc(namesOf[k], func(n string) bool { return entries[n].Pinned })
		if deleted[k] || !(b.InUse || pinned) {
			t.Errorf("skipped blob %s: deleted %v, in use %v, pinned %v", k, deleted[k], b.InUse, pinned)
		}
	}

	// Orphans not in use always go.
	for _, b := range s.Blobs {
		if len(namesOf[b.Key]) == 0 && !b.InUse && !deleted[b.Key] {
			t.Errorf("orphan %s kept", b.Key)
		}
	}
	// Every surviving blob that could have gone is only kept because targets are met.
	evictableLeft := false
	for _, b := range s.Blobs {
		if deleted[b.Key] || b.InUse {
			continue
		}
		protected := func(n string) bool {
			e := entries[n]
			return !dropped[n] && (e.HeldUntil.After(s.Now) || (l.MinAge > 0 && s.Now.Sub(e.LastUsed) < l.MinAge))
		}
		if !slices.ContainsFunc(namesOf[b.Key], func(n string) bool { return entries[n].Pinned || protected(n) }) {
			evictableLeft = true
		}
	}
	var wantShort []Shortfall
	if l.MaxSize > 0 && p.StoredAfter > l.MaxSize {
		wantShort = append(wantShort, Shortfall{Limit: LimitMaxSize, Missing: p.StoredAfter - l.MaxSize})
	}
	if l.MinFree > 0 && s.Free < l.MinFree && p.FreeAfter < l.target() {
		wantShort = append(wantShort, Shortfall{Limit: LimitMinFree, Missing: l.target() - p.FreeAfter})
	}
	if len(wantShort) > 0 && evictableLeft {
		t.Errorf("targets unmet %+v while an evictable blob is left", wantShort)
	}
	if len(p.Shortfalls) != len(wantShort) {
		t.Errorf("shortfalls %+v, want %+v", p.Shortfalls, wantShort)
	} else {
		for i := range wantShort {
			sf := p.Shortfalls[i]
			// What it names as holding the rest accounts for what is missing.
			if sf.Limit != wantShort[i].Limit || sf.Missing != wantShort[i].Missing || sf.Pinned.Bytes+sf.InUse.Bytes+sf.Recent.Bytes+sf.Shared.Bytes+sf.Other.Bytes+sf.Outside < sf.Missing {
				t.Errorf("shortfall %+v, want %+v", p.Shortfalls[i], wantShort[i])
			}
		}
	}
	// Without a size or free-space limit, only orphans and max-age act.
	if l.MaxSize == 0 && (l.MinFree == 0 || s.Free >= l.MinFree) {
		for _, v := range p.Victims {
			if v.Reason == ReasonMaxSize || v.Reason == ReasonMinFree {
				t.Errorf("%s victim %+v without that limit in force", v.Reason, v)
			}
		}
	}
}

// benchState is 10,000 names over 8,000 blobs (some shared, some orphaned),
// with pins and in-use blobs, and limits that evict a good part of it.
func benchState() (State, Limits) {
	rng := rand.New(rand.NewPCG(10, 10))
	s := State{Now: now}
	var total int64
	for i := range 8000 {
		b := Blob{Key: fmt.Sprintf("sha256:%064x", i), Size: 1 + rng.Int64N(2*GiB), InUse: rng.IntN(100) == 0}
		total += b.Size
		s.Blobs = append(s.Blobs, b)
	}
	for i := range 10000 {
		s.Entries = append(s.Entries, Entry{
			Name:     fmt.Sprintf("proj%d-ubuntu-25.04-gcc%d", i/10, i%10),
			Blob:     s.Blobs[rng.IntN(len(s.Blobs))].Key,
			LastUsed: ago(time.Duration(rng.Int64N(int64(90 * day)))),
			Pinned:   rng.IntN(200) == 0,
		})
	}
	s.Free = 10 * GiB
	return s, Limits{MaxSize: total / 2, MinFree: 20 * GiB, TargetFree: 40 * GiB, MaxAge: 60 * day}
}

func BenchmarkCompute10k(b *testing.B) {
	s, l := benchState()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compute(s, l); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBenchState checks that the benchmark measures a real plan.
func TestBenchState(t *testing.T) {
	s, l := benchState()
	p, err := Compute(s, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Victims) == 0 {
		t.Fatal("benchmark state evicts nothing")
	}
	checkPlan(t, s, l, p)
}
