package builder

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/imgcache/imgcache/naming"
)

var cached = []string{
	"capy-ubuntu-25.04-base",
	"capy-ubuntu-25.04-gcc15",
	"capy-ubuntu-25.04-gcc15-asan",
	"capy-ubuntu-25.04-clang20-asan",
	"capy-ubuntu-24.04-base",
	"zeta-ubuntu-25.04-base",
	"acme-ubuntu-25.04-base",
	"acme-ubuntu-25.04-gcc15",
	"capy-debian-12-gcc15",
	"Not-A-Name",
	"",
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name      string
		entries   []string
		image     string // "" = null
		base      string // "" = null
		rule      string
		needBuild bool
	}{
		{"capy-ubuntu-25.04-gcc15", cached, "capy-ubuntu-25.04-gcc15", "capy-ubuntu-25.04-base", RuleProjectBase, false},
		{"capy-ubuntu-25.04-gcc15-asan", cached, "capy-ubuntu-25.04-gcc15-asan", "capy-ubuntu-25.04-gcc15", RulePrefix, false},
		{"capy-ubuntu-25.04-gcc15-tsan", cached, "", "capy-ubuntu-25.04-gcc15", RulePrefix, true},
		// The longest prefix wins, by whole segments.
		{"capy-ubuntu-25.04-gcc15-asan-lto", cached, "", "capy-ubuntu-25.04-gcc15-asan", RulePrefix, true},
		{"capy-ubuntu-25.04-gcc15x-asan", cached, "", "capy-ubuntu-25.04-base", RuleProjectBase, true},
		{"capy-ubuntu-25.04-gcc", cached, "", "capy-ubuntu-25.04-base", RuleProjectBase, true},
		// clang20-asan is cached, but clang20 is not: the base it is.
		{"capy-ubuntu-25.04-clang20", cached, "", "capy-ubuntu-25.04-base", RuleProjectBase, true},
		{"capy-ubuntu-25.04-clang20-asan-ubsan", cached, "", "capy-ubuntu-25.04-clang20-asan", RulePrefix, true},
		// Same project, other OS version: its own base.
		{"capy-ubuntu-24.04-gcc15-asan", cached, "", "capy-ubuntu-24.04-base", RuleProjectBase, true},
		// Another project's variant never counts; another project's base
		// does, the first by name.
		{"newp-ubuntu-25.04-gcc15", cached, "", "acme-ubuntu-25.04-base", RuleOSBase, true},
		// A base's own ancestor: never itself; another project's base.
		{"capy-ubuntu-25.04-base", cached, "capy-ubuntu-25.04-base", "acme-ubuntu-25.04-base", RuleOSBase, false},
		{"acme-ubuntu-25.04-base", cached, "acme-ubuntu-25.04-base", "capy-ubuntu-25.04-base", RuleOSBase, false},
		// Nothing for this OS.
		{"capy-fedora-41-gcc15", cached, "", "", "", true},
		{"capy-debian-12-gcc15-asan", cached, "", "capy-debian-12-gcc15", RulePrefix, true},
		{"capy-debian-12-clang20", cached, "", "", "", true},
		{"capy-ubuntu-25.04-gcc15", nil, "", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(entries []string) {
				t.Helper()
				p := Resolve(naming.MustParse(tc.name), entries)
				if got := deref(p.BestImage); got != tc.image {
					t.Errorf("best_image %q, want %q", got, tc.image)
				}
				if got := deref(p.BestBase); got != tc.base || p.BaseRule != tc.rule {
					t.Errorf("best_base %q (%s), want %q (%s)", got, p.BaseRule, tc.base, tc.rule)
				}
				if p.NeedsBuild != tc.needBuild || p.Name != tc.name {
					t.Errorf("plan %+v", p)
				}
			}
			check(tc.entries)
			rev := slices.Clone(tc.entries)
			slices.Reverse(rev)
			check(rev)
		})
	}
}

func TestPlanJSON(t *testing.T) {
	for _, tc := range []struct {
		entries []string
		want    string
	}{
		{nil, `{"name":"capy-ubuntu-25.04-gcc15-asan","best_image":null,"best_base":null,"base_rule":"","needs_build":true}`},
		{cached, `{"name":"capy-ubuntu-25.04-gcc15-asan","best_image":"capy-ubuntu-25.04-gcc15-asan","best_base":"capy-ubuntu-25.04-gcc15","base_rule":"variant-prefix","needs_build":false}`},
	} {
		b, err := json.Marshal(Resolve(naming.MustParse("capy-ubuntu-25.04-gcc15-asan"), tc.entries))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("got  %s\nwant %s", b, tc.want)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
