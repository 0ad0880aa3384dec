package naming

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

const testHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestNormalizeImage(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"official short", "alpine", "docker.io/library/alpine:latest"},
		{"official tag", "ubuntu:25.04", "docker.io/library/ubuntu:25.04"},
		{"library prefix", "library/alpine", "docker.io/library/alpine:latest"},
		{"user repo", "user/repo", "docker.io/user/repo:latest"},
		{"docker.io explicit", "docker.io/library/alpine:3.20", "docker.io/library/alpine:3.20"},
		{"other registry", "ghcr.io/owner/image:1.2", "ghcr.io/owner/image:1.2"},
		{"registry port", "localhost:5000/foo", "localhost:5000/foo:latest"},
		{"localhost", "localhost/foo", "localhost/foo:latest"},
		{"digest kept", "alpine@sha256:" + testHex, "docker.io/library/alpine@sha256:" + testHex},
		{"tag and digest", "alpine:3@sha256:" + testHex, "docker.io/library/alpine:3@sha256:" + testHex},
		{"already normalized", "docker.io/library/alpine:latest", "docker.io/library/alpine:latest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeImage(tt.in)
			if err != nil {
				t.Fatalf("NormalizeImage(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("NormalizeImage(%q) = %q, want %q", tt.in, got, tt.want)
			}
			again, err := NormalizeImage(got)
			if err != nil || again != got {
				t.Fatalf("NormalizeImage(%q) = %q, %v; not idempotent", got, again, err)
			}
		})
	}
}

func TestNormalizeImageBad(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", `invalid image reference "": empty`},
		{"blank", "   ", `invalid image reference "   ": empty`},
		{"uppercase", "Alpine", `invalid image reference "Alpine": `},
		{"bad tag", "alpine:", `invalid image reference "alpine:"`},
		{"space", "alp ine", `invalid image reference "alp ine"`},
		{"bad digest", "alpine@sha256:abc", `invalid image reference "alpine@sha256:abc"`},
		{"image id", testHex, "cannot specify 64-byte hexadecimal strings"},
		{"trailing slash", "alpine/", `invalid image reference "alpine/"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeImage(tt.in)
			if err == nil {
				t.Fatalf("NormalizeImage(%q) = %q, want error", tt.in, got)
			}
			if !errors.Is(err, ErrInvalidRef) {
				t.Errorf("error %v does not wrap ErrInvalidRef", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n  %s\nwant substring\n  %s", err, tt.want)
			}
		})
	}
}

func TestRefs(t *testing.T) {
	long := "p-d-v-" + strings.Repeat("a", MaxLen-6)
	tests := []struct {
		name   string
		in     string
		repo   string
		pinned string
		latest string
	}{
		{"simple", "capy-ubuntu-25.04-gcc15", "imgcache/capy-ubuntu-25.04-gcc15", "imgcache/capy-ubuntu-25.04-gcc15:0123456789ab", "imgcache/capy-ubuntu-25.04-gcc15:latest"},
		{"segments", "capy-ubuntu-25.04-clang20-asan", "imgcache/capy-ubuntu-25.04-clang20-asan", "imgcache/capy-ubuntu-25.04-clang20-asan:0123456789ab", "imgcache/capy-ubuntu-25.04-clang20-asan:latest"},
		{"separators", "my_proj-debian-12.1_x-gcc_14.2", "imgcache/my_proj-debian-12.1_x-gcc_14.2", "imgcache/my_proj-debian-12.1_x-gcc_14.2:0123456789ab", "imgcache/my_proj-debian-12.1_x-gcc_14.2:latest"},
		{"max length", long, "imgcache/" + long, "imgcache/" + long + ":0123456789ab", "imgcache/" + long + ":latest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := MustParse(tt.in)
			if got := ImageRepo(n); got != tt.repo {
				t.Errorf("ImageRepo = %q, want %q", got, tt.repo)
			}
			if got := PinnedRef(n, testHex); got != tt.pinned {
				t.Errorf("PinnedRef = %q, want %q", got, tt.pinned)
			}
			if got := LatestRef(n); got != tt.latest {
				t.Errorf("LatestRef = %q, want %q", got, tt.latest)
			}
			for _, ref := range []string{ImageRepo(n), PinnedRef(n, testHex), LatestRef(n)} {
				checkDockerRef(t, ref)
			}
		})
	}
}

// checkDockerRef asserts that ref is accepted by Docker's parser and that its
// familiar form is ref itself (i.e. it lives under docker.io/imgcache/).
func checkDockerRef(t *testing.T, ref string) {
	t.Helper()
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		t.Fatalf("reference.ParseNormalizedNamed(%q): %v", ref, err)
	}
	if got := reference.FamiliarString(named); got != ref {
		t.Fatalf("FamiliarString(%q) = %q", ref, got)
	}
	if !strings.HasPrefix(named.Name(), "docker.io/imgcache/") {
		t.Fatalf("%q normalizes to %q, not under docker.io/imgcache/", ref, named.Name())
	}
}

func TestPinnedRefPanics(t *testing.T) {
	n := MustParse("capy-ubuntu-25.04-gcc15")
	tests := []struct {
		name string
		hex  string
	}{
		{"empty", ""},
		{"short", "0123456789a"},
		{"prefixed", "sha256:" + testHex},
		{"uppercase", strings.ToUpper(testHex)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatalf("PinnedRef(%q) did not panic", tt.hex)
				}
			}()
			PinnedRef(n, tt.hex)
		})
	}
}

func TestPinnedRefExactly12(t *testing.T) {
	n := MustParse("capy-ubuntu-25.04-gcc15")
	if got, want := PinnedRef(n, "abcdef012345"), "imgcache/capy-ubuntu-25.04-gcc15:abcdef012345"; got != want {
		t.Fatalf("PinnedRef = %q, want %q", got, want)
	}
}
