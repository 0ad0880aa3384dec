package naming

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"capy-ubuntu-25.04-gcc15",
		"capy-ubuntu-25.04-clang20-asan",
		"capy-ubuntu-25.04-base",
		"my_proj-debian-12.1_x-gcc_14.2",
		"Capy-ubuntu-25.04-gcc15",
		"capy-ubuntu",
		"capy-ubuntu-25.04",
		"", "/", "..", "a/b-c-d-e", "a\\b-c-d-e", "a-b-c-d\x00",
		"capy--ubuntu-1-x", "-a-b-c-d", "a-b-c-d-",
		"a-b-c-..", "a-b-c-d..e", "a-b-c-d._e", "a-b-c-.d", "a-b-c-d_",
		"capy-ubüntu-25.04-gcc15", "a-b-c-\xff",
		"p-d-v-" + strings.Repeat("a", MaxLen-6),
		"p-d-v-" + strings.Repeat("a", MaxLen-5),
	} {
		f.Add(s)
	}
	zeros := strings.Repeat("0", 64)
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalid", s, err)
			}
			if n != (Name{}) {
				t.Fatalf("Parse(%q) returned %#v with error", s, n)
			}
			return
		}
		if got := n.String(); got != s {
			t.Fatalf("Parse(%q).String() = %q", s, got)
		}
		n2, err := Parse(n.String())
		if err != nil || n2 != n {
			t.Fatalf("Parse(String()) = %#v, %v; want %#v", n2, err, n)
		}
		if len(s) > MaxLen {
			t.Fatalf("Parse accepted %d-byte name %q", len(s), s)
		}
		for _, bad := range []string{"/", "\\", "..", "\x00"} {
			if strings.Contains(s, bad) {
				t.Fatalf("Parse accepted %q containing %q", s, bad)
			}
		}
		for _, tok := range append([]string{n.project, n.distro, n.version}, n.VariantSegments()...) {
			if tok == "" || strings.Contains(tok, "-") {
				t.Fatalf("Parse(%q) produced bad token %q", s, tok)
			}
		}
		if b, ok := n.BaseName(); ok {
			if _, err := Parse(b.String()); err != nil {
				t.Fatalf("BaseName of %q does not parse: %v", s, err)
			}
		} else if len(n.project)+len(n.distro)+len(n.version)+len("---base") <= MaxLen {
			t.Fatalf("BaseName of %q refused though it fits in %d bytes", s, MaxLen)
		}
		for _, ref := range []string{ImageRepo(n), PinnedRef(n, zeros), LatestRef(n)} {
			if _, err := reference.ParseNormalizedNamed(ref); err != nil {
				t.Fatalf("reference.ParseNormalizedNamed(%q): %v", ref, err)
			}
		}
	})
}

func FuzzNormalizeImage(f *testing.F) {
	for _, s := range []string{
		"alpine", "ubuntu:25.04", "library/alpine", "docker.io/library/alpine:latest",
		"ghcr.io/owner/image:1.2", "localhost:5000/foo", "localhost/foo",
		"alpine@sha256:" + testHex, "alpine:3@sha256:" + testHex,
		"", " ", "Alpine", "alpine:", "alpine/", testHex, "a/b/c/d:e",
		"[::1]:5000/foo:bar", "index.docker.io/foo",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := NormalizeImage(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRef) {
				t.Fatalf("NormalizeImage(%q) error %v does not wrap ErrInvalidRef", s, err)
			}
			return
		}
		again, err := NormalizeImage(out)
		if err != nil {
			t.Fatalf("NormalizeImage(%q) = %q, which does not re-normalize: %v", s, out, err)
		}
		if again != out {
			t.Fatalf("NormalizeImage(%q) = %q, re-normalized to %q", s, out, again)
		}
	})
}
