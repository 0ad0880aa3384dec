package dockerbridge

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ourerr "github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testuser"
)

func TestDecodeBuild(t *testing.T) {
	for _, tc := range []struct {
		what     string
		stream   string
		id       string
		err      string // substring; "" = success
		progress string // substring of the progress output
	}{
		{
			what: "success with aux",
			stream: `{"stream":"Step 1/3 : ARG BASE_IMAGE"}
{"stream":"\n"}
{"stream":"Step 2/3 : FROM ${BASE_IMAGE}\n"}
{"stream":" ---\u003e 1234\n"}
{"stream":"Step 3/3 : COPY hello.txt /hello.txt\n"}
{"aux":{"ID":"sha256:abcdef"}}
{"stream":"Successfully built abcdef\n"}
`,
			id:       "sha256:abcdef",
			progress: "Step 3/3 : COPY hello.txt /hello.txt\n",
		},
		{
			what:   "no aux: the short ID",
			stream: `{"stream":"Successfully built 0123456789ab\n"}`,
			id:     "0123456789ab",
		},
		{
			what: "failing step",
			stream: `{"stream":"Step 1/3 : ARG BASE_IMAGE\n"}
{"stream":"Step 2/3 : FROM ${BASE_IMAGE}\n"}
{"stream":"Step 3/3 : COPY missing.txt /missing.txt\n"}
{"errorDetail":{"message":"COPY failed: file not found in build context"},"error":"COPY failed: file not found in build context"}
`,
			err: `build failed at step "Step 3/3 : COPY missing.txt /missing.txt": rejected by docker daemon: COPY failed: file not found in build context`,
		},
		{
			what: "failing step, Podman's words",
			stream: `{"stream":"STEP 1/3: FROM imgcache/capy-ubuntu-25.04-base:32b01a201497\n"}
{"stream":"STEP 2/3: COPY missing.txt /missing.txt\n"}
{"error":"building at STEP \"COPY missing.txt /missing.txt\": checking on sources: no such file or directory","errorDetail":{"message":"building at STEP \"COPY missing.txt /missing.txt\": checking on sources: no such file or directory"}}
`,
			err: `build failed at step "STEP 2/3: COPY missing.txt /missing.txt": rejected by docker daemon: building at STEP`,
		},
		{
			what:   "failure before any step",
			stream: `{"error":"dockerfile parse error line 1: unknown instruction: BOGUS"}`,
			err:    "build failed: rejected by docker daemon: dockerfile parse error",
		},
		{
			what:   "step line without its newline",
			stream: `{"stream":"Step 1/1 : FROM x"}{"errorDetail":{"message":"no such image"}}`,
			err:    `at step "Step 1/1 : FROM x"`,
		},
		{what: "no image named", stream: `{"stream":"hello\n"}`, err: "named no image"},
		{what: "garbage", stream: `{"stream":`, err: "reading the daemon's reply"},
		{what: "status lines", stream: `{"status":"Downloading","id":"layer1"}{"aux":{"ID":"sha256:1"}}`, id: "sha256:1", progress: "layer1: Downloading\n"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			var progress bytes.Buffer
			id, err := decodeBuild(strings.NewReader(tc.stream), &progress)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ourerr.ErrRejected) && !strings.Contains(tc.err, "reading") {
					t.Fatalf("err %v, want ErrRejected containing %q", err, tc.err)
				}
				return
			}
			if err != nil || id != tc.id {
				t.Fatalf("id %q err %v, want %q", id, err, tc.id)
			}
			if !strings.Contains(progress.String(), tc.progress) {
				t.Fatalf("progress %q lacks %q", progress.String(), tc.progress)
			}
		})
	}
}

func TestDockerignore(t *testing.T) {
	ign, err := parseDockerignore(strings.NewReader(`
# comment
**.txt
*.log
/build
!build/keep.txt
docs/**/*.md
**/tmp
secret?.txt
[ab].bin
vendor/
[!a].dat
[^a].raw
`), ".dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"a.log":          true,
		"sub/a.log":      false, // * does not cross /
		"build":          true,
		"build/x.o":      true, // a parent matches
		"build/keep.txt": false,
		"docs/a.md":      true,
		"docs/x/y/a.md":  true,
		"docs/a.txt":     true, // **.txt
		"docs/a.rst":     false,
		"tmp":            true,
		"x/y/tmp":        true,
		"x/y/tmp/z":      true,
		"secret1.txt":    true,
		"secret12.txt":   true, // **.txt
		// Docker's matcher turns [!a] into the regexp class [!a], "! or a"
		// (unlike filepath.Match); [^a] is "anything but a".
		"b.dat":                 false,
		"a.dat":                 true,
		"b.raw":                 true,
		"a.raw":                 false,
		"a.txt":                 true, // ** matches no directory too
		"a.bin":                 true,
		"c.bin":                 false,
		"vendor/lib/x.go":       true,
		"Dockerfile":            false,
		"hello.txt":             true, // **.txt
		"# comment":             false,
		"docs/notes/readme.txt": true, // **.txt
		"docs/notes/readme.rst": false,
	} {
		if got := ign.excludes(path, false); got != want {
			t.Errorf("%s: excluded %v, want %v", path, got, want)
		}
	}
	if !ign.exceptions() {
		t.Error("exceptions not noticed")
	}
}

// tarEntries lists a context tar's entries (name → content for files).
func tarEntries(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d", h.Name, h.Uid, h.Gid)
		}
		b, _ := io.ReadAll(tr)
		switch h.Typeflag {
		case tar.TypeSymlink:
			out[h.Name] = "-> " + h.Linkname
		default:
			out[h.Name] = string(b)
		}
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestContextTar(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"Dockerfile":        "FROM x\n",
		"hello.txt":         "hello",
		"app.log":           "noise",
		"ci/gcc.Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
		"ci/other":          "ignored with ci/",
		"src/main.c":        "int main(){}",
		"node_modules/x":    "big",
		".dockerignore":     "*.log\nnode_modules\nci\n.dockerignore\n",
	})
	if err := os.Symlink("hello.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	names := func(m map[string]string) []string {
		var ns []string
		for n := range m {
			ns = append(ns, n)
		}
		slices.Sort(ns)
		return ns
	}

	t.Run("dockerfile inside, ignored dir kept for it", func(t *testing.T) {
		rc, name, err := ContextTar(dir, filepath.Join(dir, "ci", "gcc.Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if name != "ci/gcc.Dockerfile" {
			t.Fatalf("dockerfile name %q", name)
		}
		got := tarEntries(t, rc)
		want := []string{".dockerignore", "Dockerfile", "ci/", "ci/gcc.Dockerfile", "hello.txt", "link", "src/", "src/main.c"}
		if !slices.Equal(names(got), want) {
			t.Fatalf("entries %v, want %v", names(got), want)
		}
		if got["hello.txt"] != "hello" || got["link"] != "-> hello.txt" {
			t.Fatalf("content %q, link %q", got["hello.txt"], got["link"])
		}
	})

	t.Run("symlinked context", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "ctx")
		if err := os.Symlink(filepath.Join(dir, "src"), link); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "src", "Dockerfile"), []byte("FROM z\n"), 0o644)
		defer os.Remove(filepath.Join(dir, "src", "Dockerfile"))
		rc, name, err := ContextTar(link, filepath.Join(link, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got := tarEntries(t, rc)
		if want := []string{"Dockerfile", "main.c"}; name != "Dockerfile" || !slices.Equal(names(got), want) {
			t.Fatalf("dockerfile %q, entries %v, want %v", name, names(got), want)
		}
	})

	t.Run("dockerfile outside", func(t *testing.T) {
		other := t.TempDir()
		writeFiles(t, other, map[string]string{"x.Dockerfile": "FROM y\n"})
		rc, name, err := ContextTar(filepath.Join(dir, "src"), filepath.Join(other, "x.Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if name != OutsideDockerfile {
			t.Fatalf("dockerfile name %q", name)
		}
		got := tarEntries(t, rc)
		if want := []string{OutsideDockerfile, "main.c"}; !slices.Equal(names(got), want) || got[OutsideDockerfile] != "FROM y\n" {
			t.Fatalf("entries %v, want %v", got, want)
		}
	})

	for _, tc := range []struct {
		what, dir, dockerfile string
	}{
		{"no context", filepath.Join(dir, "nope"), filepath.Join(dir, "Dockerfile")},
		{"context is a file", filepath.Join(dir, "hello.txt"), filepath.Join(dir, "Dockerfile")},
		{"no dockerfile", dir, filepath.Join(dir, "nope")},
		{"dockerfile is a directory", dir, filepath.Join(dir, "src")},
	} {
		t.Run(tc.what, func(t *testing.T) {
			if _, _, err := ContextTar(tc.dir, tc.dockerfile); !errors.Is(err, ourerr.ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
		})
	}

	t.Run("unreadable file fails the stream", func(t *testing.T) {
		// As root (CI) the read would succeed: the check runs as nobody.
		d := t.TempDir()
		if testuser.CanSwitch() {
			d = testuser.SharedDir(t)
		}
		writeFiles(t, d, map[string]string{"Dockerfile": "FROM x\n", "secret": "s"})
		os.Chmod(filepath.Join(d, "secret"), 0)
		if !testuser.CanSwitch() {
			if err := readContextTar(d); err == nil || !errors.Is(err, fs.ErrPermission) {
				t.Fatalf("reading an unreadable context: %v, want a permission error", err)
			}
			return
		}
		out, err := testuser.Command(t, testuser.NobodyUID, testuser.NobodyGID, "^TestUnreadableContextHelper$", "unreadable-context", "CONTEXT_DIR="+d).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "permission denied") {
			t.Fatalf("as nobody: %v\n%s", err, out)
		}
	})
}

// readContextTar streams dir's context tar to the end.
func readContextTar(dir string) error {
	rc, _, err := ContextTar(dir, filepath.Join(dir, "Dockerfile"))
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// TestUnreadableContextHelper runs as another user (see TestContextTar): an
// unreadable file must fail the stream, with the reason. Fails (exit 1)
// when ContextTar skips or swallows files it cannot read.
func TestUnreadableContextHelper(t *testing.T) {
	if !testuser.IsHelper("unreadable-context") {
		t.Skip("helper: runs only as another user, from TestContextTar")
	}
	err := readContextTar(os.Getenv("CONTEXT_DIR"))
	if err == nil {
		t.Fatal("no error reading an unreadable context")
	}
	fmt.Println("read failed as expected:", err)
}
