package naming

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the maximum length of a cache name in bytes.
const MaxLen = 128

// ErrInvalid is wrapped by every error returned by [Parse].
var ErrInvalid = errors.New("invalid name")

// want is appended to errors about the overall shape of a name.
const want = "want <project>-<distro>-<version>-<variant>, e.g. capy-ubuntu-25.04-gcc15"

// allowed describes the characters a token may contain.
const allowed = "a-z, 0-9, '.', '_'"

// Name is a valid cache name: [Parse] is the only way to make one other
// than the zero value, which is invalid (IsZero). Its parts are read through
// methods, so no name that Parse would refuse ("../.." as a project) can be
// built by hand.
type Name struct {
	project string // e.g. "capy"
	distro  string // e.g. "ubuntu"
	version string // e.g. "25.04"
	variant string // e.g. "gcc15" or "clang20-asan"; one or more '-'-separated segments
}

// Project is the name's first part, e.g. "capy".
func (n Name) Project() string { return n.project }

// Distro is e.g. "ubuntu".
func (n Name) Distro() string { return n.distro }

// Version is the distro's version, e.g. "25.04".
func (n Name) Version() string { return n.version }

// Variant is e.g. "gcc15" or "clang20-asan".
func (n Name) Variant() string { return n.variant }

// IsZero reports whether n is the zero Name (no name).
func (n Name) IsZero() bool { return n == Name{} }

// Parse parses and validates a cache name. Every error wraps [ErrInvalid],
// quotes the input and says which part is wrong and what would be accepted.
func Parse(s string) (Name, error) {
	if s == "" {
		return Name{}, fmt.Errorf("%w %q: empty; %s", ErrInvalid, s, want)
	}
	if len(s) > MaxLen {
		return Name{}, fmt.Errorf("%w %q: %d characters long, at most %d allowed", ErrInvalid, s, len(s), MaxLen)
	}
	parts := strings.Split(s, "-")
	fixed := []string{"project", "distro", "version"}
	for i, p := range parts {
		var what string
		switch {
		case i < len(fixed):
			what = fixed[i]
		case len(parts) == len(fixed)+1:
			what = "variant"
		default:
			what = fmt.Sprintf("variant segment %d", i-len(fixed)+1)
		}
		if err := checkToken(p); err != "" {
			if p == "" {
				return Name{}, fmt.Errorf("%w %q: %s %s", ErrInvalid, s, what, err)
			}
			return Name{}, fmt.Errorf("%w %q: %s %q %s", ErrInvalid, s, what, p, err)
		}
	}
	switch len(parts) {
	case 1:
		return Name{}, fmt.Errorf("%w %q: distro, version and variant missing; %s", ErrInvalid, s, want)
	case 2:
		return Name{}, fmt.Errorf("%w %q: version and variant missing; %s", ErrInvalid, s, want)
	case 3:
		return Name{}, fmt.Errorf("%w %q: variant missing; %s", ErrInvalid, s, want)
	}
	return Name{
		project: parts[0],
		distro:  parts[1],
		version: parts[2],
		variant: strings.Join(parts[3:], "-"),
	}, nil
}

// checkToken validates one '-'-free token and returns "" if it is valid or
// the reason why not, phrased to follow the token's description.
func checkToken(t string) string {
	if t == "" {
		return "is empty (leading, trailing or doubled '-'); " + want
	}
	for i := 0; i < len(t); {
		r, size := utf8.DecodeRuneInString(t[i:])
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_':
		case r >= 'A' && r <= 'Z':
			return "must be lowercase (" + allowed + ")"
		case r == utf8.RuneError && size == 1:
			return fmt.Sprintf("contains invalid UTF-8 byte %#02x; allowed: %s", t[i], allowed)
		default:
			return fmt.Sprintf("contains %q; allowed: %s", r, allowed)
		}
		i += size
	}
	// From here on t is pure ASCII.
	if c := t[0]; c == '.' || c == '_' {
		return fmt.Sprintf("must not start with %q; it must start with a-z or 0-9", c)
	}
	if c := t[len(t)-1]; c == '.' || c == '_' {
		return fmt.Sprintf("must not end with %q; it must end with a-z or 0-9", c)
	}
	for i := 1; i < len(t); i++ {
		if isSep(t[i-1]) && isSep(t[i]) {
			return fmt.Sprintf("contains %q; '.' and '_' must be followed by a-z or 0-9", t[i-1:i+1])
		}
	}
	return ""
}

func isSep(c byte) bool { return c == '.' || c == '_' }

// MustParse is like [Parse] but panics on error. It is meant for tests and
// constants.
func MustParse(s string) Name {
	n, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return n
}

// String returns the name as project-distro-version-variant.
func (n Name) String() string {
	return n.project + "-" + n.distro + "-" + n.version + "-" + n.variant
}

// OS returns distro + "-" + version, e.g. "ubuntu-25.04".
func (n Name) OS() string { return n.distro + "-" + n.version }

// VariantSegments returns the '-'-separated segments of the variant, e.g.
// ["clang20", "asan"] for "clang20-asan".
func (n Name) VariantSegments() []string { return strings.Split(n.variant, "-") }

// IsBase reports whether the variant is "base".
func (n Name) IsBase() bool { return n.variant == "base" }

// BaseName returns the name with the same project, distro and version and
// the variant "base", and false when that name would be longer than MaxLen
// (n's variant is shorter than "base" and n is near the limit): a Name
// never holds what Parse would refuse.
func (n Name) BaseName() (Name, bool) {
	n.variant = "base"
	if len(n.String()) > MaxLen {
		return Name{}, false
	}
	return n, true
}

// MarshalText implements [encoding.TextMarshaler]. It fails for a Name that
// would not parse, such as the zero value.
func (n Name) MarshalText() ([]byte, error) {
	s := n.String()
	p, err := Parse(s)
	if err != nil {
		return nil, err
	}
	if p != n {
		return nil, fmt.Errorf("%w: %#v is not in canonical form", ErrInvalid, n)
	}
	return []byte(s), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler] using [Parse].
func (n *Name) UnmarshalText(b []byte) error {
	p, err := Parse(string(b))
	if err != nil {
		return err
	}
	*n = p
	return nil
}
