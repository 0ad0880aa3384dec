package dockerbridge

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

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
// dir/.dockerignore is honoured as Docker does: "#" comments, "!" exceptions,
// the last matching line wins, a pattern matches a path or any of its parent
// directories, and *, ?, [classes] and ** have their Docker meaning. The
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
			if !keep[rel] && ign.excludes(rel) {
				if d.IsDir() && !ign.exceptions {
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

// dockerignore is a parsed .dockerignore.
type dockerignore struct {
	rules      []ignoreRule
	exceptions bool // some rule is an exception: ignored directories must still be walked
}

type ignoreRule struct {
	re     *regexp.Regexp
	except bool
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
	ign := &dockerignore{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if n == 1 {
			line = strings.TrimPrefix(line, "\uFEFF")
		}
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		except := strings.HasPrefix(line, "!")
		if except {
			line = strings.TrimSpace(line[1:])
		}
		if line == "" {
			continue
		}
		line = filepath.ToSlash(filepath.Clean(line))
		if len(line) > 1 && line[0] == '/' {
			line = line[1:]
		}
		re, err := compileIgnore(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: bad pattern %q: %w", path, n, line, err)
		}
		ign.rules = append(ign.rules, ignoreRule{re, except})
		ign.exceptions = ign.exceptions || except
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ign, nil
}

// excludes reports whether the slash-separated relative path is ignored:
// the rules are applied in order, each matching the path or one of its
// parent directories, the last match deciding.
func (ign *dockerignore) excludes(rel string) bool {
	excluded := false
	parts := strings.Split(rel, "/")
	for _, r := range ign.rules {
		if r.except != excluded {
			continue // cannot change the verdict
		}
		match := r.re.MatchString(rel)
		for i := 1; !match && i < len(parts); i++ {
			match = r.re.MatchString(strings.Join(parts[:i], "/"))
		}
		if match {
			excluded = !r.except
		}
	}
	return excluded
}

// compileIgnore turns a .dockerignore pattern into a regular expression the
// way Docker's patternmatcher does: * is anything but "/", ? one such
// character, ** any number of directories, [..] a class, \ escapes.
func compileIgnore(p string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			if i+1 < len(p) && p[i+1] == '*' {
				i++
				if i+1 < len(p) && p[i+1] == '/' {
					i++
				}
				if i+1 == len(p) {
					b.WriteString(".*")
				} else {
					b.WriteString("(.*/)?")
				}
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		case '[':
			b.WriteByte('[')
			if i+1 < len(p) && p[i+1] == '!' {
				b.WriteByte('^')
				i++
			}
		case ']':
			b.WriteByte(']')
		case '\\':
			if i+1 < len(p) {
				i++
				b.WriteString(regexp.QuoteMeta(p[i : i+1]))
			} else {
				b.WriteString(`\\`)
			}
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}
