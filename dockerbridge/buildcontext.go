package dockerbridge

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	ourerr "github.com/imgcache/imgcache/errdefs"
)

// OutsideDockerfile is the name a Dockerfile that lies outside the context
// directory gets inside the context tar (as the docker CLI does, under a
// name of its own).
const OutsideDockerfile = ".imgcache.Dockerfile"

// ContextTar streams the directory dir as a build context: a tar made as it
// is read (through a pipe; nothing is written to disk, memory stays flat).
// dockerfile is the Dockerfile's path on disk; it returns the name to pass
// as [BuildOptions.Dockerfile]: its path inside dir, or [OutsideDockerfile]
// when it lies outside dir (it is then added to the tar under that name).
//
// dir/.dockerignore is read and matched by the docker CLI's own code
// (github.com/moby/patternmatcher and its ignorefile reader), so the same
// files are sent as by `docker build`. The
// Dockerfile and .dockerignore themselves are always sent (the daemon drops
// them when they are ignored). Symlinks are sent as symlinks; sockets,
// devices and pipes are skipped. Owners are sent as root (0:0), which is what
// COPY gives them anyway.
//
// A dir that is not a directory, or a dockerfile that is not a file, is an
// error wrapping errdefs.ErrInvalid. An error while reading dir fails the
// stream: the reader returns it.
func ContextTar(dir, dockerfile string) (io.ReadCloser, string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", fmt.Errorf("build context %s: %w", dir, err)
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real // walk the directory a symlinked context points at
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return nil, "", fmt.Errorf("%w: build context %s: %w", ourerr.ErrInvalid, dir, err)
	}
	df, err := filepath.Abs(dockerfile)
	if err != nil {
		return nil, "", fmt.Errorf("dockerfile %s: %w", dockerfile, err)
	}
	if fi, err := os.Stat(df); err != nil || !fi.Mode().IsRegular() {
		if err == nil {
			err = errors.New("not a regular file")
		}
		return nil, "", fmt.Errorf("%w: dockerfile %s: %w", ourerr.ErrInvalid, df, err)
	}
	if real, err := filepath.EvalSymlinks(df); err == nil {
		df = real
	}
	ign, err := readDockerignore(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ourerr.ErrInvalid, err)
	}
	keep := map[string]bool{".dockerignore": true}
	inTar := OutsideDockerfile
	outside := true
	if rel, err := filepath.Rel(dir, df); err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		inTar, outside = filepath.ToSlash(rel), false
		keep[inTar] = true
		for p := filepath.Dir(inTar); p != "."; p = filepath.Dir(p) {
			keep[p] = true // its directories, in case they are ignored
		}
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil || rel == "." {
				return err
			}
			rel = filepath.ToSlash(rel)
			if outside && rel == OutsideDockerfile {
				return nil // ours goes in under that name
			}
			if ign.excludes(rel, d.IsDir()) && !keep[rel] {
				if d.IsDir() && !ign.exceptions() {
					return filepath.SkipDir
				}
				return nil
			}
			return addToTar(tw, p, rel)
		})
		if err == nil && outside {
			err = addToTar(tw, df, OutsideDockerfile)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, inTar, nil
}

// addToTar writes the file at path into tw as name.
func addToTar(tw *tar.Writer, path, name string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	var link string
	switch {
	case fi.Mode().IsRegular(), fi.IsDir():
	case fi.Mode()&fs.ModeSymlink != 0:
		if link, err = os.Readlink(path); err != nil {
			return err
		}
	default:
		return nil // sockets, devices, pipes: not build context
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	hdr.Name = name
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if n, err := io.CopyN(tw, f, hdr.Size); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: shrank while being read (%d of %d bytes)", path, n, hdr.Size)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// dockerignore is a parsed .dockerignore: the docker CLI's own reader
// (ignorefile) and matcher (patternmatcher), so that what is sent is what
// `docker build` would send.
type dockerignore struct {
	pm *patternmatcher.PatternMatcher // nil: nothing is ignored
	// parents holds each walked directory's match state, so that a path is
	// matched against its own patterns once, reusing its parents' results.
	parents map[string]patternmatcher.MatchInfo
}

// readDockerignore reads path; a missing file ignores nothing.
func readDockerignore(path string) (*dockerignore, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &dockerignore{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseDockerignore(f, path)
}

func parseDockerignore(r io.Reader, path string) (*dockerignore, error) {
	patterns, err := ignorefile.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(patterns) == 0 {
		return &dockerignore{}, nil
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf("%s: bad pattern: %w", path, err)
	}
	return &dockerignore{pm: pm, parents: map[string]patternmatcher.MatchInfo{}}, nil
}

// exceptions reports whether some pattern is an exception ("!…"): an
// ignored directory must then still be walked.
func (ign *dockerignore) exceptions() bool { return ign.pm != nil && ign.pm.Exclusions() }

// excludes reports whether the slash-separated relative path is ignored.
// Paths must come parents first (as a walk visits them); a path whose
// parents were not visited is matched with them as it would be on a walk.
func (ign *dockerignore) excludes(rel string, isDir bool) bool {
	if ign.pm == nil {
		return false
	}
	parent, ok := ign.parents[path.Dir(rel)]
	if !ok && path.Dir(rel) != "." {
		ign.excludes(path.Dir(rel), true) // records the parent's state
		parent = ign.parents[path.Dir(rel)]
	}
	// The error is for patterns that do not compile, refused by New.
	excluded, info, _ := ign.pm.MatchesUsingParentResults(filepath.FromSlash(rel), parent)
	if isDir {
		ign.parents[rel] = info
	}
	return excluded
}
