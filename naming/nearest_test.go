package naming

import (
	"slices"
	"testing"
)

func TestNearest(t *testing.T) {
	known := []string{"capy-debian-12-a", "capy-debian-12-b", "capy-ubuntu-25.04-gcc15", "capy-ubuntu-25.04-gcc14", "zeta-alpine-3.22-musl"}
	cases := []struct {
		name string
		want []string
	}{
		{"capy-debian-12-c", []string{"capy-debian-12-a", "capy-debian-12-b"}},
		{"capy-ubuntu-25.04-gcc16", []string{"capy-ubuntu-25.04-gcc14", "capy-ubuntu-25.04-gcc15"}},
		{"capy-ubuntu-25.04-gcc", []string{"capy-ubuntu-25.04-gcc14", "capy-ubuntu-25.04-gcc15"}},
		{"capy-ubuntu-24.04-gcc15", []string{"capy-ubuntu-25.04-gcc15", "capy-ubuntu-25.04-gcc14"}},
		{"zeta-alpine-3.21-musl", []string{"zeta-alpine-3.22-musl"}},
		{"other-fedora-41-rust", nil},
		{"capy-debian-12-a", []string{"capy-debian-12-b"}}, // never itself
	}
	for _, tc := range cases {
		if got := Nearest(tc.name, known, 3); !slices.Equal(got, tc.want) {
			t.Errorf("Nearest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := Nearest("capy-debian-12-c", known, 1); !slices.Equal(got, []string{"capy-debian-12-a"}) {
		t.Errorf("n=1: %q", got)
	}
	if got := Nearest("x", nil, 3); got != nil {
		t.Errorf("no known names: %q", got)
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"flaw", "lawn", 2}, {"abc", "abc", 0}} {
		if got := distance(tc.a, tc.b, 10); got != tc.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := distance(tc.a, tc.b, 0); (tc.want > 0) != (got > 0) {
			t.Errorf("distance(%q, %q, limit 0) = %d", tc.a, tc.b, got)
		}
	}
}
