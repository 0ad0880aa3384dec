package naming

import (
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// ErrInvalidRef is wrapped by every error returned by [NormalizeImage].
var ErrInvalidRef = errors.New("invalid image reference")

// repoPrefix is the Docker repository namespace imgcache tags images under.
const repoPrefix = "imgcache/"

// NormalizeImage normalizes a user-typed Docker image reference the way
// Docker does: "alpine" becomes "docker.io/library/alpine:latest",
// "ghcr.io/x/y:1" stays as is, and digests are kept
// ("alpine@sha256:…" becomes "docker.io/library/alpine@sha256:…").
// Errors wrap [ErrInvalidRef] and quote the input.
func NormalizeImage(s string) (string, error) {
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%w %q: empty; want e.g. alpine, ubuntu:25.04 or ghcr.io/owner/image@sha256:<hex>", ErrInvalidRef, s)
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrInvalidRef, s, err)
	}
	return reference.TagNameOnly(named).String(), nil
}

// ImageRepo returns the Docker repository imgcache tags a cached name with:
// "imgcache/<name>".
func ImageRepo(n Name) string { return repoPrefix + n.String() }

// PinnedRef returns "imgcache/<name>:<first 12 hex of the digest>", where hex
// is the 64-character lowercase sha256 hex of a digest (without the
// "sha256:" prefix). It panics if hex is shorter than 12 characters or its
// first 12 characters are not lowercase hex; both are programming errors.
func PinnedRef(n Name, hex string) string {
	if len(hex) < 12 {
		panic(fmt.Sprintf("naming.PinnedRef: digest hex %q shorter than 12 characters", hex))
	}
	short := hex[:12]
	for i := 0; i < len(short); i++ {
		c := short[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			panic(fmt.Sprintf("naming.PinnedRef: digest hex %q is not lowercase hex (pass the encoded part, without \"sha256:\")", hex))
		}
	}
	return ImageRepo(n) + ":" + short
}

// LatestRef returns "imgcache/<name>:latest".
func LatestRef(n Name) string { return ImageRepo(n) + ":latest" }

// ParseRef splits one of imgcache's image references,
// "imgcache/<name>:<tag>" (as PinnedRef and LatestRef make them; a
// "docker.io/" prefix, which engines may add, is allowed), into its name
// and tag. ok is false for any other reference.
func ParseRef(ref string) (n Name, tag string, ok bool) {
	repo, tag, found := strings.Cut(strings.TrimPrefix(ref, "docker.io/"), ":")
	name, ours := strings.CutPrefix(repo, repoPrefix)
	if !found || !ours || tag == "" {
		return Name{}, "", false
	}
	n, err := Parse(name)
	if err != nil {
		return Name{}, "", false
	}
	return n, tag, true
}
