package builder

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestOrder(t *testing.T) {
	graph := map[string]string{
		"gcc15":      "base",
		"gcc15-asan": "gcc15",
		"gcc15-lto":  "gcc15",
		"clang20":    "base",
		"deep":       "gcc15-asan",
		"other":      "other-base",
		"base":       "",
	}
	for _, tc := range []struct {
		what    string
		targets []string
		base    map[string]string
		want    string // levels joined: "a b | c"
		err     string // substring of the error
	}{
		{"three-level chain", []string{"gcc15-asan", "base", "gcc15"}, graph, "base | gcc15 | gcc15-asan", ""},
		{"siblings share a level", []string{"gcc15-lto", "gcc15-asan", "gcc15", "clang20"}, graph, "clang20 gcc15 | gcc15-asan gcc15-lto", ""},
		{"a non-target in the middle still orders", []string{"deep", "gcc15"}, graph, "gcc15 | deep", ""},
		{"independent targets", []string{"other", "clang20"}, graph, "clang20 other", ""},
		{"duplicates count once", []string{"gcc15", "gcc15", "base"}, graph, "base | gcc15", ""},
		{"names outside the graph", []string{"x", "y"}, graph, "x y", ""},
		{"nothing", nil, graph, "", ""},
		{"cycle", []string{"a"}, map[string]string{"a": "b", "b": "c", "c": "a"}, "", "a → b → c → a"},
		{"cycle above the target", []string{"leaf"}, map[string]string{"leaf": "b", "b": "c", "c": "b"}, "", "b → c → b"},
		{"self", []string{"a"}, map[string]string{"a": "a"}, "", "a → a"},
		{"cycle off the targets' chains is not ours", []string{"base"}, map[string]string{"x": "y", "y": "x"}, "base", ""},
	} {
		t.Run(tc.what, func(t *testing.T) {
			levels, err := Order(tc.targets, tc.base)
			if tc.err != "" {
				if !errors.Is(err, ErrCycle) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want ErrCycle naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := join(levels); got != tc.want {
				t.Fatalf("levels %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDeps(t *testing.T) {
	graph := map[string]string{"gcc15": "base", "gcc15-asan": "gcc15", "deep": "gcc15-asan"}
	got := Deps([]string{"deep", "gcc15", "base"}, graph)
	want := map[string]string{"deep": "gcc15", "gcc15": "base", "base": ""}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("deps %v, want %v", got, want)
	}
}

func join(levels [][]string) string {
	var parts []string
	for _, l := range levels {
		parts = append(parts, strings.Join(l, " "))
	}
	return strings.Join(parts, " | ")
}
