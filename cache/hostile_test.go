package cache_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/naming"
)

func TestHostileNamesDoNotParse(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"../x-a-b-c", "a/b-c-d-e", "x-a-b-c/../../y", "/abs-a-b-c", "..-a-b-c", ".-a-b-c",
		"x-..-b-c", "x-a-b-..", "x-a-b-c/..", "x-a-b-c\x00", "x-a-b-c\\..\\y", "X-a-b-c", "",
	} {
		if n, err := naming.Parse(s); err == nil {
			t.Errorf("naming.Parse(%q) = %#v, want an error", s, n)
		} else if !errors.Is(err, naming.ErrInvalid) {
			t.Errorf("naming.Parse(%q): %v does not wrap naming.ErrInvalid", s, err)
		}
	}
}

// TestHandBuiltNamesAreRefused: the zero naming.Name (the only one not made
// by Parse: its fields are unexported) must not reach the disk.
func TestHandBuiltNamesAreRefused(t *testing.T) {
	t.Parallel()
	data, _ := image(t, "t/x:1", 1)
	for _, tt := range []struct {
		name string
		n    naming.Name
	}{
		{"zero", naming.Name{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			parent := t.TempDir()
			dir := filepath.Join(parent, "a", "cache")
			c, _ := openCache(t, dir)
			before := walkTree(t, parent)
			_, err := c.Put(context.Background(), tt.n, bytes.NewReader(data), int64(len(data)))
			t.Logf("error: %v", err)
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("Put(%#v) = %v, want ErrInvalid", tt.n, err)
			}
			if after := walkTree(t, parent); !slices.Equal(after, before) {
				t.Errorf("Put(%#v) changed the tree:\nbefore %v\nafter  %v", tt.n, before, after)
			}
		})
	}
}

// walkTree lists every path under root (relative), with symlink targets.
func walkTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.Type()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			rel += " -> " + target
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// outside is a file outside the cache that a planted symlink points at.
type outside struct {
	dir, file string
	content   []byte
	tree      []string
}

func newOutside(t *testing.T) *outside {
	t.Helper()
	o := &outside{dir: t.TempDir(), content: []byte("precious, not the cache's\n")}
	o.file = filepath.Join(o.dir, "precious.tar.zst")
	if err := os.WriteFile(o.file, o.content, 0o444); err != nil {
		t.Fatal(err)
	}
	o.tree = walkTree(t, o.dir)
	return o
}

func (o *outside) assertUntouched(t *testing.T) {
	t.Helper()
	got, err := os.ReadFile(o.file)
	if err != nil {
		t.Fatalf("outside file: %v", err)
	}
	if !bytes.Equal(got, o.content) {
		t.Errorf("outside file changed: %q", got)
	}
	if tree := walkTree(t, o.dir); !slices.Equal(tree, o.tree) {
		t.Errorf("outside directory changed:\nbefore %v\nafter  %v", o.tree, tree)
	}
}

// plant replaces p (a link or nothing) by a symlink to target.
func plant(t *testing.T, p, target string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func TestPlantedLinksOutsideTheCache(t *testing.T) {
	t.Parallel()
	const name = "capy-ubuntu-25.04-gcc15"
	data, img := image(t, "t/x:1", 1)
	other, otherImg := image(t, "t/x:1", 2)
	tests := []struct {
		name string
		// act runs against a cache where name's link points at the outside
		// file; it reports whether name should still be there afterwards.
		act func(t *testing.T, c *cache.Cache, o *outside) (kept bool)
	}{
		{"remove", func(t *testing.T, c *cache.Cache, o *outside) bool {
			if err := c.Remove(context.Background(), mustName(t, name)); err != nil {
				t.Fatal(err)
			}
			return false
		}},
		{"put same content over it", func(t *testing.T, c *cache.Cache, o *outside) bool {
			put(t, c, name, data)
			return true
		}},
		{"put new content over it", func(t *testing.T, c *cache.Cache, o *outside) bool {
			put(t, c, name, other)
			return true
		}},
		{"verify", func(t *testing.T, c *cache.Cache, o *outside) bool {
			if rep := verify(t, c, false); !rep.OK() || len(problems(rep, cache.ProblemLink)) != 1 {
				t.Errorf("verify: %s", toJSON(rep.Problems))
			}
			return true
		}},
		{"verify repair of a corrupt manifest", func(t *testing.T, c *cache.Cache, o *outside) bool {
			if err := os.WriteFile(filepath.Join(c.Dir(), "manifest.json"), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
			verify(t, c, true)
			return false // a link to outside recovers nothing
		}},
		{"gc evicts it", func(t *testing.T, c *cache.Cache, o *outside) bool {
			rep := gc(t, c, cache.GCOptions{Limits: lru.Limits{MaxSize: 1}})
			if len(rep.Victims) != 1 {
				t.Errorf("gc: %s", toJSON(rep.Victims))
			}
			return false
		}},
		{"export", func(t *testing.T, c *cache.Cache, o *outside) bool {
			if got := export(t, c, name); !bytes.Equal(got, data) {
				t.Error("export followed the link instead of the manifest")
			}
			o.assertUntouched(t)
			verify(t, c, false) // re-derives the link checked below
			return true
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := newOutside(t)
			for _, abs := range []bool{true, false} {
				c, _ := newCache(t)
				put(t, c, name, data)
				target := o.file
				if !abs {
					target = relTo(t, filepath.Dir(linkPath(c, name)), o.file)
				}
				plant(t, linkPath(c, name), target)
				kept := tt.act(t, c, o)
				o.assertUntouched(t)
				if kept {
					e := inspect(t, c, name)
					assertLink(t, c, name, e.Digest)
					if e.Digest != img.Digest && e.Digest != otherImg.Digest {
						t.Errorf("entry digest %s", e.Digest)
					}
				} else if p := linkPath(c, name); exists(t, p) {
					if target, _ := os.Readlink(p); target != "" && !bytes.Contains([]byte(target), []byte("blobs/sha256")) {
						t.Errorf("planted link left in place → %s", target)
					}
				}
			}
		})
	}
}

func relTo(t *testing.T, from, to string) string {
	t.Helper()
	r, err := filepath.Rel(from, to)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPlantedStrayLinkOutside(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t)
	o := newOutside(t)
	data, _ := image(t, "t/x:1", 1)
	put(t, c, "capy-ubuntu-25.04-gcc15", data)
	stray := filepath.Join(c.Dir(), "names", "evil", "evil-a-b-c.tar.zst")
	plant(t, stray, o.file)
	rep := verify(t, c, false)
	if len(problems(rep, cache.ProblemStrayLink)) != 1 || exists(t, stray) {
		t.Errorf("stray link: %s", toJSON(rep.Problems))
	}
	o.assertUntouched(t)
}

// TestPlantedProjectDirectoryOutside: names/<project> itself is a symlink
// to a directory outside the cache, holding a regular file and a symlink
// named like the cache's links. Nothing there may change.
func TestPlantedProjectDirectoryOutside(t *testing.T) {
	t.Parallel()
	const name = "capy-ubuntu-25.04-gcc15"
	data, _ := image(t, "t/x:1", 1)
	tests := []struct {
		name string
		act  func(t *testing.T, c *cache.Cache)
	}{
		{"put", func(t *testing.T, c *cache.Cache) {
			// The put may succeed (the link is derived) or fail; either way
			// nothing outside changes.
			_, err := c.Put(context.Background(), mustName(t, name), bytes.NewReader(data), int64(len(data)))
			t.Logf("put: %v", err)
		}},
		{"remove", func(t *testing.T, c *cache.Cache) {
			err := c.Remove(context.Background(), mustName(t, name))
			t.Logf("remove: %v", err)
		}},
		{"verify", func(t *testing.T, c *cache.Cache) {
			rep := verify(t, c, false)
			if rep.OK() || len(problems(rep, cache.ProblemStrayFile)) == 0 {
				t.Errorf("verify does not report the planted directory: %s", toJSON(rep.Problems))
			}
		}},
		{"verify repair", func(t *testing.T, c *cache.Cache) {
			if err := os.WriteFile(filepath.Join(c.Dir(), "manifest.json"), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
			verify(t, c, true)
		}},
		{"gc", func(t *testing.T, c *cache.Cache) {
			gc(t, c, cache.GCOptions{Limits: lru.Limits{MaxSize: 1}})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newCache(t)
			put(t, c, name, data)
			o := newOutside(t)
			// Files named like the cache's links, in the outside directory.
			if err := os.WriteFile(filepath.Join(o.dir, name+".tar.zst"), []byte("a regular file"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(o.file, filepath.Join(o.dir, "capy-ubuntu-25.04-other.tar.zst")); err != nil {
				t.Fatal(err)
			}
			o.tree = walkTree(t, o.dir)
			project := filepath.Join(c.Dir(), "names", "capy")
			if err := os.RemoveAll(project); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(o.dir, project); err != nil {
				t.Fatal(err)
			}
			tt.act(t, c)
			o.assertUntouched(t)
		})
	}
}
