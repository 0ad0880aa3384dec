// Command mkdeb builds imgcache's Debian package with nfpm (the Go library
// goreleaser uses; a module of its own so that its dependencies stay out of
// imgcache's): /usr/bin/imgcache, the systemd units of contrib/systemd,
// shell completions, and the executor recipes of contrib/ (GitLab Runner,
// Buildkite, GitHub Actions) under /usr/share/imgcache/contrib. Run from the repository root:
//
//	go build -o bin/imgcache ./cmd/imgcache
//	(cd tools/mkdeb && go run . -bin ../../bin/imgcache -version 0.2.0 -o ../../bin/imgcache.deb)
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

func main() {
	bin := flag.String("bin", "../../bin/imgcache", "the imgcache binary to package")
	root := flag.String("root", "../..", "the repository root (contrib/ is read from there)")
	version := flag.String("version", "0.0.0", "package version")
	arch := flag.String("arch", "amd64", "Debian architecture")
	out := flag.String("o", "imgcache.deb", "output file")
	flag.Parse()
	if err := run(*bin, *root, *version, *arch, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
}

func run(bin, root, version, arch, out string) error {
	tmp, err := os.MkdirTemp("", "mkdeb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// Completions, from the binary itself.
	completions := map[string]string{
		"bash": "/usr/share/bash-completion/completions/imgcache",
		"zsh":  "/usr/share/zsh/vendor-completions/_imgcache",
		"fish": "/usr/share/fish/vendor_completions.d/imgcache.fish",
	}
	contents := files.Contents{
		{Source: bin, Destination: "/usr/bin/imgcache", FileInfo: &files.ContentFileInfo{Mode: 0o755}},
		{Source: filepath.Join(root, "contrib/systemd/imgcache-gc.service"), Destination: "/lib/systemd/system/imgcache-gc.service", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Source: filepath.Join(root, "contrib/systemd/imgcache-gc.timer"), Destination: "/lib/systemd/system/imgcache-gc.timer", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
	}
	// The executor recipes, where contrib/gitlab-runner/config.toml.example
	// points: /usr/share/imgcache/contrib/…, executables kept executable.
	for _, dir := range []string{"gitlab-runner", "buildkite", "github-actions"} {
		err := filepath.WalkDir(filepath.Join(root, "contrib", dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(filepath.Join(root, "contrib"), p)
			mode := fs.FileMode(0o644)
			if fi.Mode()&0o111 != 0 {
				mode = 0o755
			}
			contents = append(contents, &files.Content{Source: p, Destination: "/usr/share/imgcache/contrib/" + filepath.ToSlash(rel), FileInfo: &files.ContentFileInfo{Mode: mode}})
			return nil
		})
		if err != nil {
			return fmt.Errorf("contrib/%s: %w", dir, err)
		}
	}
	for shell, dst := range completions {
		script, err := exec.Command(bin, "completion", shell).Output()
		if err != nil {
			return fmt.Errorf("%s completion: %w", shell, err)
		}
		src := filepath.Join(tmp, shell)
		if err := os.WriteFile(src, script, 0o644); err != nil {
			return err
		}
		contents = append(contents, &files.Content{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: 0o644}})
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:        "imgcache",
		Arch:        arch,
		Platform:    "linux",
		Version:     version,
		Section:     "devel",
		Priority:    "optional",
		Maintainer:  "imgcache developers <imgcache@localhost>",
		Description: "Content-addressed cache of Docker image tarballs for CI executors",
		License:     "proprietary",
		Overridables: nfpm.Overridables{
			Contents: contents,
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(out)
		return err
	}
	return f.Close()
}
