package naming

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Name
		os   string
		segs []string
		base bool
	}{
		{"simple", "capy-ubuntu-25.04-gcc15", Name{"capy", "ubuntu", "25.04", "gcc15"}, "ubuntu-25.04", []string{"gcc15"}, false},
		{"two segment variant", "capy-ubuntu-25.04-clang20-asan", Name{"capy", "ubuntu", "25.04", "clang20-asan"}, "ubuntu-25.04", []string{"clang20", "asan"}, false},
		{"base", "capy-ubuntu-25.04-base", Name{"capy", "ubuntu", "25.04", "base"}, "ubuntu-25.04", []string{"base"}, true},
		{"three segment variant", "p-d-1-a-b-c", Name{"p", "d", "1", "a-b-c"}, "d-1", []string{"a", "b", "c"}, false},
		{"underscores and dots", "my_proj-debian-12.1_x-gcc_14.2", Name{"my_proj", "debian", "12.1_x", "gcc_14.2"}, "debian-12.1_x", []string{"gcc_14.2"}, false},
		{"digits only", "1-2-3-4", Name{"1", "2", "3", "4"}, "2-3", []string{"4"}, false},
		{"base segment not whole variant", "capy-ubuntu-25.04-base-asan", Name{"capy", "ubuntu", "25.04", "base-asan"}, "ubuntu-25.04", []string{"base", "asan"}, false},
		{"max length", "p-d-v-" + strings.Repeat("a", MaxLen-6), Name{"p", "d", "v", strings.Repeat("a", MaxLen-6)}, "d-v", []string{strings.Repeat("a", MaxLen-6)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			if s := got.String(); s != tt.in {
				t.Errorf("String() = %q, want %q", s, tt.in)
			}
			if os := got.OS(); os != tt.os {
				t.Errorf("OS() = %q, want %q", os, tt.os)
			}
			if segs := got.VariantSegments(); !reflect.DeepEqual(segs, tt.segs) {
				t.Errorf("VariantSegments() = %q, want %q", segs, tt.segs)
			}
			if b := got.IsBase(); b != tt.base {
				t.Errorf("IsBase() = %v, want %v", b, tt.base)
			}
			b, ok := got.BaseName()
			if want := (Name{tt.want.project, tt.want.distro, tt.want.version, "base"}); !ok || b != want {
				t.Errorf("BaseName() = %#v, want %#v", b, want)
			}
			if !b.IsBase() {
				t.Errorf("BaseName().IsBase() = false")
			}
			if _, err := Parse(b.String()); err != nil {
				t.Errorf("BaseName() does not parse: %v", err)
			}
			if m := MustParse(tt.in); m != got {
				t.Errorf("MustParse = %#v, want %#v", m, got)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error message
	}{
		{"uppercase project", "Capy-ubuntu-25.04-gcc15", []string{`invalid name "Capy-ubuntu-25.04-gcc15": project "Capy" must be lowercase (a-z, 0-9, '.', '_')`}},
		{"uppercase distro", "capy-Ubuntu-25.04-gcc15", []string{`distro "Ubuntu" must be lowercase`}},
		{"uppercase variant", "capy-ubuntu-25.04-GCC15", []string{`variant "GCC15" must be lowercase`}},
		{"only project", "capy", []string{`invalid name "capy": distro, version and variant missing; want <project>-<distro>-<version>-<variant>, e.g. capy-ubuntu-25.04-gcc15`}},
		{"no version", "capy-ubuntu", []string{`invalid name "capy-ubuntu": version and variant missing; want <project>-<distro>-<version>-<variant>, e.g. capy-ubuntu-25.04-gcc15`}},
		{"no variant", "capy-ubuntu-25.04", []string{`invalid name "capy-ubuntu-25.04": variant missing; want <project>-<distro>-<version>-<variant>`}},
		{"empty", "", []string{`invalid name "": empty; want <project>-<distro>-<version>-<variant>`}},
		{"slash", "/", []string{`invalid name "/": project "/" contains '/'`}},
		{"dotdot", "..", []string{`invalid name "..": project ".." must not start with '.'`}},
		{"dotdot in path", "../etc-a-b-c", []string{`project "../etc" contains '/'`}},
		{"slash in project", "a/b-c-d-e", []string{`invalid name "a/b-c-d-e": project "a/b" contains '/'; allowed: a-z, 0-9, '.', '_'`}},
		{"slash in variant segment", "capy-ubuntu-25.04-clang20-as/an", []string{`variant segment 2 "as/an" contains '/'`}},
		{"backslash", `capy-ubuntu-25.04-a\b`, []string{`variant "a\\b" contains '\\'`}},
		{"space", "capy-ubuntu-25.04-gcc 15", []string{`variant "gcc 15" contains ' '`}},
		{"leading space", " capy-ubuntu-25.04-gcc15", []string{`project " capy" contains ' '`}},
		{"tab", "capy-ubuntu\t-25.04-gcc15", []string{`distro "ubuntu\t" contains '\t'`}},
		{"unicode", "capy-ubüntu-25.04-gcc15", []string{`distro "ubüntu" contains 'ü'`}},
		{"invalid utf8", "capy-ub\xffuntu-25.04-gcc15", []string{`distro "ub\xffuntu" contains invalid UTF-8 byte 0xff`}},
		{"nul", "capy-ubuntu-25.04-gcc\x0015", []string{`variant "gcc\x0015" contains '\x00'`}},
		{"colon", "capy-ubuntu-25.04-gcc:15", []string{`variant "gcc:15" contains ':'`}},
		{"at", "capy-ubuntu-25.04-gcc@15", []string{`contains '@'`}},
		{"leading dash", "-capy-ubuntu-25.04-gcc15", []string{`invalid name "-capy-ubuntu-25.04-gcc15": project is empty (leading, trailing or doubled '-')`}},
		{"trailing dash", "capy-ubuntu-25.04-gcc15-", []string{`variant segment 2 is empty`}},
		{"trailing dash no variant", "capy-ubuntu-25.04-", []string{`variant is empty`}},
		{"empty distro", "capy--ubuntu-1-x", []string{`invalid name "capy--ubuntu-1-x": distro is empty (leading, trailing or doubled '-')`}},
		{"empty variant segment", "capy-ubuntu-1-x--y", []string{`variant segment 2 is empty`}},
		{"only dashes", "---", []string{`project is empty`}},
		{"leading dot", "capy-.ubuntu-1-x", []string{`distro ".ubuntu" must not start with '.'; it must start with a-z or 0-9`}},
		{"leading underscore", "capy-ubuntu-_1-x", []string{`version "_1" must not start with '_'`}},
		{"trailing dot", "capy-ubuntu-25.-x", []string{`version "25." must not end with '.'; it must end with a-z or 0-9`}},
		{"trailing underscore", "capy_-ubuntu-1-x", []string{`project "capy_" must not end with '_'`}},
		{"double dot", "capy-ubuntu-25..04-x", []string{`version "25..04" contains ".."; '.' and '_' must be followed by a-z or 0-9`}},
		{"double underscore", "capy-ubuntu-25__04-x", []string{`version "25__04" contains "__"`}},
		{"dot underscore", "capy-ubuntu-25._04-x", []string{`version "25._04" contains "._"`}},
		{"underscore dot", "capy-ubuntu-25.04-a_.b", []string{`variant "a_.b" contains "_."`}},
		{"too long", "p-d-v-" + strings.Repeat("a", MaxLen-5), []string{`129 characters long, at most 128 allowed`}},
		{"first error wins", "Capy-ubu/ntu", []string{`project "Capy" must be lowercase`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %#v, want error", tt.in, got)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) error %v does not wrap ErrInvalid", tt.in, err)
			}
			if got != (Name{}) {
				t.Errorf("Parse(%q) returned non-zero Name %#v with error", tt.in, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) error\n  %s\nwant substring\n  %s", tt.in, err, w)
				}
			}
		})
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !errors.Is(err, ErrInvalid) {
			t.Fatalf("recover() = %v, want error wrapping ErrInvalid", r)
		}
	}()
	MustParse("capy-ubuntu")
}

func TestZeroValue(t *testing.T) {
	var n Name
	if _, err := Parse(n.String()); err == nil {
		t.Errorf("zero Name's String() %q parses", n.String())
	}
	if _, err := n.MarshalText(); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero Name MarshalText error = %v, want ErrInvalid", err)
	}
}

func TestText(t *testing.T) {
	type doc struct {
		Name Name `json:"name"`
	}
	in := doc{MustParse("capy-ubuntu-25.04-clang20-asan")}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"capy-ubuntu-25.04-clang20-asan"}`; string(b) != want {
		t.Fatalf("json = %s, want %s", b, want)
	}
	var out doc
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip = %#v, want %#v", out, in)
	}
	if err := json.Unmarshal([]byte(`{"name":"../etc-a-b-c"}`), &out); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unmarshal of bad name: err = %v, want ErrInvalid", err)
	}
	// A hand-built Name whose String() parses to something else is not canonical.
	if _, err := (Name{"a", "b", "c-d", "e"}).MarshalText(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("non-canonical MarshalText err = %v, want ErrInvalid", err)
	}
}

// TestBaseNameTooLong: the base name of a name near MaxLen with a variant
// shorter than "base" would not fit: BaseName says so instead of building
// a Name that Parse refuses (found by FuzzParse).
func TestBaseNameTooLong(t *testing.T) {
	long := "00-0-" + strings.Repeat("0", MaxLen-7) + "-0" // MaxLen bytes
	n := MustParse(long)
	if b, ok := n.BaseName(); ok {
		t.Fatalf("BaseName of a %d-byte name with variant \"0\" = %q, want false", len(long), b)
	}
	short := MustParse("capy-ubuntu-25.04-gcc15")
	if b, ok := short.BaseName(); !ok || b.String() != "capy-ubuntu-25.04-base" {
		t.Fatalf("BaseName = %q, %v", b, ok)
	}
}
