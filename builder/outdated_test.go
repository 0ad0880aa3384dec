package builder

import (
	"strings"
	"testing"
	"time"
)

func TestOutdated(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	const (
		base  = "capy-ubuntu-25.04-base"
		gcc   = "capy-ubuntu-25.04-gcc15"
		asan  = "capy-ubuntu-25.04-gcc15-asan"
		d1    = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
		d2    = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
		d3    = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
		d4    = "sha256:4444444444444444444444444444444444444444444444444444444444444444"
		fresh = ""
	)
	chain := func(baseDigest, gccBuiltFrom string, gccAge, asanAge time.Duration) map[string]Info {
		return map[string]Info{
			base: {Digest: baseDigest},
			gcc:  {Digest: d2, Base: base, BaseDigest: gccBuiltFrom, Built: now.Add(-gccAge)},
			asan: {Digest: d3, Base: gcc, BaseDigest: d2, Built: now.Add(-asanAge)},
		}
	}
	for _, tc := range []struct {
		what    string
		entries map[string]Info
		maxAge  time.Duration
		want    map[string]string // name → reason kinds; absent = fresh
	}{
		{"all fresh", chain(d1, d1, day, day), 0, nil},
		{"base re-put: the whole chain", chain(d4, d1, day, day), 0, map[string]string{
			gcc:  "base-changed",
			asan: "base-outdated",
		}},
		{"middle rebuilt, leaf not yet", map[string]Info{
			base: {Digest: d1},
			gcc:  {Digest: d4, Base: base, BaseDigest: d1, Built: now},
			asan: {Digest: d3, Base: gcc, BaseDigest: d2, Built: now},
		}, 0, map[string]string{asan: "base-changed"}},
		{"no max age: age is no reason", chain(d1, d1, 400*day, 400*day), 0, nil},
		{"too old propagates", chain(d1, d1, 40*day, day), 30 * day, map[string]string{
			gcc:  "too-old",
			asan: "base-outdated",
		}},
		{"leaf too old alone", chain(d1, d1, day, 40*day), 30 * day, map[string]string{asan: "too-old"}},
		{"every reason at once", chain(d4, d1, 40*day, 40*day), 30 * day, map[string]string{
			gcc:  "base-changed,too-old",
			asan: "base-outdated,too-old",
		}},
		{"base missing: reported, not propagated", map[string]Info{
			gcc:  {Digest: d2, Base: base, BaseDigest: d1, Built: now},
			asan: {Digest: d3, Base: gcc, BaseDigest: d2, Built: now},
		}, 0, map[string]string{gcc: "base-missing"}},
		{"base missing and too old: still not propagated", map[string]Info{
			gcc:  {Digest: d2, Base: base, BaseDigest: d1, Built: now.Add(-40 * day)},
			asan: {Digest: d3, Base: gcc, BaseDigest: d2, Built: now},
		}, 30 * day, map[string]string{gcc: "base-missing,too-old"}},
		{"entries that were put are never outdated", map[string]Info{
			base: {Digest: d1},
			gcc:  {Digest: d2},
		}, time.Nanosecond, nil},
		{"a cycle terminates", map[string]Info{
			gcc:  {Digest: d2, Base: asan, BaseDigest: d3, Built: now},
			asan: {Digest: d3, Base: gcc, BaseDigest: d4, Built: now},
		}, 0, map[string]string{gcc: "base-outdated", asan: "base-changed"}},
		{"self base", map[string]Info{
			gcc: {Digest: d2, Base: gcc, BaseDigest: d2, Built: now},
		}, 0, nil},
	} {
		t.Run(tc.what, func(t *testing.T) {
			got := Outdated(tc.entries, now, tc.maxAge)
			if got == nil {
				t.Fatal("nil slice (want [] for JSON)")
			}
			seen := map[string]string{}
			for i, s := range got {
				if i > 0 && got[i-1].Name >= s.Name {
					t.Errorf("not sorted: %s before %s", got[i-1].Name, s.Name)
				}
				seen[s.Name] = s.Kinds()
				if s.Base != tc.entries[s.Name].Base || !s.Built.Equal(tc.entries[s.Name].Built) {
					t.Errorf("%s: base %q built %v", s.Name, s.Base, s.Built)
				}
				for _, r := range s.Reasons {
					if r.Detail == "" {
						t.Errorf("%s: reason %s without detail", s.Name, r.Kind)
					}
				}
			}
			if len(seen) != len(tc.want) {
				t.Errorf("outdated %v, want %v", seen, tc.want)
			}
			for n, k := range tc.want {
				if seen[n] != k {
					t.Errorf("%s: reasons %q, want %q", n, seen[n], k)
				}
			}
		})
	}
}

func TestOutdatedDetail(t *testing.T) {
	now := time.Now()
	got := Outdated(map[string]Info{
		"capy-ubuntu-25.04-base":  {Digest: "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
		"capy-ubuntu-25.04-gcc15": {Base: "capy-ubuntu-25.04-base", BaseDigest: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Built: now.Add(-time.Hour)},
	}, now, time.Minute)
	if len(got) != 1 {
		t.Fatalf("%+v", got)
	}
	d := got[0].Reasons[0].Detail
	for _, want := range []string{"capy-ubuntu-25.04-base", "sha256:bbbbbbbbbbbb", "sha256:aaaaaaaaaaaa"} {
		if !strings.Contains(d, want) {
			t.Errorf("detail %q lacks %q", d, want)
		}
	}
	if d := got[0].Reasons[1].Detail; !strings.Contains(d, "1h0m0s") {
		t.Errorf("too-old detail %q", d)
	}
}
