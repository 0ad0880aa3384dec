package builder

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"
)

func TestSelect(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	// base (put) ← gcc (built on an old base: base-changed) ← asan (base-outdated)
	// fresh is up to date on base; orphan's base is gone; norecipe has a base but no recipe.
	entries := map[string]Info{
		"p-os-1-base":     {Digest: "sha256:b2"},
		"p-os-1-gcc":      {Digest: "sha256:g1", Base: "p-os-1-base", BaseDigest: "sha256:b1", Recipe: true, Built: now.Add(-time.Hour)},
		"p-os-1-gcc-asan": {Digest: "sha256:a1", Base: "p-os-1-gcc", BaseDigest: "sha256:g1", Recipe: true, Built: now.Add(-time.Hour)},
		"p-os-1-fresh":    {Digest: "sha256:f1", Base: "p-os-1-base", BaseDigest: "sha256:b2", Recipe: true, Built: now.Add(-time.Hour)},
		"p-os-1-orphan":   {Digest: "sha256:o1", Base: "p-os-1-gone", BaseDigest: "sha256:x", Recipe: true},
		"p-os-1-norecipe": {Digest: "sha256:n1", Base: "p-os-1-base", BaseDigest: "sha256:b1"},
	}
	cases := []struct {
		name    string
		names   []string
		force   bool
		maxAge  time.Duration
		targets []string
		skipped []string
		err     error
	}{
		{name: "all outdated", targets: []string{"p-os-1-gcc", "p-os-1-gcc-asan"}, skipped: []string{"p-os-1-norecipe", "p-os-1-orphan"}},
		{name: "named pulls in its outdated ancestors", names: []string{"p-os-1-gcc-asan"}, targets: []string{"p-os-1-gcc", "p-os-1-gcc-asan"}},
		{name: "named up to date", names: []string{"p-os-1-fresh"}, skipped: []string{"p-os-1-fresh"}},
		{name: "named up to date, forced", names: []string{"p-os-1-fresh"}, force: true, targets: []string{"p-os-1-fresh"}},
		{name: "too old", names: []string{"p-os-1-fresh"}, maxAge: time.Minute, targets: []string{"p-os-1-fresh"}},
		{name: "up to date, then an ancestor of another", names: []string{"p-os-1-gcc", "p-os-1-gcc-asan", "p-os-1-gcc"}, targets: []string{"p-os-1-gcc", "p-os-1-gcc-asan"}},
		{name: "unknown", names: []string{"p-os-1-none"}, err: ErrUnknown},
		{name: "put, no recipe", names: []string{"p-os-1-base"}, err: ErrNoRecipe},
		{name: "base gone", names: []string{"p-os-1-orphan"}, err: ErrBaseMissing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := Select(entries, tc.names, now, tc.maxAge, tc.force)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if got := slices.Sorted(maps.Keys(sel.Targets)); !slices.Equal(got, tc.targets) {
				t.Errorf("targets %v, want %v", got, tc.targets)
			}
			var skipped []string
			for _, s := range sel.Skipped {
				skipped = append(skipped, s.Name)
			}
			if !slices.Equal(skipped, tc.skipped) {
				t.Errorf("skipped %v, want %v", skipped, tc.skipped)
			}
		})
	}
	sel, _ := Select(entries, []string{"p-os-1-fresh"}, now, 0, true)
	if !slices.Equal(sel.Targets["p-os-1-fresh"], []string{ReasonForced}) {
		t.Errorf("forced reasons %v", sel.Targets["p-os-1-fresh"])
	}
	sel, _ = Select(entries, nil, now, 0, false)
	if !slices.Equal(sel.Targets["p-os-1-gcc-asan"], []string{ReasonBaseOutdated}) {
		t.Errorf("asan reasons %v", sel.Targets["p-os-1-gcc-asan"])
	}
}
