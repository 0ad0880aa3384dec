package lru

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// layered is an entry whose head (skeleton) needs parts (layers).
func layered(n, head string, d time.Duration, parts ...string) Entry {
	return Entry{Name: n, Blob: head, LastUsed: ago(d), Parts: parts}
}

func victimsOf(p Plan) (names []string, parts [][]string) {
	for _, v := range p.Victims {
		names = append(names, v.Names...)
		parts = append(parts, v.Parts)
	}
	return names, parts
}

// TestPartsSharedBase: evicting the older of two entries on one base frees
// its skeleton and its own layer, never the base; evicting both frees the
// base with the second, and credits each blob once.
func TestPartsSharedBase(t *testing.T) {
	bs := blobs(blob("skA", 1), blob("skB", 1), blob("base", 100), blob("la", 10), blob("lb", 20))
	es := []Entry{layered("a", "skA", 2*hour, "base", "la"), layered("b", "skB", hour, "base", "lb")}
	p, err := Compute(st(0, bs, es...), Limits{MaxSize: 130})
	if err != nil {
		t.Fatal(err)
	}
	names, parts := victimsOf(p)
	if !slices.Equal(names, []string{"a"}) || !slices.Equal(parts[0], []string{"la"}) || p.Freed != 11 {
		t.Fatalf("plan %v parts %v freed %d; want a alone, its layer, 11 bytes", names, parts, p.Freed)
	}
	p, _ = Compute(st(0, bs, es...), Limits{MaxSize: 1})
	names, parts = victimsOf(p)
	if !slices.Equal(names, []string{"a", "b"}) || !slices.Equal(parts[1], []string{"base", "lb"}) || p.Freed != 132 || p.StoredAfter != 0 {
		t.Fatalf("plan %v parts %v freed %d after %d; want a then b, the base with b", names, parts, p.Freed, p.StoredAfter)
	}
	if got := p.Deleted(); len(got) != 5 {
		t.Errorf("Deleted = %v, want all five blobs", got)
	}
}

// TestPartsDeferred: an entry whose eviction frees none of its layers (the
// base alone, which a newer variant needs) is put off, not evicted for its
// few skeleton bytes: the variant goes first, then the base image, whose
// layer nobody else needs any more.
func TestPartsDeferred(t *testing.T) {
	bs := blobs(blob("skC", 1), blob("skB", 1), blob("base", 100), blob("lb", 20))
	es := []Entry{layered("c", "skC", 3*hour, "base"), layered("b", "skB", hour, "base", "lb")}
	p, _ := Compute(st(0, bs, es...), Limits{MaxSize: 1})
	names, _ := victimsOf(p)
	if !slices.Equal(names, []string{"b", "c"}) || p.StoredAfter != 0 {
		t.Fatalf("order %v, stored after %d; want b (frees its layer) before c", names, p.StoredAfter)
	}
	// b enough: c is never touched.
	p, _ = Compute(st(0, bs, es...), Limits{MaxSize: 110})
	if names, _ := victimsOf(p); !slices.Equal(names, []string{"b"}) || len(p.Shared) != 0 {
		t.Fatalf("order %v shared %v; want b alone", names, p.Shared)
	}
	// b pinned: c frees nothing and stays; it is reported.
	es[1].Pinned = true
	p, _ = Compute(st(0, bs, es...), Limits{MaxSize: 1})
	if len(p.Victims) != 0 || !slices.Equal(p.Shared, []string{"c"}) || len(p.Shortfalls) != 1 {
		t.Fatalf("victims %v shared %v shortfalls %v", p.Victims, p.Shared, p.Shortfalls)
	}
	sf := p.Shortfalls[0]
	if sf.Shared.Blobs != 1 || sf.Shared.Bytes != 1 || sf.Pinned.Blobs != 3 || sf.Pinned.Bytes != 121 {
		t.Errorf("shortfall %+v: want c's skeleton shared, b's three blobs pinned", sf)
	}
}

// TestPartsOrphansAndInUse: a part no entry needs goes as an orphan (one a
// named head needs stays); a part in use when its last entry goes is kept
// and skipped; a missing part is an inconsistent state.
func TestPartsOrphansAndInUse(t *testing.T) {
	bs := blobs(blob("skA", 1), blob("base", 100), blob("stray", 7), busy("la", 10))
	es := []Entry{layered("a", "skA", hour, "base", "la")}
	p, _ := Compute(st(0, bs, es...), Limits{})
	if got := p.Deleted(); !slices.Equal(got, []string{"stray"}) {
		t.Fatalf("orphans deleted %v, want the stray part alone", got)
	}
	p, _ = Compute(st(0, bs, es...), Limits{MaxAge: time.Minute})
	if got := p.Deleted(); !slices.Equal(got, []string{"stray", "skA", "base"}) || !slices.Contains(p.Skipped, "la") {
		t.Fatalf("max-age deleted %v skipped %v; want the skeleton and base, la (in use) skipped", got, p.Skipped)
	}
	_, err := Compute(st(0, blobs(blob("skA", 1)), es...), Limits{})
	if !errors.Is(err, ErrInconsistentState) {
		t.Errorf("a missing part: %v, want ErrInconsistentState", err)
	}
}
